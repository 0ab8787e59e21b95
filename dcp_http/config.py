"""Server settings: SPEC section 7, read from environment variables and flags (a flag wins).

`ServerConfig` holds everything `dcp serve` needs: where to listen, the database, the admin
credential, the HTTP protections, and the domain thresholds. The domain's own settings object
(`dcp_projections.settings.Settings`) is built from the fields it shares with this one, so a
threshold is named once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from dcp_events import is_postgres
from dcp_events.errors import DcpError, StoreError
from dcp_projections.settings import Settings

MIB = 1024 * 1024


class ConfigError(DcpError):
    """Raised when an environment variable or flag holds a value that cannot be used."""


class RateLimit(msgspec.Struct, frozen=True):
    """At most `limit` requests per `period_s` seconds for one key (or one IP)."""

    limit: int
    period_s: float


DEFAULT_RATE_LIMITS: dict[str, RateLimit] = {
    "register": RateLimit(5, 3600.0),
    "submit": RateLimit(60, 60.0),
    "heartbeat": RateLimit(30, 60.0),
    "admin": RateLimit(120, 60.0),
    "default": RateLimit(1000, 60.0),
    # Failed authentications per client address (dcp_http.ratelimit.AUTH_FAILURES).
    "auth_failure": RateLimit(20, 60.0),
}


_DOMAIN = Settings()
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")  # safe inside a CSP header

MIN_ADMIN_TOKEN_CHARS = 32


def admin_token_problem(token: str) -> str | None:
    """Why `token` cannot be the admin token, or None when it can.

    Failed guesses are throttled per address, not stopped: only length keeps the token out of
    reach. Whitespace is refused because it is almost always a copy-paste or quoting slip
    (a trailing newline from a file, a space from an env line) that would then never match.
    """
    if not token.strip():
        return "the admin token is empty or only whitespace"
    if any(c.isspace() for c in token):
        return "the admin token must not contain whitespace (a stray newline or space?)"
    if len(token) < MIN_ADMIN_TOKEN_CHARS:
        return (
            f"the admin token has {len(token)} characters, fewer than "
            f"{MIN_ADMIN_TOKEN_CHARS}: a short token can be guessed; make one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return None


class ServerConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Every setting of the API server, with SPEC section 7's defaults."""

    db: str = "./dcp.db"
    host: str = "127.0.0.1"
    port: int = 8000
    admin_token: str | None = None
    # The domain's thresholds: their defaults are named once, in dcp_projections.settings.
    sandbox: bool = _DOMAIN.sandbox
    lease_ttl_s: int = _DOMAIN.lease_ttl_s
    max_attempts: int = _DOMAIN.max_attempts
    online_s: int = _DOMAIN.online_s
    stale_s: int = _DOMAIN.stale_s
    auto_approve: bool = _DOMAIN.auto_approve
    sweep_interval_s: float = float(_DOMAIN.sweep_interval_s)
    deadline_grace_s: int = _DOMAIN.deadline_grace_s
    queue_timeout_s: int = _DOMAIN.queue_timeout_s
    rate_limits: bool = True
    cors_origins: tuple[str, ...] = ()
    # GET /metrics: loopback clients always; others with `Authorization: Bearer <token>`.
    metrics_token: str | None = None
    # Not in SPEC's table, but "all configurable": per-class limits and body sizes.
    rate_limit_table: dict[str, RateLimit] = msgspec.field(
        default_factory=lambda: dict(DEFAULT_RATE_LIMITS)
    )
    max_body_bytes: int = 1 * MIB
    max_result_body_bytes: int = 4 * MIB
    # Gateway top-ups (docs/payments.md). Without a secret key the top-up routes answer 503.
    moyasar_secret_key: str | None = None
    moyasar_webhook_token: str | None = None
    moyasar_api_url: str = "https://api.moyasar.com/v1"
    # Where the gateway's hosted checkout pages are: the wallet's top-up form may be
    # redirected only there (its CSP form-action), so the browser follows the 303.
    moyasar_checkout_origin: str = "https://checkout.moyasar.com"
    moyasar_timeout_s: float = 10.0
    public_url: str | None = None  # where renters come back to after paying
    topup_min_halala: int = _DOMAIN.topup_min_halala
    topup_max_halala: int = _DOMAIN.topup_max_halala
    topup_reconcile_after_s: int = 600
    topup_sweep_interval_s: float = 30.0
    topup_sweep_limit: int = 50
    topup_invoice_ttl_s: int = 86400
    # Garbage-collector tuning of the server process (see dcp_http.app.gc_loop); 0 turns it off.
    gc_freeze_s: float = 1.0
    gc_full_s: float = 600.0
    # Snapshots of the domain state (dcp_app.snapshots): "" = "<db>.snapshots"; "off" = none.
    snapshot_dir: str = ""
    snapshot_every_events: int = 100_000
    snapshot_every_s: float = 600.0
    # Deposit references and decided withdrawals kept in memory (docs/design.md, "Bounded
    # memory"); older ones are read back from the read models when a command names them.
    history_in_memory: int = 10_000

    def snapshot_path(self) -> Path | None:
        """Where the service keeps its snapshots, or None when they are off. On a PostgreSQL
        log they are off unless a directory is named: there is no file beside which to keep
        them, and each node needs a directory of its own."""
        if self.snapshot_dir == "off" or (not self.snapshot_dir and is_postgres(self.db)):
            return None
        return Path(self.snapshot_dir or f"{self.db}.snapshots")

    def __post_init__(self) -> None:
        if self.admin_token is not None:
            problem = admin_token_problem(self.admin_token)
            if problem:
                raise ConfigError(f"DCP_ADMIN_TOKEN / --admin-token: {problem}")

    def domain_settings(self) -> Settings:
        """The domain's `Settings`, from the fields it shares with this config."""
        names = Settings.__struct_fields__
        values = {n: getattr(self, n) for n in names if n in self.__struct_fields__}
        if "sweep_interval_s" in values:  # the domain counts whole seconds
            values["sweep_interval_s"] = max(1, math.ceil(self.sweep_interval_s))
        return Settings(**values)


# env var -> (field, parser). Every field of SPEC section 7's table.
def _bool(name: str, raw: str) -> bool:
    v = raw.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}: expected 0 or 1, got {raw!r}")


def _int(lo: int, hi: int):  # type: ignore[no-untyped-def]
    def parse(name: str, raw: str) -> int:
        try:
            v = int(raw.strip())
        except ValueError:
            raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
        if not lo <= v <= hi:
            raise ConfigError(f"{name}: {v} is outside {lo}..{hi}")
        return v

    return parse


def _seconds(name: str, raw: str) -> float:
    try:
        v = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}: expected a number of seconds, got {raw!r}") from None
    if not (math.isfinite(v) and 0.01 <= v <= 86400):
        raise ConfigError(f"{name}: {v} is outside 0.01..86400")
    return v


def _seconds_or_off(name: str, raw: str) -> float:
    return 0.0 if raw.strip() in ("0", "0.0") else _seconds(name, raw)


def _str(name: str, raw: str) -> str:
    return raw


def _opt_str(name: str, raw: str) -> str | None:
    return raw or None


def _origins(name: str, raw: str) -> tuple[str, ...]:
    return tuple(o.strip() for o in raw.split(",") if o.strip())


ENV: dict[str, tuple[str, Any]] = {
    "DCP_DB": ("db", _str),
    "DCP_HOST": ("host", _str),
    "DCP_PORT": ("port", _int(0, 65535)),
    "DCP_ADMIN_TOKEN": ("admin_token", _opt_str),
    "DCP_SANDBOX": ("sandbox", _bool),
    "DCP_LEASE_TTL_S": ("lease_ttl_s", _int(1, 86400)),
    "DCP_MAX_ATTEMPTS": ("max_attempts", _int(1, 100)),
    "DCP_ONLINE_S": ("online_s", _int(1, 86400)),
    "DCP_STALE_S": ("stale_s", _int(1, 86400 * 7)),
    "DCP_AUTO_APPROVE": ("auto_approve", _bool),
    "DCP_SWEEP_INTERVAL_S": ("sweep_interval_s", _seconds),
    "DCP_DEADLINE_GRACE_S": ("deadline_grace_s", _int(0, 86400)),
    "DCP_QUEUE_TIMEOUT_S": ("queue_timeout_s", _int(1, 86400 * 30)),
    "DCP_RATE_LIMITS": ("rate_limits", _bool),
    "DCP_CORS_ORIGINS": ("cors_origins", _origins),
    "DCP_METRICS_TOKEN": ("metrics_token", _opt_str),
    "DCP_MAX_BODY_BYTES": ("max_body_bytes", _int(1024, 64 * MIB)),
    "DCP_MAX_RESULT_BODY_BYTES": ("max_result_body_bytes", _int(1024, 256 * MIB)),
    "DCP_GC_FREEZE_S": ("gc_freeze_s", _seconds_or_off),
    "DCP_GC_FULL_S": ("gc_full_s", _seconds),
    "DCP_MOYASAR_SECRET_KEY": ("moyasar_secret_key", _opt_str),
    "DCP_MOYASAR_WEBHOOK_TOKEN": ("moyasar_webhook_token", _opt_str),
    "DCP_MOYASAR_API_URL": ("moyasar_api_url", _str),
    "DCP_MOYASAR_CHECKOUT_ORIGIN": ("moyasar_checkout_origin", _str),
    "DCP_MOYASAR_TIMEOUT_S": ("moyasar_timeout_s", _seconds),
    "DCP_PUBLIC_URL": ("public_url", _opt_str),
    "DCP_TOPUP_MIN_HALALA": ("topup_min_halala", _int(1, 10**12)),
    "DCP_TOPUP_MAX_HALALA": ("topup_max_halala", _int(1, 10**12)),
    "DCP_TOPUP_RECONCILE_AFTER_S": ("topup_reconcile_after_s", _int(0, 86400 * 30)),
    "DCP_TOPUP_SWEEP_INTERVAL_S": ("topup_sweep_interval_s", _seconds),
    "DCP_TOPUP_SWEEP_LIMIT": ("topup_sweep_limit", _int(1, 500)),
    "DCP_TOPUP_INVOICE_TTL_S": ("topup_invoice_ttl_s", _int(60, 86400 * 30)),
    "DCP_SNAPSHOT_DIR": ("snapshot_dir", _str),
    "DCP_SNAPSHOT_EVERY_EVENTS": ("snapshot_every_events", _int(1, 10**9)),
    "DCP_SNAPSHOT_EVERY_S": ("snapshot_every_s", _seconds),
    "DCP_HISTORY_IN_MEMORY": ("history_in_memory", _int(0, 10**9)),
}

# DCP_RATE_LIMIT_SUBMIT=60/60 and so on: "<requests>/<seconds>".
RATE_ENV_PREFIX = "DCP_RATE_LIMIT_"


def parse_rate(name: str, raw: str) -> RateLimit:
    """`"60/60"` -> RateLimit(60, 60.0); raises ConfigError on anything else."""
    try:
        n, _, period = raw.partition("/")
        limit, period_s = int(n), float(period or "60")
    except ValueError:
        raise ConfigError(f"{name}: expected <requests>/<seconds>, got {raw!r}") from None
    if limit < 1 or not (math.isfinite(period_s) and period_s > 0):
        raise ConfigError(f"{name}: limit and period must be positive, got {raw!r}")
    return RateLimit(limit, period_s)


def load_config(environ: Mapping[str, str], flags: Mapping[str, Any] | None = None) -> ServerConfig:
    """Settings from `environ`, then `flags` (field name -> value; None = not given) on top.

    Raises ConfigError naming the variable when a value cannot be parsed.
    """
    values: dict[str, Any] = {}
    for var, (field, parse) in ENV.items():
        if var in environ:
            values[field] = parse(var, environ[var])
    table = dict(DEFAULT_RATE_LIMITS)
    for var, raw in environ.items():
        if var.startswith(RATE_ENV_PREFIX):
            cls = var[len(RATE_ENV_PREFIX) :].lower()
            if cls not in table:
                raise ConfigError(f"{var}: unknown rate-limit class {cls!r}")
            table[cls] = parse_rate(var, raw)
    values["rate_limit_table"] = table
    for field, value in (flags or {}).items():
        if value is not None:
            values[field] = value
    try:
        config = msgspec.convert(values, ServerConfig)
    except msgspec.ValidationError as e:
        raise ConfigError(str(e)) from e
    try:
        is_postgres(config.db)
    except StoreError as e:  # neither a path nor a postgresql:// URL
        raise ConfigError(f"DCP_DB / --db: {e}") from None
    if config.online_s > config.stale_s:
        raise ConfigError("DCP_ONLINE_S must not exceed DCP_STALE_S")
    if config.topup_min_halala > config.topup_max_halala:
        raise ConfigError("DCP_TOPUP_MIN_HALALA must not exceed DCP_TOPUP_MAX_HALALA")
    if not config.moyasar_api_url.startswith(("https://", "http://")):
        raise ConfigError("DCP_MOYASAR_API_URL must be an http(s) URL")
    if not _ORIGIN.fullmatch(config.moyasar_checkout_origin):
        raise ConfigError("DCP_MOYASAR_CHECKOUT_ORIGIN must be an origin, e.g. https://host")
    return config
