"""How the schema distributes by tenant (CONTRACT 10, docs/SCALING.md).

Every table that holds tenant data is distributed by ``tenant_id``: that column is in its
primary key, in each of its unique constraints and unique indexes, and in each of its
foreign keys to another tenant table, mapped onto the referenced table's ``tenant_id``. Then
every row a statement touches for one tenant lives on one node, and uniqueness and foreign
keys can be enforced there. Small directory tables are copied to every node instead
(reference tables); a reference table may not point at a tenant table.

``tenant_key_violations`` reads the live catalog (a connection, any transaction state), so
a new table breaking the rule fails the test suite (tests/test_schema_tenant_keys.py).
``citus_statements`` renders the calls that distribute the schema on a Citus cluster.
"""

from __future__ import annotations

import psycopg

# Directory tables: small, read on every request, joined to by tenant tables.
REFERENCE_TABLES: tuple[str, ...] = ("tenants", "operators", "api_keys", "sources", "destinations")
# Bookkeeping of the deployment itself (no tenant in it): also one copy per node.
GLOBAL_TABLES: tuple[str, ...] = ("scheduler_marks",)
# Alembic's own table stays on the coordinator.
UNDISTRIBUTED_TABLES: tuple[str, ...] = ("alembic_version",)
TENANT_COLUMN = "tenant_id"
# Tenant tables are colocated with this one: joins between them stay on one node.
COLOCATION_ANCHOR = "profiles"

# Top-level tables of the public schema (partitions follow their parent).
_TABLES_SQL = """
SELECT c.oid, c.relname FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY c.relname
"""
# Primary key, unique constraints and unique indexes (partial or not) of one table: the
# name and whether the tenant column is among the key columns.
_UNIQUE_KEYS_SQL = """
SELECT i.indexrelid::regclass::text, i.indisprimary,
       EXISTS (SELECT 1 FROM unnest(i.indkey) AS k(attnum) JOIN pg_attribute a
               ON a.attrelid = i.indrelid AND a.attnum = k.attnum WHERE a.attname = %(col)s)
FROM pg_index i WHERE i.indrelid = %(oid)s AND i.indisunique
"""
# Foreign keys of one table: name, referenced table, and the (column, referenced column) pairs.
_FOREIGN_KEYS_SQL = """
SELECT con.conname, con.confrelid::regclass::text,
       array_agg(a.attname ORDER BY k.n), array_agg(fa.attname ORDER BY k.n)
FROM pg_constraint con
CROSS JOIN LATERAL unnest(con.conkey, con.confkey) WITH ORDINALITY AS k(attnum, fattnum, n)
JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
JOIN pg_attribute fa ON fa.attrelid = con.confrelid AND fa.attnum = k.fattnum
WHERE con.conrelid = %(oid)s AND con.contype = 'f'
GROUP BY con.conname, con.confrelid
ORDER BY con.conname
"""


def _replicated(name: str) -> bool:
    return name in REFERENCE_TABLES or name in GLOBAL_TABLES


def tenant_tables(conn: psycopg.Connection) -> list[str]:
    """The tables to distribute by tenant: every top-level table of the public schema that
    is neither replicated nor Alembic's."""
    return [name for _, name in conn.execute(_TABLES_SQL).fetchall()
            if not _replicated(name) and name not in UNDISTRIBUTED_TABLES]


def _tenant_table_violations(conn: psycopg.Connection, oid: int, name: str) -> list[str]:
    out: list[str] = []
    args = {"oid": oid, "col": TENANT_COLUMN}
    keys = conn.execute(_UNIQUE_KEYS_SQL, args).fetchall()
    if not any(primary for _, primary, _ in keys):
        out.append(f"{name}: no primary key (it must lead with {TENANT_COLUMN})")
    for index, primary, has_tenant in keys:
        if not has_tenant:
            kind = "primary key" if primary else "unique key"
            out.append(f"{name}: {kind} {index} does not include {TENANT_COLUMN}")
    for fk, target, cols, target_cols in conn.execute(_FOREIGN_KEYS_SQL, args).fetchall():
        if _replicated(target):
            continue
        if (TENANT_COLUMN, TENANT_COLUMN) not in zip(cols, target_cols, strict=True):
            out.append(f"{name}: foreign key {fk} to {target} does not map {TENANT_COLUMN} onto {target}.{TENANT_COLUMN}")
    return out


def tenant_key_violations(conn: psycopg.Connection) -> list[str]:
    """One line per breach of the distribution rule in the connected database's public
    schema (see the module docstring); an empty list when the schema can be distributed."""
    out: list[str] = []
    for oid, name in conn.execute(_TABLES_SQL).fetchall():
        if name in UNDISTRIBUTED_TABLES:
            continue
        if _replicated(name):
            for fk, target, _, _ in conn.execute(_FOREIGN_KEYS_SQL, {"oid": oid}).fetchall():
                if not _replicated(target):
                    out.append(f"{name}: reference table with foreign key {fk} to tenant table {target}")
            continue
        out.extend(_tenant_table_violations(conn, oid, name))
    return out


def _distribution_order(conn: psycopg.Connection) -> list[str]:
    """Tenant tables, each after the tenant tables its foreign keys point at (Citus
    distributes a referencing table only once the referenced one is distributed), the
    anchor first; otherwise by name."""
    tables = dict(conn.execute(_TABLES_SQL).fetchall())
    names = set(tenant_tables(conn))
    needs = {name: {target for _, target, _, _ in conn.execute(_FOREIGN_KEYS_SQL, {"oid": oid}).fetchall()
                    if target in names and target != name}
             for oid, name in tables.items() if name in names}
    order: list[str] = []
    while needs:
        ready = sorted((n for n, deps in needs.items() if deps <= set(order)),
                       key=lambda n: (n != COLOCATION_ANCHOR, n))
        if not ready:
            raise ValueError(f"foreign keys between tenant tables form a cycle: {sorted(needs)}")
        order.append(ready[0])
        del needs[ready[0]]
    return order


def citus_statements(conn: psycopg.Connection) -> list[str]:
    """The SQL that distributes the migrated schema on a Citus coordinator, in order:
    reference tables first (tenant tables' foreign keys point at them), then the anchor
    tenant table, then every other tenant table colocated with it, each after the tables
    it references."""
    existing = {name for _, name in conn.execute(_TABLES_SQL).fetchall()}
    out = [f"SELECT create_reference_table('{t}');" for t in (*REFERENCE_TABLES, *GLOBAL_TABLES) if t in existing]
    for t in _distribution_order(conn):
        colocate = "" if t == COLOCATION_ANCHOR else f", colocate_with => '{COLOCATION_ANCHOR}'"
        out.append(f"SELECT create_distributed_table('{t}', '{TENANT_COLUMN}'{colocate});")
    return out


def main() -> None:
    """Print the Citus statements for the database of STRATUM_DATABASE_URL (migrated)."""
    from stratum.db.connect import connect
    from stratum.settings import get_settings

    with connect(get_settings().database_url) as conn:
        print("\n".join(citus_statements(conn)))


if __name__ == "__main__":
    main()
