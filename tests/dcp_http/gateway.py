"""A stand-in for the payment gateway: a real local HTTP server speaking the part of Moyasar's
documented API that top-ups use (https://docs.moyasar.com: /v1/invoices, /v1/invoices/{id},
/v1/invoices?metadata[key]=value, /v1/payments/{id}, /v1/payments/{id}/refund), with HTTP
Basic auth by the secret key, amounts in halala, and its JSON shapes.

No gateway can be reached from the tests, so this is the one fake in them (the API server,
SQLite and HTTP are real). It records every request exactly as received, so a test asserts
what we sent, and it can be told to fail: answer 5xx, answer 4xx, or be slow.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SECRET_KEY = "sk_test_0123456789abcdefSECRET"
WEBHOOK_TOKEN = "whsec-test-0123456789TOKEN"


@dataclass
class Seen:
    """One request as the gateway received it."""

    method: str
    path: str  # without the query
    query: dict[str, list[str]]
    authorization: str | None
    content_type: str | None
    body: Any

    @property
    def basic_user(self) -> str | None:
        if not self.authorization or not self.authorization.startswith("Basic "):
            return None
        return base64.b64decode(self.authorization[6:]).decode()


@dataclass
class Fault:
    """How to answer the next matching requests: `status` (5xx or 4xx) or a delay (slow)."""

    method: str
    path_prefix: str
    status: int | None = None
    delay_s: float = 0.0
    times: int = 1
    # Do the work (create the invoice, refund) before failing: the outcome is then unknown
    # to the client but real at the gateway.
    after_work: bool = False


@dataclass
class Gateway:
    url: str = ""
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # --- what a test does at the gateway ---------------------------------------------------

    def pay(
        self,
        invoice_id: str,
        amount: int | None = None,
        currency: str | None = None,
        status: str = "paid",
    ) -> dict[str, Any]:
        """The cardholder pays the invoice (or the attempt fails): a payment object."""
        with self.lock:
            inv = self.invoices[invoice_id]
            payment = {
                "id": str(uuid.uuid4()),
                "status": status,
                "amount": inv["amount"] if amount is None else amount,
                "fee": 0,
                "currency": currency or inv["currency"],
                "refunded": 0,
                "refunded_at": None,
                "captured": 0,
                "description": inv["description"],
                "amount_format": "",
                "invoice_id": invoice_id,
                "ip": None,
                "callback_url": None,
                "created_at": "2026-12-01T00:00:00.000Z",
                "updated_at": "2026-12-01T00:00:00.000Z",
                "metadata": inv["metadata"],
                "source": {"type": "creditcard", "company": "visa", "number": "4111-XXXX"},
            }
            self.payments[payment["id"]] = payment
            inv["payments"].append(payment)
            if status == "paid":
                inv["status"] = "paid"
                inv["payment_id"] = payment["id"]
            return payment

    def set_invoice_status(self, invoice_id: str, status: str) -> None:
        with self.lock:
            self.invoices[invoice_id]["status"] = status

    def fail(self, method: str, path_prefix: str, **kw: Any) -> None:
        with self.lock:
            self.faults.append(Fault(method, path_prefix, **kw))

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def seen(self, method: str, path_prefix: str = "/") -> list[Seen]:
        with self.lock:
            return [
                r for r in self.requests if r.method == method and r.path.startswith(path_prefix)
            ]

    def webhook(
        self, payment: dict[str, Any], token: str = WEBHOOK_TOKEN, kind: str = "payment_paid"
    ) -> dict[str, Any]:
        """The notification body the gateway posts for `payment` (its documented shape)."""
        return {
            "id": str(uuid.uuid4()),
            "type": kind,
            "created_at": "2026-12-01T00:00:01.000Z",
            "secret_token": token,
            "account_name": "DCP",
            "live": False,
            "data": payment,
        }

    # --- the server's side -----------------------------------------------------------------

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.method == method and path.startswith(f.path_prefix) and f.times > 0:
                    f.times -= 1
                    return f
        return None

    def handle(self, seen: Seen) -> tuple[int, Any]:
        with self.lock:
            self.requests.append(seen)
        if seen.basic_user != f"{SECRET_KEY}:":
            return 401, {"type": "authentication_error", "message": "Invalid credentials"}
        fault = self._fault_for(seen.method, seen.path)
        if fault is not None and not fault.after_work:
            time.sleep(fault.delay_s)
            if fault.status is not None:
                return fault.status, {"type": "api_error", "message": "injected"}
        status, body = self._route(seen)
        if fault is not None and fault.after_work:
            time.sleep(fault.delay_s)
            if fault.status is not None:
                return fault.status, {"type": "api_error", "message": "injected"}
        return status, body

    def _route(self, seen: Seen) -> tuple[int, Any]:
        parts = seen.path.strip("/").split("/")  # v1, invoices|payments, id, action
        if parts[:2] == ["v1", "invoices"] and len(parts) == 2 and seen.method == "POST":
            return self._create_invoice(seen.body)
        if parts[:2] == ["v1", "invoices"] and len(parts) == 2 and seen.method == "GET":
            wanted = {
                k[len("metadata[") : -1]: v[0]
                for k, v in seen.query.items()
                if k.startswith("metadata[") and k.endswith("]")
            }
            with self.lock:
                found = [
                    i
                    for i in self.invoices.values()
                    if all((i["metadata"] or {}).get(k) == v for k, v in wanted.items())
                ]
            return 200, {"invoices": found, "meta": {"current_page": 1, "total_count": len(found)}}
        if parts[:2] == ["v1", "invoices"] and len(parts) == 3 and seen.method == "GET":
            with self.lock:
                inv = self.invoices.get(parts[2])
            return (200, inv) if inv else (404, {"type": "record_not_found", "message": "x"})
        if parts[:2] == ["v1", "payments"] and len(parts) == 3 and seen.method == "GET":
            with self.lock:
                p = self.payments.get(parts[2])
            return (200, p) if p else (404, {"type": "record_not_found", "message": "x"})
        if parts[:2] == ["v1", "payments"] and parts[3:] == ["refund"] and seen.method == "POST":
            return self._refund(parts[2], seen.body)
        return 404, {"type": "not_found", "message": "no such endpoint"}

    def _create_invoice(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("amount"), int):
            return 400, {"type": "invalid_request_error", "message": "amount is required"}
        if body["amount"] < 100:
            return 400, {"type": "invalid_request_error", "message": "amount must be >= 100"}
        inv_id = str(uuid.uuid4())
        inv = {
            "id": inv_id,
            "status": "initiated",
            "amount": body["amount"],
            "currency": body.get("currency", "SAR"),
            "description": body.get("description", ""),
            "amount_format": "",
            "url": f"https://checkout.moyasar.test/invoices/{inv_id}?lang=en",
            "callback_url": body.get("callback_url"),
            "success_url": body.get("success_url"),
            "back_url": body.get("back_url"),
            "expired_at": body.get("expired_at"),
            "created_at": "2026-12-01T00:00:00.000Z",
            "updated_at": "2026-12-01T00:00:00.000Z",
            "payment_id": None,
            "payments": [],
            "metadata": body.get("metadata"),
        }
        with self.lock:
            self.invoices[inv_id] = inv
        return 201, inv

    def _refund(self, payment_id: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            p = self.payments.get(payment_id)
            if p is None:
                return 404, {"type": "record_not_found", "message": "x"}
            amount = body.get("amount", p["amount"]) if isinstance(body, dict) else p["amount"]
            if p["status"] != "paid" or amount > p["amount"] - p["refunded"]:
                return 400, {"type": "invalid_request_error", "message": "cannot refund"}
            p["refunded"] += amount
            p["status"] = "refunded"
            return 200, p


class _Handler(BaseHTTPRequestHandler):
    gateway: Gateway

    def _serve(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.loads(raw) if raw else None
        seen = Seen(
            method=self.command,
            path=url.path,
            query=urllib.parse.parse_qs(url.query),
            authorization=self.headers.get("authorization"),
            content_type=self.headers.get("content-type"),
            body=body,
        )
        status, answer = self.gateway.handle(seen)
        out = json.dumps(answer).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a slow answer past its timeout)

    do_GET = _serve
    do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def running_gateway() -> Iterator[Gateway]:
    """The stand-in gateway on a free local port; its `url` is the API base (`.../v1`)."""
    gateway = Gateway()
    handler = type("Handler", (_Handler,), {"gateway": gateway})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    gateway.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield gateway
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
