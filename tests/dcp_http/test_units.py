"""The HTTP layer's own pieces, without a server: buckets, redaction, content types, auth."""

from urllib.parse import urlencode

import msgspec
import pytest

from dcp_http.auth import ADMIN, PROVIDER, RENTER, AdminDisabled, Authenticator, presented
from dcp_http.config import RateLimit
from dcp_http.errors import Unauthorized, error_body
from dcp_http.logs import Redactor, redact_path
from dcp_http.middleware import is_json_content_type
from dcp_http.ratelimit import TokenBuckets, classify
from dcp_http.requests import Withdraw

RKEY = "dcp-renter-" + "a" * 32
PKEY = "dcp-provider-" + "b" * 32


def test_token_bucket_allows_the_limit_then_says_how_long_to_wait():
    """`limit` requests pass at once; the next waits period/limit seconds."""
    now = [0.0]
    b = TokenBuckets({"default": RateLimit(3, 60.0)}, clock=lambda: now[0])
    assert [b.take("default", "k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take("default", "k") == pytest.approx(20.0)
    assert b.take("default", "other") == 0.0
    now[0] = 20.0
    assert b.take("default", "k") == 0.0


def test_token_buckets_are_bounded():
    """The table never holds more than max_keys callers."""
    b = TokenBuckets({"default": RateLimit(1, 1.0)}, max_keys=10)
    for i in range(100):
        b.take("default", str(i))
    assert len(b._buckets) == 10


def test_classify():
    """Paths fall in the rate-limit classes of SPEC section 5."""
    assert classify("POST", "/api/renters/register") == "register"
    assert classify("POST", "/api/providers/register") == "register"
    assert classify("POST", "/api/jobs/submit") == "submit"
    assert classify("POST", "/api/providers/heartbeat") == "heartbeat"
    assert classify("GET", "/api/admin/events") == "admin"
    assert classify("GET", "/api/jobs") == "default"


def test_redaction_scrubs_keys_tokens_and_query_keys():
    """Keys, `key=` values, bearer tokens and registered secrets never survive."""
    r = Redactor()
    r.add_secret("s3cret-admin")
    text = f"{RKEY} {PKEY} Bearer abc.def s3cret-admin /x?key=zzz&limit=1"
    out = r.scrub(text)
    for secret in (RKEY, PKEY, "abc.def", "s3cret-admin", "zzz"):
        assert secret not in out
    assert "limit=1" in out
    assert "key=[redacted]" in redact_path("/api/jobs", b"key=whatever")
    assert PKEY not in redact_path(f"/api/providers/{PKEY}/jobs")


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("application/problem+json", True),
        ("application/json; charset=latin-1", False),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        (None, False),
    ],
)
def test_json_content_types(value, ok):
    """Only JSON media types (in UTF-8) count as JSON bodies."""
    assert is_json_content_type(value) is ok


def test_iban_checksum():
    """A withdrawal body takes a valid Saudi IBAN and refuses a one-digit change (mod-97)."""
    ok = b'{"amount_halala": 1000, "iban": "SA0380000000608010167519"}'
    assert msgspec.json.decode(ok, type=Withdraw).iban == "SA0380000000608010167519"
    with pytest.raises(msgspec.ValidationError, match="mod-97"):
        msgspec.json.decode(ok.replace(b"519", b"518"), type=Withdraw)


def _auth(admin_token="tok"):
    keys = {RKEY: (RENTER, "r1"), PKEY: (PROVIDER, "p1")}
    return Authenticator(keys.get, admin_token)


async def _code(auth, roles, headers, query=None, path_key=None):
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    qs = urlencode(query or {}).encode()
    path = f"/api/providers/{path_key}/jobs" if path_key else "/api/x"
    try:
        ident = await auth.authenticate(roles, presented(raw, qs, path))
    except (Unauthorized, AdminDisabled) as e:
        return e.code
    return ident.actor


async def test_authenticator_resolves_each_credential_form():
    """Header, ?key=, Bearer and path key all resolve; the wrong role is wrong_key_type."""
    a = _auth()
    assert await _code(a, [RENTER], {"x-renter-key": RKEY}) == "renter:r1"
    assert await _code(a, [RENTER], {}, {"key": RKEY}) == "renter:r1"
    assert await _code(a, [RENTER], {"authorization": f"Bearer {RKEY}"}) == "renter:r1"
    assert await _code(a, [PROVIDER], {}, path_key=PKEY) == "provider:p1"
    assert await _code(a, [PROVIDER], {"x-provider-key": PKEY}) == "provider:p1"
    assert await _code(a, [ADMIN], {"x-admin-token": "tok"}) == "admin"
    assert await _code(a, [ADMIN], {"authorization": "Bearer tok"}) == "admin"
    assert await _code(a, [RENTER], {"x-renter-key": PKEY}) == "wrong_key_type"
    assert await _code(a, [RENTER], {"x-provider-key": PKEY}) == "wrong_key_type"
    assert await _code(a, [PROVIDER], {"authorization": f"Bearer {RKEY}"}) == "wrong_key_type"
    assert await _code(a, [ADMIN], {"x-admin-token": RKEY}) == "wrong_key_type"
    assert await _code(a, [ADMIN], {"authorization": f"Bearer {RKEY}"}) == "wrong_key_type"
    assert await _code(a, [RENTER], {"authorization": "Bearer tok"}) == "wrong_key_type"
    assert await _code(a, [RENTER], {"x-admin-token": "tok"}) == "wrong_key_type"
    assert await _code(a, [RENTER], {}) == "missing_credentials"
    assert await _code(a, [RENTER], {"x-renter-key": "dcp-renter-" + "0" * 32}) == (
        "invalid_credentials"
    )
    assert await _code(a, [ADMIN], {"x-admin-token": "nope"}) == "invalid_credentials"
    assert await _code(_auth(None), [ADMIN], {"x-admin-token": "tok"}) == "admin_disabled"
    assert await _code(_auth(None), [ADMIN], {}) == "admin_disabled"


def test_unexpected_errors_become_a_bare_500():
    """An exception nobody raised on purpose answers 500 internal, with no detail."""
    status, body, _ = error_body(RuntimeError("secret detail /path/x.py"))
    assert status == 500 and body.code == "internal" and "secret" not in body.error


def test_domain_errors_keep_their_code_status_and_extras():
    """A domain error's code, status and extras reach the body."""
    from dcp_projections.errors import InsufficientFunds, LeaseLost, ValidationError

    status, body, _ = error_body(InsufficientFunds(500, 200))
    assert (status, body.code, body.shortfall_halala) == (402, "insufficient_funds", 300)
    status, body, _ = error_body(LeaseLost("attempt 1 is not the lease"))
    assert (status, body.code) == (409, "lease_lost")
    status, body, _ = error_body(ValidationError("iban", "bad"))
    assert status == 400 and body.fields[0].field == "iban"


def test_store_clashes_are_409_conflict_and_other_store_faults_500():
    """A version or head clash is a retryable 409; another store fault a bare 503."""
    from dcp_events.errors import ConcurrencyError, StaleHeadError, StoreError

    for exc in (ConcurrencyError("renter-1", 3, 4), StaleHeadError(10, 11)):
        status, body, _ = error_body(exc)
        assert (status, body.code) == (409, "conflict")
    status, body, _ = error_body(StoreError("disk I/O error at /var/lib/x.db"))
    assert (status, body.code) == (503, "store_unavailable") and "disk" not in body.error


def test_rate_limited_errors_carry_retry_after():
    """429 bodies and headers agree on whole seconds, at least 1."""
    from dcp_http.errors import RateLimited

    status, body, headers = error_body(RateLimited("slow down", retry_after_seconds=0.2))
    assert status == 429 and body.retry_after_seconds == 1 and headers["retry-after"] == "1"


def test_an_invariant_error_is_a_bug_not_a_client_error():
    """A fold that finds a broken money rule answers 500 internal, never its message."""
    from dcp_projections.errors import InvariantError

    status, body, _ = error_body(InvariantError("renter r1 held -5"))
    assert (status, body.code) == (500, "internal") and "held" not in body.error
