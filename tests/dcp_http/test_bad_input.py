"""Bad input of every kind gets a clear 4xx, and nothing is appended to the log."""

import pytest

JSON = {"content-type": "application/json"}

SUBMIT_OK = {"container_spec": {"image": "dcp-test/busybox:1"}, "max_duration_seconds": 3600}

# (path, raw body) pairs: each must be refused with 400 (or 413/415 where said).
BAD_BODIES = [
    ("/api/renters/register", b""),
    ("/api/renters/register", b"{"),
    ("/api/renters/register", b"null"),
    ("/api/renters/register", b"[]"),
    ("/api/renters/register", b'"name"'),
    ("/api/renters/register", b'{"name": "a", "email": "a@b.co"} trailing'),
    ("/api/renters/register", b'{"name": 5, "email": "a@b.co"}'),
    ("/api/renters/register", b'{"name": "a"}'),
    ("/api/renters/register", b'{"name": "a", "email": "a@b.co", "admin": true}'),
    ("/api/renters/register", b'{"name": "", "email": "a@b.co"}'),
    ("/api/renters/register", b'{"name": "a\\u0000b", "email": "a@b.co"}'),
    ("/api/renters/register", b'{"name": "\\ud800", "email": "a@b.co"}'),
    ("/api/renters/register", b'{"name": "\xff\xfe", "email": "a@b.co"}'),
    ("/api/renters/register", b'{"name": "a", "email": "not an email"}'),
    ("/api/renters/register", b'{"name": "' + b"x" * 5000 + b'", "email": "a@b.co"}'),
    (
        "/api/jobs/submit",
        b'{"container_spec": {"image": "dcp-test/busybox:1"}, "max_duration_seconds": 1800.5}',
    ),
    (
        "/api/jobs/submit",
        b'{"container_spec": {"image": "dcp-test/busybox:1"}, "max_duration_seconds": -60}',
    ),
    (
        "/api/jobs/submit",
        b'{"container_spec": {"image": "dcp-test/busybox:1"}, "max_duration_seconds": 1e400}',
    ),
    (
        "/api/jobs/submit",
        b'{"container_spec": {"image": "dcp-test/busybox:1"}, '
        b'"max_duration_seconds": 99999999999999999999999999999999}',
    ),
    (
        "/api/jobs/submit",
        b'{"container_spec": {"image": "dcp-test/busybox:1"}, "max_duration_seconds": "1800"}',
    ),
    (
        "/api/jobs/submit",
        b'{"container_spec": {"image": "dcp-test/busybox:1"}, "max_duration_seconds": 59}',
    ),
    (
        "/api/jobs/submit",
        b'{"container_spec": {"image": "dcp-test/busybox:1"}, "max_duration_seconds": 86401}',
    ),
    (
        "/api/jobs/submit",
        b'{"container_spec": {"image": "dcp-test/busybox:1"}, "priority": "urgent"}',
    ),
    (
        "/api/jobs/submit",
        b'{"container_spec": {"image": "dcp-test/busybox:1"}, "max_duration_seconds": true}',
    ),
    (
        "/api/jobs/submit",
        b'{"container_spec": {"image": "dcp-test/busybox:1", "command": "echo hi"}}',
    ),
    ("/api/jobs/submit", b'{"container_spec": {"image": "dcp-test/busybox:1", "env": {"A": 1}}}'),
    (
        "/api/jobs/submit",
        b'{"container_spec": {"image": "dcp-test/busybox:1"}, '
        b'"gpu_requirements": {"gpu_count": 0}}',
    ),
    (
        "/api/jobs/submit",
        b'{"container_spec": {"image": "dcp-test/busybox:1"}, '
        b'"gpu_requirements": {"gpu_count": 1.0}}',
    ),
    ("/api/jobs/submit", b'{"container_spec": {"image": "../../etc/passwd"}}'),
    ("/api/jobs/submit", b'{"container_spec": {"image": "dcp-test/busybox:1"}, "x": null}'),
]


def _post(api, path, body, headers):
    return api.post(path, content=body, headers={**JSON, **headers})


@pytest.mark.parametrize(("path", "body"), BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_bad_bodies_are_400_and_append_nothing(api, path, body):
    """Malformed, mistyped, unknown, float, negative, huge or odd input: 400, log untouched."""
    renter = api.renter(credit_halala=1_000_000)
    before = api.head_seq()
    r = _post(api, path, body, renter["headers"])
    assert r.status_code == 400, (r.status_code, r.text)
    data = r.json()
    assert data["code"] in ("invalid_request", "invalid_json", "validation_error"), data
    assert data["error"]
    if data["code"] != "invalid_json":
        assert data["fields"] and all(f["field"] and f["message"] for f in data["fields"])
    assert api.head_seq() == before
    assert api.balance(renter)["held_halala"] == 0


@pytest.mark.parametrize(
    "amount",
    [b"1.5", b"-1", b"0", b"1e3", b'"100"', b"null", b"true", b"1000000000000000000000"],
)
def test_amounts_must_be_positive_integers(api, amount):
    """Credits, top-ups and withdrawals take positive integer halala only."""
    renter = api.renter()
    provider = api.provider()
    before = api.head_seq()
    cases = [
        (
            f"/api/admin/renters/{renter['renter_id']}/credit",
            b'{"amount_halala": %b, "reference": "r1"}' % amount,
            api.admin,
        ),
        ("/api/renters/topup", b'{"amount_halala": %b}' % amount, renter["headers"]),
        (
            "/api/providers/me/withdraw",
            b'{"amount_halala": %b, "iban": "SA0380000000608010167519"}' % amount,
            provider["headers"],
        ),
        ("/api/admin/pricing/H100", b'{"halala_per_gpu_hour": %b}' % amount, api.admin),
    ]
    for path, body, headers in cases:
        method = "PUT" if "pricing" in path else "POST"
        r = api.request(method, path, content=body, headers={**JSON, **headers})
        if amount == b"0" and "pricing" in path:
            assert r.status_code == 200  # a price of 0 is allowed: free GPUs
            continue
        assert r.status_code == 400, (path, amount, r.text)
        assert r.json()["fields"][0]["field"] in ("amount_halala", "halala_per_gpu_hour")
    if amount != b"0":
        assert api.head_seq() == before


def test_huge_and_non_json_bodies(api):
    """Oversized bodies are 413; non-JSON content types are 415; neither appends."""
    renter = api.renter(credit_halala=1_000_000)
    before = api.head_seq()
    huge = b'{"container_spec": {"image": "' + b"a" * (2 * 1024 * 1024) + b'"}}'
    assert _post(api, "/api/jobs/submit", huge, renter["headers"]).status_code == 413
    r = api.post(
        "/api/jobs/submit",
        content=b"<xml/>",
        headers={"content-type": "application/xml", **renter["headers"]},
    )
    assert r.status_code == 415
    r = api.post("/api/jobs/submit", content=b"{}", headers=renter["headers"])
    assert r.status_code == 415  # no content type at all

    # A streamed body without Content-Length is cut at the limit as well.
    def chunks():
        for _ in range(40):
            yield b"x" * 65536

    r = api.post("/api/jobs/submit", content=chunks(), headers={**JSON, **renter["headers"]})
    assert r.status_code == 413
    assert api.head_seq() == before


def test_bad_query_and_path_input(api):
    """Bad query values are 400; unknown ids and odd unicode in paths are 404."""
    renter = api.renter()
    h = renter["headers"]
    for q in (
        "limit=0",
        "limit=201",
        "limit=1.5",
        "limit=-1",
        "status=nope",
        "cursor=zzz",
        "extra=1",
    ):
        r = api.get(f"/api/jobs?{q}", headers=h)
        assert r.status_code == 400, (q, r.text)
        assert r.json()["fields"]
    for after in ("-1", "x", "1e3", "99999999999999999999999"):
        r = api.get(f"/api/admin/events?after={after}", headers=api.admin)
        assert r.status_code == 400, (after, r.text)
    for job_id in ("%00", "%F0%9F%92%A9", "%ED%A0%80", "..%2F..%2Fetc", "a" * 300):
        r = api.get(f"/api/jobs/{job_id}", headers=h)
        assert r.status_code == 404, (job_id, r.text)
        assert r.json()["code"] == "not_found"


def test_bad_idempotency_key(api):
    """An Idempotency-Key that is too long is 400 and appends nothing."""
    renter = api.renter(credit_halala=1_000_000)
    before = api.head_seq()
    r = api.post(
        "/api/jobs/submit",
        json=SUBMIT_OK,
        headers={**renter["headers"], "idempotency-key": "k" * 300},
    )
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "Idempotency-Key"
    assert api.head_seq() == before
