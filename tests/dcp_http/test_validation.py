"""Printable strings are whole: no trailing newline or other control character gets into the log.

Python's `$` matches before a final newline, so `^[a-z]+$` let `"ref\\n"` through every
validator. Each case here is one field the probe stored with a newline; each must be refused
with 400 and leave the log as it was.
"""

import re
from typing import Any

import pytest

from dcp_projections.text import PRINTABLE, is_env_key, is_printable, whole

from ._live import IMAGE, Api, serve

# A trailing newline, the probe's case, and other control characters: tab, escape, DEL, a
# C1 control (NEL), and a Unicode line separator.
BAD_ENDINGS = ["\n", "\r\n", "\t", "\x1b[2J", "\x7f", "\x85", "\u2028"]


def _renter(name: str = "nl", email: str = "nl@example.com") -> dict[str, Any]:
    return {"name": name, "email": email}


def _provider(**fields: Any) -> dict[str, Any]:
    return {
        "name": "nl",
        "email": "nl@example.com",
        "gpu_model": "RTX 4090",
        "gpu_count": 1,
        "vram_gb": 24,
        **fields,
    }


def _submit(env: dict[str, str] | None = None, gpu_type: str = "RTX 4090") -> dict[str, Any]:
    return {
        "container_spec": {"image": IMAGE, "env": env or {}},
        "gpu_requirements": {"gpu_type": gpu_type},
        "max_duration_seconds": 600,
    }


def _gpu(**fields: Any) -> dict[str, Any]:
    return {"model": "RTX 4090", "count": 1, **fields}


def test_whole_patterns_refuse_a_trailing_newline():
    """The one anchoring helper: `whole()` ends in \\Z, and the printable rule refuses controls."""
    assert re.search(r"^[a-z]+$", "ref\n") is not None  # the old form: the bug
    assert re.search(whole("[a-z]+"), "ref") and not re.search(whole("[a-z]+"), "ref\n")
    assert re.search(PRINTABLE, "A100 80GB") and is_printable("Ünïcode ok")
    for end in BAD_ENDINGS:
        assert not is_printable("x" + end), repr(end)
    assert is_env_key("PATH") and not is_env_key("PATH\n") and not is_env_key("1X")


@pytest.fixture
def unlimited(tmp_path):
    """A server without rate limits: this test reads the log head after every request."""
    with serve(tmp_path / "nl.db", rate_limits=False) as server:
        client = Api(server)
        client.allow_image()
        yield client
        client.close()


def test_every_printable_field_refuses_a_trailing_newline_and_changes_nothing(unlimited: Api):
    """Names, emails, GPU models, env keys, allowlist references, heartbeat fields, credit
    references and reasons: a newline (or other control) at the end is a 400, nothing appended."""
    api = unlimited
    renter = api.renter(credit_halala=100_000)
    provider = api.provider()
    rid = renter["renter_id"]
    for end in BAD_ENDINGS:
        cases: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
            ("POST", "/api/renters/register", _renter(name="nl" + end), {}),
            ("POST", "/api/renters/register", _renter(email="nl@example.com" + end), {}),
            ("POST", "/api/providers/register", _provider(name="nl" + end), {}),
            ("POST", "/api/providers/register", _provider(gpu_model="H200" + end), {}),
            ("POST", "/api/jobs/submit", _submit(env={"KEY" + end: "v"}), renter["headers"]),
            ("POST", "/api/jobs/submit", _submit(gpu_type="RTX 4090" + end), renter["headers"]),
            ("POST", "/api/admin/images", {"reference": IMAGE + end}, api.admin),
            (
                "POST",
                "/api/providers/heartbeat",
                {"gpus": [_gpu(model="RTX 4090" + end)]},
                provider["headers"],
            ),
            (
                "POST",
                "/api/providers/heartbeat",
                {"gpus": [_gpu(driver_version="550" + end)]},
                provider["headers"],
            ),
            (
                "POST",
                "/api/providers/heartbeat",
                {"gpus": [_gpu()], "daemon_version": "1.0" + end},
                provider["headers"],
            ),
            (
                "POST",
                "/api/providers/heartbeat",
                {"gpus": [_gpu()], "running_job_ids": ["job-1" + end]},
                provider["headers"],
            ),
            (
                "POST",
                f"/api/admin/renters/{rid}/credit",
                {"amount_halala": 100, "reference": "ref-nl" + end},
                api.admin,
            ),
            (
                "POST",
                f"/api/admin/renters/{rid}/credit",
                {"amount_halala": 100, "reference": "ref-ok", "reason": "why" + end},
                api.admin,
            ),
            (
                "POST",
                f"/api/admin/providers/{provider['provider_id']}/suspend",
                {"reason": "why" + end},
                api.admin,
            ),
        ]
        for method, path, body, headers in cases:
            before = api.head_seq()
            r = api.request(method, path, json=body, headers=headers)
            assert r.status_code == 400, (path, body, r.status_code, r.text)
            assert r.json()["code"] == "invalid_request", r.text
            assert api.head_seq() == before, (path, body)


def test_a_newline_reference_does_not_credit_a_second_time(api: Api):
    """`ref-nl` credits once; `ref-nl\\n` is refused, so the balance moves once."""
    renter = api.renter()
    api.credit(renter["renter_id"], 500, reference="ref-nl")
    r = api.post(
        f"/api/admin/renters/{renter['renter_id']}/credit",
        json={"amount_halala": 500, "reference": "ref-nl\n"},
        headers=api.admin,
    )
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "reference"
    assert api.balance(renter)["available_halala"] == 500


@pytest.mark.parametrize("path_value", ["H200%0A", "H200%09", "H200%C2%85"])
def test_a_price_for_a_model_name_with_a_control_character_is_refused(api: Api, path_value):
    """The GPU model in the pricing path is checked by the domain's printable rule: 400."""
    before = api.head_seq()
    r = api.request(
        "PUT",
        f"/api/admin/pricing/{path_value}",
        json={"halala_per_gpu_hour": 1},
        headers=api.admin,
    )
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "validation_error"
    assert api.head_seq() == before


def test_the_published_schema_anchors_patterns_for_ecma_readers(api: Api):
    """/openapi.json writes the true-end anchor as ECMA-262's `$`, never Python's `\\Z`."""
    doc = api.ok("GET", "/openapi.json")
    name = doc["components"]["schemas"]["RegisterRenter"]["properties"]["name"]["pattern"]
    assert name.endswith(")$") and "\\Z" not in str(doc)
