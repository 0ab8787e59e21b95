"""The domain's thresholds (SPEC section 7), with their defaults.

Pure data: every decision takes it as an argument, so no threshold is read from a global.
Flags and environment variables are read in one place, `dcp_http.config.ServerConfig`, which
builds this object from the fields it shares (`ServerConfig.domain_settings`).
"""

from __future__ import annotations

import msgspec


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every threshold of the domain; defaults are SPEC section 7's."""

    sandbox: bool = False
    lease_ttl_s: int = 120
    max_attempts: int = 3
    online_s: int = 90
    stale_s: int = 300
    auto_approve: bool = False
    sweep_interval_s: int = 5
    deadline_grace_s: int = 60
    queue_timeout_s: int = 86400
    # Not in SPEC section 7, but bounded here so one place holds every limit.
    min_withdrawal_halala: int = 1000
    output_cap_bytes: int = 1024 * 1024
    sandbox_topup_max_halala: int = 1_000_000
    # Bounds of one gateway top-up (POST /api/renters/topups).
    topup_min_halala: int = 100
    topup_max_halala: int = 1_000_000
    # A claim looks at most this many queued jobs, so one poll's cost is bounded even when
    # the queue is long and full of jobs this provider cannot run.
    claim_scan_limit: int = 5000
    # A sweep ends at most this many jobs; the next sweep takes the rest.
    sweep_limit: int = 1000
