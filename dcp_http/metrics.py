"""`GET /metrics`: the node's figures in Prometheus' text format (docs/operations.md).

One `CollectorRegistry` per app, never the process-global one, so each node (and each app a
test builds) exposes only its own. Three sources feed it:

- the request context middleware (dcp_http.middleware, its observer): count and latency by
  method, route template and status, and the rate-limit refusals by class;
- observers the service and the store call (dcp_app.observer, dcp_events.store.CommitObserver):
  command batches and their commands, sweeps and what they ended, group commits;
- the read models, read at each scrape (`Queries.gauges`): jobs by status, providers by state,
  and halala summed by account kind, so a gauge is never a second copy of the ledger.

No label carries a renter, provider or job id: routes are templates, and everything else is a
fixed set (command names, refusal codes, event types, statuses). The snapshot gauges (age,
size, events since) are set at each scrape too, from the service.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from dcp_events.store import GroupCommit
from dcp_http.errors import ApiError, Forbidden, Unauthorized, encode_error
from dcp_http.ratelimit import classify
from dcp_http.service import ServiceAdapter
from dcp_projections.state import ENDED, LEASED

METRICS_PATH = "/metrics"
UNMATCHED = "unmatched"  # the route label of a path no route knows (bounded cardinality)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
JOB_STATUSES = ("queued", *sorted(LEASED), *sorted(ENDED))
PROVIDER_STATES = ("online", "stale", "offline")
APPROVALS = ("pending", "approved")
# Powers of two up to the store's and the service's bounds (MAX_BATCH 512, MAX_GROUP_UNITS 4096).
_COUNT_BUCKETS = tuple(float(2**i) for i in range(13))
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Every metric of one API node, and the observer hooks that move them."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        labels = ("method", "route", "status")
        self.requests = Counter(
            "dcp_http_requests_total", "HTTP requests answered", labels, registry=r
        )
        self.latency = Histogram(
            "dcp_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response",
            labels,
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._command_children: dict[tuple[str, str], Any] = {}
        self.in_progress = Gauge(
            "dcp_http_requests_in_progress", "Requests being answered now", registry=r
        )
        self.rate_limited = Counter(
            "dcp_http_rate_limited_total",
            "Requests refused with 429, by rate-limit class",
            ("class",),
            registry=r,
        )
        self.queue_depth = Gauge(
            "dcp_command_queue_depth", "Commands waiting for the command loop", registry=r
        )
        self.batch_commands = Histogram(
            "dcp_command_batch_size",
            "Commands decided together in one batch",
            buckets=_COUNT_BUCKETS,
            registry=r,
        )
        self.batch_events = Histogram(
            "dcp_command_batch_events",
            "Events one command batch appended",
            buckets=(0.0, *_COUNT_BUCKETS),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "dcp_command_batch_duration_seconds",
            "Deciding and durably appending one command batch",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.commands = Counter(
            "dcp_commands_total",
            "Commands decided, by command and result (accepted or the refusal's code)",
            ("command", "result"),
            registry=r,
        )
        self.sweeps = Counter(
            "dcp_sweep_runs_total", "Sweep runs, by result (ok, failed)", ("result",), registry=r
        )
        self.sweep_events = Counter(
            "dcp_sweep_events_total",
            "Events the sweeps appended (lease expiries, deadlines, queue timeouts), by type",
            ("type",),
            registry=r,
        )
        self.commits = Counter(
            "dcp_store_group_commits_total",
            "Group commits of the event store, by result (ok, failed)",
            ("result",),
            registry=r,
        )
        self.appended = Counter(
            "dcp_store_events_appended_total", "Events durably appended", registry=r
        )
        self.group_appends = Histogram(
            "dcp_store_group_appends",
            "Appends written in one group commit",
            buckets=_COUNT_BUCKETS,
            registry=r,
        )
        self.group_events = Histogram(
            "dcp_store_group_events",
            "Events written in one group commit",
            buckets=(0.0, *_COUNT_BUCKETS, 20_000.0),
            registry=r,
        )
        self.group_seconds = Histogram(
            "dcp_store_group_write_duration_seconds",
            "One group commit's transaction, BEGIN to COMMIT",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "dcp_store_commit_duration_seconds",
            "One COMMIT, which waits for the fsync",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.jobs = Gauge("dcp_jobs", "Jobs by status", ("status",), registry=r)
        self.providers = Gauge(
            "dcp_providers",
            "Providers by heartbeat state and approval",
            ("state", "approval_status"),
            registry=r,
        )
        self.providers_paused = Gauge("dcp_providers_paused", "Paused providers", registry=r)
        self.providers_suspended = Gauge(
            "dcp_providers_suspended", "Suspended providers", registry=r
        )
        money = {
            "renter_available_halala": "Halala renters can spend (sum of every available account)",
            "renter_held_halala": "Halala held for queued and running jobs (sum)",
            "provider_earnings_halala": "Halala providers have earned and not withdrawn (sum)",
            "provider_payout_pending_halala": "Halala in requested, undecided payouts (sum)",
            "platform_revenue_halala": "The platform's fees, all time",
            "deposits_halala": "Halala credited to renters, all time",
            "payouts_halala": "Halala paid out to providers, all time",
            "platform_adjustments_halala": "Balance of platform:adjustments (sandbox top-ups)",
        }
        self.money = {k: Gauge(f"dcp_{k}", text, registry=r) for k, text in money.items()}
        self.ledger_sum = Gauge(
            "dcp_ledger_sum_halala", "Sum of every account's balance: 0 in sound books", registry=r
        )
        self.negative = Gauge(
            "dcp_ledger_negative_accounts",
            "Renter or provider accounts below zero: 0 in sound books",
            registry=r,
        )
        self.invariants_ok = Gauge(
            "dcp_ledger_invariants_ok",
            "1 when the books sum to zero and no renter or provider account is negative",
            registry=r,
        )
        self.head_seq = Gauge("dcp_log_head_seq", "The event log's last sequence", registry=r)
        self.projection_lag = Gauge(
            "dcp_projection_lag_events", "Events the read models have not folded yet", registry=r
        )
        self.snapshot_enabled = Gauge(
            "dcp_snapshot_enabled", "1 when this node writes snapshots of its state", registry=r
        )
        self.snapshot_age = Gauge(
            "dcp_snapshot_age_seconds",
            "Seconds since the newest snapshot was written (0 before the first)",
            registry=r,
        )
        self.snapshot_size = Gauge(
            "dcp_snapshot_size_bytes", "Size of the newest snapshot file", registry=r
        )
        self.snapshot_lag = Gauge(
            "dcp_snapshot_lag_events",
            "Events after the newest snapshot: what a restart would fold (all of them before one)",
            registry=r,
        )
        for status in JOB_STATUSES:
            self.jobs.labels(status)
        for state in PROVIDER_STATES:
            for approval in APPROVALS:
                self.providers.labels(state, approval)

    # --- hooks -------------------------------------------------------------------------------

    def attach(self, service: ServiceAdapter) -> None:
        """Observe `service`: its command loop, its sweeps and its store's group commits."""
        service.ledger.observer = self
        if hasattr(service.store, "on_commit"):
            service.store.on_commit = self.group_committed
        self.queue_depth.set_function(lambda: service.ledger.queue_depth)

    def batch_done(
        self, decided: Sequence[tuple[str, str | None]], events: int, seconds: float
    ) -> None:
        self.batch_commands.observe(len(decided))
        self.batch_events.observe(events)
        self.batch_seconds.observe(seconds)
        counts: dict[tuple[str, str], int] = {}
        for command, refused in decided:
            key = (command, refused or "accepted")
            counts[key] = counts.get(key, 0) + 1
        children = self._command_children
        for key, n in counts.items():
            child = children.get(key)
            if child is None:  # `labels()` costs ~4 us: one per label pair, kept
                child = children[key] = self.commands.labels(*key)
            child.inc(n)

    def swept(self, ended: Sequence[str], failed: bool) -> None:
        self.sweeps.labels("failed" if failed else "ok").inc()
        for event_type in ended:
            self.sweep_events.labels(event_type).inc()

    def group_committed(self, stats: GroupCommit) -> None:
        # Runs on the store's writer thread; prometheus_client's metrics take their own locks.
        self.commits.labels("failed" if stats.failed else "ok").inc()
        if stats.failed:
            return
        self.appended.inc(stats.events)
        self.group_appends.observe(stats.appends)
        self.group_events.observe(stats.events)
        self.group_seconds.observe(stats.write_s)
        self.commit_seconds.observe(stats.commit_s)

    # --- dcp_http.middleware.RequestObserver: the request context middleware calls these ----

    def request_started(self) -> None:
        self.in_progress.inc()

    def request_finished(
        self, scope: Scope, route: str | None, status: int, seconds: float
    ) -> None:
        """Count and time one request by its route template (UNMATCHED: no route knew it)."""
        self.in_progress.dec()
        if not route:
            route = METRICS_PATH if scope["path"] == METRICS_PATH else UNMATCHED
        self.request_done(scope["method"], route, status, seconds)
        if status == 429:
            self.rate_limited.labels(classify(scope["method"], scope["path"])).inc()

    def request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method if method in _METHODS else "other", route, status)
        children = self._request_children.get(key)
        if children is None:
            # `labels()` validates and locks on every call (~4 us); the label sets are few
            # (methods x route templates x statuses), so each pair of children is kept.
            labels = (key[0], route, str(status))
            children = (self.requests.labels(*labels), self.latency.labels(*labels))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    # --- scrape ------------------------------------------------------------------------------

    async def refresh(self, service: ServiceAdapter) -> None:
        """Set the ledger's gauges from the read models, as of now."""
        g = await service.queries.gauges(service.ledger.clock(), service.settings)
        for status in {*JOB_STATUSES, *g["jobs"]}:
            self.jobs.labels(status).set(g["jobs"].get(status, 0))
        counts = {(p["state"], p["approval_status"]): p["count"] for p in g["providers"]}
        for state in PROVIDER_STATES:
            for approval in APPROVALS:
                self.providers.labels(state, approval).set(counts.get((state, approval), 0))
        self.providers_paused.set(sum(p["paused"] for p in g["providers"]))
        self.providers_suspended.set(sum(p["suspended"] for p in g["providers"]))
        for name, gauge in self.money.items():
            gauge.set(g[name])
        self.ledger_sum.set(g["sum_halala"])
        self.negative.set(g["negative_accounts"])
        self.invariants_ok.set(int(g["sum_halala"] == 0 and g["negative_accounts"] == 0))
        self.head_seq.set(g["head_seq"])
        self.projection_lag.set(max(0, g["head_seq"] - g["projection_seq"]))
        ledger = service.ledger
        snap = ledger.last_snapshot
        self.snapshot_enabled.set(int(ledger.snapshot_dir is not None))
        self.snapshot_age.set(0 if snap is None else max(0.0, time.time() - snap[1]))
        self.snapshot_size.set(0 if snap is None else snap[2])
        self.snapshot_lag.set(max(0, ledger.state.seq - (0 if snap is None else snap[0])))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_access(request: Request, token: str | None) -> None:
    """Let a scrape through, or raise: open to loopback clients; from elsewhere only with
    `Authorization: Bearer <token>` (DCP_METRICS_TOKEN), and never when no token is set."""
    given = request.headers.get("authorization", "")
    if token is not None and given:
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            return
        raise Unauthorized("wrong metrics token")
    if _is_loopback(request.client.host if request.client else None):
        return
    if token is None:
        raise Forbidden("metrics are served to loopback only; set DCP_METRICS_TOKEN to scrape")
    raise Unauthorized("metrics need Authorization: Bearer <DCP_METRICS_TOKEN>")


async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics: refresh the ledger's gauges, then the text exposition."""
    try:
        check_access(request, request.app.state.config.metrics_token)
    except ApiError as e:
        status, body, headers = encode_error(e)
        return Response(body, status, headers, "application/json")
    metrics: Metrics = request.app.state.metrics
    await metrics.refresh(request.app.state.service)
    return Response(metrics.render(), 200, media_type=CONTENT_TYPE_LATEST)
