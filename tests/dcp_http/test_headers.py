"""Reply headers: nosniff everywhere, no-store on private replies, random request ids, and
CORS refusals in the API's own `{error, code}` shape."""

import httpx

from dcp_http.config import DEFAULT_RATE_LIMITS, RateLimit

from ._live import Api, serve


def _replies(api: Api) -> dict[str, httpx.Response]:
    """One reply of every kind: success, each error status, public and private routes."""
    renter = api.renter(credit_halala=1000)
    return {
        "health": api.get("/healthz"),
        "openapi": api.get("/openapi.json"),
        "register": api.post("/api/renters/register", json={"name": "h", "email": "h@example.com"}),
        "balance": api.get("/api/renters/balance", headers=renter["headers"]),
        "ledger": api.get("/api/renters/ledger", headers=renter["headers"]),
        "events": api.get("/api/admin/events", headers=api.admin),
        "marketplace": api.get("/api/marketplace"),
        "401": api.get("/api/renters/balance"),
        "404": api.get("/api/no/such/route"),
        "405": api.request("DELETE", "/api/renters/balance", headers=renter["headers"]),
        "400": api.post("/api/renters/register", json={"name": ""}),
        "413": api.post(
            "/api/renters/register",
            content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
            headers={"content-type": "application/json"},
        ),
        "415": api.post(
            "/api/renters/register", content=b"name=x", headers={"content-type": "text/plain"}
        ),
    }


def test_every_reply_says_nosniff_and_private_ones_no_store(api: Api):
    """X-Content-Type-Options on every reply; Cache-Control: no-store on every /api/ reply
    (keys, balances, ledgers, and their errors), so no cache keeps one."""
    replies = _replies(api)
    assert replies["413"].status_code == 413 and replies["415"].status_code == 415
    for name, r in replies.items():
        assert r.headers["x-content-type-options"] == "nosniff", name
    for name in ("register", "balance", "ledger", "events", "401", "404", "405", "400", "413"):
        assert replies[name].headers["cache-control"] == "no-store", name
    assert "api_key" in replies["register"].json()
    assert "cache-control" not in replies["health"].headers


def test_a_429_also_carries_the_headers(tmp_path):
    """Replies the rate limiter writes itself get the same headers."""
    limits = {**DEFAULT_RATE_LIMITS, "default": RateLimit(1, 60.0)}
    with serve(tmp_path / "h.db", rate_limit_table=limits) as server:
        api = Api(server)
        api.get("/api/marketplace")
        r = api.get("/api/marketplace")
        assert r.status_code == 429
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-store"
        api.close()


def test_request_ids_are_random_not_a_counter(api: Api):
    """Ids made by the server are 128 random bits: consecutive ones share no prefix, so two
    ids tell nothing about how many requests came between them."""
    ids = [api.get("/healthz").headers["x-request-id"] for _ in range(50)]
    assert len(set(ids)) == 50
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    # A counter keeps its high digits: with random ids, 8 equal leading hex digits between any
    # two of 50 has a chance of about 3 in 10 million.
    assert len({i[:8] for i in ids}) == 50
    given = api.get("/healthz", headers={"x-request-id": "client-id.1"})
    assert given.headers["x-request-id"] == "client-id.1"


def _preflight(api: Api, origin: str, method: str = "POST", headers: str = "content-type"):
    return api.request(
        "OPTIONS",
        "/api/jobs/submit",
        headers={
            "origin": origin,
            "access-control-request-method": method,
            "access-control-request-headers": headers,
        },
    )


def test_a_refused_cors_preflight_is_a_json_error(tmp_path):
    """An unlisted origin, method or header gets 400 `{error, code: cors_refused}` as JSON,
    not Starlette's text/plain "Disallowed CORS origin"; an allowed preflight is unchanged."""
    with serve(tmp_path / "cors.db", cors_origins=("https://app.example",)) as server:
        api = Api(server)
        ok = _preflight(api, "https://app.example", headers="x-renter-key, content-type")
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        for what, r in (
            ("origin", _preflight(api, "https://evil.example")),
            ("method", _preflight(api, "https://app.example", method="DELETE")),
            ("headers", _preflight(api, "https://app.example", headers="x-evil")),
        ):
            assert r.status_code == 400, what
            assert r.headers["content-type"] == "application/json", what
            assert r.headers["x-content-type-options"] == "nosniff"
            body = r.json()
            assert body["code"] == "cors_refused" and what in body["error"], body
            assert "access-control-allow-origin" not in r.headers or what != "origin"
        api.close()
