"""Docker, as the worker uses it: hardened containers, bounded output, labels for recovery.

Every call runs under `asyncio.timeout`. Containers are only ever created from an image already
present locally: the engine's create endpoint never pulls (only clients do), and the worker
checks presence first, so nothing is fetched behind the provider's back.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiodocker
import aiodocker.stream

from dcp_worker.api import LeasedJob
from dcp_worker.errors import JobRefused
from dcp_worker.settings import WorkerSettings, image_allowed

LABEL_PROVIDER = "sa.dcp.provider_id"
LABEL_JOB = "sa.dcp.job_id"
LABEL_ATTEMPT = "sa.dcp.attempt"
LABEL_MAX_S = "sa.dcp.max_duration_s"
LABEL_GPUS = "sa.dcp.gpu_ids"  # the devices handed to it, so a restart does not hand them twice
LABEL_GPU_COUNT = "sa.dcp.gpu_count"
WAIT_CHUNK_S = 60.0  # a wait on a container is split into calls no longer than this
MAX_CONTAINERS_LISTED = 1000
_HEADER = struct.Struct(">BxxxL")


def output_sha256(stdout: str, stderr: str) -> str:
    """The platform's output hash (docs/ledger.md): sha256 over stdout then stderr, each as
    UTF-8 preceded by its 8-byte big-endian length. The same formula as
    dcp_projections.output.output_sha256, written again because the worker may not import the
    domain; tests/dcp_worker checks the two agree, so the hash in the worker's log is the one
    renters see."""
    h = hashlib.sha256()
    for part in (stdout.encode(), stderr.encode()):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


@dataclass(frozen=True, kw_only=True)
class Output:
    """Captured stdout and stderr, each cut to the cap (its last bytes are kept)."""

    stdout: str
    stderr: str
    truncated: bool
    sha256: str  # output_sha256(stdout, stderr): what the API reports for the job


@dataclass(frozen=True, kw_only=True)
class ContainerState:
    """What `inspect` says about a container that the worker cares about."""

    container_id: str
    running: bool
    exit_code: int | None
    oom_killed: bool
    started_at: datetime | None
    finished_at: datetime | None
    labels: dict[str, str]

    @property
    def runtime_seconds(self) -> float | None:
        """Docker's FinishedAt - StartedAt; None while it runs or if it never started."""
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, (self.finished_at - self.started_at).total_seconds())


def parse_docker_time(value: str | None) -> datetime | None:
    """Docker's RFC 3339 time with nanoseconds; None for its zero time."""
    if not value or value.startswith("0001-01-01"):
        return None
    head, _, rest = value.partition(".")
    frac, tz = rest, ""
    for sep in ("Z", "+", "-"):
        if sep in rest:
            i = rest.index(sep)
            frac, tz = rest[:i], rest[i:]
            break
    if not rest:  # no fraction: the zone follows the seconds
        head, tz = value[:19], value[19:]
    tz = "+00:00" if tz in ("", "Z") else tz
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}{tz}")


def _cut_tail(data: bytes, cap: int) -> bytes:
    """The last `cap` bytes, starting on a UTF-8 character boundary."""
    if len(data) <= cap:
        return data
    tail = data[-cap:]
    for i in range(min(4, len(tail))):
        if tail[i] & 0xC0 != 0x80:  # not a continuation byte
            return tail[i:]
    return tail


class _TailBuffer:
    """Keeps the last `cap` bytes written to it (in at most 2 * cap of memory), counting all."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.total = 0
        self._buf = bytearray()

    def write(self, data: bytes) -> None:
        self.total += len(data)
        self._buf += data
        if len(self._buf) > 2 * self.cap:
            del self._buf[: len(self._buf) - self.cap]

    def value(self) -> bytes:
        return _cut_tail(bytes(self._buf), self.cap)


class DockerRunner:
    """The worker's only door to the Docker engine."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.timeout_s = settings.docker_timeout_s
        self._docker = aiodocker.Docker(url=settings.docker_url)

    async def close(self) -> None:
        await self._docker.close()

    async def info(self) -> dict[str, Any]:
        """`docker info`; raises if the engine does not answer in time."""
        async with asyncio.timeout(self.timeout_s):
            return dict(await self._docker.system.info())

    async def check_image(self, image: str) -> None:
        """Raise JobRefused unless the image is allowed and present locally."""
        if not image_allowed(image, self.settings.allowed_images):
            raise JobRefused("image_not_allowed", f"image {image!r} is not on this worker's list")
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._docker.images.inspect(image)
        except aiodocker.DockerError as e:
            if e.status == 404:
                raise JobRefused(
                    "image_not_present", f"image {image!r} is not present on this worker"
                ) from e
            raise

    def container_config(
        self, job: LeasedJob, provider_id: str, device_ids: list[str]
    ) -> dict[str, Any]:
        """The create body: a hardened HostConfig, labels for recovery, GPUs if any."""
        s = self.settings
        memory = s.job_memory_mb * 1024 * 1024
        host: dict[str, Any] = {
            "NetworkMode": "none",
            "ReadonlyRootfs": True,
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            "PidsLimit": s.job_pids_limit,
            "Memory": memory,
            "MemorySwap": memory,  # equal: no swap beyond the memory limit
            "NanoCpus": int(s.job_cpus * 1_000_000_000),
            "Init": True,
            "Tmpfs": {"/tmp": f"rw,nosuid,nodev,size={s.job_tmpfs_mb}m"},
            "LogConfig": {
                "Type": "json-file",
                "Config": {"max-size": f"{s.log_max_size_mb}m", "max-file": "2"},
            },
            "AutoRemove": False,  # the worker reads the state and output, then removes it
            "RestartPolicy": {"Name": "no"},
        }
        if device_ids:
            host["DeviceRequests"] = [
                {"Driver": "nvidia", "DeviceIDs": device_ids, "Capabilities": [["gpu"]]}
            ]
        config: dict[str, Any] = {
            "Image": job.image,
            "Env": [f"{k}={v}" for k, v in sorted(job.env.items())],
            "Labels": {
                LABEL_PROVIDER: provider_id,
                LABEL_JOB: job.job_id,
                LABEL_ATTEMPT: str(job.attempt),
                LABEL_MAX_S: str(job.max_duration_seconds),
                LABEL_GPUS: ",".join(device_ids),
                LABEL_GPU_COUNT: str(job.gpu_count),
            },
            "HostConfig": host,
            "AttachStdin": False,
            "AttachStdout": False,
            "AttachStderr": False,
            "Tty": False,
            "OpenStdin": False,
            "NetworkDisabled": True,
        }
        if job.command:
            config["Cmd"] = job.command
        return config

    @staticmethod
    def container_name(job: LeasedJob) -> str:
        safe = "".join(c if c.isalnum() or c in "_.-" else "_" for c in job.job_id)
        return f"dcp-{safe}-{job.attempt}"

    async def create(self, config: dict[str, Any], name: str) -> str:
        """Create (never pull); returns the container id. An existing one of that name is
        returned as is, so a retried create after a lost reply makes no second container."""
        try:
            async with asyncio.timeout(self.timeout_s):
                c = await self._docker.containers.create(config, name=name)
            return c.id
        except aiodocker.DockerError as e:
            if e.status != 409:
                raise
        async with asyncio.timeout(self.timeout_s):
            data = await self._docker.containers.get(name)
        return str(data.id)

    async def start(self, container_id: str) -> None:
        async with asyncio.timeout(self.timeout_s):
            await self._docker.containers.container(container_id).start()

    async def wait(self, container_id: str, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the container to stop; True if it stopped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        c = self._docker.containers.container(container_id)
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return not (await self.inspect(container_id)).running
            try:
                async with asyncio.timeout(min(left, WAIT_CHUNK_S)):
                    await c.wait()
                return True
            except TimeoutError:
                continue

    async def kill(self, container_id: str) -> None:
        """SIGKILL; a container that already stopped is not an error."""
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._docker.containers.container(container_id).kill(signal="SIGKILL")
        except aiodocker.DockerError as e:
            if e.status not in (404, 409):  # gone, or not running
                raise

    async def inspect(self, container_id: str) -> ContainerState:
        async with asyncio.timeout(self.timeout_s):
            data = (await self._docker.containers.get(container_id))._container
        state = data.get("State", {})
        return ContainerState(
            container_id=data.get("Id", container_id),
            running=bool(state.get("Running")),
            exit_code=None if state.get("Running") else state.get("ExitCode"),
            oom_killed=bool(state.get("OOMKilled")),
            started_at=parse_docker_time(state.get("StartedAt")),
            finished_at=parse_docker_time(state.get("FinishedAt")),
            labels=dict(data.get("Config", {}).get("Labels") or {}),
        )

    def _outputs(self) -> dict[int, _TailBuffer]:
        cap = self.settings.output_cap_bytes
        return {1: _TailBuffer(cap), 2: _TailBuffer(cap)}

    @staticmethod
    def _collected(bufs: dict[int, _TailBuffer]) -> Output:
        stdout = bufs[1].value().decode("utf-8", errors="replace")
        stderr = bufs[2].value().decode("utf-8", errors="replace")
        return Output(
            stdout=stdout,
            stderr=stderr,
            truncated=bufs[1].total > bufs[1].cap or bufs[2].total > bufs[2].cap,
            sha256=output_sha256(stdout, stderr),
        )

    async def attach(self, container_id: str) -> aiodocker.stream.Stream:
        """Attach to stdout and stderr before the container starts, so every byte it writes
        reaches `read_attached`, however often the log driver rotates its bounded files."""
        stream = self._docker.containers.container(container_id).attach(
            stdout=True, stderr=True, logs=False
        )
        async with asyncio.timeout(self.timeout_s):
            await stream.__aenter__()
        return stream

    async def read_attached(self, stream: aiodocker.stream.Stream, timeout_s: float) -> Output:
        """Read an attached stream to its end (the container stopped), at most `timeout_s`."""
        bufs = self._outputs()
        try:
            async with asyncio.timeout(timeout_s):
                while (msg := await stream.read_out()) is not None:
                    if msg.stream in bufs:
                        bufs[msg.stream].write(msg.data)
        finally:
            await stream.close()
        return self._collected(bufs)

    async def output(self, container_id: str) -> Output:
        """Read what the log driver kept (bounded: `log_max_size_mb`, two files), keeping the
        last `output_cap_bytes` of each stream. Used when no attached stream saw the whole run
        (a job re-adopted after a restart). Uses aiodocker's raw query to get bytes and each
        frame's stream, which its decoded log list loses; a connection that breaks mid-frame
        raises rather than passing for the end of the output."""
        bufs = self._outputs()
        params = {"stdout": "1", "stderr": "1", "follow": "0"}
        async with (
            asyncio.timeout(self.timeout_s),
            self._docker._query(f"containers/{container_id}/logs", params=params) as resp,
        ):
            while True:
                try:
                    header = await resp.content.readexactly(_HEADER.size)
                except asyncio.IncompleteReadError as e:
                    if e.partial:
                        raise
                    break  # a clean end between frames
                stream, length = _HEADER.unpack(header)
                data = await resp.content.readexactly(length)
                if stream in bufs:
                    bufs[stream].write(data)
        return self._collected(bufs)

    async def remove(self, container_id: str) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._docker.containers.container(container_id).delete(force=True)
        except aiodocker.DockerError as e:
            if e.status != 404:
                raise

    async def managed(self, provider_id: str) -> list[ContainerState]:
        """Every container, running or not, that this provider's worker created."""
        filters = json.dumps({"label": [f"{LABEL_PROVIDER}={provider_id}"]})
        async with asyncio.timeout(self.timeout_s):
            listed = await self._docker.containers.list(all="1", filters=filters)
        states = []
        for c in listed[:MAX_CONTAINERS_LISTED]:
            try:
                states.append(await self.inspect(c.id))
            except aiodocker.DockerError as e:
                if e.status != 404:
                    raise
        return states
