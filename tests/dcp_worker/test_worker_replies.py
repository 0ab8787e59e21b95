"""The API's replies as the worker decodes them (msgspec Structs), and the one Backoff.

A reply of an unexpected shape is ApiReplyInvalid, logged with the call it came from and
counted in the metrics; the loops retry it like an unreachable API and never stop. The client
tests talk to a real uvicorn serving whatever body a test sets; the last test runs the whole
worker (and Docker) against the stub API answering garbage on every route it calls.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dcp_worker.api import ApiClient, parse_job
from dcp_worker.backoff import Backoff
from dcp_worker.errors import ApiError, ApiReplyInvalid, ApiUnavailable

KEY = "dcp-provider-" + "b" * 32


class Canned:
    """Answers every request with the status, body and content type a test sets."""

    def __init__(self) -> None:
        self.status = 200
        self.body = b"{}"
        self.media_type = "application/json"

    async def answer(self, request: Request) -> Response:
        return Response(self.body, status_code=self.status, media_type=self.media_type)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self.answer, methods=["GET", "POST"])])


@pytest.fixture
def canned(kit: Any) -> Iterator[tuple[Canned, str]]:
    c = Canned()
    server = kit.server(c.app())
    server.start()
    try:
        yield c, server.url
    finally:
        server.stop()


async def _call(url: str, call: str, errors: list[tuple[str, str]]) -> Any:
    api = ApiClient(url, KEY, 5.0, on_error=lambda c, kind: errors.append((c, kind)))
    try:
        if call == "me":
            return await api.me()
        if call == "heartbeat":
            return await api.heartbeat({"gpus": []})
        if call == "jobs":
            return await api.leased_jobs()
        return await api.send_result({"job_id": "j", "attempt": 1})
    finally:
        await api.aclose()


BAD = [
    ("me", b"<html>welcome to the hotel wifi</html>"),
    ("me", b""),
    ("me", b"{}"),  # no provider_id
    ("me", b'{"provider_id": ""}'),
    ("me", b'{"provider_id": 5}'),
    ("me", b'{"provider_id": "p", "gpu_count": -1}'),
    ("me", b'{"provider_id": "p", "gpu_count": true}'),
    ("heartbeat", b"[]"),
    ("heartbeat", b'{"cancel_jobs": "j1"}'),
    ("heartbeat", b'{"cancel_jobs": [{"job_id": 1}]}'),
    ("heartbeat", b'{"paused": "no"}'),
    ("heartbeat", b"null"),
    ("jobs", b"[]"),  # a bare list: the API answers {"jobs": [...]}
    ("jobs", b'{"jobs": {}}'),
    ("jobs", b"{}"),
    ("result", b"{}"),
    ("result", b'{"job": {"job_id": "j"}}'),
    ("result", b'{"job": {"job_id": "j", "status": "completed"}, "settlement": 5}'),
]


@pytest.mark.parametrize(("call", "body"), BAD)
async def test_a_reply_of_another_shape_is_invalid_logged_and_counted(canned, call, body):
    """Every bad shape is ApiReplyInvalid (an ApiUnavailable, so the loops retry it), logged as
    `api_reply_invalid` with the call, and counted as kind `invalid_reply`."""
    c, url = canned
    c.body = body
    errors: list[tuple[str, str]] = []
    with structlog.testing.capture_logs() as logs, pytest.raises(ApiReplyInvalid) as caught:
        await _call(url, call, errors)
    assert isinstance(caught.value, ApiUnavailable)
    assert errors == [(call, "invalid_reply")]
    [line] = [e for e in logs if e["event"] == "api_reply_invalid"]
    assert line["call"] == call and line["log_level"] == "error" and line["error"]


async def test_the_platforms_shapes_decode_and_extra_fields_are_ignored(canned):
    """The replies dcp_http gives (with fields the worker does not read) decode."""
    c, url = canned
    errors: list[tuple[str, str]] = []
    c.body = json.dumps(
        {"provider_id": "prov_1", "gpu_count": 2, "approval_status": "approved", "name": "x"}
    ).encode()
    me = await _call(url, "me", errors)
    assert (me.provider_id, me.gpu_count, me.paused) == ("prov_1", 2, False)
    c.body = json.dumps(
        {
            "timestamp": "2026-12-02T00:00:00Z",
            "approval_status": "approved",
            "paused": True,
            "suspended": False,
            "cancel_jobs": ["job_a", "job_b"],
        }
    ).encode()
    hb = await _call(url, "heartbeat", errors)
    assert hb.cancel_jobs == ["job_a", "job_b"] and hb.paused is True
    lease = {
        "job_id": "job_a",
        "status": "assigned",
        "attempt": 1,
        "container_spec": {"image": "i:1", "command": ["true"], "env": {}},
        "gpu_requirements": {"gpu_type": "any", "min_vram_gb": 0, "gpu_count": 1},
        "max_duration_seconds": 60,
        "rate_halala_per_hour": 100,
    }
    c.body = json.dumps({"jobs": [lease, {"job_id": 7}]}).encode()
    raw = await _call(url, "jobs", errors)
    assert parse_job(raw[0]).key == ("job_a", 1)
    with pytest.raises(ApiReplyInvalid):  # decoded one by one: the bad one spoils only itself
        parse_job(raw[1])
    c.body = json.dumps(
        {
            "job": {"job_id": "j", "status": "completed", "cost_halala": 5},
            "outcome": "completed",
            "settlement": {"provider_earned_halala": 85, "platform_fee_halala": 15},
        }
    ).encode()
    answer = await _call(url, "result", errors)
    assert answer.settlement.provider_earned_halala == 85
    assert errors == []


@pytest.mark.parametrize(
    ("status", "body", "media", "want"),
    [
        (
            429,
            b'{"error": "slow down", "code": "rate_limited", "retry_after_seconds": 7}',
            "application/json",
            ("rate_limited", "slow down", 7.0),
        ),
        (429, b'{"code": "rate_limited", "retry_after_seconds": 1e9}', "application/json",
         ("rate_limited", "Too Many Requests", 300.0)),
        (409, b'{"error": "moved on", "code": "lease_lost"}', "application/json",
         ("lease_lost", "moved on", None)),
        (503, b"<html>bad gateway</html>", "text/html",
         ("http_error", "Service Unavailable", None)),
        (400, b'{"code": 5, "error": "x"}', "application/json",
         ("http_error", "Bad Request", None)),
        (500, b"", "application/json", ("http_error", "Internal Server Error", None)),
    ],
)  # fmt: skip
async def test_error_bodies_decode_or_fall_back_to_the_status(canned, status, body, media, want):
    """An error body gives its code, message and capped retry_after; one of another shape
    still gives its status, with the reason phrase, so the status decides what happens."""
    c, url = canned
    c.status, c.body, c.media_type = status, body, media
    errors: list[tuple[str, str]] = []
    with pytest.raises(ApiError) as caught:
        await _call(url, "heartbeat", errors)
    e = caught.value
    assert (e.status, (e.code, e.message, e.retry_after_s)) == (status, want)
    assert errors == [("heartbeat", str(status))]


def _lease(**change: Any) -> dict[str, Any]:
    lease: dict[str, Any] = {
        "job_id": "j1",
        "attempt": 1,
        "container_spec": {"image": "i:1", "command": ["true"], "env": {}},
        "gpu_requirements": {"gpu_count": 1},
        "max_duration_seconds": 60,
    }
    for key, value in change.items():
        if key in ("image", "command", "env"):
            lease["container_spec"][key] = value
        elif key == "gpu_count":
            lease["gpu_requirements"][key] = value
        elif value is None:
            del lease[key]
        else:
            lease[key] = value
    return lease


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"job_id": ""}, "job_id"),
        ({"job_id": None}, "job_id"),
        ({"attempt": True}, "attempt"),
        ({"attempt": -1}, "attempt"),
        ({"attempt": "1"}, "attempt"),
        ({"image": ""}, "image"),
        ({"command": [1, 2]}, "command"),
        ({"env": {"A": 1}}, "env"),
        ({"env": ["A=1"]}, "env"),
        ({"max_duration_seconds": 0}, "max_duration_seconds"),
        ({"gpu_count": -1}, "gpu_count"),
        ({"container_spec": "busybox"}, "container_spec"),
        ({"container_spec": None}, "container_spec"),
    ],
)
def test_a_lease_that_cannot_run_as_given_names_its_field(change, field):
    """A leased job of the wrong shape is refused with the field named, never half-run."""
    with pytest.raises(ApiReplyInvalid, match=field):
        parse_job(json.dumps(_lease(**change)).encode())


def test_a_string_command_runs_through_the_shell_and_defaults_fill_in():
    job = parse_job(json.dumps(_lease(command="echo hi", gpu_requirements=None)).encode())
    assert job.command == ["/bin/sh", "-c", "echo hi"] and job.gpu_count == 1
    assert parse_job(json.dumps(_lease(command=[])).encode()).command is None


# ----- the backoff -------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.slept: list[float] = []

    async def sleep(self, s: float) -> None:
        self.slept.append(s)


async def test_backoff_doubles_to_its_cap_and_resets():
    """Without jitter the delays are first, 2x, 4x ... then the cap; reset starts over."""
    r = Recorder()
    b = Backoff(0.5, 5.0, jitter=0, sleep=r.sleep)
    for _ in range(7):
        await b.wait()
    assert r.slept == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert b.failures == 7
    b.reset()
    assert (b.next_delay(), b.failures) == (0.5, 1)


async def test_backoff_jitter_stays_in_its_band_and_under_the_cap():
    """Each delay is its base times a draw in [1-j, 1+j], and never above the cap."""
    draws: list[tuple[float, float]] = []

    def uniform(lo: float, hi: float) -> float:
        draws.append((lo, hi))
        return hi  # the top of the band: the cap must still hold

    b = Backoff(1.0, 3.0, jitter=0.2, uniform=uniform)
    assert [b.next_delay() for _ in range(4)] == [1.2, 2.4, 3.0, 3.0]
    assert set(draws) == {(0.8, 1.2)}
    rng = random.Random(7)
    b = Backoff(2.0, 30.0, uniform=rng.uniform)
    delays = [b.next_delay() for _ in range(12)]
    bases = [min(30.0, 2.0 * 2**i) for i in range(12)]
    assert all(
        0.8 * base <= d <= min(30.0, 1.2 * base) for d, base in zip(delays, bases, strict=True)
    )
    assert len(set(delays[:4])) == 4  # jittered below the cap: no two alike


async def test_backoff_waits_at_least_what_the_api_asked():
    """A 429's retry_after wins over a shorter delay; a shorter one does not cut the delay."""
    r = Recorder()
    b = Backoff(0.5, 60.0, jitter=0, sleep=r.sleep)
    assert await b.wait(at_least_s=7.0) == 7.0
    assert await b.wait(at_least_s=0.1) == 1.0
    assert r.slept == [7.0, 1.0]


@pytest.mark.parametrize(
    "kw",
    [
        {"first_s": 0, "cap_s": 1},
        {"first_s": 2, "cap_s": 1},
        {"first_s": 1, "cap_s": 2, "jitter": 1.0},
        {"first_s": 1, "cap_s": 2, "jitter": -0.1},
        {"first_s": 1, "cap_s": 2, "factor": 0.5},
    ],
)
def test_backoff_refuses_settings_that_would_not_back_off(kw):
    with pytest.raises(ValueError):
        Backoff(**kw)


# ----- the whole worker, fed garbage ---------------------------------------------------------


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
async def test_the_worker_survives_garbage_on_every_route(stub, make_settings, kit):
    """Garbage from /me, the heartbeat, the poll and the result route is retried until the
    API answers properly again: the loops keep running, an unreadable lease is skipped, and
    the job beside it runs and is reported once."""
    api, _ = stub
    api.garble = {
        "me": b"<html>maintenance</html>",
        "heartbeat": b'{"cancel_jobs": "all"}',
        "jobs": b'{"jobs": "none"}',
        "result": b"[]",
    }
    api.unreadable_leases = [{"job_id": "job_bad", "attempt": "one"}]
    job_id = api.submit(["echo", "survived"])
    with structlog.testing.capture_logs() as logs:
        async with kit.running(make_settings()) as worker:
            await kit.until(lambda: api.garbled.get("me", 0) >= 2, 20)  # retried, not crashed
            del api.garble["me"]
            await kit.until(lambda: api.garbled.get("heartbeat", 0) >= 3, 20)
            await kit.until(lambda: api.garbled.get("jobs", 0) >= 3, 20)
            assert not api.starts  # nothing was run from a list it could not read
            del api.garble["jobs"]
            await kit.until(lambda: api.garbled.get("result", 0) >= 2, 30)
            assert worker.spool.list()  # the result waits in the spool while replies are bad
            del api.garble["result"], api.garble["heartbeat"]
            await kit.until(lambda: api.accepted(job_id), 30)
            await kit.until(lambda: not worker.spool.list(), 10)
            heartbeats = len(api.heartbeats)
            await kit.until(lambda: len(api.heartbeats) > heartbeats, 5)  # still beating
    [r] = api.accepted(job_id)
    assert (r["outcome"], r["stdout"]) == ("completed", "survived\n")
    assert "job_bad" not in {j for _, j, _ in api.starts}
    invalid = {e["call"] for e in logs if e["event"] == "api_reply_invalid"}
    assert invalid == {"me", "heartbeat", "jobs", "result"}
    assert any(e["event"] == "job_unreadable" for e in logs)
    assert not [e for e in logs if e["event"] in ("heartbeat_error", "poll_error")]
