"""Every error status and code of SPEC section 5, each with the `{error, code}` shape."""

import httpx

from ._live import Api, result_body, serve


def err(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["code"], str) and body["code"]
    if code is not None:
        assert body["code"] == code, body
    return body


def test_400_validation_names_the_field(api):
    """A wrong field gets 400 with `fields: [{field, message}]`."""
    renter = api.renter(credit_halala=10_000)
    r = api.post(
        "/api/jobs/submit",
        json={"container_spec": {"image": "x"}, "max_duration_seconds": 10},
        headers=renter["headers"],
    )
    body = err(r, 400, "invalid_request")
    assert body["fields"][0]["field"] == "max_duration_seconds"
    r = api.post(
        "/api/jobs/submit",
        json={"container_spec": {"image": "x", "cmd": []}},
        headers=renter["headers"],
    )
    assert err(r, 400)["fields"][0]["field"] == "container_spec.cmd"
    r = api.get("/api/jobs?limit=abc", headers=renter["headers"])
    assert err(r, 400)["fields"][0]["field"] == "limit"
    r = api.get("/api/jobs?status=exploded", headers=renter["headers"])
    assert err(r, 400)["fields"][0]["field"] == "status"
    p = api.provider()
    r = api.post(
        "/api/providers/me/withdraw",
        json={"amount_halala": 1000, "iban": "SA0380000000608010167518"},
        headers=p["headers"],
    )
    assert err(r, 400)["fields"][0]["field"] == "iban"


def test_400_invalid_json(api):
    """A body that is no JSON is 400 invalid_json."""
    r = api.post(
        "/api/renters/register", content=b"{nope", headers={"content-type": "application/json"}
    )
    err(r, 400, "invalid_json")


def test_401_codes(api):
    """Missing, unknown and wrong-role credentials are 401 with distinct codes."""
    err(api.get("/api/renters/me"), 401, "missing_credentials")
    err(
        api.get("/api/renters/me", headers={"x-renter-key": "dcp-renter-" + "0" * 32}),
        401,
        "invalid_credentials",
    )
    p = api.provider(approve=False)
    err(api.get("/api/renters/me", headers={"x-renter-key": p["api_key"]}), 401, "wrong_key_type")
    err(api.get("/api/admin/images", headers={"x-admin-token": "wrong"}), 401)


def test_402_carries_the_shortfall(api):
    """A submit the balance does not cover is 402 with the exact shortfall."""
    renter = api.renter(credit_halala=40)
    body = err(
        api.post(
            "/api/jobs/submit",
            json={
                "container_spec": {"image": "dcp-test/busybox:1"},
                "max_duration_seconds": 3600,
                "gpu_requirements": {"gpu_type": "RTX 4090"},
            },
            headers=renter["headers"],
        ),
        402,
        "insufficient_funds",
    )
    assert body["shortfall_halala"] == 60
    assert api.balance(renter)["available_halala"] == 40


def test_403_topup_outside_sandbox(api):
    """Self top-up outside sandbox mode is 403."""
    renter = api.renter()
    r = api.post("/api/renters/topup", json={"amount_halala": 100}, headers=renter["headers"])
    err(r, 403)
    assert api.balance(renter)["available_halala"] == 0


def test_404_unknown_things_and_paths(api):
    """Unknown jobs, renters, providers, withdrawals and paths are 404."""
    renter = api.renter()
    err(api.get("/api/jobs/job-nope", headers=renter["headers"]), 404)
    err(api.post("/api/jobs/job-nope/cancel", headers=renter["headers"]), 404)
    err(api.get("/api/jobs/job-nope/output", headers=renter["headers"]), 404)
    err(
        api.post(
            "/api/admin/renters/nobody/credit",
            json={"amount_halala": 1, "reference": "r"},
            headers=api.admin,
        ),
        404,
    )
    err(api.post("/api/admin/providers/nobody/approve", headers=api.admin), 404)
    err(api.post("/api/admin/withdrawals/nothing/complete", headers=api.admin), 404)
    err(api.get("/api/no/such/path"), 404, "not_found")


def test_405_wrong_method(api):
    """A known path with the wrong method is 405 in the same shape."""
    err(api.request("DELETE", "/api/jobs/submit"), 405, "method_not_allowed")


def test_409_state_conflicts(api):
    """Cancelling a completed job and a start for another attempt are 409."""
    renter = api.renter(credit_halala=10_000)
    p = api.provider()
    job = api.submit(renter)["job"]
    lease = api.ok("GET", "/api/providers/jobs/next", headers=p["headers"])["job"]
    api.ok(
        "POST",
        "/api/providers/job-result",
        json=result_body(job["job_id"], lease["attempt"]),
        headers=p["headers"],
    )
    err(api.post(f"/api/jobs/{job['job_id']}/cancel", headers=renter["headers"]), 409)
    job2 = api.submit(renter)["job"]
    lease = api.ok("GET", "/api/providers/jobs/next", headers=p["headers"])["job"]
    assert lease["job_id"] == job2["job_id"]
    r = api.post(
        f"/api/providers/jobs/{job2['job_id']}/started",
        json={"attempt": lease["attempt"] + 1},
        headers=p["headers"],
    )
    err(r, 409, "lease_lost")


def test_410_output_of_a_cancelled_job(api):
    """A job cancelled before it ran has no output: 410."""
    renter = api.renter(credit_halala=10_000)
    job = api.submit(renter)["job"]
    api.ok("POST", f"/api/jobs/{job['job_id']}/cancel", headers=renter["headers"])
    err(api.get(f"/api/jobs/{job['job_id']}/output", headers=renter["headers"]), 410)


def test_410_output_of_a_job_that_failed_without_output(api):
    """A job whose every attempt failed with no exit code and empty streams has no output: 410,
    not 200 with empty fields; one whose failures printed something is still shown."""
    renter = api.renter(credit_halala=100_000)
    p = api.provider(approve=True)
    for stdout, exit_code in [("", None), ("partial\n", 1)]:
        job_id = api.submit(renter)["job"]["job_id"]
        job_url = f"/api/jobs/{job_id}"
        while api.ok("GET", job_url, headers=renter["headers"])["job"]["status"] != "failed":
            lease = api.ok("GET", "/api/providers/jobs/next", headers=p["headers"])["job"]
            assert lease["job_id"] == job_id  # the only queued job
            body = result_body(
                job_id,
                lease["attempt"],
                outcome="failed",
                exit_code=exit_code,
                stdout=stdout,
                runtime_seconds=1,
            )
            api.ok("POST", "/api/providers/job-result", json=body, headers=p["headers"])
        r = api.get(f"/api/jobs/{job_id}/output", headers=renter["headers"])
        if stdout:
            assert r.status_code == 200 and (r.json()["stdout"], r.json()["exit_code"]) == (
                stdout,
                exit_code,
            )
        else:
            err(r, 410)


def test_413_and_415(api):
    """Bodies over the limit are 413 (4 MiB for results); non-JSON bodies are 415."""
    big = b'{"name": "' + b"x" * (1024 * 1024) + b'"}'
    err(
        api.post(
            "/api/renters/register", content=big, headers={"content-type": "application/json"}
        ),
        413,
        "body_too_large",
    )
    p = api.provider()
    almost = result_body("job-x", 1, stdout="y" * (3 * 1024 * 1024))
    r = api.post("/api/providers/job-result", json=almost, headers=p["headers"])
    assert r.status_code != 413  # results may be larger (here: unknown job, or too long)
    huge = result_body("job-x", 1, stdout="y" * (5 * 1024 * 1024))
    err(api.post("/api/providers/job-result", json=huge, headers=p["headers"]), 413)
    err(
        api.post(
            "/api/renters/register",
            content=b"name=a&email=b",
            headers={"content-type": "application/x-www-form-urlencoded"},
        ),
        415,
        "unsupported_media_type",
    )


def test_429_with_retry_after(tmp_path):
    """The sixth registration from one IP in an hour is 429 with retry_after_seconds."""
    from dcp_http.config import DEFAULT_RATE_LIMITS

    with serve(tmp_path / "rl.db", rate_limit_table=dict(DEFAULT_RATE_LIMITS)) as server:
        api = Api(server)
        for n in range(5):
            api.ok(
                "POST",
                "/api/renters/register",
                201,
                json={"name": f"n{n}", "email": f"n{n}@example.com"},
            )
        r = api.post("/api/renters/register", json={"name": "x", "email": "x@example.com"})
        body = err(r, 429, "rate_limited")
        assert body["retry_after_seconds"] >= 1
        assert int(r.headers["retry-after"]) == body["retry_after_seconds"]
        assert api.get("/healthz").status_code == 200  # other classes are not affected
        api.close()


def test_rate_limits_can_be_turned_off(tmp_path):
    """DCP_RATE_LIMITS=0: no 429 however many registrations."""
    from dcp_http.config import DEFAULT_RATE_LIMITS

    with serve(
        tmp_path / "off.db", rate_limits=False, rate_limit_table=dict(DEFAULT_RATE_LIMITS)
    ) as server:
        api = Api(server)
        for n in range(8):
            api.ok(
                "POST",
                "/api/renters/register",
                201,
                json={"name": f"n{n}", "email": f"n{n}@example.com"},
            )
        api.close()


def test_503_admin_disabled_without_a_token(tmp_path):
    """With no admin token configured, the admin API answers 503 admin_disabled."""
    with serve(tmp_path / "noadmin.db", admin_token=None) as server:
        api = Api(server)
        err(api.get("/api/admin/images"), 503, "admin_disabled")
        err(api.get("/api/admin/images", headers={"x-admin-token": "anything"}), 503)
        err(api.get("/api/admin/reconciliation", headers={"authorization": "Bearer x"}), 503)
        api.close()
