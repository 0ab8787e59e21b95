"""Who is calling: credentials of SPEC section 5, resolved to an `Identity`.

Renter keys come from `x-renter-key`, `?key=` or `Authorization: Bearer`; provider keys from
`x-provider-key`, the `{key}` path segment, `?key=` or Bearer; the admin token from
`x-admin-token` or Bearer. A request carries one credential, in as many of these places as it
likes; two different ones are refused (400) rather than resolved by a precedence the caller
cannot see. `presented_in` lists them once per request, for the rate limiter and for
`Authenticator`. Keys are resolved by the service, which looks them up by their sha256 (the
only form stored) and compares hashes with `hmac.compare_digest`; the admin token is compared
here, also with `hmac.compare_digest`.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable, Collection, Iterable
from urllib.parse import parse_qsl

import msgspec
from starlette.types import Scope

from dcp_http.errors import ApiError, Unauthorized, Unavailable

RENTER = "renter"
PROVIDER = "provider"
ADMIN = "admin"

KEY_PREFIX = {RENTER: "dcp-renter-", PROVIDER: "dcp-provider-"}
MAX_KEY_LEN = 200


class Identity(msgspec.Struct, frozen=True):
    """An authenticated caller: its role and, for renters and providers, its id."""

    role: str
    subject_id: str = ""

    @property
    def actor(self) -> str:
        return self.role if self.role == ADMIN else f"{self.role}:{self.subject_id}"


# An API key -> (role, subject_id), or None when unknown.
KeyLookup = Callable[[str], tuple[str, str] | None]


def role_of_key(key: str) -> str | None:
    """The role a key's prefix claims, or None for a string that is no DCP key."""
    for role, prefix in KEY_PREFIX.items():
        if key.startswith(prefix):
            return role
    return None


def _bearer(value: str) -> str | None:
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


# The headers a credential can come in, by the name of their place.
_HEADER_PLACES = {
    b"x-renter-key": "x-renter-key",
    b"x-provider-key": "x-provider-key",
    b"x-admin-token": "x-admin-token",
    b"authorization": "bearer",
}
# The role a place implies; a key in any other place (`?key=`, Bearer) may have any role.
_IMPLIES = {"x-renter-key": RENTER, "x-provider-key": PROVIDER, "path": PROVIDER}
# The one route with a key in its path: GET /api/providers/{key}/jobs.
_PATH_KEY = re.compile(r"/api/providers/(?P<key>[^/]+)/jobs")

# (place, credential): every credential one request carries.
Presented = list[tuple[str, str]]


def presented(
    headers: Iterable[tuple[bytes, bytes]], query_string: bytes = b"", path: str = ""
) -> Presented:
    """Every credential in a request's headers, `?key=` values and `{key}` path segment."""
    found: Presented = []
    for name, raw in headers:
        place = _HEADER_PLACES.get(name.lower())
        if place is None or not raw:
            continue
        text = raw.decode("latin-1")
        value = _bearer(text) if place == "bearer" else text
        if value:
            found.append((place, value))
    m = _PATH_KEY.fullmatch(path)
    if m:
        found.append(("path", m["key"]))
    if b"key=" in query_string:
        qs = query_string.decode("latin-1")
        found += [
            ("query", v) for k, v in parse_qsl(qs, keep_blank_values=True) if k == "key" and v
        ]
    return found


def presented_in(scope: Scope) -> Presented:
    """`presented` for an ASGI request, worked out once: the rate limiter and the
    authenticator read the same list, so a key is one caller wherever it is sent."""
    found: Presented | None = scope.get("dcp.credentials")
    if found is None:
        found = presented(scope.get("headers", ()), scope.get("query_string", b""), scope["path"])
        scope["dcp.credentials"] = found
    return found


def the_credential(found: Presented) -> str | None:
    """The request's one credential (None without any); ConflictingCredentials (400) when it
    carries two different ones, which would otherwise be resolved by a precedence order the
    caller cannot see."""
    values = {value for _, value in found}
    if len(values) > 1:
        places = ", ".join(sorted({place for place, _ in found}))
        raise ConflictingCredentials(f"the request carries different credentials ({places})")
    return next(iter(values), None)


class ConflictingCredentials(ApiError):
    """Two different keys or tokens in one request (400): nothing is done with either."""

    status = 400
    code = "conflicting_credentials"


class AdminDisabled(Unavailable):
    """The admin API was asked for but no admin token is configured (503)."""

    code = "admin_disabled"


class Authenticator:
    """Resolves request credentials to an Identity for a route's allowed roles."""

    def __init__(
        self,
        lookup: KeyLookup,
        admin_token: str | None,
        refresh: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._lookup = lookup
        # Called once before a well-formed key is refused: another node may have registered
        # it a moment ago, and this node's memory has not folded that yet.
        self._refresh = refresh
        self._admin = admin_token.encode() if admin_token else None

    def _check_admin(self, token: str) -> Identity:
        if self._admin is None:
            raise AdminDisabled("the admin API is disabled: no admin token is configured")
        if hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self._admin):
            return Identity(ADMIN)
        if role_of_key(token) is not None:
            raise Unauthorized("this endpoint needs the admin token", code="wrong_key_type")
        raise Unauthorized("invalid admin token", code="invalid_credentials")

    async def authenticate(self, roles: Collection[str], found: Presented) -> Identity:
        """The caller's Identity from the credentials a request carries (`presented`).

        Raises ConflictingCredentials (400) for two different ones, Unauthorized (401), or
        AdminDisabled (503).
        """
        if set(roles) == {ADMIN} and self._admin is None:
            raise AdminDisabled("the admin API is disabled: no admin token is configured")
        key = the_credential(found)
        places = {place for place, _ in found}
        if "x-admin-token" in places and ADMIN in roles:
            return self._check_admin(key)  # type: ignore[arg-type]
        if key is None or places == {"x-admin-token"}:
            if key is not None:
                raise Unauthorized(
                    "an admin token is no key for this endpoint", code="wrong_key_type"
                )
            raise Unauthorized("credentials required", code="missing_credentials")
        claimed = role_of_key(key)
        if claimed is None:
            if ADMIN in roles and "bearer" in places:
                return self._check_admin(key)
            if self._admin is not None and hmac.compare_digest(
                key.encode("utf-8", "surrogatepass"), self._admin
            ):
                raise Unauthorized(
                    "the admin token is no key for this endpoint", code="wrong_key_type"
                )
            raise Unauthorized("invalid credentials", code="invalid_credentials")
        implied = {_IMPLIES[p] for p in places if p in _IMPLIES}
        if claimed not in roles or any(role != claimed for role in implied):
            raise Unauthorized(f"a {claimed} key cannot be used here", code="wrong_key_type")
        if len(key) > MAX_KEY_LEN:
            raise Unauthorized("invalid credentials", code="invalid_credentials")
        found_key = self._lookup(key)
        if found_key is None and self._refresh is not None:
            await self._refresh()  # StoreError (503) while the log is away, not a 401
            found_key = self._lookup(key)
        if found_key is None:
            raise Unauthorized("invalid credentials", code="invalid_credentials")
        role, subject_id = found_key
        if role != claimed:
            raise Unauthorized(f"a {role} key cannot be used here", code="wrong_key_type")
        return Identity(role, subject_id)


__all__ = [
    "ADMIN",
    "PROVIDER",
    "RENTER",
    "AdminDisabled",
    "ApiError",
    "Authenticator",
    "ConflictingCredentials",
    "Identity",
    "Presented",
    "presented",
    "presented_in",
]
