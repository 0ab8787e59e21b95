"""Fixtures for the worker's tests: the Docker gate, a stub API, a worker in this process.

Everything shared lives here, because the test suite runs in importlib mode where sibling
modules cannot be imported; tests get these helpers through fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dcp_worker.settings import WorkerSettings
from dcp_worker.worker import Worker

IMAGE = "dcp-test/busybox:1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _err(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status)


@dataclass
class StubJob:
    job_id: str
    command: list[str]
    image: str = IMAGE
    max_duration_seconds: int = 60
    gpu_count: int = 1
    status: str = "queued"
    attempt: int = 0
    result: dict[str, Any] | None = None

    def view(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "status": self.status,
            "attempt": self.attempt,
            "lease_expires_at": None,
            "container_spec": {"image": self.image, "command": self.command, "env": {}},
            "gpu_requirements": {"gpu_type": "any", "min_vram_gb": 0, "gpu_count": self.gpu_count},
            "max_duration_seconds": self.max_duration_seconds,
            "priority": "standard",
            "assigned_at": None,
            "started_at": None,
        }


@dataclass
class StubApi:
    """A stand-in for the provider side of the DCP API.

    It is a stand-in because these tests were written while the real API (dcp_http, `dcp serve`)
    was being written in parallel, and because they pin worker behaviour the real API cannot be
    made to show on demand: a lease taken away at a chosen moment, a cancel mid-run, a container
    left created but never started, and a record of every request with its arrival time (the
    heartbeat rhythm). It implements only the routes the worker calls (SPEC section 5), with the
    same bodies, status codes and error codes. test_worker_e2e.py runs the worker against the
    real `dcp serve`: the lifecycle with settlement, a cancel, and an outage of the real API.
    """

    key: str = "dcp-provider-" + "0" * 32
    provider_id: str = field(default_factory=lambda: "prov_" + uuid.uuid4().hex[:8])
    gpu_count: int = 2
    jobs: dict[str, StubJob] = field(default_factory=dict)
    heartbeats: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    starts: list[tuple[float, str, int]] = field(default_factory=list)
    result_posts: list[tuple[float, dict[str, Any], int]] = field(default_factory=list)
    polls: int = 0
    cancels: set[str] = field(default_factory=set)
    # Route name (me, heartbeat, jobs, result) -> the 200 body it answers instead of its own,
    # as a proxy or a half-upgraded API might: the worker must log it and retry, not crash.
    garble: dict[str, bytes] = field(default_factory=dict)
    garbled: dict[str, int] = field(default_factory=dict)  # route -> garbled answers given
    # Appended to every poll's job list: leases the worker cannot run (it must skip them only).
    unreadable_leases: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # ----- what a test does -----

    def submit(self, command: list[str], **kw: Any) -> str:
        job_id = "job_" + uuid.uuid4().hex[:12]
        with self.lock:
            self.jobs[job_id] = StubJob(job_id=job_id, command=command, **kw)
        return job_id

    def cancel(self, job_id: str) -> None:
        with self.lock:
            self.cancels.add(job_id)

    def take_lease_away(self, job_id: str) -> None:
        """The lease expired on the platform: the job goes back to the queue, attempt + 1."""
        with self.lock:
            self.jobs[job_id].status = "queued"

    def accepted(self, job_id: str) -> list[dict[str, Any]]:
        """Result bodies for this job that were answered 200."""
        return [b for _, b, st in self.result_posts if b.get("job_id") == job_id and st == 200]

    # ----- the routes -----

    def _auth(self, request: Request) -> bool:
        return request.headers.get("x-provider-key") == self.key

    def _garbled(self, route: str) -> Response | None:
        with self.lock:
            body = self.garble.get(route)
            if body is None:
                return None
            self.garbled[route] = self.garbled.get(route, 0) + 1
        return Response(body, media_type="application/json")

    async def me(self, request: Request) -> JSONResponse:
        if not self._auth(request):
            return _err(401, "unauthorized", "missing or wrong provider key")
        return self._garbled("me") or JSONResponse(
            {"provider_id": self.provider_id, "gpu_count": self.gpu_count, "paused": False}
        )

    async def heartbeat(self, request: Request) -> JSONResponse:
        if not self._auth(request):
            return _err(401, "unauthorized", "missing or wrong provider key")
        body = await request.json()
        with self.lock:
            self.heartbeats.append((time.time(), body))
            cancel = [
                j for j in self.cancels if j in self.jobs and self.jobs[j].status == "running"
            ]
        return self._garbled("heartbeat") or JSONResponse(
            {
                "timestamp": "now",
                "approval_status": "approved",
                "paused": False,
                "suspended": False,
                "cancel_jobs": cancel,
            }
        )

    async def leased(self, request: Request) -> JSONResponse:
        if request.path_params["key"] != self.key:
            return _err(401, "unauthorized", "missing or wrong provider key")
        with self.lock:
            self.polls += 1
            busy = sum(
                j.gpu_count for j in self.jobs.values() if j.status in ("assigned", "running")
            )
            for j in self.jobs.values():
                if j.status == "queued" and busy + j.gpu_count <= self.gpu_count:
                    j.status, j.attempt = "assigned", j.attempt + 1
                    busy += j.gpu_count
            leased = [j.view() for j in self.jobs.values() if j.status in ("assigned", "running")]
            leased += self.unreadable_leases
        return self._garbled("jobs") or JSONResponse({"jobs": leased})

    async def started(self, request: Request) -> JSONResponse:
        if not self._auth(request):
            return _err(401, "unauthorized", "missing or wrong provider key")
        body = await request.json()
        with self.lock:
            job = self.jobs.get(request.path_params["job_id"])
            if job is None:
                return _err(404, "not_found", "no such job")
            if body.get("attempt") != job.attempt or job.status not in ("assigned", "running"):
                return _err(409, "lease_lost", "the lease has moved on")
            job.status = "running"
            self.starts.append((time.time(), job.job_id, job.attempt))
        return JSONResponse({"job": job.view()})

    async def result(self, request: Request) -> JSONResponse:
        if not self._auth(request):
            return _err(401, "unauthorized", "missing or wrong provider key")
        garbled = self._garbled("result")
        if garbled is not None:  # never reached the API: nothing is recorded
            return garbled
        body = await request.json()
        with self.lock:
            job = self.jobs.get(body.get("job_id"))
            if job is None:
                status, reply = 404, {"error": "no such job", "code": "not_found"}
            elif body.get("attempt") != job.attempt:
                status, reply = 409, {"error": "the lease has moved on", "code": "lease_lost"}
            elif job.result is not None:
                same = job.result == body
                status = 200 if same else 409
                reply = {"job": job.view()} if same else {"error": "ended", "code": "conflict"}
            else:
                job.result, job.status = body, body["outcome"]
                status, reply = 200, {"job": job.view(), "outcome": body["outcome"]}
            self.result_posts.append((time.time(), body, status))
        return JSONResponse(reply, status_code=status)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/providers/me", self.me),
                Route("/api/providers/heartbeat", self.heartbeat, methods=["POST"]),
                Route("/api/providers/job-result", self.result, methods=["POST"]),
                Route("/api/providers/jobs/{job_id}/started", self.started, methods=["POST"]),
                Route("/api/providers/{key}/jobs", self.leased),
            ]
        )


class ServerThread:
    """A real uvicorn serving an app in a thread; stop() and start() again on the same port."""

    def __init__(self, app: Starlette, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            ws="none",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the stub API did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._server = self._thread = None


@contextlib.asynccontextmanager
async def running(settings: WorkerSettings) -> AsyncIterator[Worker]:
    """A worker running in this event loop; stopped (drained) on exit."""
    stop = asyncio.Event()
    worker = Worker(settings)
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 90)


async def until(predicate: Callable[[], object], timeout_s: float = 30.0) -> None:
    """Wait (polling) until predicate() is true; fail the test after timeout_s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {predicate}")
        await asyncio.sleep(0.05)


def managed_containers(provider_id: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=sa.dcp.provider_id={provider_id}"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    return out.split()


def _docker_problem() -> str | None:
    """Why Docker cannot be used here, or None when the engine and the test image are there."""
    try:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"the docker CLI failed: {e}"
    if info.returncode != 0:
        return f"the Docker engine does not answer: {info.stderr.strip()[:200]}"
    image = subprocess.run(
        ["docker", "image", "inspect", IMAGE], capture_output=True, text=True, timeout=20
    )
    if image.returncode != 0:
        return f"the test image {IMAGE} is missing"
    return None


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Skip (or fail, when DCP_REQUIRE_DOCKER is set) without a Docker engine and test image."""
    problem = _docker_problem()
    if problem is None:
        return
    message = f"{problem}; run `bash scripts/ci/docker.sh` (as root) to start one"
    if os.environ.get("DCP_REQUIRE_DOCKER"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def stub() -> Iterator[tuple[StubApi, ServerThread]]:
    api = StubApi()
    server = ServerThread(api.app())
    server.start()
    try:
        yield api, server
    finally:
        server.stop()


@pytest.fixture
def make_settings(
    stub: tuple[StubApi, ServerThread], tmp_path: Path
) -> Callable[..., WorkerSettings]:
    api, server = stub

    def make(**kw: object) -> WorkerSettings:
        base: dict[str, object] = dict(
            api_url=server.url,
            provider_key=api.key,
            gpus="none",
            allowed_images=(IMAGE,),
            state_dir=tmp_path / "state",
            heartbeat_s=0.5,
            poll_s=0.2,
            drain_s=2.0,
            min_free_disk_gb=0.1,
            job_memory_mb=64,
            job_cpus=0.5,
            http_timeout_s=2.0,
            docker_timeout_s=20.0,
        )
        base.update(kw)
        return WorkerSettings(**base)  # type: ignore[arg-type]

    return make


class Kit:
    """The helpers above, handed to tests by the `kit` fixture (see the module docstring)."""

    image = IMAGE
    running = staticmethod(running)
    until = staticmethod(until)
    managed_containers = staticmethod(managed_containers)
    free_port = staticmethod(free_port)
    server = ServerThread


@pytest.fixture
def kit() -> type[Kit]:
    return Kit
