"""GET /metrics through a real uvicorn: the text parses with prometheus_client's own parser,
the figures move with real traffic, no label names an id, and access is loopback or token."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dcp_http.config import DEFAULT_RATE_LIMITS, RateLimit
from dcp_projections.state import GENESIS_PRICES

from ._live import Api, serve

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(api: Api) -> Samples:
    r = api.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_submit_moves_the_counters_and_the_held_gauge(api):
    """A submit raises the submit counter by one and the held gauge by the job's reserve."""
    renter = api.renter(credit_halala=100_000)
    before = scrape(api)
    job = api.submit(renter)["job"]
    after = scrape(api)

    submit = {"method": "POST", "route": "/api/jobs/submit", "status": "201"}
    assert value(after, "dcp_http_requests_total", **submit) == (
        value(before, "dcp_http_requests_total", **submit) + 1
    )
    assert value(after, "dcp_http_request_duration_seconds_count", **submit) == (
        value(before, "dcp_http_request_duration_seconds_count", **submit) + 1
    )
    held = value(after, "dcp_renter_held_halala") - value(before, "dcp_renter_held_halala")
    assert held == job["cost_halala"] > 0
    available = value(after, "dcp_renter_available_halala")
    assert available == value(before, "dcp_renter_available_halala") - job["cost_halala"]
    assert available == api.balance(renter)["available_halala"]
    accepted = {"command": "SubmitJob", "result": "accepted"}
    assert value(after, "dcp_commands_total", **accepted) == (
        value(before, "dcp_commands_total", **accepted) + 1
    )
    queued = value(before, "dcp_jobs", status="queued")
    assert value(after, "dcp_jobs", status="queued") == queued + 1
    appended = value(after, "dcp_store_events_appended_total")
    assert appended > value(before, "dcp_store_events_appended_total")
    # The genesis prices are appended while the service opens, before metrics observe it.
    head = value(after, "dcp_log_head_seq")
    assert appended + len(GENESIS_PRICES) == head == api.head_seq()
    assert value(after, "dcp_store_group_commits_total", result="ok") >= 1
    assert value(after, "dcp_store_commit_duration_seconds_count") >= 1
    assert value(after, "dcp_command_batch_size_count") >= 1
    assert value(after, "dcp_ledger_sum_halala") == 0
    assert value(after, "dcp_ledger_invariants_ok") == 1
    assert value(after, "dcp_deposits_halala") == 100_000
    # The money gauges account for every halala: what came in is where it is now.
    kinds = ("renter_available", "renter_held", "provider_earnings", "provider_payout_pending")
    kinds += ("platform_revenue", "payouts", "platform_adjustments")
    placed = sum(value(after, f"dcp_{k}_halala") for k in kinds)
    assert placed == value(after, "dcp_deposits_halala")
    assert value(after, "dcp_projection_lag_events") == 0


def test_refusals_and_providers_are_counted_by_code_and_state(api):
    """A refused submit counts under its refusal code; a provider shows as online, approved."""
    poor = api.renter()
    before = scrape(api)
    refused = api.submit(poor, status=402)
    api.provider()
    after = scrape(api)
    labels = {"command": "SubmitJob", "result": refused["code"]}
    assert value(after, "dcp_commands_total", **labels) == (
        value(before, "dcp_commands_total", **labels) + 1
    )
    assert value(after, "dcp_providers", state="online", approval_status="approved") == 1
    assert value(after, "dcp_providers", state="offline", approval_status="pending") == 0


def test_no_label_carries_an_id_or_a_key(api):
    """Routes are templates: ids and keys in paths never become label values."""
    renter = api.renter(credit_halala=100_000)
    provider = api.provider()
    job = api.submit(renter)["job"]
    api.ok("GET", f"/api/jobs/{job['job_id']}", headers=renter["headers"])
    api.ok("GET", f"/api/providers/{provider['api_key']}/jobs")
    api.get(f"/no/such/{job['job_id']}")
    samples = scrape(api)
    secrets = [renter["renter_id"], provider["provider_id"], job["job_id"], provider["api_key"]]
    labels = {v for _, ls in samples for _, v in ls}
    assert not [v for v in labels for s in secrets if s in v]
    routes = {dict(ls).get("route") for name, ls in samples if name == "dcp_http_requests_total"}
    assert {"/api/jobs/{job_id}", "/api/providers/{key}/jobs", "unmatched"} <= routes


def test_sweeps_count_what_they_ended(tmp_path: Path, request):
    """A job no provider takes before the queue timeout is failed by a sweep, and counted."""
    with serve(tmp_path / "dcp.db", queue_timeout_s=1) as server:
        api = Api(server)
        request.addfinalizer(api.close)
        api.allow_image()
        renter = api.renter(credit_halala=100_000)
        job = api.submit(renter)["job"]
        deadline = time.monotonic() + 20
        path = f"/api/jobs/{job['job_id']}"
        while api.ok("GET", path, headers=renter["headers"])["job"]["status"] != "failed":
            assert time.monotonic() < deadline, "the sweep never failed the job"
            time.sleep(0.1)
        samples = scrape(api)
    assert value(samples, "dcp_sweep_events_total", type="job.failed") == 1
    assert value(samples, "dcp_sweep_runs_total", result="ok") >= 1
    assert value(samples, "dcp_jobs", status="failed") == 1
    assert value(samples, "dcp_renter_held_halala") == 0
    assert value(samples, "dcp_renter_available_halala") == 100_000


def test_rate_limit_refusals_are_counted_by_class(tmp_path: Path, request):
    """A 429 counts under its rate-limit class."""
    limits = dict(DEFAULT_RATE_LIMITS)
    limits["register"] = RateLimit(10_000, 3600.0)
    limits["submit"] = RateLimit(1, 3600.0)
    with serve(tmp_path / "dcp.db", rate_limit_table=limits) as server:
        api = Api(server)
        request.addfinalizer(api.close)
        api.allow_image()
        renter = api.renter(credit_halala=100_000)
        api.submit(renter)
        api.submit(renter, status=429)
        samples = scrape(api)
    assert value(samples, "dcp_http_rate_limited_total", **{"class": "submit"}) == 1
    assert (
        value(
            samples,
            "dcp_http_requests_total",
            method="POST",
            route="/api/jobs/submit",
            status="429",
        )
        == 1
    )


def _outside_address() -> str | None:
    """An IPv4 address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        addr = str(s.getsockname()[0])
    return None if addr.startswith("127.") else addr


@pytest.mark.parametrize("token", [None, "metrics-token-0123456789"])
def test_access_is_loopback_or_token(tmp_path: Path, token: str | None):
    """Loopback scrapes freely; from another address only with the bearer token."""
    outside = _outside_address()
    if outside is None:
        pytest.skip("this machine has no non-loopback IPv4 address to scrape from")
    with serve(tmp_path / "dcp.db", host="0.0.0.0", metrics_token=token) as server:
        port = server.config.port
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 200
        url = f"http://{outside}:{port}/metrics"
        anonymous = httpx.get(url)
        wrong = httpx.get(url, headers={"authorization": "Bearer nope"})
        right = httpx.get(url, headers={"authorization": f"Bearer {token}"}) if token else None
        posted = httpx.post(f"http://127.0.0.1:{port}/metrics")
    if token is None:
        assert (anonymous.status_code, anonymous.json()["code"]) == (403, "forbidden")
    else:
        assert (anonymous.status_code, anonymous.json()["code"]) == (401, "unauthorized")
        assert right is not None and right.status_code == 200
        assert "dcp_http_requests_total" in right.text
    assert wrong.status_code == (401 if token else 403)
    assert set(wrong.json()) >= {"error", "code"}
    assert posted.status_code == 405 and posted.json()["code"] == "method_not_allowed"


def test_snapshot_gauges_follow_the_snapshots_written(tmp_path, request):
    """With snapshots every 20 events, the gauges name the newest file: its size on disk, its
    age, and the events a restart would fold after it; without snapshots, enabled is 0."""
    with serve(tmp_path / "dcp.db", snapshot_every_events=20) as server:
        api = Api(server)
        request.addfinalizer(api.close)
        api.allow_image()
        renter = api.renter(credit_halala=1_000_000)
        for _ in range(25):
            api.submit(renter)
        directory = tmp_path / "dcp.db.snapshots"
        deadline = time.monotonic() + 10
        while not list(directory.glob("snapshot-*.msgpack")) and time.monotonic() < deadline:
            time.sleep(0.05)
        samples = scrape(api)
        newest = max(directory.glob("snapshot-*.msgpack"))
        seq = int(newest.stem.removeprefix("snapshot-"))
        assert value(samples, "dcp_snapshot_enabled") == 1
        assert value(samples, "dcp_snapshot_size_bytes") == newest.stat().st_size > 0
        assert 0 <= value(samples, "dcp_snapshot_age_seconds") < 60
        head = value(samples, "dcp_log_head_seq")
        assert value(samples, "dcp_snapshot_lag_events") == head - seq < head
    with serve(tmp_path / "off.db", snapshot_dir="off") as server:
        off = Api(server)
        request.addfinalizer(off.close)
        samples = scrape(off)
        assert value(samples, "dcp_snapshot_enabled") == 0
        assert value(samples, "dcp_snapshot_lag_events") == value(samples, "dcp_log_head_seq")
