"""Who is calling: credentials of SPEC section 5, resolved to an `Identity`.

Renter keys come from `x-renter-key`, `?key=` or `Authorization: Bearer`; provider keys from
`x-provider-key`, the `{key}` path segment, `?key=` or Bearer; the admin token from
`x-admin-token` or Bearer. Keys are resolved by the service, which looks them up by their
sha256 (the only form stored) and compares hashes with `hmac.compare_digest`; the admin token
is compared here, also with `hmac.compare_digest`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Collection, Mapping

import msgspec

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


def _bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class AdminDisabled(Unavailable):
    """The admin API was asked for but no admin token is configured (503)."""

    code = "admin_disabled"


class Authenticator:
    """Resolves request credentials to an Identity for a route's allowed roles."""

    def __init__(self, lookup: KeyLookup, admin_token: str | None) -> None:
        self._lookup = lookup
        self._admin = admin_token.encode() if admin_token else None

    def _check_admin(self, token: str) -> Identity:
        if self._admin is None:
            raise AdminDisabled("the admin API is disabled: no admin token is configured")
        if hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self._admin):
            return Identity(ADMIN)
        if role_of_key(token) is not None:
            raise Unauthorized("this endpoint needs the admin token", code="wrong_key_type")
        raise Unauthorized("invalid admin token", code="invalid_credentials")

    async def authenticate(
        self,
        roles: Collection[str],
        headers: Mapping[str, str],
        query: Mapping[str, str],
        path_key: str | None = None,
    ) -> Identity:
        """The caller's Identity; raises Unauthorized (401) or AdminDisabled (503)."""
        admin_only = set(roles) == {ADMIN}
        if admin_only and self._admin is None:
            raise AdminDisabled("the admin API is disabled: no admin token is configured")
        bearer = _bearer(headers)
        admin_header = headers.get("x-admin-token")
        if admin_header is not None and ADMIN in roles:
            return self._check_admin(admin_header)

        # (key, role the place it came from implies, or None when any role may come there)
        candidates: list[tuple[str | None, str | None]] = [
            (headers.get("x-renter-key"), RENTER),
            (headers.get("x-provider-key"), PROVIDER),
            (path_key, PROVIDER),
            (query.get("key"), None),
            (bearer, None),
        ]
        key, implied = next(((k, r) for k, r in candidates if k), (None, None))
        if key is None:
            if admin_header is not None:
                raise Unauthorized(
                    "an admin token is no key for this endpoint", code="wrong_key_type"
                )
            raise Unauthorized("credentials required", code="missing_credentials")
        claimed = role_of_key(key)
        if claimed is None:
            if ADMIN in roles and key == bearer:
                return self._check_admin(key)
            if self._admin is not None and hmac.compare_digest(
                key.encode("utf-8", "surrogatepass"), self._admin
            ):
                raise Unauthorized(
                    "the admin token is no key for this endpoint", code="wrong_key_type"
                )
            raise Unauthorized("invalid credentials", code="invalid_credentials")
        if claimed not in roles or (implied is not None and implied != claimed):
            raise Unauthorized(f"a {claimed} key cannot be used here", code="wrong_key_type")
        if len(key) > MAX_KEY_LEN:
            raise Unauthorized("invalid credentials", code="invalid_credentials")
        found = self._lookup(key)
        if found is None:
            raise Unauthorized("invalid credentials", code="invalid_credentials")
        role, subject_id = found
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
    "Identity",
]
