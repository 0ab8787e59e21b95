"""Bad input in every form: shown next to its field in the user's language, what was typed is
kept, nothing is appended, and no page answers 500."""

from __future__ import annotations

import re

import pytest

from tests.dcp_http._live import IBAN, IMAGE

from .conftest import Browserless

SUBMIT = {
    "image": IMAGE,
    "command": "echo hi",
    "gpu_type": "any",
    "gpu_count": "1",
    "min_vram_gb": "0",
    "max_duration_seconds": "600",
    "priority": "standard",
    "token": "t-1",
    "action": "submit",
}


def field_error(html: str, name: str) -> str:
    """The error shown under field `name` (the page must mark that field invalid)."""
    m = re.search(rf'<p class="error" id="e-{name}">([^<]*)</p>', html)
    assert m, f"no error next to {name}"
    return m.group(1)


def typed(html: str, name: str) -> str:
    m = re.search(rf'id="f-{name}" name="{name}"[^>]*value="([^"]*)"', html)
    assert m, f"no field {name}"
    return m.group(1)


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"command": ""}, "command", "Enter the command to run."),
        ({"command": 'echo "unclosed'}, "command", "Enter the command to run."),
        ({"image": "not/allowed:1"}, "image", "not on the allowlist"),
        ({"max_duration_seconds": "59"}, "max_duration_seconds", "from 60 to 86400"),
        ({"max_duration_seconds": "1e3"}, "max_duration_seconds", "whole number"),
        ({"gpu_count": "0"}, "gpu_count", "from 1 to 64"),
        ({"env": "no equals sign"}, "env", "NAME=value"),
        ({"priority": "urgent"}, "priority", "not valid"),
    ],
)
def test_submit_form_errors(client: Browserless, api, changes, field, message):
    """Each bad submit field gets its own message; the form keeps what was typed."""
    client.signup_renter()
    api.credit(_renter_id(client), 100_000)
    before = api.head_seq()
    r = client.post("/renter/jobs/new", {**SUBMIT, **changes})
    assert r.status_code == 400
    assert message in field_error(r.text, field)
    if field in ("command", "max_duration_seconds", "gpu_count"):
        assert typed(r.text, field) == changes[field].replace('"', "&#34;")
    assert api.head_seq() == before


def _renter_id(client: Browserless) -> str:
    m = re.search(r'data-renter-id="([^"]+)"', client.get("/renter").text)
    assert m
    return m.group(1)


def test_a_job_larger_than_the_balance_shows_the_shortfall(client: Browserless, api):
    """402: the reserve, the balance and the exact shortfall, next to the duration field."""
    client.signup_renter()
    api.credit(_renter_id(client), 10)
    before = api.head_seq()
    # any GPU: 33 halala an hour; 86400 s: a 792 halala reserve, 782 short.
    r = client.post("/renter/jobs/new", {**SUBMIT, "max_duration_seconds": "86400"})
    assert r.status_code == 402
    assert "7.82 SAR short" in field_error(r.text, "max_duration_seconds")
    assert 'id="shortfall"' in r.text
    assert typed(r.text, "max_duration_seconds") == "86400"
    assert api.head_seq() == before


def test_estimate_shows_the_reserve_and_changes_nothing(client: Browserless, api):
    client.signup_renter()
    before = api.head_seq()
    r = client.post("/renter/jobs/new", {**SUBMIT, "action": "estimate"})
    assert r.status_code == 200
    assert "Reserve held now: 0.06 SAR" in r.text  # ceil(33 * 600 / 3600) = 6 halala
    assert api.head_seq() == before
    q = "gpu_type=RTX+4090&gpu_count=2&max_duration_seconds=3600&priority=priority"
    e = client.get(f"/renter/jobs/estimate?{q}").json()
    assert e["rate_halala"] == 240 and e["reserve_halala"] == 240  # ceil(100 * 2 * 120 / 100)


def test_the_same_form_twice_submits_once(client: Browserless, api):
    """The form's token is the submission's idempotency key: a resent form is one job."""
    client.signup_renter()
    api.credit(_renter_id(client), 100_000)
    first = client.post("/renter/jobs/new", SUBMIT)
    second = client.post("/renter/jobs/new", SUBMIT)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]


@pytest.mark.parametrize("amount", ["1.234", "-5", "abc", "", "0", "1e3", "0.001"])
def test_topup_amount_must_be_whole_halala(client: Browserless, api, amount):
    client.signup_renter()
    before = api.head_seq()
    r = client.post("/renter/topup", {"amount": amount})
    assert r.status_code == 400
    assert field_error(r.text, "amount")
    assert typed(r.text, "amount") == amount
    assert api.head_seq() == before


def test_withdraw_errors(client: Browserless, api):
    """A bad IBAN, an amount under the minimum or over the earnings: each next to its field."""
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
    assert r.status_code == 201
    before = api.head_seq()
    cases = [
        ({"amount": "20.00", "iban": "SA0380000000608010167518"}, "iban", "not a valid Saudi IBAN"),
        ({"amount": "20.00", "iban": "GB82WEST12345698765432"}, "iban", "not a valid Saudi IBAN"),
        ({"amount": "20.001", "iban": IBAN}, "amount", "whole number of halala"),
        ({"amount": "5.00", "iban": IBAN}, "amount", "minimum withdrawal is 10.00 SAR"),
        ({"amount": "20.00", "iban": IBAN}, "amount", "more than your earnings"),
    ]
    for data, field, message in cases:
        r = client.post("/provider/earnings", data)
        assert r.status_code in (400, 402), data
        assert message in field_error(r.text, field), data
        assert typed(r.text, "amount") == data["amount"]
    assert api.head_seq() == before
    assert client.get(f"/provider/iban?iban={IBAN}").json()["valid"] is True
    assert client.get("/provider/iban?iban=SA0380000000608010167518").json()["valid"] is False


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "", "email": "a@example.com"}, "name"),
        ({"name": "Ada", "email": "not-an-email"}, "email"),
        ({"name": "x" * 201, "email": "a@example.com"}, "name"),
    ],
)
def test_signup_errors(client: Browserless, api, data, field):
    before = api.head_seq()
    r = client.post("/signup", data)
    assert r.status_code == 400
    assert field_error(r.text, field)
    assert typed(r.text, "email") == data["email"]
    assert api.head_seq() == before


def test_arabic_errors_are_arabic(client: Browserless, api):
    """The same bad input in an Arabic session gets the Arabic message."""
    client.post("/language", {"lang": "ar", "next": "/"})
    client.signup_renter()
    r = client.post("/renter/topup", {"amount": "1.234"})
    assert r.status_code == 400
    assert "هللات" in field_error(r.text, "amount")
    assert 'dir="rtl"' in r.text


def test_admin_form_errors(admin_client: Browserless, api):
    """Credit, price and image forms refuse bad input next to the field and change nothing."""
    renter = api.renter()
    before = api.head_seq()
    r = admin_client.post(
        "/admin/renters",
        {"renter_id": renter["renter_id"], "amount": "1.999", "reference": "r1", "reason": ""},
    )
    assert r.status_code == 400 and "whole number of halala" in field_error(r.text, "amount")
    r = admin_client.post(
        "/admin/renters",
        {"renter_id": renter["renter_id"], "amount": "10", "reference": "", "reason": ""},
    )
    assert r.status_code == 400 and field_error(r.text, "reference")
    r = admin_client.post("/admin/pricing", {"gpu_model": "H200", "price": "ten"})
    assert r.status_code == 400 and field_error(r.text, "price")
    r = admin_client.post("/admin/images", {"action": "allow", "reference": "bad image ref"})
    assert r.status_code == 400 and field_error(r.text, "reference")
    assert api.head_seq() == before


GETS = [
    "/",
    "/marketplace",
    "/pricing",
    "/docs/renters",
    "/docs/providers",
    "/docs/api",
    "/signup",
    "/signup/provider",
    "/signin",
    "/renter",
    "/renter/jobs",
    "/renter/jobs/new",
    "/renter/statement",
    "/renter/statement.csv",
    "/provider",
    "/provider/earnings",
    "/admin",
    "/admin/providers",
    "/admin/renters",
    "/admin/jobs",
    "/admin/withdrawals",
    "/admin/pricing",
    "/admin/images",
    "/admin/reconciliation",
    "/admin/events",
]
JUNK_QUERIES = [
    "",
    "?status=nope",
    "?cursor=%00%ff",
    "?cursor=1:x",
    "?offset=-1",
    "?after=99999999999999999999",
    "?min_vram=-1&max_price=1.234&gpu=%3Cscript%3E",
    "?next=//evil.example",
    "?lang=xx",
]


def test_no_page_answers_500(client: Browserless, admin_client: Browserless, api):
    """Every page, with junk in its query and junk posted to its forms, answers below 500."""
    renter = Browserless(_server_of(client))
    renter.signup_renter()
    provider = Browserless(_server_of(client))
    provider.post(
        "/signup/provider",
        {"name": "P", "email": "p@example.com", "gpu_model": "X", "gpu_count": "1", "vram_gb": "1"},
    )
    junk = {
        "amount": "\x00",
        "iban": "x" * 5000,
        "action": "approve",
        "provider_id": "p-none",
        "renter_id": "r-none",
        "job_id": "job-none",
        "withdrawal_id": "wd-none",
        "reference": "\u202e",
        "gpu_model": "",
        "price": "99999999999999",
        "command": "'",
        "key": "dcp-renter-" + "z" * 300,
        "lang": "xx",
        "next": "https://evil.example",
    }
    for who in (client, renter, provider, admin_client):
        for path in GETS:
            for q in JUNK_QUERIES:
                r = who.get(path + q)
                assert r.status_code < 500, (path + q, r.status_code)
        for path in (
            "/signup",
            "/signup/provider",
            "/signin",
            "/language",
            "/renter/topup",
            "/renter/jobs/new",
            "/renter/jobs/job-none/cancel",
            "/provider/pause",
            "/provider/resume",
            "/provider/earnings",
            "/admin/providers",
            "/admin/renters",
            "/admin/jobs",
            "/admin/withdrawals",
            "/admin/pricing",
            "/admin/images",
        ):
            r = who.post(path, junk)
            assert r.status_code < 500, (path, r.status_code, r.text[:200])
    r = client.post("/signin", {"key": "x"}, headers={"content-type": "text/plain"})
    assert r.status_code == 415
    assert not [x for x in admin_client.http.cookies.jar if "dcp-" in (x.value or "")]
    renter.close()
    provider.close()


def _server_of(client: Browserless):
    class _S:
        url = str(client.http.base_url).rstrip("/")

    return _S()
