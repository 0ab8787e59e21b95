"""The service adapter: the HTTP layer's one door into `dcp_app`.

Commands go to `dcp_app.service.LedgerService`; reads go to `dcp_app.queries.Queries` (the
read-model tables, which never hold undurable state). Both answer with the view Structs of
`dcp_app.views`, which are the response bodies as they go on the wire. This module only
translates request types to the service's arguments, wraps the views where a body holds more
than one, and turns "not yours" into 404. No money rule lives here, and no HTTP status but the
errors': the endpoints pick the status of a success.
"""

from __future__ import annotations

import ctypes
import os
import sys

import msgspec

from dcp_app.queries import Queries
from dcp_app.read_sides import open_read_side
from dcp_app.service import LedgerService
from dcp_events import catalogue as ev
from dcp_events import is_postgres, open_store
from dcp_events.store import EventStore
from dcp_http import requests as inp
from dcp_http import responses as out
from dcp_http.auth import ADMIN, PROVIDER, RENTER, Identity
from dcp_http.config import ServerConfig
from dcp_http.errors import ApiError, InvalidRequest, NotFound
from dcp_http.payments import Payments, open_payments
from dcp_http.responses import rfc3339
from dcp_projections.state import ENDED, Job, State

_json = msgspec.json.Decoder()


class Gone(ApiError):
    """The job ended without output (failed or cancelled before it ran): 410."""

    status = 410
    code = "no_output"


def _settlement(job: out.JobView) -> out.SettlementView | None:
    if (
        job.actual_cost_halala is None
        or job.refunded_halala is None
        or job.provider_earned_halala is None
        or job.platform_fee_halala is None
    ):
        return None
    return out.SettlementView(
        actual_cost_halala=job.actual_cost_halala,
        refunded_halala=job.refunded_halala,
        provider_earned_halala=job.provider_earned_halala,
        platform_fee_halala=job.platform_fee_halala,
    )


def _submitted(state: State, job: Job) -> out.JobSubmittedReply:
    """The submit reply, built in the batch from the job itself: the six fields the reply
    carries are the job view's (dcp_app.views.job_view), without building the rest."""
    return out.JobSubmittedReply(
        job=out.SubmittedJob(
            job_id=job.job_id,
            status=job.status,
            cost_halala=job.cost_halala,
            rate_halala_per_hour=job.rate_halala_per_hour,
            max_duration_seconds=job.max_duration_seconds,
            queue_position=state.queue_position(job),
        )
    )


def _int_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit() or len(cursor) > 18:
        raise InvalidRequest(
            "invalid cursor", fields=[{"field": "cursor", "message": "not a cursor of this list"}]
        )
    return int(cursor)


class ServiceAdapter:
    """What the endpoints call. Owns the store, the ledger service and the read queries."""

    def __init__(
        self,
        config: ServerConfig,
        store: EventStore,
        ledger: LedgerService,
        queries: Queries,
    ) -> None:
        self.config = config
        self.store = store
        self.ledger = ledger
        self.queries = queries
        self.settings = ledger.settings
        # The gateway flows (dcp_http.payments), None while no gateway secret key is set.
        self.payments: Payments | None = open_payments(config, ledger, queries)

    async def close(self) -> None:
        if self.payments is not None:
            await self.payments.close()
        await self.ledger.close()
        await self.queries.close()
        await self.store.close()

    # --- system ------------------------------------------------------------------------------

    def lookup_key(self, key: str) -> tuple[str, str] | None:
        return self.ledger.authenticate(key)

    async def sweep(self) -> int:
        return await self.ledger.sweep()

    async def readiness(self) -> out.Readiness:
        head_seq, _ = await self.store.head()
        projection_seq = await self.queries.projection_seq()
        # A PostgreSQL log that answered head() is reachable; its writability is the server's.
        writable = self.ledger.ready and (
            is_postgres(self.config.db) or os.access(self.config.db, os.W_OK)
        )
        # The head is read first: a batch committed between the two reads moves the read
        # models past it (they commit with the events), which is caught up, not behind.
        caught_up = projection_seq >= head_seq
        return out.Readiness(
            status="ready" if writable and caught_up else "not_ready",
            store_writable=writable,
            projections_caught_up=caught_up,
            head_seq=head_seq,
            projection_seq=projection_seq,
            events_behind=max(0, head_seq - self.ledger.state.seq),
        )

    # --- renters -----------------------------------------------------------------------------

    async def register_renter(self, body: inp.RegisterRenter) -> out.RenterCreated:
        return await self.ledger.register_renter(body.name, body.email)

    async def renter_profile(self, renter_id: str) -> out.RenterProfile:
        renter = await self.queries.renter(renter_id)
        if renter is None:
            raise NotFound("renter not found")
        return renter

    async def renter_balance(self, renter_id: str) -> out.Balance:
        return await self.queries.balance(renter_id)

    async def renter_ledger(self, renter_id: str, q: inp.PageQuery) -> out.LedgerPage:
        return await self.queries.ledger(renter_id, q.limit, _int_cursor(q.cursor))

    async def topup(self, renter_id: str, body: inp.TopUp) -> out.Balance:
        return await self.ledger.topup(renter_id, body.amount_halala)

    # --- jobs --------------------------------------------------------------------------------

    async def submit_job(
        self, renter_id: str, body: inp.SubmitJob, idempotency_key: str | None
    ) -> out.JobSubmittedReply:
        spec, req = body.container_spec, body.gpu_requirements
        return await self.ledger.submit_job_as(
            _submitted,
            renter_id,
            ev.ContainerSpec(image=spec.image, command=tuple(spec.command), env=dict(spec.env)),
            ev.GpuRequirements(
                gpu_type=req.gpu_type, min_vram_gb=req.min_vram_gb, gpu_count=req.gpu_count
            ),
            max_duration_seconds=body.max_duration_seconds,
            priority=body.priority,
            provider_id=body.provider_id,
            idempotency_key=idempotency_key,
        )

    async def list_jobs(self, renter_id: str, q: inp.JobsQuery) -> out.JobsPage:
        if q.cursor is not None and not _valid_job_cursor(q.cursor):
            raise InvalidRequest(
                "invalid cursor",
                fields=[{"field": "cursor", "message": "not a cursor of this list"}],
            )
        return await self.queries.jobs_of_renter(renter_id, q.status, q.limit, q.cursor)

    async def _visible_job(self, who: Identity, job_id: str) -> out.JobView:
        """The job if `who` may see it: its renter, its provider, or an admin; else 404, the
        same answer by the same path for an unknown id and another tenant's job."""
        if who.role == RENTER:
            job = await self.queries.job(job_id, renter_id=who.subject_id)
        elif who.role == PROVIDER:
            job = await self.queries.job(job_id, provider_id=who.subject_id)
        else:
            assert who.role == ADMIN
            job = await self.queries.job(job_id)
        if job is None:
            raise NotFound("job not found")
        return job

    async def get_job(self, who: Identity, job_id: str) -> out.JobView:
        return await self._visible_job(who, job_id)

    async def cancel_job(self, who: Identity, job_id: str) -> out.JobView:
        renter_id = None if who.role == ADMIN else who.subject_id
        return await self.ledger.cancel_job(job_id, renter_id)

    async def requeue_job(self, job_id: str) -> out.JobView:
        return await self.ledger.requeue_job(job_id)

    async def job_output(self, who: Identity, job_id: str) -> out.JobOutputView | out.JobPending:
        """The output of an ended job; JobPending while it has not ended. Raises Gone for a
        failed or cancelled job without output (SPEC section 5: a completed job always has its
        exit code)."""
        job = await self._visible_job(who, job_id)
        if job.status not in ENDED:
            return out.JobPending(job_id=job_id, status=job.status)
        output = await self.queries.job_output(job_id)
        if output is None or (job.status != "completed" and output.empty):
            raise Gone(f"the job ended as {job.status} without output")
        return output

    # --- providers ---------------------------------------------------------------------------

    async def register_provider(self, body: inp.RegisterProvider) -> out.ProviderCreated:
        return await self.ledger.register_provider(
            body.name, body.email, body.gpu_model, body.gpu_count, body.vram_gb
        )

    async def heartbeat(self, provider_id: str, body: inp.Heartbeat) -> out.HeartbeatReply:
        gpus = [ev.GpuInfo(**msgspec.structs.asdict(g)) for g in body.gpus]
        return await self.ledger.heartbeat(
            provider_id, gpus, body.running_job_ids, body.daemon_version, body.accepting_jobs
        )

    async def provider_jobs(self, provider_id: str) -> list[out.LeasedJob]:
        return await self.ledger.claim_jobs(provider_id)

    async def job_started(self, provider_id: str, job_id: str, attempt: int) -> out.LeasedJob:
        return await self.ledger.start_job(provider_id, job_id, attempt)

    async def job_result(self, provider_id: str, body: inp.JobResult) -> out.JobResultReply:
        job = await self.ledger.report_result(
            provider_id,
            body.job_id,
            body.attempt,
            body.outcome,
            exit_code=body.exit_code,
            runtime_seconds=body.runtime_seconds,
            stdout=body.stdout,
            stderr=body.stderr,
            truncated=body.truncated,
            error=body.error or "",
        )
        return out.JobResultReply(job=job, outcome=body.outcome, settlement=_settlement(job))

    async def provider_profile(self, provider_id: str) -> out.ProviderProfile:
        p = await self.queries.provider(provider_id, self.ledger.clock(), self.settings)
        if p is None:
            raise NotFound("provider not found")
        return p

    async def provider_earnings(self, provider_id: str) -> out.Earnings:
        p = await self.provider_profile(provider_id)
        return out.Earnings(
            provider_id=provider_id,
            earnings_halala=p.earnings_halala,
            payout_pending_halala=p.payout_pending_halala,
        )

    async def withdraw(self, provider_id: str, body: inp.Withdraw) -> out.WithdrawalView:
        return await self.ledger.withdraw(provider_id, body.amount_halala, body.iban)

    async def set_paused(self, provider_id: str, paused: bool) -> out.ProviderProfile:
        if paused:
            return await self.ledger.pause_provider(provider_id)
        return await self.ledger.resume_provider(provider_id)

    async def marketplace(self) -> out.Marketplace:
        rows = await self.queries.marketplace(self.ledger.clock(), self.settings)
        return out.Marketplace(providers=rows)

    # --- admin -------------------------------------------------------------------------------

    async def credit(self, renter_id: str, body: inp.Credit) -> out.CreditReply:
        return await self.ledger.credit(renter_id, body.amount_halala, body.reference, body.reason)

    async def provider_flag(
        self, provider_id: str, action: str, reason: str
    ) -> out.ProviderProfile:
        act = {
            "approve": self.ledger.approve_provider,
            "suspend": self.ledger.suspend_provider,
            "unsuspend": self.ledger.unsuspend_provider,
        }[action]
        return await act(provider_id)

    async def withdrawals(self, q: inp.WithdrawalsQuery) -> out.WithdrawalsPage:
        offset = _int_cursor(q.cursor) or 0
        found = await self.queries.withdrawals(q.status, limit=q.limit + 1, offset=offset)
        page = found[: q.limit]
        more = len(found) > q.limit
        return out.WithdrawalsPage(
            withdrawals=page, next_cursor=str(offset + len(page)) if more else None
        )

    async def decide_withdrawal(
        self, withdrawal_id: str, action: str, reason: str
    ) -> out.WithdrawalView:
        if action == "complete":
            return await self.ledger.complete_withdrawal(withdrawal_id)
        return await self.ledger.reject_withdrawal(withdrawal_id, reason)

    async def set_price(self, gpu_model: str, halala_per_gpu_hour: int) -> out.PriceView:
        return await self.ledger.set_price(gpu_model, halala_per_gpu_hour)

    async def images(self) -> out.ImageList:
        return out.ImageList(images=await self.queries.images())

    async def set_image(self, reference: str, allowed: bool) -> out.ImageList:
        if allowed:
            await self.ledger.allow_image(reference)
        else:
            await self.ledger.remove_image(reference)
        return await self.images()

    async def reconciliation(self) -> out.Reconciliation:
        return await self.queries.reconciliation()

    async def events(self, q: inp.EventsQuery) -> out.EventsPage:
        recorded = await self.store.read_all(q.after, q.limit)
        events = [
            out.EventView(
                seq=e.seq,
                stream_id=e.stream_id,
                stream_version=e.stream_version,
                type=e.type,
                schema_version=e.schema_version,
                payload=_json.decode(e.payload),
                recorded_at=rfc3339(e.recorded_at_us),
                actor=e.actor,
                idempotency_key=e.idempotency_key,
                prev_hash=e.prev_hash,
                hash=e.hash,
            )
            for e in recorded
        ]
        return out.EventsPage(events=events, next_after=events[-1].seq if events else q.after)

    # --- browsing (the web plane's dashboards and consoles) ----------------------------------

    async def provider_job_list(self, provider_id: str, limit: int = 50) -> list[out.JobView]:
        """The jobs a provider holds or held, newest first."""
        return await self.queries.jobs_of_provider(provider_id, limit)

    async def job_timeline(self, who: Identity, job_id: str) -> list[out.JobEvent]:
        """The job's events from the log, oldest first, if `who` may see the job; else 404."""
        job = await self._visible_job(who, job_id)
        return await self.queries.job_events(job.renter_id, job_id)

    async def provider_withdrawals(self, provider_id: str) -> list[out.WithdrawalView]:
        """A provider's withdrawals, oldest first (at most 500)."""
        return await self.queries.withdrawals(provider_id=provider_id, limit=500)

    async def all_jobs(
        self, status: str | None, limit: int = 50, offset: int = 0
    ) -> list[out.JobView]:
        """Admin: every renter's jobs, newest first."""
        return await self.queries.jobs(status, limit, offset)

    async def renters(self, limit: int = 50, offset: int = 0) -> list[out.RenterProfile]:
        """Admin: renters with their balances, newest first."""
        return await self.queries.renters(limit, offset)

    async def providers(self, limit: int = 50, offset: int = 0) -> list[out.ProviderProfile]:
        """Admin: providers, pending approval first."""
        return await self.queries.providers(self.ledger.clock(), self.settings, limit, offset)


def _valid_job_cursor(cursor: str) -> bool:
    at, sep, job_id = cursor.partition(":")
    return bool(sep) and at.isdigit() and len(at) <= 18 and 0 < len(job_id) <= 100


async def open_service(config: ServerConfig) -> ServiceAdapter:
    """Open the event store at `config.db` (a SQLite path or a postgresql:// URL), the ledger
    service over it, and the read queries.

    Sweeps are not started here: the app's lifespan runs them at `config.sweep_interval_s`.
    """
    # A path is a SQLite file, a postgresql:// URL a PostgreSQL database that any number of
    # nodes share (docs/postgres.md): the same code runs on either from here on.
    store = await open_store(config.db)
    try:
        # Read models behind the log (an events-only copy, a new table) are rebuilt before
        # anything reads them: the queries answer from them, and the ledger asks them whose an
        # ended job is.
        side = await open_read_side(config.db)
        try:
            await side.catch_up()
            queries = Queries(await side.reads())
        finally:
            await side.close()
    except BaseException:
        await store.close()
        raise
    try:
        # The read models tell the ledger whose an old job is and what an old deposit
        # reference or withdrawal was, so ended jobs and old references can leave memory.
        ledger = await LedgerService.open(
            store,
            config.domain_settings(),
            job_owner=queries.job_owner,
            history=queries,
            history_in_memory=config.history_in_memory,
            snapshot_dir=config.snapshot_path(),
            snapshot_every=(config.snapshot_every_events, config.snapshot_every_s),
        )
    except BaseException:
        await queries.close()
        await store.close()
        raise
    release_free_memory()
    return ServiceAdapter(config, store, ledger, queries)


def release_free_memory() -> None:
    """Hand the C allocator's free pages back to the OS (glibc's `malloc_trim`; a no-op
    elsewhere). Start-up's transients (the snapshot file's bytes, the decode's parts, the
    read-model catch-up, the tail's fold) are freed by now, but glibc keeps freed memory
    below the top of its heaps for reuse; on a 1M-event log trimming gave back about 5 MB."""
    if not sys.platform.startswith("linux"):
        return
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return
    trim(0)
