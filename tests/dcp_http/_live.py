"""Helpers for the dcp_http tests: a real uvicorn server on a free port over a real SQLite
file, and an httpx client for it with the set-up steps tests repeat.

The server runs in a thread of the test process (its own event loop), so a test talks to it
only over TCP, like any client; `dcp serve` as a separate process is tested in test_cli.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import uvicorn

from dcp_http.app import create_app
from dcp_http.config import DEFAULT_RATE_LIMITS, RateLimit, ServerConfig
from dcp_http.logs import configure_logging
from dcp_http.server import OneWriteHttpToolsProtocol

ADMIN_TOKEN = "test-admin-token-0123456789abcdefghij"

IMAGE = "dcp-test/busybox:1"
# A valid Saudi IBAN (mod-97 check passes).
IBAN = "SA0380000000608010167519"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A running API: its base URL, its config, and the JSON log lines it wrote."""

    def __init__(self, config: ServerConfig, log: io.StringIO, app: Any = None) -> None:
        self.config = config
        # The ASGI app, for tests that look at how the server answered (its service and
        # queries live on `app.state` once started).
        self.app = app
        self.url = f"http://127.0.0.1:{config.port}"
        self._log = log

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._log.getvalue().splitlines() if line]

    def wait_for_log(
        self, predicate: Callable[[dict[str, Any]], bool], count: int = 1, timeout_s: float = 5.0
    ) -> list[dict[str, Any]]:
        """The log lines matching `predicate`, once there are `count` of them.

        The access line is written after the response has gone out, so a client can read the
        log before the server has written it: wait (bounded) instead of racing.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            lines = [x for x in self.log_lines() if predicate(x)]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.01)

    def log_text(self) -> str:
        return self._log.getvalue()


@contextlib.contextmanager
def serve(db: Path, **overrides: Any) -> Iterator[Server]:
    """Run the API on `db` with `overrides` of the config until the block ends."""
    limits = dict(DEFAULT_RATE_LIMITS)
    # Tests register many renters, and try many wrong keys, from one IP; both limits have
    # their own tests.
    limits["register"] = RateLimit(10_000, 3600.0)
    limits["auth_failure"] = RateLimit(10_000, 60.0)
    fields: dict[str, Any] = {
        "db": str(db),
        "port": free_port(),
        "admin_token": ADMIN_TOKEN,
        "sweep_interval_s": 0.2,
        "rate_limit_table": limits,
        # The server shares this process with pytest: leave its collector alone.
        "gc_freeze_s": 0.0,
        **overrides,
    }
    config = ServerConfig(**fields)
    log = io.StringIO()
    configure_logging(log, cache=False)
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            access_log=False,
            log_level="warning",
            lifespan="on",
            ws="none",
            http=OneWriteHttpToolsProtocol,  # dcp serve's protocol (dcp_http.server)
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"server did not start:\n{log.getvalue()}")
        time.sleep(0.01)
    try:
        yield Server(config, log, app)
    finally:
        server.should_exit = True
        thread.join(20)


_names = itertools.count()


class Api:
    """An httpx client for one server, with helpers for the set-up steps tests repeat."""

    admin_token = ADMIN_TOKEN

    def __init__(self, server: Server) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.url, timeout=30)
        self.admin = {"x-admin-token": ADMIN_TOKEN}

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.http.request(method, path, **kw)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.post(path, **kw)

    def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        r = self.http.request(method, path, **kw)
        assert r.status_code == status, (method, path, r.status_code, r.text)
        return r.json()

    def renter(self, credit_halala: int = 0) -> dict[str, Any]:
        """A new renter (`renter_id`, `api_key`, `headers`), credited if asked."""
        n = next(_names)
        body = self.ok(
            "POST",
            "/api/renters/register",
            201,
            json={"name": f"renter {n}", "email": f"r{n}@example.com"},
        )
        body["headers"] = {"x-renter-key": body["api_key"]}
        if credit_halala:
            self.credit(body["renter_id"], credit_halala)
        return body

    def credit(self, renter_id: str, amount: int, reference: str | None = None) -> Any:
        ref = reference or f"ref-{next(_names)}"
        return self.ok(
            "POST",
            f"/api/admin/renters/{renter_id}/credit",
            json={"amount_halala": amount, "reference": ref, "reason": "test"},
            headers=self.admin,
        )

    def provider(
        self, approve: bool = True, gpu_model: str = "RTX 4090", gpu_count: int = 1
    ) -> dict[str, Any]:
        """A new provider (`provider_id`, `api_key`, `headers`), approved and online."""
        n = next(_names)
        body = self.ok(
            "POST",
            "/api/providers/register",
            201,
            json={
                "name": f"provider {n}",
                "email": f"p{n}@example.com",
                "gpu_model": gpu_model,
                "gpu_count": gpu_count,
                "vram_gb": 24,
            },
        )
        body["headers"] = {"x-provider-key": body["api_key"]}
        if approve:
            self.ok(
                "POST", f"/api/admin/providers/{body['provider_id']}/approve", headers=self.admin
            )
            self.heartbeat(body, gpu_model=gpu_model, gpu_count=gpu_count)
        return body

    def heartbeat(
        self,
        provider: dict[str, Any],
        running: list[str] | None = None,
        gpu_model: str = "RTX 4090",
        gpu_count: int = 1,
    ) -> Any:
        gpus = [
            {"model": gpu_model, "count": 1, "vram_total_mb": 24576, "vram_free_mb": 24000}
            for _ in range(gpu_count)
        ]
        return self.ok(
            "POST",
            "/api/providers/heartbeat",
            json={"gpus": gpus, "running_job_ids": running or [], "daemon_version": "test"},
            headers=provider["headers"],
        )

    def allow_image(self, reference: str = IMAGE) -> None:
        self.ok("POST", "/api/admin/images", json={"reference": reference}, headers=self.admin)

    def submit(self, renter: dict[str, Any], status: int = 201, **fields: Any) -> Any:
        body = {
            "container_spec": {"image": IMAGE, "command": ["echo", "hi"]},
            "gpu_requirements": {"gpu_type": "RTX 4090", "gpu_count": 1},
            "max_duration_seconds": 3600,
            **fields,
        }
        return self.ok("POST", "/api/jobs/submit", status, json=body, headers=renter["headers"])

    def head_seq(self) -> int:
        return int(self.ok("GET", "/api/admin/reconciliation", headers=self.admin)["head_seq"])

    def balance(self, renter: dict[str, Any]) -> dict[str, int]:
        return self.ok("GET", "/api/renters/balance", headers=renter["headers"])  # type: ignore[no-any-return]


def result_body(job_id: str, attempt: int, **fields: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "attempt": attempt,
        "outcome": "completed",
        "exit_code": 0,
        "runtime_seconds": 600,
        "stdout": "hi\n",
        "stderr": "",
        "truncated": False,
        **fields,
    }


def decode(body: bytes) -> Any:
    return msgspec.json.decode(body)
