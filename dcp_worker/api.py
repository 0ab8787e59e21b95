"""The platform's HTTP API as the worker sees it (SPEC section 5), over httpx.

Every call has a timeout. The provider key travels in the `x-provider-key` header, or in the
path where the route demands it; it is never logged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from dcp_worker import __version__
from dcp_worker.errors import ApiError, ApiUnavailable

MAX_JOBS_PER_POLL = 256  # a reply listing more leases than this is cut (bounded work per poll)


@dataclass(frozen=True, kw_only=True)
class LeasedJob:
    """A job leased to this provider, decoded from a poll reply."""

    job_id: str
    attempt: int
    image: str
    command: list[str] | None
    env: dict[str, str] = field(default_factory=dict)
    max_duration_seconds: int = 1800
    gpu_count: int = 1

    @property
    def key(self) -> tuple[str, int]:
        return (self.job_id, self.attempt)


def parse_job(raw: object) -> LeasedJob:
    """Decode one job of a poll reply; raises ValueError when it cannot be run as given."""
    if not isinstance(raw, dict):
        raise ValueError("a job must be an object")
    spec = raw.get("container_spec") or {}
    reqs = raw.get("gpu_requirements") or {}
    if not isinstance(spec, dict) or not isinstance(reqs, dict):
        raise ValueError("container_spec and gpu_requirements must be objects")
    job_id = raw.get("job_id") or raw.get("id")
    attempt = raw.get("attempt")
    image = spec.get("image") or raw.get("image")
    if not isinstance(job_id, str) or not job_id:
        raise ValueError("job_id is missing")
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 0:
        raise ValueError("attempt is missing")
    if not isinstance(image, str) or not image:
        raise ValueError("image is missing")
    command = spec.get("command", raw.get("command"))
    if isinstance(command, str):
        command = ["/bin/sh", "-c", command]
    if command is not None and (
        not isinstance(command, list) or not all(isinstance(c, str) for c in command)
    ):
        raise ValueError("command must be a list of strings or a string")
    env = spec.get("env") or {}
    if not isinstance(env, dict):
        raise ValueError("env must be an object")
    max_s = raw.get("max_duration_seconds", 1800)
    gpu_count = reqs.get("gpu_count", raw.get("gpu_count", 1))
    if not isinstance(max_s, int) or max_s <= 0:
        raise ValueError("max_duration_seconds must be a positive integer")
    if not isinstance(gpu_count, int) or gpu_count < 0:
        raise ValueError("gpu_count must be a non-negative integer")
    return LeasedJob(
        job_id=job_id,
        attempt=attempt,
        image=image,
        command=command or None,
        env={str(k): str(v) for k, v in env.items()},
        max_duration_seconds=max_s,
        gpu_count=gpu_count,
    )


def _encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


class ApiClient:
    """One httpx client per concern, so a slow upload never holds up a heartbeat."""

    def __init__(
        self,
        base_url: str,
        key: str,
        timeout_s: float,
        on_error: Callable[[str, str], None] | None = None,
    ) -> None:
        self._key = key
        # Told (call name, "unavailable" or the HTTP status) about every failed call: metrics.
        self._on_error = on_error or (lambda call, kind: None)
        headers = {"x-provider-key": key, "user-agent": f"dcp-worker/{__version__}"}
        timeout = httpx.Timeout(timeout_s)
        limits = httpx.Limits(max_connections=4, max_keepalive_connections=2)

        def client() -> httpx.AsyncClient:
            return httpx.AsyncClient(
                base_url=base_url, headers=headers, timeout=timeout, limits=limits
            )

        self._heartbeat = client()
        self._jobs = client()
        self._results = client()

    async def aclose(self) -> None:
        for c in (self._heartbeat, self._jobs, self._results):
            await c.aclose()

    async def _call(
        self,
        client: httpx.AsyncClient,
        method: str,
        path: str,
        body: Any = None,
        offload: bool = False,
        call: str = "other",
    ) -> Any:
        try:
            return await self._request(client, method, path, body, offload)
        except ApiUnavailable:
            self._on_error(call, "unavailable")
            raise
        except ApiError as e:
            self._on_error(call, str(e.status))
            raise

    async def _request(
        self, client: httpx.AsyncClient, method: str, path: str, body: Any, offload: bool
    ) -> Any:
        content = None
        headers = {}
        if body is not None:
            # A result carries up to 2 MiB of output: `offload` encodes it in a thread, so
            # the heartbeat task never waits behind it.
            content = await asyncio.to_thread(_encode, body) if offload else _encode(body)
            headers["content-type"] = "application/json"
        try:
            resp = await client.request(method, path, content=content, headers=headers)
        except (httpx.TransportError, httpx.DecodingError) as e:
            # The message of a transport error never holds the key: it is a header or path
            # segment, and httpx reports only the exception type and host.
            raise ApiUnavailable(f"{method} failed: {type(e).__name__}") from e
        if resp.status_code >= 300:
            code, message, retry_after = "http_error", resp.reason_phrase, None
            try:
                data = resp.json()
                code = str(data.get("code", code))
                message = str(data.get("error", message))
                if isinstance(data.get("retry_after_seconds"), int | float):
                    retry_after = min(float(data["retry_after_seconds"]), 300.0)
            except (ValueError, AttributeError):
                pass
            raise ApiError(resp.status_code, code, message, retry_after)
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError as e:
            raise ApiUnavailable(f"{method} answered {resp.status_code} without JSON") from e

    async def health(self) -> dict[str, Any]:
        """GET /healthz: whether the platform answers at all (no credential)."""
        data = await self._call(self._jobs, "GET", "/healthz", call="health")
        return dict(data) if isinstance(data, dict) else {}

    async def me(self) -> dict[str, Any]:
        """GET /api/providers/me: the provider's registration, approval and flags."""
        data = await self._call(self._jobs, "GET", "/api/providers/me", call="me")
        if isinstance(data, dict) and isinstance(data.get("provider"), dict):
            data = data["provider"]
        return dict(data) if isinstance(data, dict) else {}

    async def heartbeat(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST /api/providers/heartbeat; returns the reply (`cancel_jobs`, flags)."""
        data = await self._call(
            self._heartbeat, "POST", "/api/providers/heartbeat", payload, call="heartbeat"
        )
        return data if isinstance(data, dict) else {}

    async def leased_jobs(self) -> list[dict[str, Any]]:
        """GET /api/providers/{key}/jobs: every job leased to this provider and not ended.

        The call also lets the platform assign queued jobs up to the provider's free GPUs.
        """
        data = await self._call(self._jobs, "GET", f"/api/providers/{self._key}/jobs", call="jobs")
        jobs = data.get("jobs", []) if isinstance(data, dict) else data
        if not isinstance(jobs, list):
            raise ApiUnavailable("the job list is not a list")
        return jobs[:MAX_JOBS_PER_POLL]

    async def report_started(self, job_id: str, attempt: int) -> None:
        """POST /api/providers/jobs/{id}/started."""
        path = f"/api/providers/jobs/{quote(job_id, safe='')}/started"
        await self._call(self._jobs, "POST", path, {"attempt": attempt}, call="started")

    async def send_result(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /api/providers/job-result; returns the job and its settlement."""
        data = await self._call(
            self._results, "POST", "/api/providers/job-result", body, offload=True, call="result"
        )
        return data if isinstance(data, dict) else {}
