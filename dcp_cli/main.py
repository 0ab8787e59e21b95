"""`dcp`: one console script for the server, the worker, the replicator and the auditors.

`dcp serve` lives here (it is the HTTP package's command). The other sub-commands hand their
arguments to their own package's `main(argv) -> int`, imported only when asked for, so one
command's imports never slow down or break another's.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# sub-command -> the module whose `main(argv: list[str]) -> int` runs it.
DELEGATES: dict[str, str] = {
    "worker": "dcp_worker.cli",
    "replicate": "dcp_replicator.cli",
    "audit": "dcp_audit.cli",
}

HELP = {
    "serve": "the API on a SQLite file (default ./dcp.db) or a PostgreSQL URL, with the sweeps",
    "worker": "the provider worker: dcp worker --api URL --key KEY",
    "replicate": "stream projections to Supabase or to Postgres (--dsn)",
    "audit": "dcp audit verify|replay|export --db PATH|URL: check, rebuild or export the log",
    "backup": "dcp backup --db PATH --to FILE: an online, verified copy of a running ledger",
    "restore": "dcp restore --from FILE --db PATH: a verified backup, never over a live ledger",
    "migrate": "dcp migrate --from FILE --to postgresql://...: move a stopped ledger to PostgreSQL",
}
# Commands of this package with their own parsers: `main(argv)` gets the command name too.
OWN = {"backup": "dcp_cli.backup", "restore": "dcp_cli.backup", "migrate": "dcp_cli.migrate"}


def _serve_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help=HELP["serve"], description=HELP["serve"])
    b = argparse.BooleanOptionalAction
    p.add_argument(
        "--db", help="the ledger: a SQLite file or a postgresql:// URL (DCP_DB, default ./dcp.db)"
    )
    p.add_argument("--host", help="listen address (DCP_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (DCP_PORT, default 8000)")
    p.add_argument("--admin-token", help="admin credential (DCP_ADMIN_TOKEN; unset: admin API 503)")
    p.add_argument("--sandbox", action=b, help="let renters top themselves up (DCP_SANDBOX)")
    p.add_argument("--lease-ttl-s", type=int, help="lease of a claim (DCP_LEASE_TTL_S, 120)")
    p.add_argument("--max-attempts", type=int, help="claims per job (DCP_MAX_ATTEMPTS, 3)")
    p.add_argument("--online-s", type=int, help="provider online threshold (DCP_ONLINE_S, 90)")
    p.add_argument("--stale-s", type=int, help="provider stale threshold (DCP_STALE_S, 300)")
    p.add_argument("--auto-approve", action=b, help="approve providers at registration")
    p.add_argument("--sweep-interval-s", type=float, help="sweep period (DCP_SWEEP_INTERVAL_S, 5)")
    p.add_argument("--deadline-grace-s", type=int, help="DCP_DEADLINE_GRACE_S, 60")
    p.add_argument("--queue-timeout-s", type=int, help="DCP_QUEUE_TIMEOUT_S, 86400")
    p.add_argument("--rate-limits", action=b, help="rate limiting (DCP_RATE_LIMITS, on)")
    p.add_argument("--cors-origins", help="comma-separated allowed origins (DCP_CORS_ORIGINS)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dcp", description="DCP: an event-sourced ledger for a GPU compute marketplace."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _serve_parser(sub)
    for name in (*DELEGATES, *OWN):
        # Their own parsers own their flags; everything after the name is passed on.
        sub.add_parser(name, help=HELP[name], add_help=False, prefix_chars="\0")
    return parser


def serve(args: argparse.Namespace) -> int:
    """Run the API until interrupted."""
    from dcp_http.config import ConfigError, load_config
    from dcp_http.server import run

    flags = {
        "db": args.db,
        "host": args.host,
        "port": args.port,
        "admin_token": args.admin_token,
        "sandbox": args.sandbox,
        "lease_ttl_s": args.lease_ttl_s,
        "max_attempts": args.max_attempts,
        "online_s": args.online_s,
        "stale_s": args.stale_s,
        "auto_approve": args.auto_approve,
        "sweep_interval_s": args.sweep_interval_s,
        "deadline_grace_s": args.deadline_grace_s,
        "queue_timeout_s": args.queue_timeout_s,
        "rate_limits": args.rate_limits,
        "cors_origins": None
        if args.cors_origins is None
        else tuple(o.strip() for o in args.cors_origins.split(",") if o.strip()),
    }
    try:
        config = load_config(os.environ, flags)
    except ConfigError as e:
        print(f"dcp serve: {e}", file=sys.stderr)
        return 2
    return run(config, log_level=args.log_level)


def delegate(command: str, argv: list[str]) -> int:
    """Hand `argv` to the entry point of `command`."""
    return int(importlib.import_module(DELEGATES[command]).main(argv) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dcp` console script; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in DELEGATES:
        return delegate(args_list[0], args_list[1:])
    if args_list and args_list[0] in OWN:
        return int(importlib.import_module(OWN[args_list[0]]).main(args_list))
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.command == "serve":
        return serve(args)
    parser.print_help()
    return 2
