"""The whole life of jobs and money through the API, end to end, on a real server."""

from ._live import IBAN, IMAGE, Api, result_body, serve


def _claim(api, provider, job_id):
    jobs = api.ok("GET", f"/api/providers/{provider['api_key']}/jobs")["jobs"]
    (job,) = [j for j in jobs if j["job_id"] == job_id]
    return job


def _check_settled(job):
    assert job["actual_cost_halala"] + job["refunded_halala"] == job["cost_halala"]
    assert job["provider_earned_halala"] == job["actual_cost_halala"] * 75 // 100
    assert job["platform_fee_halala"] == job["actual_cost_halala"] - job["provider_earned_halala"]


def test_full_lifecycle(api):
    """Register, credit, submit, claim, start, report, settle, withdraw, pay out, reconcile."""
    admin = api.admin
    renter = api.renter(credit_halala=100_000)
    api.ok("PUT", "/api/admin/pricing/RTX 4090", json={"halala_per_gpu_hour": 3600}, headers=admin)
    provider = api.provider()

    # Submit: rate and reserve fixed now; the reserve moves from available to held.
    sub = api.submit(renter)["job"]
    assert sub["status"] == "queued" and sub["queue_position"] == 1
    assert sub["rate_halala_per_hour"] == 3600 and sub["cost_halala"] == 3600
    assert sub["max_duration_seconds"] == 3600
    assert api.balance(renter) == {
        "balance_halala": 100_000,
        "held_halala": 3600,
        "available_halala": 96_400,
    }
    job_id = sub["job_id"]
    assert api.ok("GET", f"/api/jobs/{job_id}/output", 202, headers=renter["headers"]) == {
        "job_id": job_id,
        "status": "queued",
    }

    # Poll: the job is leased; a repeated poll returns the same lease.
    leased = _claim(api, provider, job_id)
    assert leased["attempt"] >= 1 and leased["container_spec"]["image"] == IMAGE
    assert _claim(api, provider, job_id) == leased
    nxt = api.ok("GET", "/api/providers/jobs/next", headers=provider["headers"])["job"]
    assert nxt["job_id"] == job_id
    attempt = leased["attempt"]

    started = api.ok(
        "POST",
        f"/api/providers/jobs/{job_id}/started",
        json={"attempt": attempt},
        headers=provider["headers"],
    )["job"]
    assert started["status"] == "running" and started["attempt"] == attempt
    hb = api.heartbeat(provider, running=[job_id])
    assert hb["cancel_jobs"] == [] and hb["approval_status"] == "approved"

    # Result: settled once; the same result again gets the same answer.
    res = api.ok(
        "POST",
        "/api/providers/job-result",
        json=result_body(job_id, attempt, runtime_seconds=1.5),
        headers=provider["headers"],
    )
    job = res["job"]
    assert job["status"] == "completed" and res["outcome"] == "completed"
    _check_settled(job)
    assert res["settlement"]["actual_cost_halala"] == job["actual_cost_halala"]
    again = api.ok(
        "POST",
        "/api/providers/job-result",
        json=result_body(job_id, attempt, runtime_seconds=1.5),
        headers=provider["headers"],
    )
    assert again == res
    out = api.ok("GET", f"/api/jobs/{job_id}/output", headers=renter["headers"])
    assert out["stdout"] == "hi\n" and out["exit_code"] == 0 and len(out["sha256"]) == 64
    assert api.ok("GET", f"/api/jobs/{job_id}/output", headers=provider["headers"]) == out
    assert api.ok("GET", f"/api/jobs/{job_id}/output", headers=admin) == out
    bal = api.balance(renter)
    assert bal["held_halala"] == 0
    assert bal["available_halala"] == 100_000 - job["actual_cost_halala"]

    # A timed-out job is charged by the runtime the server saw (up to the whole reserve); at
    # 10,000,000 halala per hour (the highest price allowed) one second earns enough to
    # withdraw twice.
    api.credit(renter["renter_id"], 30_000_000)
    api.ok(
        "PUT",
        "/api/admin/pricing/RTX 4090",
        json={"halala_per_gpu_hour": 10_000_000},
        headers=admin,
    )
    sub2 = api.submit(renter)["job"]
    assert sub2["cost_halala"] == 10_000_000
    lease2 = _claim(api, provider, sub2["job_id"])
    res2 = api.ok(
        "POST",
        "/api/providers/job-result",
        json=result_body(
            sub2["job_id"], lease2["attempt"], outcome="timed_out", runtime_seconds=3600
        ),
        headers=provider["headers"],
    )["job"]
    assert res2["status"] == "timed_out" and res2["actual_cost_halala"] >= 2778
    _check_settled(res2)
    earned = job["provider_earned_halala"] + res2["provider_earned_halala"]
    me = api.ok("GET", "/api/providers/me", headers=provider["headers"])
    assert me["earnings_halala"] == earned and me["payout_pending_halala"] == 0
    assert me["state"] == "online" and me["approval_status"] == "approved"

    # Withdraw to an IBAN; the admin pays it out.
    w = api.ok(
        "POST",
        "/api/providers/me/withdraw",
        201,
        json={"amount_halala": 1000, "iban": IBAN},
        headers=provider["headers"],
    )
    assert w["status"] == "pending" and w["amount_halala"] == 1000
    e = api.ok("GET", "/api/providers/earnings", headers=provider["headers"])
    assert (e["earnings_halala"], e["payout_pending_halala"]) == (earned - 1000, 1000)
    pending = api.ok("GET", "/api/admin/withdrawals?status=pending", headers=admin)
    assert [x["withdrawal_id"] for x in pending["withdrawals"]] == [w["withdrawal_id"]]
    done = api.ok("POST", f"/api/admin/withdrawals/{w['withdrawal_id']}/complete", headers=admin)
    assert done["status"] == "completed"
    e = api.ok("GET", "/api/providers/earnings", headers=provider["headers"])
    assert e["payout_pending_halala"] == 0
    # A rejected withdrawal goes back to earnings; a decided one cannot be decided again.
    w2 = api.ok(
        "POST",
        "/api/providers/me/withdraw",
        201,
        json={"amount_halala": 1000, "iban": IBAN},
        headers=provider["headers"],
    )
    rejected = api.ok(
        "POST",
        f"/api/admin/withdrawals/{w2['withdrawal_id']}/reject",
        json={"reason": "name mismatch"},
        headers=admin,
    )
    assert rejected["status"] == "rejected"
    e = api.ok("GET", "/api/providers/earnings", headers=provider["headers"])
    assert (e["earnings_halala"], e["payout_pending_halala"]) == (earned - 1000, 0)
    r = api.post(f"/api/admin/withdrawals/{w2['withdrawal_id']}/complete", headers=admin)
    assert r.status_code == 409
    r = api.post(
        "/api/providers/me/withdraw",
        json={"amount_halala": 999, "iban": IBAN},
        headers=provider["headers"],
    )
    assert r.status_code == 400  # under the 1000 halala minimum
    done_list = api.ok("GET", "/api/admin/withdrawals", headers=admin)["withdrawals"]
    assert {x["status"] for x in done_list} == {"completed", "rejected"}

    # Cancel while queued: everything back; no output, so 410.
    sub3 = api.submit(renter)["job"]
    cancelled = api.ok("POST", f"/api/jobs/{sub3['job_id']}/cancel", headers=renter["headers"])[
        "job"
    ]
    assert cancelled["status"] == "cancelled"
    assert cancelled["refunded_halala"] == cancelled["cost_halala"] == 10_000_000
    r = api.get(f"/api/jobs/{sub3['job_id']}/output", headers=renter["headers"])
    assert r.status_code == 410 and r.json()["code"]

    # Reads: own jobs, filters, the ledger newest first, the marketplace, the books.
    jobs = api.ok("GET", "/api/jobs", headers=renter["headers"])["jobs"]
    assert {j["job_id"] for j in jobs} == {job_id, sub2["job_id"], sub3["job_id"]}
    only = api.ok("GET", "/api/jobs?status=cancelled", headers=renter["headers"])["jobs"]
    assert [j["job_id"] for j in only] == [sub3["job_id"]]
    page = api.ok("GET", "/api/jobs?limit=1", headers=renter["headers"])
    assert len(page["jobs"]) == 1 and page["next_cursor"]
    page2 = api.ok(
        "GET", f"/api/jobs?limit=1&cursor={page['next_cursor']}", headers=renter["headers"]
    )
    assert page2["jobs"][0]["job_id"] != page["jobs"][0]["job_id"]
    ledger = api.ok("GET", "/api/renters/ledger", headers=renter["headers"])["entries"]
    seqs = [x["seq"] for x in ledger]
    assert seqs == sorted(seqs, reverse=True) and len(ledger) >= 4
    assert all(x["account"].startswith(f"renter:{renter['renter_id']}:") for x in ledger)
    profile = api.ok("GET", "/api/renters/me", headers=renter["headers"])
    assert profile["renter_id"] == renter["renter_id"]
    assert profile["balance_halala"] == profile["available_halala"] + profile["held_halala"]
    market = api.ok("GET", "/api/marketplace")["providers"]
    assert any(p["provider_id"] == provider["provider_id"] for p in market)
    rec = api.ok("GET", "/api/admin/reconciliation", headers=admin)
    assert rec["sum_halala"] == 0 and rec["invariants_ok"] is True
    assert rec["events"] == rec["head_seq"] > 0 and len(rec["head_hash"]) == 64
    events = api.ok("GET", "/api/admin/events?after=0&limit=5", headers=admin)
    assert [x["seq"] for x in events["events"]] == [1, 2, 3, 4, 5]
    assert events["next_after"] == 5
    rest = api.ok("GET", "/api/admin/events?after=5&limit=1000", headers=admin)["events"]
    assert rest[-1]["seq"] == rec["head_seq"] and rest[-1]["hash"] == rec["head_hash"]
    assert api.ok("GET", "/readyz")["status"] == "ready"


def test_admin_requeue_reserves_again(api, server):
    """A failed job requeued by an admin holds its reserve again; without funds it is 402."""
    renter = api.renter(credit_halala=150)
    provider = api.provider()
    sub = api.submit(renter, max_duration_seconds=3600)["job"]
    assert sub["cost_halala"] == 100
    attempt = _claim(api, provider, sub["job_id"])["attempt"]
    for _ in range(server.config.max_attempts):
        api.ok(
            "POST",
            "/api/providers/job-result",
            json=result_body(sub["job_id"], attempt, outcome="failed", error="disk"),
            headers=provider["headers"],
        )
        job = api.ok("GET", f"/api/jobs/{sub['job_id']}", headers=renter["headers"])["job"]
        if job["status"] == "failed":
            break
        attempt = _claim(api, provider, sub["job_id"])["attempt"]
    assert job["status"] == "failed" and api.balance(renter)["available_halala"] == 150
    api.submit(renter, max_duration_seconds=3600)  # holds 100 of the 150
    r = api.post(f"/api/admin/jobs/{sub['job_id']}/requeue", headers=api.admin)
    assert r.status_code == 402 and r.json()["shortfall_halala"] == 50
    api.credit(renter["renter_id"], 50)
    again = api.ok("POST", f"/api/admin/jobs/{sub['job_id']}/requeue", headers=api.admin)
    assert again["job"]["status"] == "queued"
    assert api.balance(renter) == {
        "balance_halala": 200,
        "held_halala": 200,
        "available_halala": 0,
    }


def test_admin_credit_is_idempotent_by_reference(api):
    """The same reference twice credits once."""
    renter = api.renter()
    first = api.credit(renter["renter_id"], 500, reference="wire-1")
    second = api.credit(renter["renter_id"], 500, reference="wire-1")
    assert first["duplicate"] is False and second["duplicate"] is True
    assert api.balance(renter)["available_halala"] == 500


def test_provider_flags(api):
    """Pause and resume by the provider; suspend, unsuspend by the admin; all visible."""
    provider = api.provider()
    h = provider["headers"]
    assert api.ok("POST", "/api/providers/pause", headers=h)["paused"] is True
    assert api.heartbeat(provider)["paused"] is True
    assert api.ok("POST", "/api/providers/resume", headers=h)["paused"] is False
    pid = provider["provider_id"]
    s = api.ok("POST", f"/api/admin/providers/{pid}/suspend", headers=api.admin)
    assert s["suspended"] is True and api.heartbeat(provider)["suspended"] is True
    u = api.ok("POST", f"/api/admin/providers/{pid}/unsuspend", headers=api.admin)
    assert u["suspended"] is False


def test_images_and_pricing(api):
    """The admin manages the allowlist and prices; a removed image can't be submitted."""
    ref = "registry.example/tool:2"
    listed = api.ok("POST", "/api/admin/images", json={"reference": ref}, headers=api.admin)
    assert ref in listed["images"]
    assert ref in api.ok("GET", "/api/admin/images", headers=api.admin)["images"]
    removed = api.ok("POST", "/api/admin/images/remove", json={"reference": ref}, headers=api.admin)
    assert ref not in removed["images"]
    renter = api.renter(credit_halala=10_000)
    body = {"container_spec": {"image": ref}}
    r = api.post("/api/jobs/submit", json=body, headers=renter["headers"])
    assert r.status_code == 400 and r.json()["code"] == "image_not_allowed"
    price = api.ok(
        "PUT", "/api/admin/pricing/H200", json={"halala_per_gpu_hour": 1000}, headers=api.admin
    )
    assert price == {"gpu_model": "H200", "halala_per_gpu_hour": 1000}
    job = api.submit(
        renter, gpu_requirements={"gpu_type": "H200", "gpu_count": 2}, priority="priority"
    )["job"]
    assert job["rate_halala_per_hour"] == 2400  # ceil(1000 * 2 * 120 / 100)


def test_sandbox_topup(tmp_path):
    """In sandbox mode a renter tops itself up; elsewhere it is 403 (see test_errors)."""
    with serve(tmp_path / "sb.db", sandbox=True) as server:
        api = Api(server)
        renter = api.renter()
        bal = api.ok(
            "POST", "/api/renters/topup", json={"amount_halala": 5000}, headers=renter["headers"]
        )
        assert bal["available_halala"] == 5000 and bal["balance_halala"] == 5000
        api.close()
