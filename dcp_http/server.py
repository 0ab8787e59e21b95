"""`dcp serve`: uvicorn on the embedded SQLite log, with the background sweeps."""

from __future__ import annotations

import logging

import uvicorn

from dcp_http.app import create_app
from dcp_http.config import ServerConfig
from dcp_http.logs import configure_logging

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def uvicorn_config(config: ServerConfig, log_level: str = "info") -> uvicorn.Config:
    """uvicorn settings for the app: its own access log off (ours redacts keys; uvicorn's
    would print `?key=` and provider keys in paths), no server header, lifespan required."""
    return uvicorn.Config(
        create_app(config),
        host=config.host,
        port=config.port,
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
