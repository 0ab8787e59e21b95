"""Real `dcp serve` processes on one PostgreSQL database, for the multi-node tests.

Each node is `python -m dcp_cli serve --db postgresql://...` in a process of its own, on a
free port; tests talk to them only over TCP, as any client or load balancer would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from tests.dcp_http._live import ADMIN_TOKEN, Api, free_port

ROOT = Path(__file__).resolve().parents[2]


class Node:
    """One `dcp serve` process: its URL, an `Api` client for it, and its stderr log file."""

    def __init__(self, dsn: str, log_dir: Path, name: str, **env: str) -> None:
        self.dsn = dsn
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        self._env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DCP_DB": dsn,
            "DCP_PORT": str(self.port),
            "DCP_ADMIN_TOKEN": ADMIN_TOKEN,
            "DCP_SWEEP_INTERVAL_S": "0.5",
            "DCP_RATE_LIMITS": "0",  # the tests send hundreds of commands from one address
            "DCP_AUTO_APPROVE": "1",
            "DCP_GC_FREEZE_S": "0",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.api = Api(SimpleNamespace(url=self.url))  # type: ignore[arg-type]

    def start(self, timeout_s: float = 60.0) -> Node:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dcp_cli", "serve", "--log-level", "warning"],
            cwd=self.log_path.parent,
            env=self._env,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; what the process had not committed is gone."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.api.close()

    def ready(self) -> dict[str, Any]:
        return self.api.ok("GET", "/readyz")  # type: ignore[no-any-return]

    def reconciliation(self) -> dict[str, Any]:
        return self.api.ok(  # type: ignore[no-any-return]
            "GET", "/api/admin/reconciliation", headers=self.api.admin
        )


def job_body(**fields: Any) -> dict[str, Any]:
    return {
        "container_spec": {"image": "dcp-test/busybox:1", "command": ["echo", "hi"]},
        "gpu_requirements": {"gpu_type": "RTX 4090", "gpu_count": 1},
        "max_duration_seconds": 3600,
        **fields,
    }
