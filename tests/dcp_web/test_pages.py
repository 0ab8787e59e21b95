"""Every SPEC section 5 action a person takes, done from the pages (without a browser, so
each action's effect is checked against the JSON API)."""

from __future__ import annotations

import csv
import io
import re

from tests.dcp_http._live import IBAN, IMAGE, result_body

from .conftest import Browserless
from .test_forms import SUBMIT


def _server_of(client: Browserless):
    class _S:
        url = str(client.http.base_url).rstrip("/")

    return _S()


def _renter_id(client: Browserless) -> str:
    m = re.search(r'data-renter-id="([^"]+)"', client.get("/renter").text)
    assert m
    return m.group(1)


def test_public_pages(client: Browserless, api):
    """Home counts live providers; the marketplace filters; pricing and docs render."""
    api.provider(gpu_model="RTX 4090")
    api.provider(gpu_model="H100")
    home = client.get("/").text
    assert re.search(r"<strong>2</strong><span>providers online", home)
    market = client.get("/marketplace").text
    assert "RTX 4090" in market and "H100" in market
    only = client.get("/marketplace?gpu=h100").text
    assert "H100" in only and "<td>RTX 4090</td>" not in only
    cheap = client.get("/marketplace?max_price=1.00").text  # RTX 4090: 1.00 SAR/h, H100 7.09
    assert "<td>RTX 4090</td>" in cheap and "<td>H100</td>" not in cheap
    assert "No provider matches right now." in client.get("/marketplace?min_vram=25").text
    prices = client.get("/pricing").text
    assert "9.19" in prices and "7.09" in prices  # H200 919, H100 709 halala
    assert "dcp worker --api" in client.get("/docs/providers").text
    assert "/api/jobs/submit" in client.get("/docs/renters").text


def test_api_reference_is_the_servers_schema(client: Browserless, api):
    """Every path of /openapi.json is on the reference page."""
    doc = api.ok("GET", "/openapi.json")
    page = client.get("/docs/api").text
    for path in doc["paths"]:
        assert f"<code>{path}</code>" in page, path
    assert 'id="schema-SubmitJob"' in page


def test_renter_actions(client: Browserless, api):
    """Jobs list with status filter and pages, cancel, output download, statement and CSV."""
    client.signup_renter()
    rid = _renter_id(client)
    api.credit(rid, 100_000)
    ids = []
    for i in range(22):
        r = client.post("/renter/jobs/new", {**SUBMIT, "token": f"t-{i}"})
        assert r.status_code == 303
        ids.append(r.headers["location"].rsplit("/", 1)[-1])
    first = client.get("/renter/jobs").text
    assert first.count('href="/renter/jobs/job-') == 20
    nxt = re.search(r'rel="next" href="([^"]+)"', first)
    assert nxt
    second = client.get(nxt.group(1).replace("&amp;", "&")).text
    assert second.count('href="/renter/jobs/job-') == 2

    r = client.post(f"/renter/jobs/{ids[0]}/cancel", {})
    assert r.status_code == 303
    assert _status(api, ids[0]) == "cancelled"
    cancelled = client.get("/renter/jobs?status=cancelled").text
    assert cancelled.count('href="/renter/jobs/job-') == 1 and ids[0] in cancelled

    provider = api.provider(gpu_model="T4")  # an "any" job runs on a GPU at the default price
    job = api.ok("GET", "/api/providers/jobs/next", headers=provider["headers"])["job"]
    body = result_body(job["job_id"], job["attempt"], stdout="line 1\nline 2\n", stderr="warn\n")
    body["truncated"] = True
    api.ok("POST", "/api/providers/job-result", json=body, headers=provider["headers"])
    page = client.get(f"/renter/jobs/{job['job_id']}").text
    assert 'id="truncated"' in page
    out = client.get(f"/renter/jobs/{job['job_id']}/stdout.txt")
    assert out.text == "line 1\nline 2\n"
    assert out.headers["content-disposition"].startswith("attachment")
    assert client.get(f"/renter/jobs/{job['job_id']}/stderr.txt").text == "warn\n"

    statement = client.get("/renter/statement").text
    assert "deposit" in statement or "credit" in statement
    rows = list(csv.DictReader(io.StringIO(client.get("/renter/statement.csv").text)))
    # The statement's postings add up to the renter's balance (available + held).
    assert sum(int(r["amount_halala"]) for r in rows) == _balances(api, rid)
    assert all(re.fullmatch(r"-?\d+\.\d\d", r["amount_sar"]) for r in rows)


def _status(api, job_id: str) -> str:
    return api.ok("GET", f"/api/jobs/{job_id}", headers=api.admin)["job"]["status"]


def _balances(api, renter_id: str) -> int:
    accounts = {
        a["account"]: a["balance_halala"]
        for a in api.ok("GET", "/api/admin/reconciliation", headers=api.admin)["accounts"]
    }
    return accounts.get(f"renter:{renter_id}:available", 0) + accounts.get(
        f"renter:{renter_id}:held", 0
    )


def test_provider_actions(client: Browserless, api):
    """Pause and resume from the dashboard; the dashboard shows the reported GPUs."""
    r = client.post(
        "/signup/provider",
        {
            "name": "P",
            "email": "p@example.com",
            "gpu_model": "RTX 4090",
            "gpu_count": "1",
            "vram_gb": "24",
        },
    )
    key = re.search(r'id="api-key">([^<]+)<', r.text).group(1)
    headers = {"x-provider-key": key}
    api.heartbeat({"headers": headers})
    dash = client.get("/provider").text
    assert "24576" in dash and 'id="onboarding"' not in dash
    assert client.post("/provider/pause", {}).status_code == 303
    assert api.ok("GET", "/api/providers/me", headers=headers)["paused"] is True
    assert client.post("/provider/resume", {}).status_code == 303
    assert api.ok("GET", "/api/providers/me", headers=headers)["paused"] is False
    assert client.get("/provider/status").json()["state"] == "online"


def test_admin_actions(admin_client: Browserless, api):
    """Suspend/unsuspend, credit once per reference, cancel, requeue a failed job, reject a
    withdrawal, price, images, and the event log by sequence."""
    p = api.provider()
    pid = p["provider_id"]
    admin = admin_client
    assert (
        admin.post("/admin/providers", {"action": "suspend", "provider_id": pid}).status_code == 303
    )
    assert api.ok("GET", "/api/providers/me", headers=p["headers"])["suspended"] is True
    admin.post("/admin/providers", {"action": "unsuspend", "provider_id": pid})
    assert api.ok("GET", "/api/providers/me", headers=p["headers"])["suspended"] is False

    renter = api.renter()
    rid = renter["renter_id"]
    credit = {"renter_id": rid, "amount": "12.34", "reference": "bank-1", "reason": "wire"}
    r = admin.post("/admin/renters", credit)
    assert r.status_code == 303
    assert "Renter credited." in admin.get(r.headers["location"]).text
    r = admin.post("/admin/renters", credit)
    assert "already credited" in admin.get(r.headers["location"]).text
    assert api.balance(renter)["available_halala"] == 1234

    job = api.submit(renter, max_duration_seconds=600)["job"]
    admin.post("/admin/jobs", {"action": "cancel", "job_id": job["job_id"]})
    assert _status(api, job["job_id"]) == "cancelled"

    failed = api.submit(renter, max_duration_seconds=600)["job"]
    for _ in range(3):  # every attempt ends in an infrastructure fault
        lease = api.ok("GET", "/api/providers/jobs/next", headers=p["headers"])["job"]
        api.ok(
            "POST",
            "/api/providers/job-result",
            json=result_body(lease["job_id"], lease["attempt"], outcome="failed", error="disk"),
            headers=p["headers"],
        )
    assert _status(api, failed["job_id"]) == "failed"
    assert failed["job_id"] in admin.get("/admin/jobs?status=failed").text
    admin.post("/admin/jobs", {"action": "requeue", "job_id": failed["job_id"]})
    assert _status(api, failed["job_id"]) == "queued"

    admin.post("/admin/pricing", {"gpu_model": "RTX 4090", "price": "100000.00"})
    assert "100,000.00" in admin.get("/admin/pricing").text
    api.heartbeat(p)
    market = api.ok("GET", "/api/marketplace")["providers"]
    assert [m["halala_per_gpu_hour"] for m in market if m["provider_id"] == pid] == [10_000_000]

    admin.post("/admin/images", {"action": "allow", "reference": "ghcr.io/acme/tool:1"})
    allowed = lambda: api.ok("GET", "/api/admin/images", headers=api.admin)["images"]  # noqa: E731
    assert "ghcr.io/acme/tool:1" in allowed()
    admin.post("/admin/images", {"action": "remove", "reference": "ghcr.io/acme/tool:1"})
    assert "ghcr.io/acme/tool:1" not in allowed()

    events = admin.get("/admin/events?after=0").text
    assert "renter.registered" in events or "provider.registered" in events
    head = api.head_seq()
    assert "No events after this sequence." in admin.get(f"/admin/events?after={head}").text

    overview = admin.get("/admin").text
    assert "Jobs by status" in overview and "<svg" in overview


def test_admin_rejects_a_withdrawal(admin_client: Browserless, api):
    """A rejected withdrawal goes back to earnings."""
    p = api.provider()
    admin_client.post("/admin/pricing", {"gpu_model": "RTX 4090", "price": "100000.00"})
    renter = api.renter(credit_halala=200_000)
    api.submit(renter, max_duration_seconds=60)
    lease = api.ok("GET", "/api/providers/jobs/next", headers=p["headers"])["job"]
    api.ok(
        "POST",
        f"/api/providers/jobs/{lease['job_id']}/started",
        json={"attempt": lease["attempt"]},
        headers=p["headers"],
    )
    api.ok(
        "POST",
        "/api/providers/job-result",
        json=result_body(lease["job_id"], lease["attempt"]),
        headers=p["headers"],
    )
    earned = api.ok("GET", "/api/providers/earnings", headers=p["headers"])["earnings_halala"]
    w = api.ok(
        "POST",
        "/api/providers/me/withdraw",
        201,
        json={"amount_halala": 1000, "iban": IBAN},
        headers=p["headers"],
    )
    assert w["withdrawal_id"] in admin_client.get("/admin/withdrawals").text
    admin_client.post(
        "/admin/withdrawals", {"action": "reject", "withdrawal_id": w["withdrawal_id"]}
    )
    assert (
        api.ok("GET", "/api/providers/earnings", headers=p["headers"])["earnings_halala"] == earned
    )
    assert "rejected" in admin_client.get("/admin/withdrawals?status=rejected").text


def test_sign_in_with_each_kind_of_credential(client: Browserless, api):
    """A renter key opens /renter, a provider key /provider, the admin token /admin."""
    renter = api.renter()
    provider = api.provider(approve=False)
    for secret, home in ((renter["api_key"], "/renter"), (provider["api_key"], "/provider")):
        c = Browserless(_server_of(client))
        r = c.signin(secret)
        assert r.status_code == 303 and r.headers["location"] == home
        c.close()
    r = client.post("/signin", {"key": "wrong", "next": "/admin/events"})
    assert r.status_code == 401 and "not valid" in r.text


def test_submit_uses_the_allowlisted_image(client: Browserless, api):
    """The submit form lists the allowlist and submits the image chosen."""
    client.signup_renter()
    page = client.get("/renter/jobs/new").text
    assert f'<option value="{IMAGE}">' in page
