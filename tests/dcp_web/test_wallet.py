"""The renter's wallet with top-ups through the payment gateway: a real `dcp serve` (uvicorn,
SQLite file), real Chromium, and the gateway played by the local stand-in of
tests/dcp_http/gateway.py, a real HTTP server speaking the gateway's documented API. That
stand-in, and the checkout page the browser is shown in its place (the gateway's hosted page
cannot be reached from the tests), are the only fakes here. Every test ends with the books at
zero."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.dcp_http._live import ADMIN_TOKEN, Api, Server, free_port, serve
from tests.dcp_http.gateway import SECRET_KEY, WEBHOOK_TOKEN, Gateway, running_gateway
from tests.dcp_http.test_payments import WEBHOOK, assert_books, events_of

from .conftest import Browser, Browserless
from .test_forms import field_error, typed

CHECKOUT = "https://checkout.moyasar.test/"


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with running_gateway() as gw:
        yield gw


@pytest.fixture
def server(tmp_path: Path, gateway: Gateway) -> Iterator[Server]:
    """Payments on (this module's `server` replaces conftest's sandbox one): the gateway's
    return URL is this very server, so the browser can come back to it."""
    port = free_port()
    with serve(
        tmp_path / "dcp.db",
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        moyasar_secret_key=SECRET_KEY,
        moyasar_webhook_token=WEBHOOK_TOKEN,
        moyasar_api_url=gateway.url,
        moyasar_checkout_origin=CHECKOUT.rstrip("/"),
        moyasar_timeout_s=1.0,
        topup_sweep_interval_s=3600.0,  # the webhook decides here, not the sweep
    ) as s:
        yield s
        assert SECRET_KEY not in s.log_text() and WEBHOOK_TOKEN not in s.log_text()


@pytest.fixture
def api(server: Server) -> Iterator[Api]:
    client = Api(server)
    yield client
    assert_books(client)
    client.close()


def signed_in(server: Server, api: Api, credit: int = 0) -> tuple[Browserless, dict[str, Any]]:
    renter = api.renter(credit)
    client = Browserless(server)
    assert client.signin(renter["api_key"]).status_code == 303
    return client, renter


def test_browser_topup_journey(browser: Browser, api: Api, gateway: Gateway):
    """Sign in, top up 250.75 SAR, pay at the (stand-in) checkout, come back: the wallet says
    paid and the balance grew by exactly 25075 halala, once; the Arabic page reads RTL."""
    renter = api.renter(1_000)
    page = browser.person()
    page.goto("/signin")
    page.fill("#f-key", renter["api_key"])
    page.click("#signin-submit")
    page.wait_for_url(re.compile(r"/renter$"))
    page.goto("/wallet")
    assert page.locator("#available").inner_text() == "10.00"

    def checkout(route: Any) -> None:
        """The gateway's hosted page, reduced to its link back to the merchant."""
        invoice_id = route.request.url.split("/invoices/")[1].split("?")[0]
        back = gateway.invoices[invoice_id]["success_url"]
        route.fulfill(
            status=200,
            content_type="text/html",
            body=f'<h1>Checkout</h1><a id="back" href="{back}">Back to the merchant</a>',
        )

    page.route(CHECKOUT + "**", checkout)
    page.fill("#f-amount", "250.75")
    page.click("#pay-submit")
    page.wait_for_url(re.compile(r"^https://checkout\.moyasar\.test/invoices/"))
    (sent,) = gateway.seen("POST", "/v1/invoices")
    assert sent.body["amount"] == 25_075 and sent.body["currency"] == "SAR"
    (topup_id,) = [sent.body["metadata"]["dcp_topup_id"]]
    invoice_id = page.url.split("/invoices/")[1].split("?")[0]
    assert gateway.invoices[invoice_id]["metadata"] == {"dcp_topup_id": topup_id}

    payment = gateway.pay(invoice_id)
    reply = api.ok("POST", WEBHOOK, json=gateway.webhook(payment))
    assert reply["status"] == "paid"
    page.click("#back")  # cross-site: the session cookie comes on the page's own re-ask
    page.wait_for_url(re.compile(rf"/wallet\?topup={topup_id}$"))
    expect(page.locator("#topup-status")).to_have_text("paid")
    back = gateway.invoices[invoice_id]["success_url"]
    assert browser.urls.count(back) == 2  # the gateway's return, then the page's own re-ask
    assert "250.75 SAR was added" in page.locator("#topup-shown").inner_text()
    assert page.locator("#available").inner_text() == "260.75"
    assert api.balance(renter)["available_halala"] == 1_000 + 25_075
    row = page.locator(f"#topups tr[data-topup-id='{topup_id}']")
    assert "250.75" in row.inner_text() and "paid" in row.inner_text()
    browser.shot(page, "wallet-paid")

    page.reload()  # coming back again credits nothing more
    assert api.balance(renter)["available_halala"] == 1_000 + 25_075
    assert len(events_of(api, "renter.topup_paid")) == 1

    ar = browser.person("ar")
    ar.goto("/signin")
    ar.fill("#f-key", renter["api_key"])
    ar.click("#signin-submit")
    ar.wait_for_url(re.compile(r"/renter$"))
    ar.goto(f"/wallet?topup={topup_id}")
    assert ar.locator("html").get_attribute("dir") == "rtl"
    assert ar.locator("#topup-status").inner_text() == "مدفوع"
    assert ar.evaluate("getComputedStyle(document.body).direction") == "rtl"
    browser.shot(ar, "wallet-paid-ar")


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("0", "from 1.00 to 10,000.00 SAR"),
        ("0.99", "from 1.00 to 10,000.00 SAR"),
        ("10000.01", "from 1.00 to 10,000.00 SAR"),
        ("1.234", "at most two decimals"),
        ("abc", "at most two decimals"),
        ("", "at most two decimals"),
    ],
)
def test_bad_amounts_are_shown_next_to_the_field(
    server: Server, api: Api, gateway: Gateway, amount: str, message: str
):
    """A bad amount: the message is under the field, what was typed is kept, no top-up is
    recorded and nothing is sent to the gateway."""
    client, _ = signed_in(server, api)
    before = api.head_seq()
    r = client.post("/wallet/topup", {"amount": amount, "token": "t-1"})
    assert r.status_code == 400
    assert message in field_error(r.text, "amount")
    assert typed(r.text, "amount") == amount
    assert gateway.requests == [] and api.head_seq() == before
    client.close()


def test_bad_amount_in_arabic(server: Server, api: Api, gateway: Gateway):
    client, _ = signed_in(server, api)
    client.post("/language", {"lang": "ar"})
    r = client.post("/wallet/topup", {"amount": "0", "token": "t-1"})
    assert r.status_code == 400 and 'dir="rtl"' in r.text
    assert field_error(r.text, "amount") == "أدخل مبلغًا من 1.00 إلى 10,000.00 ريال."
    assert gateway.requests == []
    client.close()


def test_exact_halala_reach_the_gateway(server: Server, api: Api, gateway: Gateway):
    """ "250.75" is 25075 halala (never through a float); a second send of the same form (a
    double click) goes to the same checkout, invoiced once."""
    client, renter = signed_in(server, api)
    form = {"amount": "250.75", "token": "double-click"}
    first = client.post("/wallet/topup", form)
    assert first.status_code == 303 and first.headers["location"].startswith(CHECKOUT)
    again = client.post("/wallet/topup", form)
    assert again.headers["location"] == first.headers["location"]
    (sent,) = gateway.seen("POST", "/v1/invoices")
    assert sent.body["amount"] == 25_075
    wallet = client.get("/wallet").text
    assert wallet.count("data-topup-id=") == 1 and "250.75" in wallet
    assert api.balance(renter)["available_halala"] == 0  # nothing until the gateway says paid
    client.close()


def test_missing_csrf_is_refused(server: Server, api: Api, gateway: Gateway):
    client, _ = signed_in(server, api)
    before = api.head_seq()
    r = client.post("/wallet/topup", {"amount": "250.75", "token": "t"}, csrf=False)
    assert r.status_code == 403 and "Nothing was changed" in r.text
    r = client.post("/wallet/topup", {"amount": "250.75", "csrf_token": "forged"}, csrf=False)
    assert r.status_code == 403
    assert gateway.requests == [] and api.head_seq() == before
    client.close()


def test_gateway_down_is_a_clear_message(server: Server, api: Api, gateway: Gateway):
    """The gateway answers 5xx, then refuses (4xx): a message on the wallet, never a 500, and
    the typed amount kept; no money moves."""
    client, renter = signed_in(server, api)
    gateway.fail("POST", "/v1/invoices", status=503)
    r = client.post("/wallet/topup", {"amount": "250.75", "token": "t-down"})
    assert r.status_code == 503
    assert "cannot be reached right now" in r.text and 'role="alert"' in r.text
    assert typed(r.text, "amount") == "250.75"
    gateway.fail("POST", "/v1/invoices", status=400)
    r = client.post("/wallet/topup", {"amount": "300", "token": "t-refused"})
    assert r.status_code == 502 and "refused this top-up" in r.text
    wallet = client.get("/wallet").text
    assert "failed" in wallet and "pending" in wallet  # the refused one, the unknown one
    assert api.balance(renter)["available_halala"] == 0
    client.close()


def test_another_renters_topup_is_not_shown(server: Server, api: Api, gateway: Gateway):
    client, _ = signed_in(server, api)
    r = client.post("/wallet/topup", {"amount": "5", "token": "mine"})
    topup_id = gateway.seen("POST", "/v1/invoices")[0].body["metadata"]["dcp_topup_id"]
    assert r.status_code == 303
    assert client.get(f"/wallet?topup={topup_id}").status_code == 200
    other, _ = signed_in(server, api)
    assert other.get(f"/wallet?topup={topup_id}").status_code == 404
    assert other.get("/wallet?topup=nonsense").status_code == 404
    client.close()
    other.close()


def test_payments_off_shows_no_form(tmp_path: Path):
    """Without a gateway key the wallet has no top-up form and its POST is a page, not a 500;
    the sandbox top-up on the dashboard stays."""
    with serve(tmp_path / "off.db", sandbox=True) as s:
        api = Api(s)
        client, _ = signed_in(s, api)
        wallet = client.get("/wallet")
        assert wallet.status_code == 200 and 'action="/wallet/topup"' not in wallet.text
        assert "Top-ups by card are not enabled" in wallet.text
        r = client.post("/wallet/topup", {"amount": "250.75"})
        assert r.status_code == 503 and "not enabled on this server" in r.text
        assert 'action="/renter/topup"' in client.get("/renter").text
        assert_books(api)
        client.close()
        api.close()


def test_coming_back_from_the_gateway_keeps_the_session(server: Server, api: Api):
    """The gateway's return is a cross-site navigation, which carries no SameSite=Strict
    cookie: the page asks again from our own origin (a refresh that sets no cookie, so the
    browser's session is not replaced), and the second, same-site request is signed in."""
    client, _ = signed_in(server, api)
    stranger = Browserless(server)
    r = stranger.get("/wallet?topup=tu-1", headers={"sec-fetch-site": "cross-site"})
    assert r.status_code == 200 and "set-cookie" not in r.headers
    assert 'http-equiv="refresh" content="0;url=/wallet?topup=tu-1"' in r.text
    r = stranger.get("/wallet?topup=tu-1", headers={"sec-fetch-site": "same-origin"})
    assert r.status_code == 303 and r.headers["location"].startswith("/signin")
    r = client.get("/wallet", headers={"sec-fetch-site": "cross-site"})
    assert r.status_code == 200 and 'id="available"' in r.text  # a session cookie: no bounce
    stranger.close()
    client.close()


def paid_topup(api: Api, gateway: Gateway, renter: dict[str, Any], halala: int, **pay: Any) -> str:
    """A top-up started through the API and paid at the gateway (as `pay` says)."""
    t = api.ok(
        "POST",
        "/api/renters/topups",
        201,
        json={"amount_halala": halala},
        headers=renter["headers"],
    )["topup"]
    api.ok("POST", WEBHOOK, json=gateway.webhook(gateway.pay(t["invoice_id"], **pay)))
    return t["topup_id"]  # type: ignore[no-any-return]


def test_admin_lists_topups_by_status_and_refunds(
    server: Server, api: Api, gateway: Gateway, admin_client: Browserless
):
    """The admin console lists top-ups by status (a disputed one with what the gateway said)
    and refunds a paid one through the same call as the API: the gateway is asked once and
    the renter's balance goes back to what it was."""
    renter = api.renter()
    paid = paid_topup(api, gateway, renter, 25_075)
    disputed = paid_topup(api, gateway, renter, 10_000, amount=9_999)
    page = admin_client.get("/admin/topups?status=disputed").text
    assert f'data-topup-id="{disputed}"' in page and f'data-topup-id="{paid}"' not in page
    assert "99.99 SAR" in page
    page = admin_client.get("/admin/topups?status=paid").text
    assert f'data-topup-id="{paid}"' in page and 'value="refund"' in page
    assert admin_client.get("/admin/topups?status=nonsense").status_code == 404

    before = api.head_seq()
    r = admin_client.post("/admin/topups", {"action": "refund", "topup_id": paid}, csrf=False)
    assert r.status_code == 403 and api.head_seq() == before
    assert gateway.seen("POST", "/v1/payments/") == []

    r = admin_client.post("/admin/topups", {"action": "refund", "topup_id": paid})
    assert r.status_code == 303 and r.headers["location"] == "/admin/topups?status=refunded"
    (refund,) = gateway.seen("POST", "/v1/payments/")
    assert refund.path.endswith("/refund") and refund.body == {"amount": 25_075}
    assert api.balance(renter)["available_halala"] == 0
    assert "Top-up refunded." in admin_client.get(r.headers["location"]).text

    r = admin_client.post("/admin/topups", {"action": "refund", "topup_id": paid})
    assert r.status_code == 409  # refunded already: a page, nothing more
    assert len(gateway.seen("POST", "/v1/payments/")) == 1


def test_admin_topups_page_without_payments(tmp_path: Path):
    """Payments off: the admin's page says so (the nav links to it always), a refund is 503."""
    with serve(tmp_path / "off.db") as s:
        api = Api(s)
        admin = Browserless(s)
        assert admin.signin(ADMIN_TOKEN).status_code == 303
        r = admin.get("/admin/topups")
        assert r.status_code == 200 and "Top-ups by card are not enabled" in r.text
        r = admin.post("/admin/topups", {"action": "refund", "topup_id": "tu-x"})
        assert r.status_code == 503
        assert_books(api)
        admin.close()
        api.close()


def test_sending_again_after_an_unknown_outcome_invoices_once(
    server: Server, api: Api, gateway: Gateway
):
    """The gateway made the invoice but its answer was lost (5xx after the work), or it was
    too slow: the wallet says so and keeps the form's token, so sending the form again finds
    that invoice (by our metadata) and goes to its checkout, without a second invoice."""
    client, _ = signed_in(server, api)
    gateway.fail("POST", "/v1/invoices", status=503, after_work=True)
    r = client.post("/wallet/topup", {"amount": "250.75", "token": "t-lost"})
    assert r.status_code == 503 and "cannot be reached right now" in r.text
    kept = re.search(r'name="token" value="([^"]+)"', r.text)
    assert kept and kept.group(1) == "t-lost"
    r = client.post("/wallet/topup", {"amount": "250.75", "token": kept.group(1)})
    assert r.status_code == 303 and r.headers["location"].startswith(CHECKOUT)
    (invoice,) = gateway.invoices.values()
    assert r.headers["location"] == invoice["url"]
    assert len(gateway.seen("POST", "/v1/invoices")) == 1
    assert len(gateway.seen("GET", "/v1/invoices")) == 1  # the look-up by metadata

    gateway.fail("POST", "/v1/invoices", delay_s=2.0)  # past the 1 s timeout
    r = client.post("/wallet/topup", {"amount": "10", "token": "t-slow"})
    assert r.status_code == 503 and "cannot be reached right now" in r.text
    client.close()


def test_junk_with_payments_on_is_never_a_500(
    server: Server, api: Api, gateway: Gateway, admin_client: Browserless
):
    """Junk queries and junk forms on the wallet and the admin's top-ups answer below 500 and
    reach neither the ledger nor the gateway."""
    client, _ = signed_in(server, api)
    before = api.head_seq()
    for q in ("", "?topup=", "?topup=%00%ff", "?topup=" + "x" * 500, "?status=%3Cscript%3E"):
        for who, path in ((client, "/wallet"), (admin_client, "/admin/topups")):
            r = who.get(path + q)
            assert r.status_code < 500, (path + q, r.status_code)
    junk = {"amount": "\x00", "token": "\u202e" * 300, "action": "refund", "topup_id": "\x00"}
    for amount in ("\x00", "-1", "1e3", "9" * 40, "١٠٠", "1,555", " "):
        r = client.post("/wallet/topup", {**junk, "amount": amount})
        assert r.status_code == 400, (amount, r.status_code)
    r = admin_client.post("/admin/topups", junk)
    assert r.status_code == 404
    r = admin_client.post("/admin/topups", {"action": "nope"})
    assert r.status_code == 404
    assert api.head_seq() == before and gateway.requests == []
    client.close()
