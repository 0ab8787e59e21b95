"""`dcp replicate`: mirror the read models to PostgreSQL (`--dsn`) or Supabase.

    dcp replicate --db PATH|URL [--dsn DSN] [--once] [status]

`--db` (DCP_DB) is the ledger, a SQLite file or a postgresql:// URL (dcp_events.opener).

Without `--dsn`, the target is Supabase, from SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY.
`--once` replicates up to the head seen at the start and exits; otherwise the replicator runs
until SIGINT/SIGTERM. `status` prints the lag as one JSON line and exits. Exit status: 0 done,
1 the sink failed (with --once), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import structlog

from dcp_events.opener import is_postgres
from dcp_replicator.checkpoint import CheckpointStore, checkpoint_path
from dcp_replicator.errors import ReplicatorError, SinkUnavailable
from dcp_replicator.replicator import Replicator, Settings, status
from dcp_replicator.sink import Sink
from dcp_replicator.source import SqliteSource, open_source

_DEFAULTS = Settings()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dcp replicate",
        description="Stream DCP's projections to PostgreSQL (--dsn) or Supabase "
        "(SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY).",
    )
    p.add_argument("command", nargs="?", choices=["run", "status"], default="run")
    p.add_argument(
        "--db",
        default=os.environ.get("DCP_DB", "./dcp.db"),
        help="the ledger: a SQLite file or a postgresql:// URL (DCP_DB, default ./dcp.db)",
    )
    p.add_argument(
        "--checkpoints",
        default=os.environ.get("DCP_REPLICATOR_CHECKPOINTS"),
        help="the replicator's checkpoint file (DCP_REPLICATOR_CHECKPOINTS; default"
        " <db>.replicator beside a SQLite file, ./<database>.replicator for a URL)",
    )
    p.add_argument("--dsn", default=os.environ.get("DCP_REPLICA_DSN"), help="PostgreSQL target")
    p.add_argument("--once", action="store_true", help="replicate up to the current head, exit")
    p.add_argument("--sink-name", default=None, help="checkpoint name (default: sink kind)")
    p.add_argument("--batch-rows", type=int, default=_DEFAULTS.batch_rows)
    p.add_argument("--poll-interval-s", type=float, default=_DEFAULTS.poll_interval_s)
    p.add_argument("--backoff-max-s", type=float, default=_DEFAULTS.backoff_max_s)
    p.add_argument("--no-migrate", action="store_true", help="do not apply the target schema")
    p.add_argument(
        "--http-timeout-s", type=float, default=15.0, help="Supabase: per-request timeout"
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=os.environ.get("DCP_REPLICATOR_METRICS_PORT") or None,
        help="serve Prometheus metrics on 127.0.0.1:PORT (DCP_REPLICATOR_METRICS_PORT; off)",
    )
    p.add_argument("--log-level", default=os.environ.get("DCP_LOG_LEVEL", "info"))
    return p


def main(argv: list[str]) -> int:
    """Run `dcp replicate` with `argv` (the words after `replicate`); returns the exit code."""
    if argv[:1] == ["replicate"]:
        argv = argv[1:]
    args = _parser().parse_args(argv)
    _configure_logging(args.log_level)
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        return 130


async def _main(args: argparse.Namespace) -> int:
    if args.batch_rows < 1:
        print("dcp replicate: --batch-rows must be positive", file=sys.stderr)
        return 2
    if args.metrics_port is not None and not 1 <= args.metrics_port <= 65535:
        print("dcp replicate: the metrics port must be 1..65535", file=sys.stderr)
        return 2
    url = os.environ.get("SUPABASE_URL")
    key = os.environ.get("SUPABASE_SERVICE_ROLE_KEY")
    if not args.dsn and not (url and key):
        print(
            "dcp replicate: give --dsn, or set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY",
            file=sys.stderr,
        )
        return 2
    try:
        source = await open_source(args.db)
    except ReplicatorError as e:
        print(f"dcp replicate: {e}", file=sys.stderr)
        return 2
    checkpoints = CheckpointStore(_checkpoints_of(args.db, args.checkpoints))
    name = args.sink_name or ("postgres" if args.dsn else "supabase")
    try:
        if args.command == "status":
            return await _status(args, source, checkpoints, name)
        sink: Sink
        if args.dsn:
            from dcp_replicator.postgres_sink import PostgresSink

            sink = PostgresSink(args.dsn, name=name, migrate=not args.no_migrate)
        else:
            from dcp_replicator.supabase_sink import SupabaseSink

            assert url and key
            timeout = httpx.Timeout(args.http_timeout_s, connect=min(5.0, args.http_timeout_s))
            http = httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=4))
            sink = await SupabaseSink.create(url, key, checkpoints, name=name, http=http)
        settings = Settings(
            batch_rows=args.batch_rows,
            poll_interval_s=args.poll_interval_s,
            backoff_max_s=args.backoff_max_s,
        )
        cache = checkpoints if args.dsn else None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not main thread
                loop.add_signal_handler(sig, stop.set)
        try:
            if args.metrics_port is not None:
                await _run_observed(args, source, sink, settings, cache, checkpoints, name, stop)
            else:
                await Replicator(source, sink, settings, cache=cache).run(once=args.once, stop=stop)
        except ReplicatorError as e:
            print(f"dcp replicate: {e}", file=sys.stderr)
            return 1
        finally:
            await sink.close()
        return 0
    finally:
        await source.close()


async def _run_observed(
    args: argparse.Namespace,
    source: SqliteSource,
    sink: Sink,
    settings: Settings,
    cache: CheckpointStore | None,
    checkpoints: CheckpointStore,
    name: str,
    stop: asyncio.Event,
) -> None:
    """Replicate with metrics served on `--metrics-port`."""
    from dcp_replicator.metrics import ReplicatorMetrics, served

    metrics = ReplicatorMetrics(name)
    replicator = Replicator(source, sink, settings, cache=cache, on_batch=metrics.batch)
    cached = await checkpoints.get(name)

    def checkpoint() -> int | None:
        if replicator.checkpoint_seq is not None:
            return replicator.checkpoint_seq
        return cached.last_seq if cached else None

    async with served(metrics, args.metrics_port, source, checkpoint):
        await replicator.run(once=args.once, stop=stop)


def _checkpoints_of(db: str, given: str | None) -> Path:
    """The checkpoint file: as given, beside a SQLite ledger, or in the working directory,
    named by the database, for a PostgreSQL one (never a name made of the URL: it holds the
    password)."""
    if given:
        return Path(given)
    if is_postgres(db):
        name = urlsplit(db).path.strip("/") or "dcp"
        return Path(f"{name}.replicator")
    return checkpoint_path(db)


async def _status(
    args: argparse.Namespace, source: SqliteSource, checkpoints: CheckpointStore, name: str
) -> int:
    seq: int | None = None
    origin = "local"
    if args.dsn:
        from dcp_replicator.postgres_sink import PostgresSink

        sink = PostgresSink(args.dsn, name=name, migrate=False, connect_timeout_s=5)
        try:
            seq = await sink.checkpoint()
            origin = "target"
        except ReplicatorError:
            origin = "local (target unreachable)"
        finally:
            await sink.close()
    if origin != "target":
        cp = await checkpoints.get(name)
        seq = cp.last_seq if cp else None
    out = await status(source, name, seq)
    out["checkpoint_from"] = origin
    print(json.dumps(out))
    return 0


def _configure_logging(level: str) -> None:
    if structlog.is_configured():
        return
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)
        ),
        # sys.stderr looked up per line, so a replaced stream (tests, daemons) is honoured.
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )


__all__ = ["SinkUnavailable", "main"]
