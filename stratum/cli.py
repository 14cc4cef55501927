"""The ``stratum`` command line (CONTRACT section 3).

Commands that print JSON print exactly one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from core.errors import StratumError
from stratum.settings import Settings, get_settings, settings_from_env


def _print_json(obj: dict) -> None:
    print(json.dumps(obj, default=str))


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an id (UUID)") from None


def migrate(settings: Settings, *, quiet: bool = False) -> None:
    """Create the database if missing, then ``alembic upgrade head``."""
    from alembic import command
    from alembic.config import Config

    import migrations
    from stratum.db.connect import create_database_if_missing, database_name
    from stratum.settings import sqlalchemy_url

    if create_database_if_missing(settings.database_url) and not quiet:
        print(f"created database {database_name(settings.database_url)}")
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.attributes["database_url"] = sqlalchemy_url(settings.database_url)
    command.upgrade(cfg, "head")
    if not quiet:
        print(f"database {database_name(settings.database_url)} is at the latest schema")


def _admin(settings: Settings, fn, *args, **kwargs):
    from stratum.db.connect import connect

    with connect(settings.database_url) as conn:
        result = fn(conn, *args, **kwargs)
        conn.commit()
        return result


def cmd_tenant_create(args, settings: Settings) -> None:
    from stratum.admin import create_tenant

    created = _admin(settings, create_tenant, args.name)
    _print_json({"tenant_id": str(created.owner_id), "api_key": created.key})


def cmd_tenant_key_create(args, settings: Settings) -> None:
    from stratum.admin import create_tenant_key

    created = _admin(settings, create_tenant_key, args.tenant, args.role)
    _print_json({"key_id": str(created.key_id), "api_key": created.key})


def cmd_tenant_key_revoke(args, settings: Settings) -> None:
    from stratum.admin import revoke_key

    if not _admin(settings, revoke_key, args.key_id):
        raise StratumError(f"no live key {args.key_id}", code="not_found")
    _print_json({"key_id": str(args.key_id), "revoked": True})


def cmd_operator_create(args, settings: Settings) -> None:
    from stratum.admin import create_operator

    created = _admin(settings, create_operator, args.name)
    _print_json({"operator_id": str(created.owner_id), "api_key": created.key})


def cmd_source_create(args, settings: Settings) -> None:
    from stratum.admin import create_source

    created = _admin(settings, create_source, args.tenant, args.name, args.type, args.phone_region,
                     secret_key=settings.secret_key)
    out = {"source_id": str(created.owner_id), "write_key": created.key}
    if created.identity_secret:
        out["identity_secret"] = created.identity_secret
    _print_json(out)


def cmd_migrate(args, settings: Settings) -> None:
    migrate(settings)
    if settings.secret_key:  # secrets stored in an older form are rewritten in the current one
        counts = _admin(settings, _reseal, settings.secret_key)
        if counts["sources"] or counts["destinations"]:
            print(f"resealed {counts['sources']} identity and {counts['destinations']} webhook secrets")


def _reseal(conn, secret_key: str | None) -> dict[str, int]:
    from stratum.admin import reseal_stored_secrets

    return reseal_stored_secrets(conn, secret_key)


def cmd_secrets_reseal(args, settings: Settings) -> None:
    if not settings.secret_key:
        raise StratumError("STRATUM_SECRET_KEY is not set: there is no key to seal with", code="no_secret_key")
    _print_json(_admin(settings, _reseal, settings.secret_key))


def cmd_ingest_api(args, settings: Settings) -> None:
    from stratum.api_server import serve_api

    serve_api("ingest_api.app:create_app", args.host or settings.ingest_host, args.port or settings.ingest_port,
              args.workers, settings)


def cmd_read_api(args, settings: Settings) -> None:
    from stratum.api_server import serve_api

    serve_api("read_api.app:create_app", args.host or settings.read_host, args.port or settings.read_port,
              args.workers, settings)


def cmd_worker(args, settings: Settings) -> None:
    from workers.worker import run_worker

    # RQ reports whether any job ran; an empty queue drained in burst mode is success too.
    run_worker(settings, burst=args.burst, queues=args.queues)


def cmd_deliver(args, settings: Settings) -> None:
    from workers.delivery import run_deliver

    run_deliver(settings)


def cmd_scheduler(args, settings: Settings) -> None:
    from workers.scheduler import run_scheduler

    results = run_scheduler(settings, once=args.once)
    if args.once:
        _print_json({"jobs": results})
        if "error" in results.values():
            sys.exit(1)


def cmd_status(args, settings: Settings) -> None:
    """Text for people, or with ``--json`` the one JSON object for scripts; never both. The
    delivery queue lives in Postgres: when it cannot be read the events queues still show."""
    import psycopg

    from stratum.db.connect import connect
    from stratum.queue.deliveries import DELIVERY_QUEUE_NAME, delivery_queue_status
    from stratum.queue.status import queue_status

    status = queue_status(settings)
    try:
        with connect(settings.database_url, autocommit=True, connect_timeout=5) as conn:
            status["queues"][DELIVERY_QUEUE_NAME] = delivery_queue_status(conn)
    except psycopg.OperationalError as exc:  # the events queue is still worth showing
        print(f"warning: Postgres unreachable, {DELIVERY_QUEUE_NAME} left out: {exc}".strip(), file=sys.stderr)
    if args.json:
        _print_json(status)
        return
    for name, q in status["queues"].items():
        print(f"{name}: queued={q['queued']} started={q['started']} scheduled={q['scheduled']} "
              f"failed={q['failed']} oldest_queued_age_s={q['oldest_queued_age_s']}")
    print(f"workers: {status['workers']}")


def cmd_replay_failed(args, settings: Settings) -> None:
    from stratum.queue.status import requeue_failed

    if not args.all and not args.job_ids:
        raise StratumError("name JOB_IDs to replay, or --all", code="invalid_arguments")
    replayed, skipped = requeue_failed(settings, None if args.all else args.job_ids)
    for s in skipped:
        print(f"could not replay {s['job_id']}: {s['reason']}", file=sys.stderr)
    _print_json({"replayed": replayed})


def cmd_dev(args, settings: Settings) -> None:
    from stratum.dev import run_dev

    if args.ingest_port is not None:
        settings = settings.replace(ingest_port=args.ingest_port)
    if args.read_port is not None:
        settings = settings.replace(read_port=args.read_port)
    sys.exit(run_dev(settings, workers=args.workers, data_dir=Path(args.data_dir), check=args.check,
                     embedded=args.embedded))


def cmd_export(args, settings: Settings) -> None:
    """Stream a tenant's profiles or events to a file (or stdout), with a progress bar on stderr."""
    import time

    from read_api.errors import ApiError
    from read_api.exports import export_query, export_to_file, parse_time
    from stratum.db.connect import connect

    try:
        query = export_query(args.kind, str(args.tenant), parse_time("--from", args.start), parse_time("--to", args.end))
    except ApiError as exc:
        raise StratumError(exc.message, code=exc.code) from None
    with connect(settings.database_url) as conn:
        if conn.execute("SELECT 1 FROM tenants WHERE id = %s", (args.tenant,)).fetchone() is None:
            raise StratumError(f"no tenant {args.tenant}", code="not_found")
        total = conn.execute(query.count_sql, query.params).fetchone()[0]
        conn.commit()
        tty = sys.stderr.isatty()
        started = last = time.monotonic()

        def progress(done: int, final: bool = False) -> None:
            nonlocal last
            now = time.monotonic()
            if not final and now - last < (0.25 if tty else 5.0):
                return
            last = now
            share = done / total if total else 1.0
            bar = "#" * int(share * 30)
            rate = done / max(now - started, 1e-6)
            line = f"export {args.kind}: [{bar:<30}] {share:4.0%} {done:,}/{total:,} rows {rate:,.0f} rows/s"
            print(("\r" if tty else "") + line, end="\n" if final or not tty else "", file=sys.stderr, flush=True)

        out = open(args.out, "wb") if args.out else sys.stdout.buffer  # noqa: SIM115 - closed below
        try:
            written = export_to_file(conn, query, args.format, out, progress)
        finally:
            if args.out:
                out.close()
            else:
                out.flush()
        progress(written, final=True)
    if args.out:
        _print_json({"exported": written, "kind": args.kind, "format": args.format, "out": args.out})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stratum", description="Stratum CDP command line")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser(
        "dev", help="run the whole pipeline on this machine",
        description="Run the whole pipeline on this machine: Postgres and Redis as configured when they "
                    "answer, else embedded ones; ingest, read, workers, scheduler and delivery; a demo tenant "
                    "and source (kept across runs, keys in DATA_DIR/demo.json). Prints the URLs it uses and "
                    "an export line for another terminal. Exits 2 when a port is taken.")
    d.add_argument("--workers", type=int, default=2)
    d.add_argument("--embedded", action="store_true",
                   help="always start embedded Postgres and Redis under --data-dir, even when configured ones answer")
    d.add_argument("--ingest-port", type=int, default=None, help="ingest API port (default STRATUM_INGEST_PORT, 8000)")
    d.add_argument("--read-port", type=int, default=None, help="read API port (default STRATUM_READ_PORT, 8001)")
    d.add_argument("--data-dir", default=".stratum",
                   help="embedded services' data, the generated secret key and the demo keys (default .stratum)")
    d.add_argument("--check", action="store_true", help="stop after the demo traffic is verified (exit 0 if it was)")
    d.set_defaults(func=cmd_dev)

    sub.add_parser("migrate", help="create the database if missing, then upgrade to the latest schema"
                   ).set_defaults(func=cmd_migrate)

    t = sub.add_parser("tenant", help="tenants and their API keys").add_subparsers(dest="tenant_cmd", required=True)
    tc = t.add_parser("create", help="new tenant with an admin API key")
    tc.add_argument("name")
    tc.set_defaults(func=cmd_tenant_create)
    tk = t.add_parser("key", help="tenant API keys").add_subparsers(dest="key_cmd", required=True)
    tkc = tk.add_parser("create")
    tkc.add_argument("--tenant", required=True, type=_uuid)
    tkc.add_argument("--role", choices=["admin", "read"], default="admin")
    tkc.set_defaults(func=cmd_tenant_key_create)
    tkr = tk.add_parser("revoke")
    tkr.add_argument("key_id", type=_uuid)
    tkr.set_defaults(func=cmd_tenant_key_revoke)

    sec = sub.add_parser("secrets", help="stored identity and webhook secrets").add_subparsers(
        dest="secrets_cmd", required=True)
    sec.add_parser("reseal", help="rewrite secrets stored in an older form (or in plain text) with "
                   "STRATUM_SECRET_KEY").set_defaults(func=cmd_secrets_reseal)

    o = sub.add_parser("operator", help="operator keys").add_subparsers(dest="operator_cmd", required=True)
    oc = o.add_parser("create")
    oc.add_argument("name")
    oc.set_defaults(func=cmd_operator_create)

    s = sub.add_parser("source", help="sources and write keys").add_subparsers(dest="source_cmd", required=True)
    sc = s.add_parser("create")
    sc.add_argument("--tenant", required=True, type=_uuid)
    sc.add_argument("--name", required=True)
    sc.add_argument("--type", default="website", choices=["website", "server", "sgtm", "import", "crm"])
    sc.add_argument("--phone-region", default=None, help="default region for national phone numbers, e.g. US")
    sc.set_defaults(func=cmd_source_create)

    for name, func, help_ in (("ingest-api", cmd_ingest_api, "serve the ingest API"),
                              ("read-api", cmd_read_api, "serve the read API")):
        a = sub.add_parser(name, help=help_)
        a.add_argument("--host", default=None)
        a.add_argument("--port", type=int, default=None)
        a.add_argument("--workers", type=int, default=1)
        a.set_defaults(func=func)

    w = sub.add_parser("worker", help="run one worker")
    w.add_argument("--burst", action="store_true", help="drain the queues, then exit 0")
    w.add_argument("--queues", nargs="*", default=None)
    w.set_defaults(func=cmd_worker)

    dl = sub.add_parser("deliver", help="send webhook deliveries (run one or more beside the workers)")
    dl.set_defaults(func=cmd_deliver)

    sch = sub.add_parser("scheduler", help="run the periodic jobs")
    sch.add_argument("--once", action="store_true", help="run every periodic job once, then exit")
    sch.set_defaults(func=cmd_scheduler)

    st = sub.add_parser("status", help="queues, workers, failures")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    ex = sub.add_parser("export", help="export a tenant's profiles or events (progress on stderr)")
    ex.add_argument("kind", choices=["profiles", "events"])
    ex.add_argument("--tenant", required=True, type=_uuid)
    ex.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    ex.add_argument("--out", default=None, help="file to write (default: standard output)")
    ex.add_argument("--from", dest="start", default=None,
                    help="ISO 8601 start, inclusive (profiles: last change; events: event time)")
    ex.add_argument("--to", dest="end", default=None, help="ISO 8601 end, exclusive")
    ex.set_defaults(func=cmd_export)

    rf = sub.add_parser("replay-failed", help="re-enqueue failed jobs")
    rf.add_argument("--all", action="store_true")
    rf.add_argument("job_ids", nargs="*")
    rf.set_defaults(func=cmd_replay_failed)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """Run one command. A problem the user can fix (a bad argument, a malformed or wrong
    service URL, a refused role) ends with one ``error: ...`` line on stderr and exit 2
    (usage and URLs) or 3 (a service that cannot be reached or refuses us), never a
    traceback; see docs/OPERATIONS.md."""
    from stratum.preflight import ServiceError, check_services

    args = build_parser().parse_args(argv)
    try:
        try:
            # dev generates a STRATUM_SECRET_KEY when none is set: get_settings would warn of its absence
            settings = settings_from_env() if args.command == "dev" else get_settings()
        except ValueError as exc:  # a STRATUM_* number that is not one
            raise ServiceError(str(exc), 2) from None
        check_services(settings, args.command, connect=args.command in _PREFLIGHT_COMMANDS)
        args.func(args, settings)
    except (StratumError, ServiceError) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(exc.exit_code if isinstance(exc, ServiceError) else 2)
    except Exception as exc:
        import psycopg
        import redis

        if isinstance(exc, psycopg.OperationalError | redis.exceptions.ConnectionError):
            print(f"error: cannot reach a service: {_one_line(str(exc))}", file=sys.stderr)
            sys.exit(3)
        raise


# Short-lived commands connect to their services first, with short timeouts, so a wrong
# URL fails in seconds. Servers, workers and the scheduler only check the URLs' syntax:
# they ride out services that start after them (docs/OPERATIONS.md).
_PREFLIGHT_COMMANDS = frozenset({"migrate", "tenant", "operator", "source", "secrets", "export", "status",
                                 "replay-failed"})


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    main()
