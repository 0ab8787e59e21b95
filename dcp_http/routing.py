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


class Call:
    """What a handler gets: the caller, the decoded inputs, and the app's shared objects.

    The Starlette `request` is made only when a handler asks for it: the API's own path
    hands the endpoint the raw ASGI request (dcp_http.middleware.BodyGuardMiddleware)."""

    __slots__ = ("_receive", "_request", "body", "identity", "path", "query", "scope")

    def __init__(
        self,
        identity: Identity | None,
        body: Any,
        query: Any,
        path: dict[str, str],
        scope: Scope,
        receive: Receive,
        request: Request | None = None,
    ) -> None:
        self.identity = identity
        self.body = body
        self.query = query
        self.path = path
        self.scope = scope
        self._receive = receive
        self._request = request

    @property
    def request(self) -> Request:
        if self._request is None:
            self._request = Request(self.scope, self._receive)
        return self._request

    @property
    def service(self) -> ServiceAdapter:
        service: ServiceAdapter = self.scope["app"].state.service
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
        """The first value of header `name` (any case), as Starlette's `Headers.get`."""
        key = name.lower().encode("latin-1")
        for k, v in self.scope["headers"]:
            if k == key:
                return str(v.decode("latin-1"))
        return None


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
        routes = []
        for path, eps in by_path.items():
            dispatch = Dispatch(eps, authenticator)
            route = Route(path, dispatch.endpoint, methods=list(eps))
            route.dcp_dispatch = dispatch  # type: ignore[attr-defined]
            routes.append(route)
        return routes


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

    def dispatch(self, scope: Scope) -> Dispatch | None:
        """The endpoints that answer `scope` when it fully matches a route of the table (its
        path parameters then in `scope`, as the router puts them), else None: a path the
        table does not hold, or a method its route does not take (the router's 405)."""
        match, child = self.matches(scope)
        if match is not Match.FULL:
            return None
        scope.update(child)
        dispatch: Dispatch = child["dcp.route"].dcp_dispatch
        return dispatch


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


_JSON = (b"content-type", b"application/json")


def json_headers(
    status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> list[tuple[bytes, bytes]]:
    """The raw headers Starlette's `Response(body, status, headers, "application/json")`
    sends, in its order: the given ones, then content-length and content-type."""
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    keys = {k for k, _ in raw}
    if b"content-length" not in keys and not (status < 200 or status in (204, 304)):
        raw.append((b"content-length", str(len(body)).encode("latin-1")))
    if b"content-type" not in keys:
        raw.append(_JSON)
    return raw


class Dispatch:
    """The endpoints of one path: authenticate, decode, call the handler, encode.

    Two doors, one answer: `endpoint` for Starlette's route (HEAD, and whatever reaches the
    router), and `asgi` for the API's own path, which BodyGuardMiddleware takes with the body
    it has already read, without the router's, the Request's and the Response's layers.
    """

    def __init__(
        self, eps: dict[str, Endpoint], authenticator: Callable[[], Authenticator]
    ) -> None:
        self.eps = eps
        self.authenticator = authenticator

    async def answer(
        self, scope: Scope, receive: Receive, body: bytes | None, request: Request | None
    ) -> tuple[int, bytes, dict[str, str] | None]:
        """(status, JSON body, the error's headers or None for a success). `body` is the
        request's body where the caller has read it; None: read it from `receive`."""
        # Starlette answers HEAD on every GET route; it runs as the GET (without the body).
        ep = self.eps.get(scope["method"]) or self.eps["GET"]
        info = request_info(scope)
        if info is not None:
            info.route = ep.path
        try:
            identity = None
            if ep.roles:
                identity = await self.authenticator().authenticate(ep.roles, presented_in(scope))
                if info is not None:
                    info.actor = identity.actor
            path = dict(scope.get("path_params", ()))
            call = Call(identity, None, None, path, scope, receive, request)
            if ep.query:
                call.query = _decode_query(ep, call.request.query_params)
            if ep.body:
                raw = body if body is not None else await call.request.body()
                call.body = _decode_body(ep, raw)
            result = await ep.handler(call)
        except Exception as exc:
            return encode_error(exc)
        status = ep.status
        if isinstance(result, Reply):
            status, result = result.status, result.body
        return status, _encoder.encode(result), None

    async def endpoint(self, request: Request) -> Response:
        status, payload, headers = await self.answer(request.scope, request.receive, None, request)
        return Response(payload, status, headers, media_type="application/json")

    async def asgi(self, scope: Scope, receive: Receive, send: Send, body: bytes | None) -> None:
        status, payload, headers = await self.answer(scope, receive, body, None)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": json_headers(status, payload, headers),
            }
        )
        await send({"type": "http.response.body", "body": payload})
