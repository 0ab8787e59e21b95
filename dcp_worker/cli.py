"""`dcp worker`: parse the settings, set up logging, run until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

import structlog

from dcp_worker.errors import ConfigError
from dcp_worker.preflight import report, run_checks
from dcp_worker.settings import WorkerSettings, build_parser, parse_settings
from dcp_worker.worker import Worker


def configure_logging() -> None:
    """One JSON line per event on stderr, with the context variables bound by the tasks."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        # No caching: `dcp` may configure logging again (tests, other sub-commands).
        cache_logger_on_first_use=False,
    )
    # httpx logs every request URL at INFO, and one route carries the key in its path.
    logging.getLogger("httpx").setLevel(logging.WARNING)


async def run_worker(settings: WorkerSettings) -> int:
    """Run a worker until SIGTERM or SIGINT, then drain; returns the exit code."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await Worker(settings).run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def main(argv: Sequence[str]) -> int:
    """Entry point of `dcp worker ARGS`; `argv` excludes the program and sub-command names."""
    try:
        settings = parse_settings(argv)
    except ConfigError as e:
        print(f"dcp worker: {e}", file=sys.stderr)
        return 2
    if build_parser().parse_args(list(argv)).check:
        return report(asyncio.run(run_checks(settings)))
    configure_logging()
    return asyncio.run(run_worker(settings))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
