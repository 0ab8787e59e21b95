"""Whether this machine can take jobs now: Docker answers, the disk has room, and with
`--gpus auto` GPUs and the NVIDIA runtime are there. Also the GPU inventory, read in a thread
at its own pace so that NVML never delays a heartbeat.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from dcp_worker.container import DockerRunner
from dcp_worker.errors import NotReadyError
from dcp_worker.gpu import NO_GPUS, GpuInventory
from dcp_worker.metrics import WorkerMetrics
from dcp_worker.preflight import GPU_DISCOVER_TIMEOUT_S, disk_problem, gpu_problem
from dcp_worker.settings import WorkerSettings

log = structlog.get_logger("dcp_worker")

GPU_REFRESH_S = 15.0  # inventory is read in a thread at this pace, never inside a heartbeat
READY_RECHECK_S = 30.0


class Readiness:
    """`ready` and `inventory` as last seen; `check()` looks again at most every 30 s."""

    def __init__(
        self,
        settings: WorkerSettings,
        docker: DockerRunner,
        metrics: WorkerMetrics,
        discover_gpus: Callable[[], GpuInventory],
    ) -> None:
        self.s = settings
        self.docker = docker
        self.metrics = metrics
        self._discover_gpus = discover_gpus
        self.inventory: GpuInventory = NO_GPUS
        self.ready = False
        self._checked = 0.0

    async def refresh_gpus(self) -> None:
        if self.s.gpus == "none":
            self.inventory = NO_GPUS
            return
        async with asyncio.timeout(GPU_DISCOVER_TIMEOUT_S):
            self.inventory = await asyncio.to_thread(self._discover_gpus)

    async def gpu_loop(self) -> None:
        while True:
            await asyncio.sleep(GPU_REFRESH_S)
            try:
                await self.refresh_gpus()
            except Exception as e:  # keep the last inventory; the next round may work
                log.warning("gpu_refresh_failed", error=f"{type(e).__name__}: {e}")

    async def check(self, force: bool = False) -> bool:
        """True when ready; raises NotReadyError saying why not."""
        now = time.monotonic()
        if not force and now - self._checked < READY_RECHECK_S:
            return self.ready
        self._checked = now
        try:
            info = await self.docker.info()
            problem = disk_problem(info, self.s) or gpu_problem(info, self.inventory, self.s)
            if problem is not None:
                raise NotReadyError(problem)
        except NotReadyError:
            self._set(False)
            raise
        except Exception as e:
            self._set(False)
            raise NotReadyError(f"docker does not answer: {type(e).__name__}: {e}") from e
        self._set(True)
        return True

    def _set(self, ready: bool) -> None:
        self.ready = ready
        self.metrics.ready.set(1 if ready else 0)
