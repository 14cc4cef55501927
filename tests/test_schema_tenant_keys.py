"""The migrated schema can be distributed by tenant (CONTRACT 10): every table holding tenant
data has tenant_id in its primary key, unique keys and foreign keys to other tenant tables;
directory tables are reference tables. The lint reads the live catalog, so a table added
later that breaks the rule fails here; the tables it is shown to catch are created inside a
transaction that is rolled back."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.config import Config

import migrations
from stratum.db.connect import connect, create_database_if_missing, with_database
from stratum.db.distribution import (
    COLOCATION_ANCHOR,
    REFERENCE_TABLES,
    citus_statements,
    tenant_key_violations,
    tenant_tables,
)
from stratum.db.partitions import ensure_partitions
from stratum.settings import libpq_url, sqlalchemy_url

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def scratch(settings):
    """A connection inside a transaction that is rolled back after the test."""
    with connect(settings.database_url) as conn:
        yield conn
        conn.rollback()


def test_migrated_schema_has_tenant_id_in_every_key(scratch):
    assert tenant_key_violations(scratch) == []


def test_tenant_data_tables_are_distributed_and_directories_replicated(scratch):
    tables = set(tenant_tables(scratch))
    assert {"profiles", "profile_identifiers", "events", "event_keys", "consents", "identity_links",
            "profile_merges", "event_outcomes", "deliveries", "segment_members"} <= tables
    assert not tables & set(REFERENCE_TABLES)
    assert {"tenants", "api_keys", "sources", "destinations"} <= set(REFERENCE_TABLES)


def test_events_primary_key_holds_the_partition_key(scratch):
    (key,) = scratch.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'events'::regclass AND contype = 'p'"
    ).fetchone()
    assert key == "PRIMARY KEY (tenant_id, event_id, event_time)"


def test_lint_catches_tables_that_break_the_rule(scratch):
    scratch.execute("CREATE TABLE lint_no_key (tenant_id uuid NOT NULL, v text)")
    scratch.execute("CREATE TABLE lint_bad_pk (id uuid PRIMARY KEY, tenant_id uuid NOT NULL)")
    scratch.execute("CREATE TABLE lint_bad_unique (tenant_id uuid, id uuid, email text,"
                    " PRIMARY KEY (tenant_id, id), CONSTRAINT lint_bad_unique_email UNIQUE (email))")
    scratch.execute("CREATE UNIQUE INDEX lint_bad_unique_idx ON lint_bad_unique (id) WHERE email IS NULL")
    # Refers to a profile of another tenant column: the join would cross nodes.
    scratch.execute("CREATE TABLE lint_bad_fk (tenant_id uuid, id uuid, owner uuid, profile_id uuid,"
                    " PRIMARY KEY (tenant_id, id),"
                    " CONSTRAINT lint_bad_fk_profile FOREIGN KEY (owner, profile_id) REFERENCES profiles (tenant_id, id))")
    scratch.execute("CREATE TABLE lint_good (tenant_id uuid REFERENCES tenants (id), id uuid, profile_id uuid,"
                    " source_id uuid REFERENCES sources (id), name text, PRIMARY KEY (tenant_id, id),"
                    " UNIQUE (tenant_id, name), FOREIGN KEY (tenant_id, profile_id) REFERENCES profiles (tenant_id, id))")
    scratch.execute("ALTER TABLE sources ADD COLUMN lint_profile uuid, ADD CONSTRAINT lint_ref_fk"
                    " FOREIGN KEY (tenant_id, lint_profile) REFERENCES profiles (tenant_id, id)")
    violations = tenant_key_violations(scratch)
    assert violations == [
        "lint_bad_fk: foreign key lint_bad_fk_profile to profiles does not map tenant_id onto profiles.tenant_id",
        "lint_bad_pk: primary key lint_bad_pk_pkey does not include tenant_id",
        "lint_bad_unique: unique key lint_bad_unique_email does not include tenant_id",
        "lint_bad_unique: unique key lint_bad_unique_idx does not include tenant_id",
        "lint_no_key: no primary key (it must lead with tenant_id)",
        "sources: reference table with foreign key lint_ref_fk to tenant table profiles",
    ]
    assert "lint_good" in tenant_tables(scratch)


def test_citus_statements_reference_first_then_colocated_in_dependency_order(scratch):
    statements = citus_statements(scratch)
    refs = [s for s in statements if "create_reference_table" in s]
    dist = [s for s in statements if "create_distributed_table" in s]
    assert statements == refs + dist
    assert refs[0] == "SELECT create_reference_table('tenants');"
    assert dist[0] == f"SELECT create_distributed_table('{COLOCATION_ANCHOR}', 'tenant_id');"
    assert all(f"colocate_with => '{COLOCATION_ANCHOR}'" in s for s in dist[1:])
    position = {s.split("'")[1]: i for i, s in enumerate(statements)}
    assert position["segments"] < position["segment_members"]
    assert position["segments"] < position["segment_events"]
    assert len(dist) == len(tenant_tables(scratch))


def test_scaling_doc_lists_the_current_citus_statements(scratch):
    doc = (ROOT / "docs" / "SCALING.md").read_text()
    missing = [s for s in citus_statements(scratch) if s not in doc]
    assert missing == [], "docs/SCALING.md is missing (print them with `python -m stratum.db.distribution`):\n" + "\n".join(missing)


def _alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", os.path.dirname(migrations.__file__))
    cfg.attributes["database_url"] = sqlalchemy_url(database_url)
    return cfg


_SEED_0009 = """
INSERT INTO tenants (id, name) VALUES ('00000000-0000-0000-0000-00000000000a', 'a');
INSERT INTO profiles (id, tenant_id, first_seen, last_seen)
VALUES ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-00000000000a', now(), now());
INSERT INTO profile_identifiers (tenant_id, type, hash, profile_id, first_seen, last_seen)
VALUES ('00000000-0000-0000-0000-00000000000a', 'email', 'h1', '00000000-0000-0000-0000-0000000000b1', now(), now());
INSERT INTO consents (profile_id, consent_type, tenant_id, granted, updated_at)
VALUES ('00000000-0000-0000-0000-0000000000b1', 'email', '00000000-0000-0000-0000-00000000000a', true, now());
INSERT INTO identity_links (tenant_id, profile_id, from_type, from_hash, to_type, to_hash, link_type)
VALUES ('00000000-0000-0000-0000-00000000000a', '00000000-0000-0000-0000-0000000000b1', 'email', 'h1', 'email', 'h1',
        'identify');
INSERT INTO event_outcomes (event_id, tenant_id, status) VALUES
('00000000-0000-0000-0000-0000000000e9', '00000000-0000-0000-0000-00000000000a', 'rejected');
INSERT INTO events (tenant_id, event_id, event_time, received_at, source_id, profile_id, dedupe_key, event_type,
                    event_name, properties, context, identifiers, emq)
SELECT '00000000-0000-0000-0000-00000000000a', ('00000000-0000-0000-0000-0000000000e' || n)::uuid, t, now(),
       '00000000-0000-0000-0000-00000000000c', '00000000-0000-0000-0000-0000000000b1', 'k' || n, 'track', 'x',
       '{}', '{}', '{}', 1
FROM (VALUES (1, timestamptz '2026-01-05'), (2, timestamptz '1999-01-01')) AS v(n, t);
"""


def test_upgrade_keeps_rows_and_builds_the_keys_on_existing_partitions(settings):
    """From 0009 with rows in a monthly and the default partition: the new keys exist on
    every partition (attached to the parent's), foreign keys end validated, rows stay."""
    name = "stratum_test_tenant_keys_upgrade"
    admin = psycopg.connect(psycopg.conninfo.make_conninfo(libpq_url(settings.database_url), dbname="postgres"),
                            autocommit=True)
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    url = with_database(settings.database_url, name)
    create_database_if_missing(url)
    cfg = _alembic_config(url)
    command.upgrade(cfg, "0009")
    with connect(url, autocommit=True) as conn:
        ensure_partitions(conn, [date(2026, 1, 1)])
        conn.execute(_SEED_0009)
    command.upgrade(cfg, "head")
    with connect(url) as conn:
        assert tenant_key_violations(conn) == []
        parts = dict(conn.execute(
            "SELECT c.relname, x.indexrelid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_index x ON x.indrelid = c.oid AND x.indisprimary WHERE i.inhparent = 'events'::regclass"))
        assert parts == {"events_default": "events_default_pkey", "events_p202601": "events_p202601_pkey"}
        attached = {r[0] for r in conn.execute(
            "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'pk_events'::regclass")}
        assert attached == set(parts.values())
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND NOT convalidated"
                            ).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetchone()[0] == 0
        counts = conn.execute("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM consents),"
                              " (SELECT count(*) FROM profile_identifiers), (SELECT count(*) FROM identity_links),"
                              " (SELECT count(*) FROM event_outcomes)").fetchone()
        assert counts == (2, 1, 1, 1, 1)
        # The composite foreign keys cascade as the old ones did.
        conn.execute("DELETE FROM profiles")
        assert conn.execute("SELECT (SELECT count(*) FROM consents) + (SELECT count(*) FROM profile_identifiers)"
                            ).fetchone()[0] == 0
        conn.rollback()
    command.downgrade(cfg, "0009")
    with connect(url) as conn:
        assert conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'pk_consents'"
                            ).fetchone()[0] == "PRIMARY KEY (profile_id, consent_type)"
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def test_an_identifier_needs_a_profile_of_its_tenant(settings, db):
    """Without a key of its own to ``tenants`` (migration 0017), a stored identifier is
    still tied to its tenant through its profile: one naming a tenant, or a profile, that
    does not hold it is refused at commit."""
    from conftest import make_tenant

    tenant, other = make_tenant(db, "one"), make_tenant(db, "two")
    profile = db.execute("INSERT INTO profiles (tenant_id, id, lifecycle, first_seen, last_seen)"
                         " VALUES (%s, gen_random_uuid(), 'anonymous', now(), now()) RETURNING id::text",
                         (tenant.id,)).fetchone()[0]
    db.commit()
    insert = ("INSERT INTO profile_identifiers (tenant_id, type, hash, profile_id, first_seen, last_seen)"
              " VALUES (%s, 'external_id', %s, %s, now(), now())")
    for tenant_id in (other.id, "00000000-0000-0000-0000-000000000000"):
        with connect(settings.database_url) as conn:
            conn.execute(insert, (tenant_id, "a" * 64, profile))
            with pytest.raises(psycopg.errors.ForeignKeyViolation):
                conn.commit()
    db.execute(insert, (tenant.id, "b" * 64, profile))
    db.commit()
    db.execute("DELETE FROM tenants WHERE id = %s", (tenant.id,))
    db.commit()
    left = db.execute("SELECT count(*) FROM profile_identifiers WHERE profile_id = %s", (profile,)).fetchone()[0]
    assert left == 0, "deleting a tenant still removes its identifiers, through its profiles"
