"""Identity resolution with several worker processes on overlapping identifiers (CONTRACT 6):
every identifier on exactly one live profile, every event stored once, counters exact,
whatever the worker count, interleaving, duplicates or a worker killed mid-job.

Real Postgres and Redis; workers are separate processes (``stratum worker``).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from conftest import make_tenant
from redis import Redis

from core.dedupe import dedupe_digest, dedupe_scope
from core.identifiers import normalize_identifier

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
WAIT_S = 120.0


# --------------------------------------------------------------------------- data


Raw = tuple[str, str]
Key = tuple[str, str]


@dataclass(frozen=True)
class Person:
    n: int
    raw: tuple[Raw, ...]

    @property
    def keys(self) -> frozenset[Key]:
        out = set()
        for t, v in self.raw:
            i = normalize_identifier(t, v, default_region="US")
            out.add((i.type, i.hash))
        return frozenset(out)


def make_people(count: int) -> list[Person]:
    people = []
    for n in range(count):
        raw = (
            ("external_id", f"user-{n}"),
            ("email", f"Person.{n}@Example.com"),  # normalized to lower case by the worker
            ("phone", f"+1 650 555 {1000 + n:04d}"),
            ("device_id", f"dev-{n}"),
            ("anonymous_id", f"anon-{n}-a"),
            ("anonymous_id", f"anon-{n}-b"),
        )
        people.append(Person(n, raw))
    return people


@dataclass
class Workload:
    people: list[Person]
    batches: list[list[dict]]

    @property
    def events(self) -> list[dict]:
        return [e for b in self.batches for e in b]

    @property
    def dedupe_keys(self) -> set[str]:
        return {e["idempotency_key"] for e in self.events}


def make_workload(rng: random.Random, *, n_people: int = 30, n_batches: int = 40, extra_pairs: int = 3,
                  spread: bool = True) -> Workload:
    """Events made of one person's identifiers: each identifier alone (so people start as
    several profiles), a chain of pairs that connects all of a person's identifiers (so they
    end as one profile), and random extra pairs.

    ``spread``: a batch never holds two events of the same person, so a person's profiles are
    joined across jobs, i.e. across workers (unless a worker coalesces those jobs). Otherwise
    events are dealt to batches at random, and a batch often creates and joins profiles itself.
    """
    people = make_people(n_people)
    now = datetime.now(UTC)
    per_person: list[list[dict]] = []
    for p in people:
        ids = list(p.raw)
        order = ids[:]
        rng.shuffle(order)
        groups: list[list[Raw]] = [[i] for i in ids]
        groups += [[order[k], order[k + 1]] for k in range(len(order) - 1)]
        groups += [rng.sample(ids, 2) for _ in range(extra_pairs)]
        evs = []
        for j, g in enumerate(groups):
            evs.append({
                "event_name": "Page Viewed",
                "event_time": (now - timedelta(seconds=rng.randint(0, 3600))).isoformat(),
                "identifiers": [{"type": t, "value": v} for t, v in g],
                "properties": {"person": p.n, "j": j},
                "idempotency_key": f"p{p.n}-e{j}",
            })
        rng.shuffle(evs)
        per_person.append(evs)
    batches: list[list[dict]] = [[] for _ in range(n_batches)]
    if spread:
        for evs in per_person:
            assert len(evs) <= n_batches
            for b, ev in zip(rng.sample(range(n_batches), len(evs)), evs, strict=True):
                batches[b].append(ev)
    else:
        flat = [e for evs in per_person for e in evs]
        rng.shuffle(flat)
        for k, ev in enumerate(flat):
            batches[k % n_batches].append(ev)
    for b in batches:
        rng.shuffle(b)
    return Workload(people, [b for b in batches if b])


def post_batches(client, write_key: str, batches: list[list[dict]]) -> None:
    for batch in batches:
        r = client.post("/api/v1/cdp/events", json={"events": batch}, headers={"Authorization": f"Bearer {write_key}"})
        assert r.status_code == 202, r.text
        assert r.json()["accepted"] == len(batch), r.text


# --------------------------------------------------------------------------- workers


def worker_env(settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATUM_")}
    env.update(STRATUM_DATABASE_URL=settings.database_url, STRATUM_REDIS_URL=settings.redis_url,
               STRATUM_QUEUE_NAME=settings.queue_name, PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


def start_worker(settings, log_dir: Path, name: str, *, burst: bool,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    cmd = [PYTHON, "-m", "stratum.cli", "worker"] + (["--burst"] if burst else [])
    log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, cwd=ROOT, env=worker_env(settings, env), stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = log_dir / f"{name}.log"  # type: ignore[attr-defined]
    log.close()
    return proc


def log_tail(proc: subprocess.Popen, lines: int = 40) -> str:
    text = Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]
    return "\n".join(text.splitlines()[-lines:])


def wait_all(procs: list[subprocess.Popen], timeout: float = WAIT_S) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    try:
        for p in procs:
            codes.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
    except subprocess.TimeoutExpired:
        stop(procs)
        pytest.fail("workers did not finish in time:\n" + "\n---\n".join(log_tail(p) for p in procs))
    return codes


def stop(procs: list[subprocess.Popen]) -> None:
    """Kill (by pid) the worker processes this test started that are still running."""
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=10)


def run_burst_workers(settings, log_dir: Path, n: int, prefix: str = "w", env: dict[str, str] | None = None) -> None:
    """Run ``n`` burst workers in parallel until the queue is empty (bounded)."""
    procs = [start_worker(settings, log_dir, f"{prefix}{i}", burst=True, env=env) for i in range(n)]
    try:
        codes = wait_all(procs)
    finally:
        stop(procs)
    # Exit status 1 also means "no job to do" (see test_burst_worker_on_an_empty_queue_exits_0);
    # a failed job is caught by assert_queue_drained, a crash by the invariants.
    assert all(c in (0, 1) for c in codes), "\n---\n".join(log_tail(p) for p in procs)


def wait_until(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- RQ helpers


def started_entries(redis: Redis, queue_name: str) -> list[tuple[str, str, str | None]]:
    """(job_id, execution_id, worker_name) of every entry of the queue's StartedJobRegistry.

    RQ 3 stores one sorted-set member ``job_id:execution_id`` per running execution in
    ``rq:wip:<queue>`` (score: heartbeat deadline); the execution hash
    ``rq:execution:<job_id>:<execution_id>`` names the worker.
    """
    from rq.registry import StartedJobRegistry
    from rq.utils import parse_composite_key

    from stratum.queue import events_queue

    registry = StartedJobRegistry(queue=events_queue(redis, queue_name))
    out = []
    for raw in redis.zrange(registry.key, 0, -1):
        job_id, execution_id = parse_composite_key(raw.decode())
        worker = redis.hget(f"rq:execution:{job_id}:{execution_id}", "worker_name")
        out.append((job_id, execution_id, worker.decode() if worker else None))
    return out


def requeue_abandoned(redis: Redis, queue_name: str, *, worker_names: Collection[str] | None = None) -> list[str]:
    """Put back on the queue the jobs that dead workers left started, and return their ids.

    Stand-in for the reaper the product will get. With ``worker_names``, only executions of
    those (dead) workers are requeued; without, every started execution and every job left in
    RQ's intermediate queue (dequeued, never started) is: call it so only when no worker runs.

    RQ 3's ``StartedJobRegistry`` members are ``job_id:execution_id``, so
    ``registry.requeue(job_id)`` (a ZREM of the bare job id) does not find them; the member is
    removed by its composite key here and the job id pushed back with ``queue.push_job_id``.
    Reading the registry with its default ``cleanup=True`` would instead move expired
    entries to the FailedJobRegistry, so it is read with plain ZRANGE.
    """
    from rq.executions import Execution
    from rq.intermediate_queue import IntermediateQueue
    from rq.job import JobStatus
    from rq.registry import StartedJobRegistry

    from stratum.queue import events_queue

    queue = events_queue(redis, queue_name)
    registry = StartedJobRegistry(queue=queue)
    requeued: list[str] = []
    for job_id, execution_id, worker in started_entries(redis, queue_name):
        if worker_names is not None and worker not in worker_names:
            continue
        if not redis.zrem(registry.key, f"{job_id}:{execution_id}"):
            continue  # finished or requeued meanwhile
        job = queue.fetch_job(job_id)
        if job is None:
            continue
        with redis.pipeline() as pipe:
            # Also drop the execution from the job's own ExecutionRegistry: RQ fetches every
            # execution listed there when the job ends and fails it if one is gone.
            Execution(id=execution_id, job_id=job_id, connection=redis, worker_name=worker or "").delete(
                job=job, pipeline=pipe)
            if job_id not in requeued:
                job.set_status(JobStatus.QUEUED, pipeline=pipe)
                queue.push_job_id(job_id, pipeline=pipe)
                requeued.append(job_id)
            pipe.execute()
        _release_coalesced(redis, queue.key, job_id)
    if worker_names is None:
        intermediate = IntermediateQueue(queue.key, redis)
        for job_id in intermediate.get_job_ids():
            intermediate.remove(job_id)
            if job_id in requeued or queue.fetch_job(job_id) is None:
                continue
            queue.fetch_job(job_id).set_status(JobStatus.QUEUED)
            queue.push_job_id(job_id)
            requeued.append(job_id)
    return requeued


def _release_coalesced(redis: Redis, queue_key: str, job_id: str) -> None:
    """Put back the batch jobs a dead job had claimed to coalesce with (stratum/queue/claims.py),
    where the worker coalesces."""
    try:
        from stratum.queue.claims import release_claims
    except ImportError:
        return
    release_claims(redis, queue_key, job_id)


def worker_name_of(redis: Redis, pid: int) -> str | None:
    for key in redis.scan_iter("rq:worker:*"):
        k = key.decode()
        if k.count(":") != 2:
            continue
        if redis.hget(k, "pid") == str(pid).encode():
            return k.split(":", 2)[2]
    return None


def failed_jobs(redis: Redis, queue_name: str) -> list[str]:
    """One line per failed job: its id and the last line of its traceback."""
    from rq.job import Job
    from rq.registry import FailedJobRegistry

    from stratum.queue import MsgpackSerializer, events_queue

    registry = FailedJobRegistry(queue=events_queue(redis, queue_name))
    out = []
    for job_id in registry.get_job_ids(cleanup=False):
        try:
            result = Job.fetch(job_id, connection=redis, serializer=MsgpackSerializer).latest_result()
            exc = (result.exc_string or "").strip().splitlines()[-1] if result else "?"
        except Exception as e:  # pragma: no cover - diagnostics only
            exc = f"(could not read: {e})"
        out.append(f"{job_id}: {exc}")
    return out


def assert_queue_drained(redis: Redis, queue_name: str) -> None:
    fails = failed_jobs(redis, queue_name)
    assert fails == [], f"{len(fails)} failed job(s):\n" + "\n".join(fails)
    assert redis.llen(f"rq:queue:{queue_name}") == 0
    assert started_entries(redis, queue_name) == []
    assert redis.llen(f"rq:queue:{queue_name}:intermediate") == 0


# --------------------------------------------------------------------------- invariants


def check_identity_invariants(db: psycopg.Connection, tenant_id: str, w: Workload) -> None:
    """CONTRACT 6 on what the workers left in Postgres, with exact counts."""
    people = [p.keys for p in w.people]
    all_keys = set().union(*people)
    n_events = len(w.dedupe_keys)

    # Every identifier on exactly one row, on a live profile.
    rows = db.execute(
        "SELECT pi.type, pi.hash, pi.profile_id::text, p.merged_into::text FROM profile_identifiers pi"
        " JOIN profiles p ON p.id = pi.profile_id WHERE pi.tenant_id = %s", (tenant_id,)).fetchall()
    owner = {(t, h): pid for t, h, pid, _ in rows}
    assert len(owner) == len(rows), "an identifier is on two rows"
    on_merged = [(t, pid, merged) for t, _h, pid, merged in rows if merged is not None]
    assert on_merged == [], f"identifiers on merged profiles: {on_merged[:5]}"
    assert set(owner) == all_keys, "stored identifiers differ from the posted ones"

    # One live profile per person, holding exactly that person's identifiers.
    live = {pid: (ec, ic, mc) for pid, ec, ic, mc in db.execute(
        "SELECT id::text, event_count, identifier_count, merge_count FROM profiles"
        " WHERE tenant_id = %s AND merged_into IS NULL", (tenant_id,)).fetchall()}
    groups: dict[str, set[Key]] = {}
    for k, pid in owner.items():
        groups.setdefault(pid, set()).add(k)
    assert {frozenset(g) for g in groups.values()} == set(people), "identifiers are grouped wrongly"
    assert len(live) == len(people), f"{len(live)} live profiles for {len(people)} people"
    assert set(live) == set(groups), "a live profile holds no identifier"
    for pid, (_ec, ic, _mc) in live.items():
        assert ic == len(groups[pid]), f"identifier_count of {pid} is {ic}, holds {len(groups[pid])}"

    # Every event stored once, on the live profile of its identifiers.
    n, distinct, null_profile = db.execute(
        "SELECT count(*), count(DISTINCT dedupe_key), count(*) FILTER (WHERE profile_id IS NULL)"
        " FROM events WHERE tenant_id = %s", (tenant_id,)).fetchone()
    assert (n, distinct) == (n_events, n_events), f"{n} events stored ({distinct} keys), {n_events} posted"
    rows = db.execute("SELECT e.dedupe_key, s.type, s.id::text FROM events e JOIN sources s ON s.id = e.source_id"
                      " WHERE e.tenant_id = %s", (tenant_id,)).fetchall()
    (source,) = {(source_type, source_id) for _, source_type, source_id in rows}
    # keys rest as the hex SHA-256 of (scope, key): core/dedupe.py
    assert {r[0] for r in rows} == {dedupe_digest(dedupe_scope(*source), k).hex() for k in w.dedupe_keys}
    assert null_profile == 0
    assert db.execute("SELECT count(*) FROM event_keys WHERE tenant_id = %s", (tenant_id,)).fetchone()[0] == n_events
    per_profile = dict(db.execute(
        "SELECT profile_id::text, count(*) FROM events WHERE tenant_id = %s GROUP BY 1", (tenant_id,)).fetchall())
    assert set(per_profile) <= set(live), "events point at merged profiles"
    assert sum(ec for ec, _ic, _mc in live.values()) == n_events
    wrong = {pid: (ec, per_profile.get(pid, 0)) for pid, (ec, _ic, _mc) in live.items() if ec != per_profile.get(pid, 0)}
    assert wrong == {}, f"event_count != events stored (profile: (event_count, events)): {wrong}"
    misplaced = db.execute(
        "SELECT count(*) FROM events e CROSS JOIN LATERAL jsonb_array_elements(e.identifiers) x"
        " JOIN profile_identifiers pi ON pi.tenant_id = e.tenant_id AND pi.type = x->>0 AND pi.hash = x->>1"
        " WHERE e.tenant_id = %s AND pi.profile_id <> e.profile_id", (tenant_id,)).fetchone()[0]
    assert misplaced == 0, f"{misplaced} event identifiers are on another profile than their event"

    # A live profile's first/last seen span exactly the state times (CONTRACT 6:
    # min(event_time, received_at)) of the events it holds.
    span = db.execute(
        "SELECT count(*) FROM profiles p JOIN (SELECT profile_id, min(least(event_time, received_at)) AS lo,"
        " max(least(event_time, received_at)) AS hi"
        " FROM events WHERE tenant_id = %s GROUP BY 1) e ON e.profile_id = p.id"
        " WHERE p.first_seen <> e.lo OR p.last_seen <> e.hi", (tenant_id,)).fetchone()[0]
    assert span == 0, f"{span} live profiles whose first_seen/last_seen differ from their events' state times"
    stale_links = db.execute(
        "SELECT count(*) FROM identity_links l JOIN profiles p ON p.id = l.profile_id"
        " WHERE l.tenant_id = %s AND p.merged_into IS NOT NULL", (tenant_id,)).fetchone()[0]
    assert stale_links == 0, f"{stale_links} identity_links rows point at merged profiles"

    # Every merge recorded once; merged profiles resolve straight to a live one.
    merged = dict(db.execute(
        "SELECT id::text, merged_into::text FROM profiles WHERE tenant_id = %s AND merged_into IS NOT NULL",
        (tenant_id,)).fetchall())
    assert set(merged.values()) <= set(live), "a merged profile points at a profile that is not live"
    absorbed = [r[0] for r in db.execute(
        "SELECT absorbed_id::text FROM profile_merges WHERE tenant_id = %s", (tenant_id,))]
    assert len(absorbed) == len(set(absorbed)), "a profile was absorbed twice"
    assert set(merged) <= set(absorbed), "a merged profile has no profile_merges record"
    assert sum(mc for _ec, _ic, mc in live.values()) == len(absorbed), "merge_count differs from merges recorded"


# --------------------------------------------------------------------------- tests


# A worker may persist the next queued batches together with its own (coalescing, up to
# STRATUM_WORKER_COALESCE_MAX_EVENTS events; 0 turns it off). The workload's batches hold
# about 10 events: the default would let the first worker take the whole queue at once, a
# small value keeps four workers busy side by side.
COALESCE = {"no_coalescing": "0", "coalesce_4_batches": "40"}


@pytest.mark.parametrize("coalesce", list(COALESCE))
@pytest.mark.parametrize("spread", [True, False], ids=["one_event_per_person_per_batch", "random_batches"])
def test_four_workers_on_overlapping_identifiers(spread, coalesce, ingest_client, db, redis_conn, settings,
                                                 tmp_path):
    tenant = make_tenant(db, source_type="server")
    w = make_workload(random.Random(20240601), spread=spread)
    post_batches(ingest_client, tenant.write_key, w.batches)
    assert redis_conn.llen(f"rq:queue:{settings.queue_name}") == len(w.batches)

    run_burst_workers(settings, tmp_path, 4, env={"STRATUM_WORKER_COALESCE_MAX_EVENTS": COALESCE[coalesce]})
    assert_queue_drained(redis_conn, settings.queue_name)
    check_identity_invariants(db, tenant.id, w)
    n_merges = db.execute("SELECT count(*) FROM profile_merges WHERE tenant_id = %s", (tenant.id,)).fetchone()[0]
    assert n_merges > 0, "the workload made no merge: it tests nothing"


@pytest.mark.parametrize("coalesce", list(COALESCE))
def test_duplicated_batches_are_stored_once(coalesce, ingest_client, db, redis_conn, settings, tmp_path):
    tenant = make_tenant(db, source_type="server")
    w = make_workload(random.Random(7), spread=True)
    post_batches(ingest_client, tenant.write_key, w.batches)

    # The ingest API answers a copy inside its dedupe window as a duplicate and queues nothing.
    r = ingest_client.post("/api/v1/cdp/events", json={"events": w.batches[0]},
                           headers={"Authorization": f"Bearer {tenant.write_key}"})
    assert r.status_code == 202 and r.json()["duplicates"] == len(w.batches[0])
    assert redis_conn.llen(f"rq:queue:{settings.queue_name}") == len(w.batches)

    # Past that window (marks gone) copies reach the workers, interleaved with the originals:
    # storage must still keep one per (tenant, dedupe key), forever.
    # (the marks' layout is the ingest API's business: drop whatever it keeps for the tenant)
    marks = list(redis_conn.scan_iter(f"stratum:dedupe:{tenant.id}*"))
    assert marks, "no dedupe marks found for the tenant"
    redis_conn.delete(*marks)
    post_batches(ingest_client, tenant.write_key, list(reversed(w.batches)))
    queue_key = f"rq:queue:{settings.queue_name}"
    assert redis_conn.llen(queue_key) == 2 * len(w.batches)
    # Interleave: original k next to its copy, so they run at the same time on two workers.
    ids = [x.decode() for x in redis_conn.lrange(queue_key, 0, -1)]
    originals, copies = ids[:len(w.batches)], list(reversed(ids[len(w.batches):]))
    redis_conn.delete(queue_key)
    redis_conn.rpush(queue_key, *[j for pair in zip(originals, copies, strict=True) for j in pair])

    run_burst_workers(settings, tmp_path, 4, env={"STRATUM_WORKER_COALESCE_MAX_EVENTS": COALESCE[coalesce]})
    assert_queue_drained(redis_conn, settings.queue_name)
    check_identity_invariants(db, tenant.id, w)


@pytest.mark.parametrize("reaper", ["test_helper", "product_reaper"])
def test_worker_killed_mid_job_loses_and_doubles_nothing(reaper, ingest_client, db, redis_conn, settings, tmp_path):
    """kill -9 of a worker in the middle of a job; its abandoned jobs are put back on the
    queue (by ``requeue_abandoned`` here, or by stratum.queue.liveness.reap_abandoned_jobs once the
    dead worker's liveness key is gone) while another worker goes on."""
    tenant = make_tenant(db, source_type="server")
    w = make_workload(random.Random(99), n_people=100, n_batches=150, extra_pairs=25, spread=True)
    post_batches(ingest_client, tenant.write_key, w.batches)
    queue_name = settings.queue_name
    n_events = len(w.dedupe_keys)

    def reap(dead: str | None) -> list[str]:
        if reaper == "test_helper":
            return requeue_abandoned(redis_conn, queue_name, worker_names=None if dead is None else {dead})
        from stratum.queue import events_queue
        from stratum.queue.liveness import alive_key, reap_abandoned_jobs

        if dead is not None:
            redis_conn.delete(alive_key(dead))  # what its TTL does ~20 s after the kill
        return reap_abandoned_jobs(redis_conn, events_queue(redis_conn, queue_name))

    # The survivor starts once the victim is busy: coalescing by event count lets one worker
    # claim this whole workload in its first job, which would leave the victim nothing to do.
    victim = start_worker(settings, tmp_path, "victim", burst=False)
    procs = [victim]
    try:
        wait_until(lambda: worker_name_of(redis_conn, victim.pid) is not None, 30, "the victim worker to register")
        victim_name = worker_name_of(redis_conn, victim.pid)

        def victim_busy() -> bool:
            return any(wk == victim_name for _j, _e, wk in started_entries(redis_conn, queue_name))

        wait_until(victim_busy, 30, "the victim to start a job", interval=0.005)
        survivor = start_worker(settings, tmp_path, "survivor", burst=False)
        procs.append(survivor)
        # A job takes a few hundred ms (coalesced or not): 0.1 s in, the victim is inside it,
        # most likely inside its database transaction.
        time.sleep(0.1)
        assert victim_busy(), "the victim's first job ended within 0.1 s: make batches bigger"
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        stored = db.execute("SELECT count(*) FROM events WHERE tenant_id = %s", (tenant.id,)).fetchone()[0]
        assert stored < n_events, "all the work was done before the kill: post more"

        abandoned = reap(victim_name)

        def drained() -> bool:
            assert survivor.poll() is None, log_tail(survivor)
            return (redis_conn.llen(f"rq:queue:{queue_name}") == 0 and not started_entries(redis_conn, queue_name)
                    and redis_conn.llen(f"rq:queue:{queue_name}:intermediate") == 0)

        wait_until(drained, WAIT_S, "the surviving worker to drain the queue", interval=0.1)
        survivor.send_signal(signal.SIGTERM)
        survivor.wait(timeout=30)
    finally:
        stop(procs)

    # Whatever is still marked started (or, for the helper, stuck between dequeue and start)
    # goes back too, and a burst worker finishes.
    abandoned += reap(None)
    assert abandoned, "the victim held no job when killed: the test did not test a crash"
    run_burst_workers(settings, tmp_path, 1, prefix="finisher")
    assert_queue_drained(redis_conn, queue_name)
    check_identity_invariants(db, tenant.id, w)


def test_one_batch_that_creates_profiles_and_then_merges_them(ingest_client, db, drain, redis_conn, settings):
    """Two events create two profiles and a third event of the same batch joins them
    (trusted source): the batch must be stored, as one profile with both identifiers."""
    tenant = make_tenant(db, source_type="server")
    now = datetime.now(UTC)

    def ev(k: int, ids: list[Raw]) -> dict:
        return {"event_name": "X", "event_time": (now + timedelta(seconds=k)).isoformat(),
                "identifiers": [{"type": t, "value": v} for t, v in ids], "idempotency_key": f"one-batch-{k}"}

    batch = [ev(0, [("anonymous_id", "a")]), ev(1, [("anonymous_id", "b")]),
             ev(2, [("anonymous_id", "a"), ("anonymous_id", "b")])]
    post_batches(ingest_client, tenant.write_key, [batch])
    drain()
    fails = failed_jobs(redis_conn, settings.queue_name)
    assert fails == [], "the batch failed:\n" + "\n".join(fails)
    w = Workload([Person(0, (("anonymous_id", "a"), ("anonymous_id", "b")))], [batch])
    check_identity_invariants(db, tenant.id, w)


def test_burst_worker_on_an_empty_queue_exits_0(settings, redis_conn, tmp_path):
    """CONTRACT 3: ``stratum worker --burst`` drains the queues, then exits 0."""
    proc = start_worker(settings, tmp_path, "idle", burst=True)
    try:
        [code] = wait_all([proc], timeout=60)
    finally:
        stop([proc])
    assert code == 0, log_tail(proc)
