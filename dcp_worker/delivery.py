"""Results out: every result is spooled first, then this loop sends it until the API answers.

2xx -> forget it; 409 `lease_lost` -> drop it (the job moved on); any other definite 4xx -> move
it to `spool/dead` for a human; anything else -> back off (a 429's `retry_after_seconds` is
honoured) and try again. The API answers a result sent twice with the same 200, so a crash
between send and forget only re-sends it.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from dcp_worker.api import ApiClient
from dcp_worker.backoff import Backoff
from dcp_worker.errors import ApiError, ApiUnavailable
from dcp_worker.spool import Spool

log = structlog.get_logger("dcp_worker")

DELIVERY_BATCH = 32
DELIVERY_FIRST_S = 0.5
DELIVERY_BACKOFF_MAX_S = 60.0
IDLE_WAIT_S = 30.0  # an empty spool is looked at again this often even without a wake-up


class Delivery:
    """The delivery loop over `spool`; `wake()` after spooling a result."""

    def __init__(self, api: ApiClient, spool: Spool, backoff: Backoff | None = None) -> None:
        self.api = api
        self.spool = spool
        self.backoff = backoff or Backoff(DELIVERY_FIRST_S, DELIVERY_BACKOFF_MAX_S)
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled; no error ends it."""
        while True:
            try:
                await self.deliver_pending()
            except Exception as e:  # e.g. the spool's disk failing: keep the loop alive
                log.exception("delivery_error", error=f"{type(e).__name__}: {e}")
                await self.backoff.wait()

    async def deliver_pending(self) -> None:
        """One round: send a bounded batch from the spool, then wait as the outcome says."""
        self._wake.clear()
        for path in self.spool.list()[:DELIVERY_BATCH]:
            try:
                result = await asyncio.to_thread(self.spool.read, path)
            except (OSError, ValueError) as e:
                log.error("result_unreadable", file=path.name, error=str(e))
                await asyncio.to_thread(self.spool.bury, path)
                continue
            ids = {"job_id": result.get("job_id"), "attempt": result.get("attempt")}
            try:
                answer = await self.api.send_result(result)
            except ApiError as e:
                if e.status == 409 and e.code == "lease_lost":
                    log.warning("result_dropped_lease_lost", **ids)
                    await asyncio.to_thread(self.spool.remove, path)
                elif e.definite:
                    log.error("result_refused", status=e.status, code=e.code, **ids)
                    await asyncio.to_thread(self.spool.bury, path)
                else:
                    log.warning("result_delivery_failed", status=e.status, **ids)
                    await self.backoff.wait(at_least_s=e.retry_after_s or 0.0)
                    return
            except ApiUnavailable as e:  # ApiReplyInvalid too: a 2xx that is not the API's
                log.warning("result_delivery_failed", error=str(e), **ids)
                await self.backoff.wait()
                return
            else:
                earned = answer.settlement.provider_earned_halala if answer.settlement else None
                log.info(
                    "result_delivered",
                    outcome=result.get("outcome"),
                    job_status=answer.job.status,
                    provider_earned_halala=earned,
                    **ids,
                )
                await asyncio.to_thread(self.spool.remove, path)
                self.backoff.reset()
        if not self.spool.list()[:1]:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_WAIT_S):
                    await self._wake.wait()

    async def flush(self, timeout_s: float) -> None:
        """At exit: give the loop a bounded time to empty the spool."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self.wake()
        while self.spool.list()[:1] and loop.time() < deadline:
            await asyncio.sleep(0.1)
