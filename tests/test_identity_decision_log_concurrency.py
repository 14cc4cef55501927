"""The decision log under concurrency: with four worker processes on overlapping
identifiers, every identifier has exactly one link decision, on the profile that holds it
now (through merges), and every merge has exactly one merge decision (CONTRACT 9).
A retried transaction leaves no decision behind."""

from __future__ import annotations

import random

import pytest
from conftest import make_tenant
from test_identity_concurrency import (
    assert_queue_drained,
    check_identity_invariants,
    make_workload,
    post_batches,
    run_burst_workers,
)

pytestmark = pytest.mark.slow


def test_decision_log_matches_the_graph_with_four_workers(ingest_client, db, redis_conn, settings, tmp_path):
    tenant = make_tenant(db, source_type="server")
    w = make_workload(random.Random(20261130), spread=True)
    post_batches(ingest_client, tenant.write_key, w.batches)
    run_burst_workers(settings, tmp_path, 4, env={"STRATUM_WORKER_COALESCE_MAX_EVENTS": "0"})
    assert_queue_drained(redis_conn, settings.queue_name)
    check_identity_invariants(db, tenant.id, w)

    links = db.execute(
        "SELECT d.identifiers -> -1 ->> 'type', d.identifiers -> -1 ->> 'hash', coalesce(p.merged_into, p.id)::text"
        " FROM identity_decisions d JOIN profiles p ON p.id = d.profile_id"
        " WHERE d.tenant_id = %s AND d.kind = 'link'", (tenant.id,)).fetchall()
    holders = {(t, h): pid for t, h, pid in db.execute(
        "SELECT type, hash, profile_id::text FROM profile_identifiers WHERE tenant_id = %s", (tenant.id,)).fetchall()}
    assert sorted((t, h) for t, h, _ in links) == sorted(holders), "one link decision per identifier"
    assert all(holders[(t, h)] == live for t, h, live in links), "each on the profile holding it now"

    merges = db.execute("SELECT event_id::text, profile_id::text FROM identity_decisions"
                        " WHERE tenant_id = %s AND kind = 'merge' ORDER BY 1, 2", (tenant.id,)).fetchall()
    recorded = db.execute("SELECT event_id::text, survivor_id::text FROM profile_merges"
                          " WHERE tenant_id = %s ORDER BY 1, 2", (tenant.id,)).fetchall()
    assert merges == recorded and merges, "one merge decision per merge"
