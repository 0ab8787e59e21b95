"""`/openapi.json`, generated from the endpoint table and its msgspec types.

The component schemas come from `msgspec.json.schema_components` over the very types the
server decodes requests with, so the document cannot drift from what is enforced.
"""

from __future__ import annotations

from typing import Any

import msgspec

from dcp_http.auth import ADMIN, PROVIDER, RENTER
from dcp_http.errors import ErrorBody
from dcp_http.routing import Api, Endpoint

REF = "#/components/schemas/{name}"

_ERROR_TEXT = {
    400: "invalid request (`fields` says which), or two different credentials",
    401: "missing or wrong credentials",
    402: "insufficient funds (`shortfall_halala`)",
    403: "not allowed",
    404: "unknown or not yours",
    409: "state conflict",
    410: "gone",
    413: "body too large",
    415: "body is not application/json",
    429: "rate limited (`retry_after_seconds`, `Retry-After`)",
    503: "not ready, or admin API disabled",
}

SECURITY_SCHEMES: dict[str, Any] = {
    "renterKey": {"type": "apiKey", "in": "header", "name": "x-renter-key"},
    "providerKey": {"type": "apiKey", "in": "header", "name": "x-provider-key"},
    "adminToken": {"type": "apiKey", "in": "header", "name": "x-admin-token"},
    "queryKey": {"type": "apiKey", "in": "query", "name": "key"},
    "bearer": {"type": "http", "scheme": "bearer"},
}

_SECURITY_BY_ROLE: dict[str, list[dict[str, list[str]]]] = {
    RENTER: [{"renterKey": []}, {"queryKey": []}, {"bearer": []}],
    PROVIDER: [{"providerKey": []}, {"queryKey": []}, {"bearer": []}],
    ADMIN: [{"adminToken": []}, {"bearer": []}],
}


def _types(api: Api) -> list[Any]:
    out: list[Any] = [ErrorBody]
    for ep in api.endpoints:
        for t in (ep.body, ep.query, *ep.responses.values()):
            if t is not None and t not in out:
                out.append(t)
    return out


def _operation(ep: Endpoint, refs: dict[Any, Any], components: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": ep.summary,
        "operationId": f"{ep.method.lower()}_{ep.path.strip('/').replace('/', '_')}".replace(
            "{", ""
        ).replace("}", ""),
    }
    if ep.tag:
        op["tags"] = [ep.tag]
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": desc,
            "schema": {"type": "string", "minLength": 1, "maxLength": 200},
        }
        for name, desc in ep.path_params.items()
    ]
    if ep.query is not None:
        name = refs[ep.query]["$ref"].rsplit("/", 1)[1]
        comp = components[name]
        required = set(comp.get("required", ()))
        for pname, schema in comp.get("properties", {}).items():
            params.append(
                {"name": pname, "in": "query", "required": pname in required, "schema": schema}
            )
    for hname, desc in ep.headers.items():
        params.append(
            {
                "name": hname,
                "in": "header",
                "required": False,
                "description": desc,
                "schema": {"type": "string", "minLength": 1, "maxLength": 200},
            }
        )
    if params:
        op["parameters"] = params
    if ep.body is not None:
        op["requestBody"] = {
            "required": not ep.body_optional,
            "content": {"application/json": {"schema": refs[ep.body]}},
        }
    responses: dict[str, Any] = {}
    for status, t in ({ep.status: None} | ep.responses).items():
        if t is None:
            continue
        responses[str(status)] = {
            "description": "OK" if status < 300 else str(status),
            "content": {"application/json": {"schema": refs[t]}},
        }
    codes = set(ep.errors) | {429}
    if ep.body is not None or ep.query is not None or ep.path_params:
        codes.add(400)
    if ep.body is not None:
        codes |= {413, 415}
    if ep.roles:
        codes |= {400, 401}  # 400: two different credentials in one request
    if set(ep.roles) == {ADMIN}:
        codes.add(503)
    for status in sorted(codes):
        responses[str(status)] = {
            "description": _ERROR_TEXT.get(status, "error"),
            "content": {"application/json": {"schema": refs[ErrorBody]}},
        }
    op["responses"] = responses
    if ep.roles:
        op["security"] = [s for role in ep.roles for s in _SECURITY_BY_ROLE[role]]
    return op


def _ecma_patterns(node: Any) -> None:
    """Rewrite the `\\Z` that ends every pattern (dcp_projections.text.whole) as `$`, in place.

    JSON Schema patterns are ECMA-262 regexes, which have no `\\Z` (a JavaScript reader would
    take it for a literal "Z"); there `$` without the m flag already means the true end.
    """
    if isinstance(node, dict):
        pattern = node.get("pattern")
        if isinstance(pattern, str) and pattern.endswith(r"\Z"):
            node["pattern"] = pattern[:-2] + "$"
        for value in node.values():
            _ecma_patterns(value)
    elif isinstance(node, list):
        for value in node:
            _ecma_patterns(value)


def build_openapi(
    api: Api, title: str = "DCP ledger API", version: str = "0.1.0"
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for every endpoint of `api`."""
    types = _types(api)
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    _ecma_patterns(components)
    refs = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for ep in api.endpoints:
        paths.setdefault(ep.path, {})[ep.method.lower()] = _operation(ep, refs, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
    }
