"""Guessing is throttled per client address, a key has one bucket wherever it is sent, and
`dcp serve` refuses an admin token that could be guessed."""

import os
import subprocess
import sys
import time

import pytest

from dcp_http.config import DEFAULT_RATE_LIMITS, ConfigError, RateLimit, ServerConfig

from ._live import ADMIN_TOKEN, Api, serve
from .test_cli import ROOT


def _limits(**overrides: RateLimit) -> dict[str, RateLimit]:
    return {**DEFAULT_RATE_LIMITS, "register": RateLimit(1000, 3600.0), **overrides}


def test_guessing_admin_tokens_from_one_address_is_refused(tmp_path):
    """Every wrong token is a new credential; the address's failures are counted anyway:
    after 5 failures the 6th guess is 429 with retry_after_seconds, the token is never looked
    at (even the right one from that address is refused), and nothing was appended."""
    limits = _limits(auth_failure=RateLimit(5, 60.0))
    with serve(tmp_path / "guess.db", rate_limit_table=limits) as server:
        api = Api(server)
        before = api.head_seq()
        codes = [
            api.get("/api/admin/images", headers={"x-admin-token": f"guess-{i:04d}"}).status_code
            for i in range(40)
        ]
        assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}
        r = api.get("/api/admin/images", headers={"x-admin-token": "guess-x"})
        assert r.json()["code"] == "rate_limited" and r.json()["retry_after_seconds"] >= 1
        assert "failed authentications" in r.json()["error"]
        assert int(r.headers["retry-after"]) == r.json()["retry_after_seconds"]
        # A guesser learns nothing from the right token now: it is refused unread.
        assert api.get("/api/admin/images", headers=api.admin).status_code == 429
        # Renter keys count against the same address.
        bad = {"x-renter-key": "dcp-renter-" + "0" * 32}
        assert api.get("/api/renters/me", headers=bad).status_code == 429
        # Requests without a credential are not affected.
        assert api.get("/api/marketplace").status_code == 200
        anonymous = api.post("/api/renters/register", json={"name": "n", "email": "n@x.sa"})
        assert anonymous.status_code == 201
        api.close()
    with serve(tmp_path / "guess.db", rate_limits=False) as server:
        api = Api(server)
        assert api.head_seq() == before + 1  # the one registration
        api.close()


def test_successes_do_not_count_and_the_address_recovers(tmp_path):
    """Only failures spend the address's budget: the real admin's requests never do, and a
    budget of 2 per second comes back within a second of waiting."""
    limits = _limits(auth_failure=RateLimit(2, 1.0))
    with serve(tmp_path / "ok.db", rate_limit_table=limits) as server:
        api = Api(server)
        for _ in range(20):
            assert api.get("/api/admin/images", headers=api.admin).status_code == 200
        wrong = {"x-admin-token": "w" * 40}
        assert [api.get("/api/admin/images", headers=wrong).status_code for _ in range(3)] == [
            401,
            401,
            429,
        ]
        r = api.get("/api/admin/images", headers=api.admin)
        assert r.status_code == 429
        time.sleep(r.json()["retry_after_seconds"])
        assert api.get("/api/admin/images", headers=api.admin).status_code == 200
        api.close()


@pytest.mark.parametrize(
    "token",
    ["short-token", " " * 40, "a" * 31, "a" * 40 + "\n", "abc def " * 5],
    ids=["short", "spaces", "31-chars", "trailing-newline", "inner-space"],
)
def test_dcp_serve_refuses_a_weak_admin_token(tmp_path, token):
    """`dcp serve` exits 2 and says why: fewer than 32 characters, or whitespace."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DCP_ADMIN_TOKEN": token}
    r = subprocess.run(
        [sys.executable, "-m", "dcp_cli", "serve", "--db", str(tmp_path / "x.db")],
        env=env,
        capture_output=True,
        timeout=60,
    )
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert "DCP_ADMIN_TOKEN" in err and ("32" in err or "whitespace" in err), err
    assert not (tmp_path / "x.db").exists()
    with pytest.raises(ConfigError):
        ServerConfig(admin_token=token)
    assert len(ADMIN_TOKEN) >= 32 and ServerConfig(admin_token=ADMIN_TOKEN).admin_token


def test_a_key_has_one_bucket_wherever_it_is_sent(tmp_path):
    """x-renter-key, ?key= and Bearer are one caller: with a limit of 3, the 4th request is
    429 whichever form each request used, while another renter still gets through."""
    limits = _limits(default=RateLimit(3, 60.0))
    with serve(tmp_path / "one.db", rate_limit_table=limits) as server:
        api = Api(server)
        a = api.renter()
        b = api.renter()
        key = a["api_key"]
        forms = [
            {"headers": {"x-renter-key": key}},
            {"params": {"key": key}},
            {"headers": {"authorization": f"Bearer {key}"}},
        ]
        codes = [api.get("/api/renters/me", **kw).status_code for kw in forms]
        assert codes == [200, 200, 200]
        for kw in forms:
            r = api.get("/api/renters/me", **kw)
            assert r.status_code == 429 and r.json()["code"] == "rate_limited", kw
        assert api.get("/api/renters/me", headers=b["headers"]).status_code == 200
        api.close()


def test_a_provider_key_in_the_path_shares_the_headers_bucket(tmp_path):
    """GET /api/providers/{key}/jobs counts against the same bucket as x-provider-key."""
    limits = _limits(default=RateLimit(2, 60.0))
    with serve(tmp_path / "path.db", rate_limit_table=limits, auto_approve=True) as server:
        api = Api(server)
        p = api.ok(
            "POST",
            "/api/providers/register",
            201,
            json={
                "name": "p",
                "email": "p@example.com",
                "gpu_model": "T4",
                "gpu_count": 1,
                "vram_gb": 16,
            },
        )
        key = p["api_key"]
        assert api.get(f"/api/providers/{key}/jobs").status_code == 200
        assert api.get("/api/providers/me", headers={"x-provider-key": key}).status_code == 200
        assert api.get(f"/api/providers/{key}/jobs").status_code == 429
        api.close()
