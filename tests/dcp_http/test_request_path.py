"""The API's own request path: the access line written without structlog's chain, the
endpoint answered by the body guard, and uvicorn's head and body sent in one write."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

import structlog
from starlette.responses import Response

from dcp_http import logs
from dcp_http.logs import configure_logging
from dcp_http.routing import json_headers
from dcp_http.server import OneWriteTransport

from ._live import Api


def _lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(x) for x in buf.getvalue().splitlines() if x]


def test_access_line_is_the_structlog_chains_line():
    """The same keys in the same order, the same values (the timestamp aside), the bound
    context merged in and every secret scrubbed, whichever way the line is written."""
    buf = io.StringIO()
    configure_logging(buf, cache=False)
    writer = logs.access_writer
    assert writer is not None
    fields = {
        "method": "GET",
        "route": "/api/providers/{key}/jobs",
        "path": "/api/providers/dcp-provider-0123456789abcdef/jobs",
        "status": 200,
        "duration_ms": 1.25,
        "request_id": "r-1",
        "actor": None,
    }
    structlog.contextvars.bind_contextvars(request_id="r-1", tenant="t-9")
    try:
        structlog.get_logger("dcp_http.access").info("http_request", **fields)
        writer.info("http_request", dict(fields))
    finally:
        structlog.contextvars.unbind_contextvars("request_id", "tenant")
    chain, ours = _lines(buf)
    assert list(ours) == list(chain)
    assert {k: v for k, v in ours.items() if k != "timestamp"} == {
        k: v for k, v in chain.items() if k != "timestamp"
    }
    assert ours["path"] == "/api/providers/[redacted]/jobs" and ours["tenant"] == "t-9"
    assert ours["timestamp"].endswith("Z") and len(ours["timestamp"]) == len(chain["timestamp"])


def test_access_line_follows_the_configured_level():
    """At warning, no access line is written (as structlog's filtering logger drops info)."""
    buf = io.StringIO()
    configure_logging(buf, logging.WARNING, cache=False)
    assert logs.access_writer is not None
    logs.access_writer.info("http_request", {"status": 200})
    assert buf.getvalue() == ""
    configure_logging(io.StringIO(), cache=False)


def test_json_headers_are_starlettes():
    """The raw headers of the API's own answers are those Starlette's Response would send."""
    cases: list[tuple[int, bytes, dict[str, str] | None]] = [
        (201, b'{"job":{}}', None),
        (200, b"{}", {}),
        (429, b'{"error":"x"}', {"Retry-After": "3"}),
        (401, b"{}", {"WWW-Authenticate": "Bearer", "X-Extra": "1"}),
        (204, b"", None),
        (200, b"{}", {"content-type": "application/problem+json"}),
    ]
    for status, body, headers in cases:
        expected = Response(body, status, headers, media_type="application/json").raw_headers
        assert json_headers(status, body, headers) == expected, (status, headers)


class _Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, parts: Any) -> None:
        self.writes.append(b"".join(parts))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_one_write_transport_joins_head_and_body():
    """Head then body in one step: one write of both. A lone write goes out by the end of the
    loop iteration; close and any other call write what is held first; order never changes."""

    async def scenario() -> list[bytes]:
        raw = _Recorder()
        t = OneWriteTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.write(b"body-1")
        assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody-1"]
        t.write(b"100 continue")
        assert raw.writes[1:] == []
        await asyncio.sleep(0)  # the held write goes out with the loop's next iteration
        assert raw.writes[1:] == [b"100 continue"]
        t.write(b"head-3")
        t.write(b"x" * 100_000)  # a long body is not copied onto the head, but follows it
        assert raw.writes[2:] == [b"head-3" + b"x" * 100_000]
        t.write(b"head-4")
        assert t.get_extra_info("peername") == "info:peername" and raw.writes[3:] == [b"head-4"]
        t.write(b"last")
        t.close()
        assert raw.writes[4:] == [b"last"] and raw.closed
        await asyncio.sleep(0)
        return raw.writes

    writes = asyncio.run(scenario())
    assert len(writes) == 5


def test_api_answers_match_through_the_router_and_the_guard(api: Api):
    """HEAD and a 405 still go through Starlette's router; a GET, a POST and their errors
    through the body guard's door: the same error shape, headers and statuses either way."""
    renter = api.renter(credit_halala=10_000)
    job = api.submit(renter)["job"]
    got = api.get(f"/api/jobs/{job['job_id']}", headers=renter["headers"])
    assert got.status_code == 200 and got.json()["job"]["job_id"] == job["job_id"]
    assert got.headers["content-type"] == "application/json"
    assert int(got.headers["content-length"]) == len(got.content)
    assert got.headers["cache-control"] == "no-store" and got.headers["x-request-id"]
    head = api.request("HEAD", f"/api/jobs/{job['job_id']}", headers=renter["headers"])
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"]
    wrong = api.request("DELETE", "/api/jobs/submit", headers=renter["headers"])
    assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"
    missing = api.get("/api/jobs/job-unknown", headers=renter["headers"])
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    bad = api.post("/api/jobs/submit", json={"container_spec": {}}, headers=renter["headers"])
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_request"
    anonymous = api.post("/api/jobs/submit", json={"container_spec": {"image": "x"}})
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "missing_credentials"


def test_marker_check_misses_nothing_the_regex_finds():
    """The cheap marker test is a case-insensitive regex search for the marker words, for
    every character the regex's match would take for a marker's letter (the Kelvin sign for
    `k`, ...)."""
    import re

    from dcp_http.logs import _MARKER_WORDS, _marked

    markers = re.compile("|".join(map(re.escape, _MARKER_WORDS)), re.IGNORECASE)

    letters = {c for word in _MARKER_WORDS for c in word}
    for cp in range(0x10000):
        c = chr(cp)
        for letter in letters:
            if re.fullmatch(letter, c, re.IGNORECASE):
                assert c.lower() == letter, hex(cp)
    for text in ("x-\u212aey=1", "Authorization: BEARER t", "dcp-RENTER-1", "plain/path", ""):
        assert _marked(text) == (markers.search(text) is not None), text


def test_access_line_timestamp_is_isoformats(monkeypatch):
    """The access line's timestamp, formatted once a second, is `isoformat()` with Z for each
    microsecond of a second (a whole second without a fraction, as isoformat writes it) and
    follows the clock into the next second."""
    import datetime
    import time

    for ns in (1_796_000_000 * 10**9, 1_796_000_000 * 10**9 + 5_000, 1_796_000_000_999_999_000,
               1_796_000_001 * 10**9 + 123_456_000, 1_796_086_400 * 10**9 + 1_000):  # fmt: skip
        monkeypatch.setattr(time, "time_ns", lambda ns=ns: ns)
        expected = datetime.datetime.fromtimestamp(ns // 1000 / 1e6, datetime.UTC)
        expected = expected.replace(microsecond=ns // 1000 % 1_000_000)
        assert logs._timestamp() == expected.isoformat().replace("+00:00", "Z"), ns
