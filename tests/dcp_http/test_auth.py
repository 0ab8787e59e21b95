"""Credentials and tenant isolation: nobody sees or touches another tenant's objects."""

from ._live import result_body


def test_renter_b_gets_404_on_renter_as_job(api):
    """Another renter's job, its output and its cancel are 404, never 403."""
    a = api.renter(credit_halala=10_000)
    b = api.renter(credit_halala=10_000)
    job = api.submit(a)["job"]
    for method, path in (
        ("GET", f"/api/jobs/{job['job_id']}"),
        ("GET", f"/api/jobs/{job['job_id']}/output"),
        ("POST", f"/api/jobs/{job['job_id']}/cancel"),
    ):
        r = api.request(method, path, headers=b["headers"])
        assert r.status_code == 404, (path, r.text)
    assert api.ok("GET", "/api/jobs", headers=b["headers"])["jobs"] == []
    ledger = api.ok("GET", "/api/renters/ledger", headers=b["headers"])["entries"]
    assert all(e["account"].startswith(f"renter:{b['renter_id']}:") for e in ledger)
    assert api.ok("GET", f"/api/jobs/{job['job_id']}", headers=a["headers"])


def test_provider_x_cannot_start_or_report_ys_job(api):
    """A job leased to provider Y: X gets 404 or 409 for start, result and reads."""
    renter = api.renter(credit_halala=10_000)
    y = api.provider()
    job = api.submit(renter)["job"]
    lease = api.ok("GET", "/api/providers/jobs/next", headers=y["headers"])["job"]
    assert lease["job_id"] == job["job_id"]
    x = api.provider()
    r = api.post(
        f"/api/providers/jobs/{job['job_id']}/started",
        json={"attempt": lease["attempt"]},
        headers=x["headers"],
    )
    assert r.status_code in (404, 409), r.text
    r = api.post(
        "/api/providers/job-result",
        json=result_body(job["job_id"], lease["attempt"]),
        headers=x["headers"],
    )
    assert r.status_code in (404, 409), r.text
    assert api.get(f"/api/jobs/{job['job_id']}", headers=x["headers"]).status_code == 404
    # Y, its provider, may read it; and the job is untouched by X's attempts.
    view = api.ok("GET", f"/api/jobs/{job['job_id']}", headers=y["headers"])["job"]
    assert view["status"] == "assigned" and view["actual_cost_halala"] is None


def test_every_credential_form(api):
    """Renter: header, ?key=, Bearer. Provider: header, path, ?key=, Bearer. Admin: both."""
    r = api.renter()
    for kw in (
        {"headers": {"x-renter-key": r["api_key"]}},
        {"params": {"key": r["api_key"]}},
        {"headers": {"authorization": f"Bearer {r['api_key']}"}},
    ):
        assert api.ok("GET", "/api/renters/me", **kw)["renter_id"] == r["renter_id"]
    p = api.provider()
    for path, kw in (
        ("/api/providers/me", {"headers": {"x-provider-key": p["api_key"]}}),
        ("/api/providers/me", {"params": {"key": p["api_key"]}}),
        ("/api/providers/me", {"headers": {"authorization": f"Bearer {p['api_key']}"}}),
    ):
        assert api.ok("GET", path, **kw)["provider_id"] == p["provider_id"]
    assert api.ok("GET", f"/api/providers/{p['api_key']}/jobs") == {"jobs": []}
    for headers in (api.admin, {"authorization": f"Bearer {api.admin['x-admin-token']}"}):
        assert "images" in api.ok("GET", "/api/admin/images", headers=headers)


def test_wrong_key_type_everywhere(api):
    """A renter key where a provider or admin is needed, and the reverse, is wrong_key_type."""
    r = api.renter()
    p = api.provider(approve=False)
    cases = [
        ("GET", "/api/providers/me", {"x-provider-key": r["api_key"]}),
        ("GET", "/api/providers/me", {"authorization": f"Bearer {r['api_key']}"}),
        ("GET", f"/api/providers/{r['api_key']}/jobs", {}),
        ("GET", "/api/renters/balance", {"authorization": f"Bearer {p['api_key']}"}),
        ("GET", "/api/admin/images", {"x-admin-token": r["api_key"]}),
        ("GET", "/api/admin/images", {"authorization": f"Bearer {p['api_key']}"}),
    ]
    for method, path, headers in cases:
        resp = api.request(method, path, headers=headers)
        assert resp.status_code == 401 and resp.json()["code"] == "wrong_key_type", (
            path,
            resp.text,
        )


def test_keys_never_reach_the_log(api, server):
    """Keys in headers, query strings and paths and the admin token are never logged."""
    r = api.renter()
    p = api.provider()
    api.get("/api/renters/me", params={"key": r["api_key"]})
    api.get(f"/api/providers/{p['api_key']}/jobs")
    api.get("/api/providers/me", headers={"authorization": f"Bearer {p['api_key']}"})
    api.get("/api/admin/images", headers=api.admin)
    api.get(
        "/api/renters/me",
        params={"key": "dcp-renter-" + "f" * 32},
        headers={"x-request-id": "last"},
    )
    # Access lines are written after the response goes out: wait for the last request's.
    server.wait_for_log(lambda x: x.get("request_id") == "last")
    lines = [x for x in server.log_lines() if x.get("event") == "http_request"]
    text = server.log_text()
    for secret in (r["api_key"], p["api_key"], api.admin["x-admin-token"], "f" * 32):
        assert secret not in text
    assert len(lines) >= 7 and all(
        {"method", "route", "status", "duration_ms", "request_id", "actor"} <= x.keys()
        for x in lines
    )
    by_route = {x["route"]: x for x in lines}
    assert by_route["/api/providers/{key}/jobs"]["actor"] == f"provider:{p['provider_id']}"
    assert "key=[redacted]" in by_route["/api/renters/me"]["path"]
