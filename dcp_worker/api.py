"""The platform's HTTP API as the worker sees it (SPEC section 5), over httpx.

Every call has a timeout. The provider key travels in the `x-provider-key` header, or in the
path where the route demands it; it is never logged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec
import structlog

from dcp_worker import __version__
from dcp_worker.errors import ApiError, ApiReplyInvalid, ApiUnavailable

log = structlog.get_logger("dcp_worker")

MAX_JOBS_PER_POLL = 256  # a reply listing more leases than this is cut (bounded work per poll)


@dataclass(frozen=True, kw_only=True)
class LeasedJob:
    """A job leased to this provider, as the worker runs it (decoded from a `Lease`)."""

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


# ----- the replies, as msgspec Structs (SPEC section 5) --------------------------------------
# Each names only the fields the worker reads; other fields are ignored, so the API may add
# fields without breaking deployed workers. A reply that does not fit is ApiReplyInvalid.

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class ContainerSpec(msgspec.Struct, frozen=True):
    image: NonEmpty
    command: list[str] | str | None = None
    env: dict[str, str] = {}


class GpuRequirements(msgspec.Struct, frozen=True):
    gpu_count: Annotated[int, msgspec.Meta(ge=0)] = 1


class Lease(msgspec.Struct, frozen=True):
    """One job of `GET /api/providers/{key}/jobs`."""

    job_id: NonEmpty
    attempt: Annotated[int, msgspec.Meta(ge=0)]
    container_spec: ContainerSpec
    gpu_requirements: GpuRequirements = GpuRequirements()
    max_duration_seconds: Annotated[int, msgspec.Meta(gt=0)] = 1800

    def job(self) -> LeasedJob:
        command = self.container_spec.command
        if isinstance(command, str):
            command = ["/bin/sh", "-c", command]
        return LeasedJob(
            job_id=self.job_id,
            attempt=self.attempt,
            image=self.container_spec.image,
            command=command or None,
            env=dict(self.container_spec.env),
            max_duration_seconds=self.max_duration_seconds,
            gpu_count=self.gpu_requirements.gpu_count,
        )


class LeaseList(msgspec.Struct, frozen=True):
    # Raw: each job is decoded on its own, so one the worker cannot run spoils no other.
    jobs: list[msgspec.Raw]


class Registration(msgspec.Struct, frozen=True):
    """`GET /api/providers/me` (also cached in the state directory for start-up)."""

    provider_id: NonEmpty
    gpu_count: Annotated[int, msgspec.Meta(ge=0)] = 0
    approval_status: str | None = None
    paused: bool = False
    suspended: bool = False


class HeartbeatAnswer(msgspec.Struct, frozen=True):
    approval_status: str | None = None
    paused: bool | None = None
    suspended: bool | None = None
    cancel_jobs: list[str] = []


class AnsweredJob(msgspec.Struct, frozen=True):
    job_id: str
    status: str


class Settlement(msgspec.Struct, frozen=True):
    provider_earned_halala: int


class ResultAnswer(msgspec.Struct, frozen=True):
    """`POST /api/providers/job-result`: the job and, once settled, its settlement."""

    job: AnsweredJob
    settlement: Settlement | None = None


class ErrorBody(msgspec.Struct, frozen=True):
    """SPEC section 5's error body; `retry_after_seconds` comes with a 429."""

    error: str = ""
    code: str = "http_error"
    retry_after_seconds: float | None = None


T = TypeVar("T")


def decode(data: bytes, into: type[T], what: str) -> T:
    """Decode a reply into its Struct; ApiReplyInvalid says which reply and what was wrong."""
    try:
        return msgspec.json.decode(data, type=into)
    except msgspec.DecodeError as e:  # ValidationError (wrong shape) is a DecodeError
        raise ApiReplyInvalid(f"{what}: {e}") from e


def parse_job(raw: bytes) -> LeasedJob:
    """Decode one job of a poll reply; raises ApiReplyInvalid when it cannot be run as given."""
    return decode(raw, Lease, "a leased job").job()


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
    ) -> bytes:
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
    ) -> bytes:
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
            try:
                err = msgspec.json.decode(resp.content, type=ErrorBody)
            except msgspec.DecodeError:  # a proxy's HTML page, say: the status still counts
                err = ErrorBody(error=resp.reason_phrase)
            retry_after = err.retry_after_seconds
            if retry_after is not None:
                retry_after = min(max(retry_after, 0.0), 300.0)
            raise ApiError(resp.status_code, err.code, err.error or resp.reason_phrase, retry_after)
        return resp.content

    async def _decoded(
        self, into: type[T], client: httpx.AsyncClient, method: str, path: str, **kw: Any
    ) -> T:
        """A call whose 2xx reply must decode into `into`. A reply of another shape is logged
        here (the log line names the call) and raised as ApiReplyInvalid, which every caller
        retries like an unreachable API."""
        call = kw.get("call", "other")
        data = await self._call(client, method, path, **kw)
        try:
            return decode(data, into, f"{method} {call} reply")
        except ApiReplyInvalid as e:
            log.error("api_reply_invalid", call=call, error=str(e))
            self._on_error(call, "invalid_reply")
            raise

    async def health(self) -> None:
        """GET /healthz: whether the platform answers at all (no credential)."""
        await self._call(self._jobs, "GET", "/healthz", call="health")

    async def me(self) -> Registration:
        """GET /api/providers/me: the provider's registration, approval and flags."""
        return await self._decoded(Registration, self._jobs, "GET", "/api/providers/me", call="me")

    async def heartbeat(self, payload: dict[str, Any]) -> HeartbeatAnswer:
        """POST /api/providers/heartbeat; returns the reply (`cancel_jobs`, flags)."""
        return await self._decoded(
            HeartbeatAnswer,
            self._heartbeat,
            "POST",
            "/api/providers/heartbeat",
            body=payload,
            call="heartbeat",
        )

    async def leased_jobs(self) -> list[msgspec.Raw]:
        """GET /api/providers/{key}/jobs: every job leased to this provider and not ended, each
        still encoded (`parse_job` decodes one).

        The call also lets the platform assign queued jobs up to the provider's free GPUs.
        """
        path = f"/api/providers/{self._key}/jobs"
        reply = await self._decoded(LeaseList, self._jobs, "GET", path, call="jobs")
        return reply.jobs[:MAX_JOBS_PER_POLL]

    async def report_started(self, job_id: str, attempt: int) -> None:
        """POST /api/providers/jobs/{id}/started; the reply's body is not needed."""
        path = f"/api/providers/jobs/{quote(job_id, safe='')}/started"
        await self._call(self._jobs, "POST", path, {"attempt": attempt}, call="started")

    async def send_result(self, body: dict[str, Any]) -> ResultAnswer:
        """POST /api/providers/job-result; returns the job and its settlement."""
        return await self._decoded(
            ResultAnswer,
            self._results,
            "POST",
            "/api/providers/job-result",
            body=body,
            offload=True,
            call="result",
        )
