"""Top-ups through the payment gateway, end to end: a real API server on a real SQLite file,
and the gateway played by a local HTTP server speaking its documented API (tests/dcp_http/
gateway.py: the only fake here, since no gateway can be reached from the tests). Every test
asserts the exact requests we sent the gateway and ends with the books at zero."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ._live import Api, Server, serve
from .gateway import SECRET_KEY, WEBHOOK_TOKEN, Gateway, running_gateway

WEBHOOK = "/api/payments/moyasar/webhook"
PUBLIC_URL = "https://dcp.example"
BASIC = "Basic " + base64.b64encode(f"{SECRET_KEY}:".encode()).decode()


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with running_gateway() as gw:
        yield gw


@contextlib.contextmanager
def paying_server(db: Path, gw: Gateway, **overrides: Any) -> Iterator[Server]:
    fields: dict[str, Any] = {
        "moyasar_secret_key": SECRET_KEY,
        "moyasar_webhook_token": WEBHOOK_TOKEN,
        "moyasar_api_url": gw.url,
        "moyasar_timeout_s": 1.0,
        "public_url": PUBLIC_URL,
        "topup_sweep_interval_s": 3600.0,  # off unless a test turns it on
        **overrides,
    }
    with serve(db, **fields) as server:
        yield server


@pytest.fixture
def papi(tmp_path: Path, gateway: Gateway) -> Iterator[Api]:
    with paying_server(tmp_path / "dcp.db", gateway) as server:
        client = Api(server)
        yield client
        assert_books(client)
        assert SECRET_KEY not in server.log_text()
        assert WEBHOOK_TOKEN not in server.log_text()
        client.close()


def assert_books(api: Api) -> None:
    """The books balance: all accounts sum to 0 and every invariant holds."""
    rec = api.ok("GET", "/api/admin/reconciliation", headers=api.admin)
    assert rec["sum_halala"] == 0 and rec["invariants_ok"], rec


def events_of(api: Api, kind: str) -> list[dict[str, Any]]:
    page = api.ok("GET", "/api/admin/events?limit=1000", headers=api.admin)
    return [e for e in page["events"] if e["type"] == kind]


def start_topup(api: Api, renter: dict[str, Any], amount: int, **kw: Any) -> dict[str, Any]:
    body = api.ok(
        "POST",
        "/api/renters/topups",
        201,
        json={"amount_halala": amount},
        headers=renter["headers"],
        **kw,
    )
    return body["topup"]  # type: ignore[no-any-return]


def topup_of(api: Api, renter: dict[str, Any], topup_id: str) -> dict[str, Any]:
    return api.ok("GET", f"/api/renters/topups/{topup_id}", headers=renter["headers"])["topup"]  # type: ignore[no-any-return]


def wait_for(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_paid_topup_is_credited_once(papi: Api, gateway: Gateway):
    """The invoice we create carries the amount in halala, SAR, our top-up id and the return
    URL; the webhook is believed only after the payment is fetched; a repeat credits nothing."""
    renter = papi.renter()
    t = start_topup(papi, renter, 12_345)
    (post,) = gateway.seen("POST", "/v1/invoices")
    assert post.authorization == BASIC and post.content_type == "application/json"
    assert post.body == {
        "amount": 12_345,
        "currency": "SAR",
        "description": f"DCP balance top-up {t['topup_id']}",
        "metadata": {"dcp_topup_id": t["topup_id"]},
        "success_url": f"{PUBLIC_URL}/wallet?topup={t['topup_id']}",
        "back_url": f"{PUBLIC_URL}/wallet?topup={t['topup_id']}",
        "expired_at": post.body["expired_at"],
    }
    assert post.body["expired_at"].endswith("Z")
    invoice = gateway.invoices[t["invoice_id"]]
    assert t["status"] == "pending" and t["checkout_url"] == invoice["url"]
    assert t["amount_halala"] == 12_345 and t["renter_id"] == renter["renter_id"]

    payment = gateway.pay(t["invoice_id"])
    reply = papi.ok("POST", WEBHOOK, json=gateway.webhook(payment))
    assert reply == {"received": True, "topup_id": t["topup_id"], "status": "paid"}
    (get,) = gateway.seen("GET", "/v1/payments/")
    assert get.path == f"/v1/payments/{payment['id']}" and get.authorization == BASIC
    assert papi.balance(renter)["available_halala"] == 12_345
    again = papi.ok("POST", WEBHOOK, json=gateway.webhook(payment))
    assert again["status"] == "paid"
    assert papi.balance(renter)["available_halala"] == 12_345
    (paid,) = events_of(papi, "renter.topup_paid")
    assert paid["payload"]["payment_id"] == payment["id"]
    assert paid["payload"]["postings"] == [
        {"account": "world:deposits", "amount_halala": -12_345},
        {"account": f"renter:{renter['renter_id']}:available", "amount_halala": 12_345},
    ]
    shown = topup_of(papi, renter, t["topup_id"])
    assert shown["status"] == "paid" and shown["payment_id"] == payment["id"]
    listed = papi.ok("GET", "/api/renters/topups", headers=renter["headers"])
    assert [x["topup_id"] for x in listed["topups"]] == [t["topup_id"]]
    other = papi.renter()
    r = papi.get(f"/api/renters/topups/{t['topup_id']}", headers=other["headers"])
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_same_webhook_ten_times_concurrently_credits_once(papi: Api, gateway: Gateway):
    """Ten copies of one notification at once: ten answers, one credit."""
    renter = papi.renter()
    t = start_topup(papi, renter, 5_000)
    body = gateway.webhook(gateway.pay(t["invoice_id"]))
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(lambda _: papi.post(WEBHOOK, json=body).status_code, range(10)))
    assert codes == [200] * 10
    assert len(gateway.seen("GET", "/v1/payments/")) == 10
    assert papi.balance(renter)["available_halala"] == 5_000
    assert len(events_of(papi, "renter.topup_paid")) == 1


def test_forged_token_is_401_and_changes_nothing(papi: Api, gateway: Gateway):
    """A notification without the configured secret token is refused before the gateway is
    asked anything, and nothing is appended."""
    renter = papi.renter()
    t = start_topup(papi, renter, 5_000)
    payment = gateway.pay(t["invoice_id"])
    head = papi.head_seq()
    for token in ("", "wrong", WEBHOOK_TOKEN + "x", WEBHOOK_TOKEN[:-1]):
        r = papi.post(WEBHOOK, json=gateway.webhook(payment, token=token))
        assert r.status_code == 401 and r.json()["code"] == "unauthorized", r.text
    assert gateway.seen("GET", "/v1/payments/") == []
    assert papi.head_seq() == head
    assert papi.balance(renter)["available_halala"] == 0


def test_body_says_paid_but_gateway_says_not(papi: Api, gateway: Gateway):
    """A notification whose body claims a paid payment is not believed: the gateway's own
    answer (a failed attempt) credits nothing and leaves the top-up pending."""
    renter = papi.renter()
    t = start_topup(papi, renter, 5_000)
    attempt = gateway.pay(t["invoice_id"], status="failed")
    lie = gateway.webhook({**attempt, "status": "paid"})
    assert papi.ok("POST", WEBHOOK, json=lie)["status"] == "pending"
    assert papi.balance(renter)["available_halala"] == 0
    assert topup_of(papi, renter, t["topup_id"])["status"] == "pending"
    # A payment id the gateway does not know, or of an invoice not ours: ignored, nothing moves.
    unknown = gateway.webhook({**attempt, "id": "no-such-payment"})
    assert papi.ok("POST", WEBHOOK, json=unknown) == {
        "received": True,
        "topup_id": None,
        "status": "ignored",
    }
    assert events_of(papi, "renter.topup_paid") == []


def test_amount_or_currency_mismatch_is_disputed(papi: Api, gateway: Gateway):
    """Paid, but for another amount or in another currency: no credit, the top-up disputed,
    with what the gateway said, in the admin's list."""
    renter = papi.renter()
    short = start_topup(papi, renter, 5_000)
    usd = start_topup(papi, renter, 6_000)
    p1 = gateway.pay(short["invoice_id"], amount=4_999)
    p2 = gateway.pay(usd["invoice_id"], currency="USD")
    assert papi.ok("POST", WEBHOOK, json=gateway.webhook(p1))["status"] == "disputed"
    assert papi.ok("POST", WEBHOOK, json=gateway.webhook(p2))["status"] == "disputed"
    assert papi.balance(renter)["available_halala"] == 0
    page = papi.ok("GET", "/api/admin/topups?status=disputed", headers=papi.admin)
    by_id = {x["topup_id"]: x for x in page["topups"]}
    assert set(by_id) == {short["topup_id"], usd["topup_id"]}
    assert (
        by_id[short["topup_id"]]["gateway_amount_halala"],
        by_id[short["topup_id"]]["gateway_currency"],
    ) == (4_999, "SAR")
    assert (
        by_id[usd["topup_id"]]["gateway_amount_halala"],
        by_id[usd["topup_id"]]["gateway_currency"],
    ) == (6_000, "USD")
    r = papi.get("/api/admin/topups?status=nonsense", headers=papi.admin)
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"


def test_bad_input_is_refused_cleanly(papi: Api, gateway: Gateway):
    """Amounts out of bounds, floats and unknown fields are 400s that invoice nothing."""
    renter = papi.renter()
    for body in (
        {"amount_halala": 99},
        {"amount_halala": 1_000_001},
        {"amount_halala": 10.5},
        {"amount_halala": 500, "currency": "USD"},
        {},
    ):
        r = papi.post("/api/renters/topups", json=body, headers=renter["headers"])
        assert r.status_code == 400 and r.json()["code"] in (
            "validation_error",
            "invalid_request",
        ), r.text
    assert gateway.seen("POST") == []
    r = papi.post("/api/renters/topups", json={"amount_halala": 500})
    assert r.status_code == 401
    r = papi.post(WEBHOOK, json={"secret_token": WEBHOOK_TOKEN, "data": {"id": "../../x"}})
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"
    assert gateway.seen("GET") == []


def test_idempotency_key_invoices_once(papi: Api, gateway: Gateway):
    """The same Idempotency-Key returns the first top-up and sends no second invoice POST;
    with another amount it is 422 idempotency_key_reused (SPEC section 5)."""
    renter = papi.renter()
    headers = {**renter["headers"], "idempotency-key": "wallet-1"}
    a = papi.ok("POST", "/api/renters/topups", 201, json={"amount_halala": 700}, headers=headers)
    b = papi.ok("POST", "/api/renters/topups", 201, json={"amount_halala": 700}, headers=headers)
    assert a == b
    r = papi.post("/api/renters/topups", json={"amount_halala": 800}, headers=headers)
    assert r.status_code == 422 and r.json()["code"] == "idempotency_key_reused"
    assert len(gateway.seen("POST", "/v1/invoices")) == 1


def test_invoice_outcome_unknown_is_recovered_without_a_second_post(papi: Api, gateway: Gateway):
    """The invoice POST times out after the gateway made the invoice: 503, the top-up stays
    pending; the retry with the same key finds the invoice by our metadata (a GET), never
    POSTing again."""
    renter = papi.renter()
    headers = {**renter["headers"], "idempotency-key": "slow-1"}
    gateway.fail("POST", "/v1/invoices", delay_s=1.5, after_work=True)
    r = papi.post("/api/renters/topups", json={"amount_halala": 900}, headers=headers)
    assert r.status_code == 503 and r.json()["code"] == "gateway_unavailable", r.text
    t = papi.ok("POST", "/api/renters/topups", 201, json={"amount_halala": 900}, headers=headers)
    assert len(gateway.seen("POST", "/v1/invoices")) == 1
    (lookup,) = gateway.seen("GET", "/v1/invoices")
    assert lookup.query == {"metadata[dcp_topup_id]": [t["topup"]["topup_id"]]}
    (invoice,) = gateway.invoices.values()
    assert (
        t["topup"]["invoice_id"] == invoice["id"] and t["topup"]["checkout_url"] == invoice["url"]
    )


def test_invoice_refused_fails_the_topup(papi: Api, gateway: Gateway):
    """A definitive refusal of the invoice (4xx) is 502 and the top-up is failed, not left
    pending; nothing is credited."""
    renter = papi.renter()
    gateway.fail("POST", "/v1/invoices", status=422)
    r = papi.post("/api/renters/topups", json={"amount_halala": 900}, headers=renter["headers"])
    assert r.status_code == 502 and r.json()["code"] == "gateway_refused"
    (t,) = papi.ok("GET", "/api/renters/topups", headers=renter["headers"])["topups"]
    assert t["status"] == "failed" and "422" in t["reason"]


def test_payments_disabled_without_a_secret_key(tmp_path: Path):
    """No gateway key: the top-up routes and the webhook answer 503 payments_disabled."""
    with serve(tmp_path / "dcp.db") as server:
        api = Api(server)
        renter = api.renter()
        r = api.post("/api/renters/topups", json={"amount_halala": 500}, headers=renter["headers"])
        assert r.status_code == 503 and r.json()["code"] == "payments_disabled"
        r = api.post(WEBHOOK, json={"secret_token": "x", "data": {"id": "p1"}})
        assert r.status_code == 503 and r.json()["code"] == "payments_disabled"
        api.close()


def test_webhook_never_sent_the_sweep_credits_it(tmp_path: Path, gateway: Gateway):
    """A paid top-up whose webhook never comes is credited by the reconcile sweep, which
    asks the gateway for the invoice and then the payment; an expired and a failed invoice
    end their top-ups without money."""
    db = tmp_path / "dcp.db"
    with paying_server(db, gateway, topup_reconcile_after_s=0, topup_sweep_interval_s=0.05) as s:
        api = Api(s)
        renter = api.renter()
        t = start_topup(api, renter, 4_321)
        expired = start_topup(api, renter, 1_000)
        failed = start_topup(api, renter, 1_000)
        payment = gateway.pay(t["invoice_id"])
        gateway.set_invoice_status(expired["invoice_id"], "expired")
        gateway.set_invoice_status(failed["invoice_id"], "failed")
        wait_for(lambda: api.balance(renter)["available_halala"] == 4_321)
        wait_for(lambda: topup_of(api, renter, expired["topup_id"])["status"] == "expired")
        wait_for(lambda: topup_of(api, renter, failed["topup_id"])["status"] == "failed")
        assert any(r.path == f"/v1/invoices/{t['invoice_id']}" for r in gateway.seen("GET"))
        assert any(r.path == f"/v1/payments/{payment['id']}" for r in gateway.seen("GET"))
        assert all(r.authorization == BASIC for r in gateway.requests)
        time.sleep(0.3)  # more rounds: nothing more is credited
        assert api.balance(renter)["available_halala"] == 4_321
        assert len(events_of(api, "renter.topup_paid")) == 1
        assert events_of(api, "renter.topup_paid")[0]["payload"]["source"] == "sweep"
        assert_books(api)
        api.close()


def test_sweep_recovers_or_ends_a_topup_whose_invoice_is_unknown(tmp_path: Path, gateway: Gateway):
    """Invoice POSTs whose outcome is unknown: where the gateway made the invoice the sweep
    finds it by our metadata and records it; where it did not, the top-up ends failed. The
    sweep never POSTs an invoice."""
    db = tmp_path / "dcp.db"
    with paying_server(db, gateway, topup_reconcile_after_s=0, topup_sweep_interval_s=0.05) as s:
        api = Api(s)
        renter = api.renter()
        gateway.fail("POST", "/v1/invoices", status=503)  # before the work: no invoice
        r = api.post("/api/renters/topups", json={"amount_halala": 800}, headers=renter["headers"])
        assert r.status_code == 503 and r.json()["code"] == "gateway_unavailable"
        gateway.fail("POST", "/v1/invoices", status=503, after_work=True)  # invoice made
        r = api.post("/api/renters/topups", json={"amount_halala": 900}, headers=renter["headers"])
        assert r.status_code == 503
        ts = {
            t["amount_halala"]: t
            for t in api.ok("GET", "/api/renters/topups", headers=renter["headers"])["topups"]
        }

        def settled() -> bool:
            now = {
                t["amount_halala"]: t
                for t in api.ok("GET", "/api/renters/topups", headers=renter["headers"])["topups"]
            }
            return now[800]["status"] == "failed" and now[900]["invoice_id"] is not None

        wait_for(settled)
        (invoice,) = gateway.invoices.values()
        assert topup_of(api, renter, ts[900]["topup_id"])["checkout_url"] == invoice["url"]
        assert "no invoice" in topup_of(api, renter, ts[800]["topup_id"])["reason"]
        assert len(gateway.seen("POST", "/v1/invoices")) == 2
        assert_books(api)
        api.close()


def test_webhook_and_sweep_racing_credit_once(tmp_path: Path, gateway: Gateway):
    """Webhooks arriving while the sweep asks about the same paid top-up: one credit."""
    db = tmp_path / "dcp.db"
    with paying_server(db, gateway, topup_reconcile_after_s=0, topup_sweep_interval_s=0.01) as s:
        api = Api(s)
        renters = [api.renter() for _ in range(3)]
        ts = [start_topup(api, r, 2_000 + i) for i, r in enumerate(renters)]
        bodies = [gateway.webhook(gateway.pay(t["invoice_id"])) for t in ts]
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(lambda b: api.post(WEBHOOK, json=b).status_code, bodies * 4))
        assert codes == [200] * 12
        for i, r in enumerate(renters):
            wait_for(lambda r=r, i=i: api.balance(r)["available_halala"] == 2_000 + i)
        time.sleep(0.2)
        assert [api.balance(r)["available_halala"] for r in renters] == [2_000, 2_001, 2_002]
        paid = events_of(api, "renter.topup_paid")
        assert sorted(e["payload"]["topup_id"] for e in paid) == sorted(t["topup_id"] for t in ts)
        assert gateway.seen("GET", "/v1/invoices/")  # the sweep did ask
        assert_books(api)
        api.close()


def test_two_nodes_on_one_log_credit_once(tmp_path: Path, gateway: Gateway):
    """Two API processes over one database get the same notifications at once: the store's
    head check makes the loser decide again against the log, where it finds the credit."""
    db = tmp_path / "dcp.db"
    with paying_server(db, gateway) as a, paying_server(db, gateway) as b:
        api_a, api_b = Api(a), Api(b)
        renter = api_a.renter()
        wait_for(
            lambda: api_b.get("/api/renters/balance", headers=renter["headers"]).status_code == 200
        )
        t = start_topup(api_a, renter, 3_000)
        body = gateway.webhook(gateway.pay(t["invoice_id"]))
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            replies = list(
                pool.map(lambda i: (api_a if i % 2 else api_b).post(WEBHOOK, json=body), range(16))
            )
        assert [r.status_code for r in replies] == [200] * 16, [r.text for r in replies]
        assert api_a.balance(renter)["available_halala"] == 3_000
        assert len(events_of(api_a, "renter.topup_paid")) == 1
        assert_books(api_a)
        assert_books(api_b)
        api_a.close()
        api_b.close()


def test_gateway_down_or_slow_loses_nothing(tmp_path: Path, gateway: Gateway):
    """While the gateway answers 503 or too slowly, the webhook answers 503 (the gateway
    retries it) and the sweep skips its round; GETs are retried a bounded 3 times; once the
    gateway is back the sweep credits the top-up, once."""
    db = tmp_path / "dcp.db"
    with paying_server(db, gateway, topup_reconcile_after_s=0, topup_sweep_interval_s=3600) as s:
        api = Api(s)
        renter = api.renter()
        t = start_topup(api, renter, 2_500)
        payment = gateway.pay(t["invoice_id"])
        gateway.fail("GET", "/v1/payments/", status=503, times=3)
        r = api.post(WEBHOOK, json=gateway.webhook(payment))
        assert r.status_code == 503 and r.json()["code"] == "gateway_unavailable"
        assert len(gateway.seen("GET", "/v1/payments/")) == 3  # bounded retries, then give up
        gateway.fail("GET", "/v1/payments/", delay_s=1.5, times=3)
        r = api.post(WEBHOOK, json=gateway.webhook(payment))
        assert r.status_code == 503 and r.json()["code"] == "gateway_unavailable"
        assert api.balance(renter)["available_halala"] == 0
        assert topup_of(api, renter, t["topup_id"])["status"] == "pending"
        assert_books(api)
        api.close()
    gateway.clear_faults()
    with paying_server(db, gateway, topup_reconcile_after_s=0, topup_sweep_interval_s=0.05) as s:
        api = Api(s)
        wait_for(lambda: api.balance(renter)["available_halala"] == 2_500)
        assert len(events_of(api, "renter.topup_paid")) == 1
        assert_books(api)
        api.close()


def test_refund_with_and_without_funds(papi: Api, gateway: Gateway):
    """A refund is ledgered first and only while the available balance covers it (402 with
    the shortfall otherwise); the gateway gets one refund POST for the amount; refunding
    again is 409."""
    papi.allow_image()
    renter = papi.renter()
    t = start_topup(papi, renter, 10_000)
    payment = gateway.pay(t["invoice_id"])
    papi.ok("POST", WEBHOOK, json=gateway.webhook(payment))
    job = papi.submit(renter, max_duration_seconds=3600, gpu_requirements={"gpu_type": "RTX 4090"})
    available = papi.balance(renter)["available_halala"]
    assert available == 10_000 - job["job"]["cost_halala"] < 10_000
    r = papi.post(f"/api/admin/topups/{t['topup_id']}/refund", headers=papi.admin)
    assert r.status_code == 402 and r.json()["code"] == "insufficient_funds"
    assert r.json()["shortfall_halala"] == 10_000 - available
    assert gateway.seen("POST", "/v1/payments/") == []
    papi.ok("POST", f"/api/jobs/{job['job']['job_id']}/cancel", headers=renter["headers"])
    done = papi.ok("POST", f"/api/admin/topups/{t['topup_id']}/refund", headers=papi.admin)
    assert done["topup"]["status"] == "refunded"
    (refund,) = gateway.seen("POST", "/v1/payments/")
    assert refund.path == f"/v1/payments/{payment['id']}/refund"
    assert refund.body == {"amount": 10_000} and refund.authorization == BASIC
    assert papi.balance(renter)["available_halala"] == 0
    r = papi.post(f"/api/admin/topups/{t['topup_id']}/refund", headers=papi.admin)
    assert r.status_code == 409 and r.json()["code"] == "invalid_transition"
    # A webhook for the refunded payment later credits nothing.
    papi.ok(
        "POST",
        WEBHOOK,
        json=gateway.webhook(gateway.payments[payment["id"]], kind="payment_refunded"),
    )
    assert papi.balance(renter)["available_halala"] == 0
    r = papi.post("/api/admin/topups/tu-nope/refund", headers=papi.admin)
    assert r.status_code == 404


def test_refund_refused_by_the_gateway_is_reversed(papi: Api, gateway: Gateway):
    """The gateway definitively refuses the refund: the ledgered refund is reversed and the
    top-up is paid again, the renter's balance as before."""
    renter = papi.renter()
    t = start_topup(papi, renter, 3_000)
    papi.ok("POST", WEBHOOK, json=gateway.webhook(gateway.pay(t["invoice_id"])))
    gateway.fail("POST", "/v1/payments/", status=400)
    done = papi.ok("POST", f"/api/admin/topups/{t['topup_id']}/refund", headers=papi.admin)
    assert done["topup"]["status"] == "paid" and "400" in done["topup"]["reason"]
    assert papi.balance(renter)["available_halala"] == 3_000
    assert len(events_of(papi, "renter.topup_refund_reversed")) == 1


def test_refund_outcome_unknown_is_settled_by_the_sweep(tmp_path: Path, gateway: Gateway):
    """The refund POST times out after the gateway refunded: the top-up stays refunding; the
    sweep reads the payment (refunded) and confirms it without a second refund POST."""
    db = tmp_path / "dcp.db"
    with paying_server(db, gateway, topup_reconcile_after_s=0, topup_sweep_interval_s=0.05) as s:
        api = Api(s)
        renter = api.renter()
        t = start_topup(api, renter, 3_000)
        api.ok("POST", WEBHOOK, json=gateway.webhook(gateway.pay(t["invoice_id"])))
        gateway.fail("POST", "/v1/payments/", delay_s=1.5, after_work=True)
        r = api.ok("POST", f"/api/admin/topups/{t['topup_id']}/refund", headers=api.admin)
        assert r["topup"]["status"] == "refunding"
        wait_for(lambda: topup_of(api, renter, t["topup_id"])["status"] == "refunded")
        assert len(gateway.seen("POST", "/v1/payments/")) == 1
        assert api.balance(renter)["available_halala"] == 0
        assert_books(api)
        api.close()


def test_refund_lost_before_the_gateway_is_asked_again_by_the_sweep(
    tmp_path: Path, gateway: Gateway
):
    """The refund POST fails before the gateway did anything (503): the top-up stays
    refunding; once no request of ours can be in flight, the sweep sees the payment still paid
    and unrefunded and asks again, once; the second answer settles it."""
    db = tmp_path / "dcp.db"
    with paying_server(db, gateway, topup_reconcile_after_s=0, topup_sweep_interval_s=0.05) as s:
        api = Api(s)
        renter = api.renter()
        t = start_topup(api, renter, 3_000)
        payment = gateway.pay(t["invoice_id"])
        api.ok("POST", WEBHOOK, json=gateway.webhook(payment))
        gateway.fail("POST", "/v1/payments/", status=503)
        r = api.ok("POST", f"/api/admin/topups/{t['topup_id']}/refund", headers=api.admin)
        assert r["topup"]["status"] == "refunding"
        assert gateway.payments[payment["id"]]["refunded"] == 0
        wait_for(lambda: topup_of(api, renter, t["topup_id"])["status"] == "refunded")
        posts = gateway.seen("POST", "/v1/payments/")
        assert [(p.path, p.body) for p in posts] == [
            (f"/v1/payments/{payment['id']}/refund", {"amount": 3_000})
        ] * 2
        assert gateway.payments[payment["id"]]["refunded"] == 3_000
        assert api.balance(renter)["available_halala"] == 0
        assert_books(api)
        api.close()


def test_old_topups_answer_as_before_once_they_left_memory(tmp_path: Path, gateway: Gateway):
    """A server keeping one settled top-up in memory (docs/design.md, "Bounded memory"): a
    repeated webhook for an old payment answers as the first did and credits nothing, an old
    Idempotency-Key returns its top-up without a second invoice, an old top-up refunds; and
    so after a restart."""
    db = tmp_path / "dcp.db"
    with paying_server(db, gateway, history_in_memory=1) as server:
        api = Api(server)
        try:
            renter = api.renter()
            keyed = {**renter["headers"], "idempotency-key": "wallet-old"}
            first = api.ok(
                "POST", "/api/renters/topups", 201, json={"amount_halala": 700}, headers=keyed
            )["topup"]
            payments = [gateway.pay(first["invoice_id"])]
            api.ok("POST", WEBHOOK, json=gateway.webhook(payments[0]))
            for amount in (800, 900):
                t = start_topup(api, renter, amount)
                payments.append(gateway.pay(t["invoice_id"]))
                api.ok("POST", WEBHOOK, json=gateway.webhook(payments[-1]))
            ledger = server.app.state.service.ledger
            assert first["topup_id"] not in ledger.state.topups  # it left memory
            assert api.balance(renter)["available_halala"] == 2_400
            again = api.ok("POST", WEBHOOK, json=gateway.webhook(payments[0]))
            assert again == {"received": True, "topup_id": first["topup_id"], "status": "paid"}
            assert api.balance(renter)["available_halala"] == 2_400
            reused = api.ok(
                "POST", "/api/renters/topups", 201, json={"amount_halala": 700}, headers=keyed
            )["topup"]
            assert reused["topup_id"] == first["topup_id"] and reused["status"] == "paid"
            r = api.post("/api/renters/topups", json={"amount_halala": 701}, headers=keyed)
            assert r.status_code == 422 and r.json()["code"] == "idempotency_key_reused"
            assert len(gateway.seen("POST", "/v1/invoices")) == 3
            assert len(events_of(api, "renter.topup_paid")) == 3
            assert_books(api)
        finally:
            api.close()
    with paying_server(db, gateway, history_in_memory=1) as server:  # a restart
        api = Api(server)
        try:
            again = api.ok("POST", WEBHOOK, json=gateway.webhook(payments[1]))
            assert again["status"] == "paid" and api.balance(renter)["available_halala"] == 2_400
            done = api.ok(
                "POST", f"/api/admin/topups/{first['topup_id']}/refund", headers=api.admin
            )
            assert done["topup"]["status"] == "refunded"
            assert api.balance(renter)["available_halala"] == 1_700
            assert len(events_of(api, "renter.topup_paid")) == 3
            assert_books(api)
        finally:
            api.close()
