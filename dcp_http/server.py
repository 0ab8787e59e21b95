"""`dcp serve`: uvicorn on the embedded SQLite log, with the background sweeps."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from dcp_http.app import create_app
from dcp_http.config import ServerConfig
from dcp_http.logs import configure_logging

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}

# A write this long goes out as it is rather than being copied onto what is held.
_JOIN_LIMIT = 16 * 1024


class OneWriteTransport:
    """A transport that sends a response's head and its body in one write.

    uvicorn writes the status line and headers when the app sends `http.response.start`, and
    the body when it sends `http.response.body`: two socket writes (two system calls, and on a
    busy loopback two wake-ups of the client) for every small JSON reply. This holds a write
    until the next one, which it joins, or until the end of the loop iteration (`call_soon`),
    so a reply whose head and body are sent in one step goes out in one write. The bytes, and
    their order, are exactly those uvicorn writes; only their split into segments changes.
    Every other transport call is the wrapped one's, after any held bytes are written.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            if data:
                self._held = bytes(data)
                self._loop.call_soon(self.flush)
            return
        self._held = None
        if len(data) <= _JOIN_LIMIT:
            self._transport.write(held + data)
        else:
            self._transport.writelines((held, data))

    def flush(self) -> None:
        """Write what is held, if anything."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # get_extra_info, set_protocol, ...
        self.flush()
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through `OneWriteTransport`. Flow control keeps
    the real transport (uvicorn's FlowControl is made with it in `connection_made`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = OneWriteTransport(transport, self.loop)  # type: ignore[assignment]


def uvicorn_config(config: ServerConfig, log_level: str = "info") -> uvicorn.Config:
    """uvicorn settings for the app: uvloop and httptools (with one write per small reply),
    its own access log off (ours redacts keys; uvicorn's would print `?key=` and provider
    keys in paths), no server header, no websockets, lifespan required."""
    return uvicorn.Config(
        create_app(config),
        host=config.host,
        port=config.port,
        loop="uvloop",
        http=OneWriteHttpToolsProtocol,
        ws="none",
        access_log=False,
        log_level=log_level,
        lifespan="on",
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )


def run(config: ServerConfig, log_level: str = "info") -> int:
    """Serve until SIGINT/SIGTERM; returns the process exit code."""
    configure_logging(level=_LEVELS.get(log_level, logging.ERROR))
    server = uvicorn.Server(uvicorn_config(config, log_level))
    server.run()
    return 0 if server.started else 1
