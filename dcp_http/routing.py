"""Declared endpoints: one table drives the router, the validation and the OpenAPI document.

Each endpoint names its method, path, who may call it, and the msgspec types of its body,
query and responses. `Api.routes()` turns the table into Starlette routes whose endpoint
authenticates, decodes, calls the handler, and encodes; `dcp_http.openapi` turns the same
table into `/openapi.json`, so the schema a client reads is the one the server enforces.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, get_args, get_origin

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Receive, Scope, Send

from dcp_http.auth import Authenticator, Identity, presented_in
from dcp_http.errors import FieldError, InvalidJson, InvalidRequest, encode_error
from dcp_http.middleware import request_info
from dcp_http.service import ServiceAdapter

_encoder = msgspec.json.Encoder()

_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"unknown field `(?P<name>[^`]*)`")


def _field_error(err: msgspec.ValidationError) -> FieldError:
    """msgspec's message `Expected int, got float - at $.a.b` -> FieldError('a.b', ...)."""
    text = str(err)
    m = _AT.match(text)
    msg, path = (m.group("msg"), m.group("path") or "") if m else (text, "")
    name = path.lstrip(".")
    if not name and re.match(r"^\w+: ", msg):  # raised by a __post_init__ check
        name, msg = msg.split(": ", 1)
    unknown = _UNKNOWN.search(msg)
    if unknown:
        name = f"{name}.{unknown.group('name')}" if name else unknown.group("name")
    return FieldError(field=name or "body", message=msg)


@dataclass
class Call:
    """What a handler gets: the caller, the decoded inputs, and the app's shared objects."""

    identity: Identity | None
    body: Any
    query: Any
    path: dict[str, str]
    request: Request

    @property
    def service(self) -> ServiceAdapter:
        service: ServiceAdapter = self.request.app.state.service
        return service

    @property
    def who(self) -> Identity:
        """The authenticated caller (endpoints with roles always have one)."""
        assert self.identity is not None
        return self.identity

    @property
    def subject(self) -> str:
        """The caller's renter or provider id."""
        return self.who.subject_id

    def header(self, name: str) -> str | None:
        return self.request.headers.get(name)


class Reply(msgspec.Struct):
    """A handler's answer when its status is not the endpoint's default one."""

    status: int
    body: Any


Handler = Callable[[Call], Awaitable[Any]]


@dataclass
class Endpoint:
    """One route: everything the router, the validator and the OpenAPI document need."""

    method: str
    path: str
    handler: Handler
    summary: str
    roles: Collection[str] = ()
    body: type | None = None
    body_optional: bool = False
    query: type | None = None
    status: int = 200
    returns: Any = None  # the response type of `status`
    responses: dict[int, Any] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    tag: str = ""
    path_params: dict[str, str] = field(default_factory=dict)  # name -> description
    headers: dict[str, str] = field(default_factory=dict)  # optional request headers
    body_decoder: Any = None
    query_fields: tuple[str, ...] = ()
    query_int_fields: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.returns is not None:
            self.responses = {self.status: self.returns, **self.responses}
        if self.body is not None:
            self.body_decoder = msgspec.json.Decoder(self.body)
        if self.query is not None:
            self.query_fields = tuple(f.name for f in msgspec.structs.fields(self.query))
            self.query_int_fields = frozenset(
                f.name for f in msgspec.structs.fields(self.query) if _is_int(f.type)
            )
        for name in re.findall(r"{(\w+)}", self.path):
            self.path_params.setdefault(name, name)


class Api:
    """The table of endpoints, filled by the `endpoint` decorator of each routes module."""

    def __init__(self) -> None:
        self.endpoints: list[Endpoint] = []

    def endpoint(
        self, method: str, path: str, summary: str, **options: Any
    ) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.endpoints.append(Endpoint(method, path, fn, summary, **options))
            return fn

        return register

    def routes(self, authenticator: Callable[[], Authenticator]) -> list[Route]:
        """Starlette routes for every endpoint, grouped by path."""
        by_path: dict[str, dict[str, Endpoint]] = {}
        for ep in self.endpoints:
            by_path.setdefault(ep.path, {})[ep.method] = ep
        return [
            Route(path, _dispatch(eps, authenticator), methods=list(eps))
            for path, eps in by_path.items()
        ]


class RouteTable(BaseRoute):
    """All routes as one: exact paths by dict lookup, templated ones by regex.

    Starlette's router tries routes one by one (~2 us each); with 40 routes that cost more
    than a whole trivial request. Matching keeps Starlette's rule: a full match (path and
    method) wins over a partial one (path only, answered 405).
    """

    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes
        self._static = {r.path: r for r in routes if "{" not in r.path}
        self._dynamic = [r for r in routes if "{" in r.path]

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        partial: tuple[Match, Scope] | None = None
        static = self._static.get(scope["path"])
        for route in (static,) if static is not None else ():
            match, child = route.matches(scope)
            if match is Match.FULL:
                return match, {**child, "dcp.route": route}
            if match is Match.PARTIAL:
                partial = (match, {**child, "dcp.route": route})
        for route in self._dynamic:
            match, child = route.matches(scope)
            if match is Match.FULL:
                return match, {**child, "dcp.route": route}
            if match is Match.PARTIAL and partial is None:
                partial = (match, {**child, "dcp.route": route})
        return partial or (Match.NONE, {})

    def template(self, scope: Scope) -> str | None:
        """The path template a request matches (even by path only), for the access log."""
        match, child = self.matches(scope)
        return child["dcp.route"].path if match is not Match.NONE else None

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await scope["dcp.route"].handle(scope, receive, send)


def _is_int(t: Any) -> bool:
    if get_origin(t) is Annotated:
        t = get_args(t)[0]
    return t is int


_DIGITS = re.compile(r"[+-]?[0-9]{1,19}")


def _decode_query(ep: Endpoint, params: Mapping[str, str]) -> Any:
    raw = {k: v for k, v in params.items() if k in ep.query_fields}
    for name in ep.query_int_fields & raw.keys():
        # msgspec's lax mode would read "1e3" or "10.0" as an integer; a query takes digits.
        if not _DIGITS.fullmatch(raw[name]):
            raise InvalidRequest(
                "invalid query parameter",
                fields=[FieldError(field=name, message="Expected `int` (digits only)")],
            )
    unknown = [k for k in params if k not in ep.query_fields and k != "key"]
    if unknown:
        raise InvalidRequest(
            "unknown query parameter",
            fields=[FieldError(field=k, message="unknown query parameter") for k in unknown],
        )
    try:
        return msgspec.convert(raw, ep.query, strict=False)
    except msgspec.ValidationError as e:
        raise InvalidRequest("invalid query parameter", fields=[_field_error(e)]) from None


def _decode_body(ep: Endpoint, body: bytes) -> Any:
    if not body.strip():
        if ep.body_optional:
            return msgspec.convert({}, ep.body)
        raise InvalidJson("a JSON body is required")
    try:
        return ep.body_decoder.decode(body)
    except msgspec.ValidationError as e:
        raise InvalidRequest("invalid request body", fields=[_field_error(e)]) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise InvalidJson(f"the body is not valid JSON: {e}") from None


def _dispatch(
    eps: dict[str, Endpoint], authenticator: Callable[[], Authenticator]
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        # Starlette answers HEAD on every GET route; it runs as the GET (without the body).
        ep = eps.get(request.method) or eps["GET"]
        info = request_info(request.scope)
        if info is not None:
            info.route = ep.path
        try:
            identity = None
            if ep.roles:
                identity = await authenticator().authenticate(ep.roles, presented_in(request.scope))
                if info is not None:
                    info.actor = identity.actor
            query = _decode_query(ep, request.query_params) if ep.query else None
            body = _decode_body(ep, await request.body()) if ep.body else None
            result = await ep.handler(
                Call(identity, body, query, dict(request.path_params), request)
            )
        except Exception as exc:
            status, payload, headers = encode_error(exc)
            return Response(payload, status, headers, media_type="application/json")
        status = ep.status
        if isinstance(result, Reply):
            status, result = result.status, result.body
        return Response(_encoder.encode(result), status, media_type="application/json")

    return endpoint
