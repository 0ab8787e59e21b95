"""Request ids, the access log, CORS, per-key rate limits, readiness and the schema route."""

from dcp_http.config import DEFAULT_RATE_LIMITS, RateLimit

from ._live import Api, serve


def test_request_id_is_echoed_or_made(api, server):
    """A well-formed x-request-id is kept; otherwise one is made; the log line carries it."""
    r = api.get("/healthz", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = api.get("/healthz", headers={"x-request-id": "bad id with spaces"})
    made = r.headers["x-request-id"]
    assert made != "bad id with spaces" and len(made) == 32
    r = api.get("/api/nothing-here")
    assert r.status_code == 404 and r.headers["x-request-id"]
    lines = server.wait_for_log(lambda x: x.get("event") == "http_request", count=3)
    ids = {x["request_id"] for x in lines}
    assert {"abc-123", made} <= ids


def test_one_access_line_per_request_with_its_route_template(api, server):
    """method, route template, status, duration_ms, request_id and actor, once per request."""
    renter = api.renter(credit_halala=1000)
    job = api.submit(renter)["job"]
    api.get(f"/api/jobs/{job['job_id']}", headers={**renter["headers"], "x-request-id": "q1"})
    (line,) = server.wait_for_log(lambda x: x.get("request_id") == "q1")
    assert line["event"] == "http_request" and line["method"] == "GET"
    assert line["route"] == "/api/jobs/{job_id}" and line["status"] == 200
    assert line["actor"] == f"renter:{renter['renter_id']}"
    assert isinstance(line["duration_ms"], float)


def test_cors_allowlist(tmp_path):
    """An allowed origin gets CORS headers (preflight included); another origin does not."""
    with serve(tmp_path / "cors.db", cors_origins=("https://app.example",)) as server:
        api = Api(server)
        pre = api.request(
            "OPTIONS",
            "/api/jobs/submit",
            headers={
                "origin": "https://app.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "x-renter-key, content-type",
            },
        )
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "https://app.example"
        r = api.get("/healthz", headers={"origin": "https://app.example"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        r = api.get("/healthz", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
        api.close()


def test_rate_limits_count_per_key(tmp_path):
    """Submit's limit counts per renter key: one renter is stopped, another is not."""
    limits = {**DEFAULT_RATE_LIMITS, "register": RateLimit(100, 3600.0)}
    limits["submit"] = RateLimit(3, 60.0)
    with serve(tmp_path / "rl.db", rate_limit_table=limits) as server:
        api = Api(server)
        api.allow_image()
        a = api.renter(credit_halala=100_000)
        b = api.renter(credit_halala=100_000)
        for _ in range(3):
            api.submit(a)
        r = api.post(
            "/api/jobs/submit", json={"container_spec": {"image": "x"}}, headers=a["headers"]
        )
        assert r.status_code == 429 and r.json()["code"] == "rate_limited"
        assert r.json()["retry_after_seconds"] == int(r.headers["retry-after"]) >= 1
        api.submit(b)
        assert api.get("/api/renters/balance", headers=a["headers"]).status_code == 200
        api.close()


def test_readyz_and_openapi(api):
    """/readyz reports the store and projections; /openapi.json is the published schema."""
    api.renter()
    ready = api.ok("GET", "/readyz")
    assert ready["status"] == "ready" and ready["store_writable"]
    assert ready["projections_caught_up"] and ready["head_seq"] == ready["projection_seq"] > 0
    doc = api.ok("GET", "/openapi.json")
    assert doc["openapi"].startswith("3.")
    submit = doc["paths"]["/api/jobs/submit"]["post"]
    assert {"201", "400", "401", "402", "413", "415", "429"} <= submit["responses"].keys()
    body = doc["components"]["schemas"]["SubmitJob"]
    assert body["additionalProperties"] is False
    duration = body["properties"]["max_duration_seconds"]
    assert (duration["minimum"], duration["maximum"], duration["default"]) == (60, 86400, 1800)


def test_head_answers_like_get_without_a_body(api):
    """HEAD on a GET route is the GET's status and headers, no body; never a 500."""
    renter = api.renter()
    r = api.request("HEAD", "/api/renters/balance", headers=renter["headers"])
    assert r.status_code == 200 and r.content == b""
    assert api.request("HEAD", "/api/renters/balance").status_code == 401
    assert api.request("HEAD", "/healthz").status_code == 200
