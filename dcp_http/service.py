"""The service adapter: the HTTP layer's one door into `dcp_app`.

It turns decoded request types into domain commands, calls the application service, and
turns domain state and read-model rows into response types. No money rule lives here.
"""

from __future__ import annotations

from typing import Any

from dcp_http.config import ServerConfig


class ServiceAdapter:
    """Placeholder until dcp_app lands."""

    async def lookup_key(self, key_hash: str) -> tuple[str, str] | None:
        raise NotImplementedError

    async def sweep(self) -> int:
        raise NotImplementedError

    async def readiness(self) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


async def open_service(config: ServerConfig) -> ServiceAdapter:
    """Open the event store at `config.db` and the application service over it."""
    raise NotImplementedError("dcp_app is not built yet")
