"""Schemathesis against /openapi.json: every route, valid and invalid input, on a live server.

No answer may be a 5xx; every error body carries `error` and `code`; every answer conforms to
the schema the server publishes (status code, content type, body).
"""

import os

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dcp_http import endpoints
from dcp_http.openapi import build_openapi

from ._live import Api, serve
from .gateway import SECRET_KEY, WEBHOOK_TOKEN, running_gateway

DOC = build_openapi(endpoints.api)
SCHEMA = schemathesis.openapi.from_dict(DOC)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
EXAMPLES = int(os.environ.get("DCP_FUZZ_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """One server for the whole fuzz run, with a credited renter and an approved provider,
    and payments on, against the stand-in gateway (tests/dcp_http/gateway.py)."""
    with (
        running_gateway() as gateway,
        serve(
            tmp_path_factory.mktemp("fuzz") / "fuzz.db",
            rate_limits=False,
            sandbox=True,
            moyasar_secret_key=SECRET_KEY,
            moyasar_webhook_token=WEBHOOK_TOKEN,
            moyasar_api_url=gateway.url,
        ) as server,
    ):
        api = Api(server)
        api.allow_image()
        renter = api.renter(credit_halala=10**9)
        provider = api.provider()
        api.submit(renter)
        yield server, renter, provider
        api.close()


def _credentials(path: str, renter: dict, provider: dict) -> dict[str, str]:
    if path.startswith("/api/admin/"):
        return {"x-admin-token": Api.admin_token}
    if path.startswith("/api/providers/") and not path.endswith("/register"):
        return provider["headers"]
    if path.startswith(("/api/renters/", "/api/jobs")) and not path.endswith("/register"):
        return renter["headers"]
    return {}


def test_the_schema_covers_every_route(target):
    """The fuzzed schema is the one the server serves, and it has every routed endpoint."""
    server, _, _ = target
    assert httpx.get(f"{server.url}/openapi.json").json() == DOC
    routed = {(e.method.lower(), e.path) for e in endpoints.api.endpoints}
    documented = {(op.method, op.path) for op in OPERATIONS}
    assert routed == documented and len(routed) >= 40


def _has_input(op) -> bool:
    (ep,) = [
        e for e in endpoints.api.endpoints if (e.method.lower(), e.path) == (op.method, op.path)
    ]
    return bool(ep.body or ep.query or ep.path_params or ep.headers)


# Negative data needs an input to break: operations without any are fuzzed positively only.
CASES = [
    pytest.param(op, mode, id=f"{op.method.upper()} {op.path} {mode.value}")
    for op in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or _has_input(op)
]


@pytest.mark.parametrize(("operation", "mode"), CASES)
def test_fuzz(target, operation, mode):
    """Generated requests: never a 5xx, errors shaped {error, code}, answers match the schema."""
    server, renter, provider = target
    headers = _credentials(operation.path, renter, provider)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        if "key" in (case.path_parameters or {}) and mode is GenerationMode.POSITIVE:
            case.path_parameters["key"] = provider["api_key"]
        response = case.call(base_url=server.url, headers=headers, timeout=30)
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            body = response.json()
            assert isinstance(body.get("error"), str) and body["error"], body
            assert isinstance(body.get("code"), str) and body["code"], body
        case.validate_response(response, checks=CHECKS)

    run()
