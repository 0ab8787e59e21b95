"""The one settings object (SPEC section 7), with its defaults.

Pure data: `dcp_http` / `dcp_cli` read flags and environment variables into it
(`settings_from_env` does the environment part), and every decision takes it as an argument,
so no threshold is read from a global.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every threshold of the domain and the server; defaults are SPEC section 7's."""

    db: str = "./dcp.db"
    host: str = "127.0.0.1"
    port: int = 8000
    admin_token: str | None = None
    sandbox: bool = False
    lease_ttl_s: int = 120
    max_attempts: int = 3
    online_s: int = 90
    stale_s: int = 300
    auto_approve: bool = False
    sweep_interval_s: int = 5
    deadline_grace_s: int = 60
    queue_timeout_s: int = 86400
    rate_limits: bool = True
    cors_origins: tuple[str, ...] = ()
    # Not in SPEC section 7, but bounded here so one place holds every limit.
    min_withdrawal_halala: int = 1000
    output_cap_bytes: int = 1024 * 1024
    sandbox_topup_max_halala: int = 1_000_000
    # A claim looks at most this many queued jobs, so one poll's cost is bounded even when
    # the queue is long and full of jobs this provider cannot run.
    claim_scan_limit: int = 5000
    # A sweep ends at most this many jobs; the next sweep takes the rest.
    sweep_limit: int = 1000


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def settings_from_env(env: Mapping[str, str], base: Settings | None = None) -> Settings:
    """`base` (default: the defaults) with every `DCP_*` variable present in `env` applied.

    Raises ValueError when a numeric variable is not an integer.
    """
    s = base or Settings()
    changes: dict[str, object] = {}
    ints = {
        "DCP_PORT": "port",
        "DCP_LEASE_TTL_S": "lease_ttl_s",
        "DCP_MAX_ATTEMPTS": "max_attempts",
        "DCP_ONLINE_S": "online_s",
        "DCP_STALE_S": "stale_s",
        "DCP_SWEEP_INTERVAL_S": "sweep_interval_s",
        "DCP_DEADLINE_GRACE_S": "deadline_grace_s",
        "DCP_QUEUE_TIMEOUT_S": "queue_timeout_s",
    }
    for var, field in ints.items():
        if var in env:
            changes[field] = int(env[var])
    for var, field in {"DCP_DB": "db", "DCP_HOST": "host"}.items():
        if var in env:
            changes[field] = env[var]
    if env.get("DCP_ADMIN_TOKEN"):
        changes["admin_token"] = env["DCP_ADMIN_TOKEN"]
    flags = {
        "DCP_SANDBOX": "sandbox",
        "DCP_AUTO_APPROVE": "auto_approve",
        "DCP_RATE_LIMITS": "rate_limits",
    }
    for var, field in flags.items():
        if var in env:
            changes[field] = _flag(env[var])
    if "DCP_CORS_ORIGINS" in env:
        changes["cors_origins"] = tuple(
            o.strip() for o in env["DCP_CORS_ORIGINS"].split(",") if o.strip()
        )
    return msgspec.structs.replace(s, **changes)
