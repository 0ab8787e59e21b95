"""The worker's settings: each one a flag and an environment variable (a flag wins)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dcp_worker.errors import ConfigError

OUTPUT_CAP_BYTES = 1024 * 1024  # SPEC section 3: stdout and stderr, 1 MiB each


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    """Everything the worker needs to run; built once by `parse_settings`."""

    api_url: str
    provider_key: str = field(repr=False)  # never printed
    gpus: Literal["auto", "none"] = "auto"
    allowed_images: tuple[str, ...] = ()
    state_dir: Path = Path("~/.dcp-worker")  # parse_settings expands ~
    heartbeat_s: float = 30.0
    heartbeat_jitter: float = 0.1  # each interval is heartbeat_s * (1 +- jitter)
    poll_s: float = 5.0
    drain_s: float = 30.0  # SIGTERM: how long running jobs may go on before they are killed
    min_free_disk_gb: float = 5.0  # readiness: free space under Docker's data root
    docker_url: str | None = None  # None: DOCKER_HOST or the local socket
    job_memory_mb: int = 4096  # Memory and MemorySwap of each container
    job_cpus: float = 1.0  # NanoCpus of each container
    job_pids_limit: int = 512
    job_tmpfs_mb: int = 512
    output_cap_bytes: int = OUTPUT_CAP_BYTES
    http_timeout_s: float = 10.0  # every API call
    docker_timeout_s: float = 30.0  # every Docker call but waiting for a container
    log_max_size_mb: int = 8  # json-file log driver: max-size, with max-file 2
    metrics_port: int | None = None  # serve /metrics on 127.0.0.1:<port>; None: not served


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as e:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from e


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise ConfigError(f"{name} must be an integer, not {raw!r}") from e


def build_parser() -> argparse.ArgumentParser:
    """The `dcp worker` argument parser; every default comes from the environment later."""
    p = argparse.ArgumentParser(prog="dcp worker", description="Run the DCP provider worker.")
    p.add_argument("--api", help="API base URL (DCP_API)")
    p.add_argument("--key", help="provider key (DCP_PROVIDER_KEY)")
    p.add_argument("--gpus", choices=["auto", "none"], help="GPU mode (DCP_WORKER_GPUS, auto)")
    p.add_argument(
        "--allow-image",
        action="append",
        metavar="REF",
        help="image allowed to run, repeatable; a trailing * allows a prefix "
        "(DCP_WORKER_ALLOWED_IMAGES, comma-separated; empty refuses every image)",
    )
    p.add_argument("--state-dir", help="spool and state (DCP_WORKER_STATE_DIR, ~/.dcp-worker)")
    p.add_argument("--heartbeat-s", type=float, help="heartbeat interval (DCP_WORKER_HEARTBEAT_S)")
    p.add_argument("--poll-s", type=float, help="job poll interval (DCP_WORKER_POLL_S, 5)")
    p.add_argument("--drain-s", type=float, help="SIGTERM drain timeout (DCP_WORKER_DRAIN_S, 30)")
    p.add_argument(
        "--min-free-disk-gb", type=float, help="readiness threshold (DCP_WORKER_MIN_FREE_DISK_GB)"
    )
    p.add_argument("--job-memory-mb", type=int, help="memory per job (DCP_WORKER_JOB_MEMORY_MB)")
    p.add_argument("--job-cpus", type=float, help="CPUs per job (DCP_WORKER_JOB_CPUS)")
    p.add_argument("--docker-url", help="Docker engine URL (DOCKER_HOST)")
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics on 127.0.0.1:PORT (DCP_WORKER_METRICS_PORT; default off)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="run every preflight check once, say what is wrong, exit non-zero if anything is",
    )
    return p


def parse_settings(argv: Sequence[str], env: Mapping[str, str] | None = None) -> WorkerSettings:
    """Build the settings from flags, then environment variables, then defaults.

    Raises ConfigError when the API URL or key is missing or a value is out of range.
    """
    env = os.environ if env is None else env
    args = build_parser().parse_args(list(argv))
    api = args.api or env.get("DCP_API", "")
    key = args.key or env.get("DCP_PROVIDER_KEY", "")
    if not api:
        raise ConfigError("the API URL is missing: pass --api or set DCP_API")
    if not key:
        raise ConfigError("the provider key is missing: pass --key or set DCP_PROVIDER_KEY")
    gpus = args.gpus or env.get("DCP_WORKER_GPUS", "auto") or "auto"
    if gpus not in ("auto", "none"):
        raise ConfigError(f"DCP_WORKER_GPUS must be auto or none, not {gpus!r}")
    if args.allow_image:
        allowed = tuple(a.strip() for a in args.allow_image if a.strip())
    else:
        raw = env.get("DCP_WORKER_ALLOWED_IMAGES", "")
        allowed = tuple(a.strip() for a in raw.split(",") if a.strip())
    state_dir = Path(
        args.state_dir or env.get("DCP_WORKER_STATE_DIR") or "~/.dcp-worker"
    ).expanduser()

    def pick(flag: float | None, name: str, default: float) -> float:
        return flag if flag is not None else _env_float(env, name, default)

    heartbeat_s = pick(args.heartbeat_s, "DCP_WORKER_HEARTBEAT_S", 30.0)
    poll_s = pick(args.poll_s, "DCP_WORKER_POLL_S", 5.0)
    drain_s = pick(args.drain_s, "DCP_WORKER_DRAIN_S", 30.0)
    min_free = pick(args.min_free_disk_gb, "DCP_WORKER_MIN_FREE_DISK_GB", 5.0)
    memory_mb = (
        args.job_memory_mb
        if args.job_memory_mb is not None
        else _env_int(env, "DCP_WORKER_JOB_MEMORY_MB", 4096)
    )
    cpus = pick(args.job_cpus, "DCP_WORKER_JOB_CPUS", 1.0)
    metrics_port = (
        args.metrics_port
        if args.metrics_port is not None
        else _env_int(env, "DCP_WORKER_METRICS_PORT", 0) or None
    )
    if metrics_port is not None and not 1 <= metrics_port <= 65535:
        raise ConfigError("the metrics port must be between 1 and 65535")
    if not 0.05 <= heartbeat_s <= 3600:
        raise ConfigError("the heartbeat interval must be between 0.05 and 3600 seconds")
    if not 0.05 <= poll_s <= 3600:
        raise ConfigError("the poll interval must be between 0.05 and 3600 seconds")
    if drain_s < 0 or min_free < 0 or memory_mb < 16 or cpus <= 0:
        raise ConfigError("drain, disk, memory and CPU settings must be positive")
    return WorkerSettings(
        api_url=api.rstrip("/"),
        provider_key=key,
        gpus=gpus,  # type: ignore[arg-type]
        allowed_images=allowed,
        state_dir=state_dir,
        heartbeat_s=heartbeat_s,
        poll_s=poll_s,
        drain_s=drain_s,
        min_free_disk_gb=min_free,
        docker_url=args.docker_url or env.get("DOCKER_HOST") or None,
        job_memory_mb=memory_mb,
        job_cpus=cpus,
        metrics_port=metrics_port,
        # A heartbeat must never wait on a request longer than its own interval.
        http_timeout_s=max(0.5, min(10.0, heartbeat_s)),
    )


def image_allowed(image: str, allowed: Sequence[str]) -> bool:
    """True when `image` is on the allowlist: an exact reference, or a prefix ending in `*`.

    A digest reference (`repo@sha256:...`) matches only itself, so a worker that allows a digest
    runs exactly those bytes.
    """
    for entry in allowed:
        if entry.endswith("*"):
            if image.startswith(entry[:-1]):
                return True
        elif image == entry:
            return True
    return False
