"""Idempotent submits, duplicate and conflicting results, and leases lost to the sweeps."""

import time

from ._live import Api, result_body, serve


def _lease(api, provider, job_id):
    jobs = api.ok("GET", "/api/providers/jobs/next", headers=provider["headers"])
    assert jobs["job"] and jobs["job"]["job_id"] == job_id
    return jobs["job"]["attempt"]


def test_idempotent_submit(api):
    """The same Idempotency-Key gives the same job, reserved once."""
    renter = api.renter(credit_halala=10_000)
    headers = {**renter["headers"], "idempotency-key": "order-42"}
    body = {"container_spec": {"image": "dcp-test/busybox:1"}, "max_duration_seconds": 3600}
    first = api.ok("POST", "/api/jobs/submit", 201, json=body, headers=headers)
    again = api.ok("POST", "/api/jobs/submit", 201, json=body, headers=headers)
    assert again["job"]["job_id"] == first["job"]["job_id"]
    assert api.balance(renter)["held_halala"] == first["job"]["cost_halala"]
    other = api.ok(
        "POST",
        "/api/jobs/submit",
        201,
        json=body,
        headers={**renter["headers"], "idempotency-key": "order-43"},
    )
    assert other["job"]["job_id"] != first["job"]["job_id"]
    # Keys are per renter: another renter's same key is its own job.
    r2 = api.renter(credit_halala=10_000)
    theirs = api.ok(
        "POST",
        "/api/jobs/submit",
        201,
        json=body,
        headers={**r2["headers"], "idempotency-key": "order-42"},
    )
    assert theirs["job"]["job_id"] != first["job"]["job_id"]


def test_a_key_reused_for_another_request_is_422(api):
    """The same Idempotency-Key with another body is refused with 422 and changes nothing (the
    first request stands); the same body with env keys in another order is the same request."""
    renter = api.renter(credit_halala=100_000)
    headers = {**renter["headers"], "idempotency-key": "order-7"}
    spec = {"image": "dcp-test/busybox:1", "env": {"A": "1", "B": "2"}}
    body = {"container_spec": spec, "max_duration_seconds": 3600}
    first = api.ok("POST", "/api/jobs/submit", 201, json=body, headers=headers)
    reordered = {**body, "container_spec": {**spec, "env": {"B": "2", "A": "1"}}}
    again = api.ok("POST", "/api/jobs/submit", 201, json=reordered, headers=headers)
    assert again["job"]["job_id"] == first["job"]["job_id"]
    head, held = api.head_seq(), api.balance(renter)["held_halala"]
    for changed in (
        {**body, "max_duration_seconds": 7200},
        {**body, "priority": "priority"},
        {**body, "container_spec": {**spec, "command": ["echo", "other"]}},
    ):
        r = api.post("/api/jobs/submit", json=changed, headers=headers)
        assert r.status_code == 422 and r.json()["code"] == "idempotency_key_reused", r.text
    assert (api.head_seq(), api.balance(renter)["held_halala"]) == (head, held)


def test_duplicate_and_conflicting_results(api):
    """The same result twice: the same 200, settled once. A different one: 409."""
    renter = api.renter(credit_halala=10_000)
    p = api.provider()
    job = api.submit(renter)["job"]
    attempt = _lease(api, p, job["job_id"])
    body = result_body(job["job_id"], attempt, runtime_seconds=2)
    first = api.ok("POST", "/api/providers/job-result", json=body, headers=p["headers"])
    head = api.head_seq()
    second = api.ok("POST", "/api/providers/job-result", json=body, headers=p["headers"])
    assert second == first
    assert api.head_seq() == head  # nothing appended for the repeat
    for change in ({"exit_code": 1}, {"outcome": "failed"}, {"stdout": "other"}):
        r = api.post("/api/providers/job-result", json={**body, **change}, headers=p["headers"])
        assert r.status_code == 409, (change, r.text)
        assert r.json()["code"]
    bal = api.balance(renter)
    assert bal["held_halala"] == 0
    assert bal["available_halala"] == 10_000 - first["job"]["actual_cost_halala"]


def test_lost_lease_is_409_and_moves_no_money(tmp_path):
    """A lease that ran out requeues the job; the old attempt's start and result are 409."""
    with serve(tmp_path / "lease.db", lease_ttl_s=1, sweep_interval_s=0.1) as server:
        api = Api(server)
        api.allow_image()
        renter = api.renter(credit_halala=10_000)
        p = api.provider()
        job = api.submit(renter)["job"]
        attempt = _lease(api, p, job["job_id"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            view = api.ok("GET", f"/api/jobs/{job['job_id']}", headers=renter["headers"])["job"]
            if view["status"] == "queued":
                break
            time.sleep(0.1)
        assert view["status"] == "queued" and view["attempt"] > attempt
        before = api.balance(renter)
        r = api.post(
            f"/api/providers/jobs/{job['job_id']}/started",
            json={"attempt": attempt},
            headers=p["headers"],
        )
        assert r.status_code == 409 and r.json()["code"] == "lease_lost"
        r = api.post(
            "/api/providers/job-result",
            json=result_body(job["job_id"], attempt),
            headers=p["headers"],
        )
        assert r.status_code == 409 and r.json()["code"] == "lease_lost"
        assert api.balance(renter) == before
        rec = api.ok("GET", "/api/admin/reconciliation", headers=api.admin)
        assert rec["sum_halala"] == 0 and rec["invariants_ok"]
        api.close()
