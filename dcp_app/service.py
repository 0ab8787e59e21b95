"""The application service: the ledger's commands (docs/design.md).

`LedgerService` is the command wrappers, one coroutine per command of the API, over the
batching machinery it inherits from `dcp_app.batcher.CommandLoop` (the in-memory state, the
queue and batch loop, catch-up, recovery, snapshots). Each wrapper builds a
`dcp_projections.commands` value and an answer, hands both to the loop and returns the answer
once the batch is durable.

Every command method is a coroutine returning a `dcp_app.views` Struct (the same types the
read queries return, encoded as they are by the HTTP layer) and raising a
`dcp_projections.errors.DomainError` (with `code` and `status`) when the domain refuses, or
`dcp_events.errors.StoreError` when the log cannot be written. `authenticate` and `job` read
the in-memory state synchronously; `catch_up` (the loop's) folds what other nodes appended.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from dcp_app import views as v
from dcp_app.batcher import (
    ENDED_IN_MEMORY,
    HISTORY_IN_MEMORY,
    SNAPSHOT_EVERY_EVENTS,
    SNAPSHOT_EVERY_S,
    Clock,
    CommandLoop,
    History,
    JobOwner,
    wall_clock_us,
)
from dcp_app.views import (
    balance_view,
    job_view,
    lease_view,
    price_view,
    provider_view,
    rfc3339,
    withdrawal_view,
)
from dcp_events import catalogue as ev
from dcp_events.codec import Codec, default_codec
from dcp_events.errors import DcpError
from dcp_events.event import Event
from dcp_events.store import EventStore
from dcp_projections import commands as cmd
from dcp_projections.errors import NotFound
from dcp_projections.fold import check_all
from dcp_projections.jobs import jobs_to_cancel
from dcp_projections.settings import Settings
from dcp_projections.state import GENESIS_PRICES, Job, State, gpu_key

T = TypeVar("T")

MAX_SWEEP_ROUNDS = 100  # sweeps of `sweep_limit` jobs each, per sweep() call


def _tag(event: Event) -> str:
    """An event's stable type tag (`job.failed`)."""
    return str(type(event).__struct_config__.tag)


def hash_key(api_key: str) -> str:
    """Hex sha256 of an API key: the only form in which keys are stored."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key(role: str) -> str:
    """A fresh key, `dcp-<role>-<32 hex>`."""
    return f"dcp-{role}-{secrets.token_hex(16)}"


def new_id(prefix: str) -> str:
    """A fresh random id, `<prefix>-<16 hex>`: 64 bits from the OS (what secrets.token_hex(8)
    does, without its two calls: one id per submit)."""
    return f"{prefix}-{os.urandom(8).hex()}"


class LedgerService(CommandLoop):
    """The domain behind the API. Open with `await LedgerService.open(store, settings)`."""

    def __init__(
        self,
        store: EventStore,
        settings: Settings,
        clock: Clock,
        codec: Codec,
        ids: Callable[[str], str] = new_id,
        job_owner: JobOwner | None = None,
        ended_in_memory: int = ENDED_IN_MEMORY,
        snapshot_dir: Path | None = None,
        snapshot_every: tuple[int, float] = (SNAPSHOT_EVERY_EVENTS, SNAPSHOT_EVERY_S),
        history: History | None = None,
        history_in_memory: int = HISTORY_IN_MEMORY,
    ) -> None:
        super().__init__(
            store, settings, clock, codec, job_owner, ended_in_memory, snapshot_dir, snapshot_every,
            history, history_in_memory,
        )  # fmt: skip
        self.new_id = ids

    @classmethod
    async def open(
        cls,
        store: EventStore,
        settings: Settings | None = None,
        *,
        clock: Clock = wall_clock_us,
        ids: Callable[[str], str] = new_id,
        job_owner: JobOwner | None = None,
        ended_in_memory: int = ENDED_IN_MEMORY,
        snapshot_dir: Path | None = None,
        snapshot_every: tuple[int, float] = (SNAPSHOT_EVERY_EVENTS, SNAPSHOT_EVERY_S),
        genesis_prices: Sequence[tuple[str, int]] = GENESIS_PRICES,
        history: History | None = None,
        history_in_memory: int = HISTORY_IN_MEMORY,
    ) -> LedgerService:
        """Fold the log into memory and start deciding commands.

        `clock` gives now in microseconds; `ids` makes new renter, provider, job and
        withdrawal ids from a prefix (random by default; a simulation passes a seeded one so
        a seed replays the same run). With `job_owner` (job id -> renter id, from the read
        models) only live jobs and the `ended_in_memory` most recently ended stay in memory;
        a command about an older one folds it back from its renter's stream first. With
        `history` (the read models' `deposit_ref` and `withdrawal`: dcp_app.queries) only the
        `history_in_memory` most recent deposit references and decided withdrawals stay in
        memory; a command naming an older one reads it back first. With
        `snapshot_dir`, start-up begins from the newest snapshot there that matches the log
        (dcp_app.snapshots) and one is written every `snapshot_every` (events, seconds).
        An empty log first gets its genesis: one `platform.price_set` per `genesis_prices`
        (docs/ledger.md, "Seed prices"). Raises InvariantError if the log breaks a money rule,
        DecodeError on a bad event.
        """
        svc = cls(
            store,
            settings or Settings(),
            clock,
            default_codec(),
            ids,
            job_owner,
            ended_in_memory,
            snapshot_dir,
            snapshot_every,
            history,
            history_in_memory,
        )
        await svc.start(genesis_prices)
        return svc

    # --- credentials -------------------------------------------------------------------------

    def authenticate(self, api_key: str) -> tuple[str, str] | None:
        """(role, subject_id) for a key, role "renter" or "provider"; None if unknown.

        Keys are looked up by their sha256, so a lookup's timing tells at most something
        about the hash of a guess, never about a stored key; the stored hash is then compared
        with hmac.compare_digest.
        """
        if not api_key or len(api_key) > 200:
            return None
        h = hash_key(api_key)
        cred = self.state.credentials.get(h)
        if cred is None or not hmac.compare_digest(cred.key_hash, h):
            return None
        return cred.role, cred.subject_id

    # --- renters -----------------------------------------------------------------------------

    async def register_renter(self, name: str, email: str) -> v.RenterCreated:
        """Register a renter. Returns its id and API key (the key is shown only here).
        Raises ValidationError."""
        key = new_api_key("renter")
        renter_id = self.new_id("r")
        c = cmd.RegisterRenter(renter_id=renter_id, name=name, email=email, key_hash=hash_key(key))
        await self._execute(c, lambda s, e: None, "anonymous")
        return v.RenterCreated(renter_id=renter_id, api_key=key)

    async def credit(
        self, renter_id: str, amount_halala: int, reference: str, reason: str = ""
    ) -> v.CreditReply:
        """Admin credit, idempotent by `reference`: a repeat changes nothing and answers
        `duplicate`. Raises NotFound, ValidationError, Conflict (reference reused for another
        deposit)."""
        c = cmd.CreditDeposit(
            renter_id=renter_id, amount_halala=amount_halala, reference=reference, reason=reason
        )

        def answer(s: State, new: list[Event]) -> v.CreditReply:
            return v.CreditReply(
                renter_id=renter_id,
                amount_halala=amount_halala,
                reference=reference,
                duplicate=not new,
                available_halala=s.available(renter_id),
            )

        result: v.CreditReply = await self._execute(c, answer, "admin")
        return result

    async def topup(self, renter_id: str, amount_halala: int) -> v.Balance:
        """Sandbox self top-up. Returns the balance. Raises Forbidden (not sandbox),
        ValidationError, NotFound."""
        c = cmd.TopUp(renter_id=renter_id, amount_halala=amount_halala)
        result: v.Balance = await self._execute(
            c, lambda s, e: balance_view(s, renter_id), f"renter:{renter_id}"
        )
        return result

    # --- jobs (renter side) ------------------------------------------------------------------

    async def submit_job(
        self,
        renter_id: str,
        container_spec: ev.ContainerSpec,
        gpu_requirements: ev.GpuRequirements | None = None,
        *,
        max_duration_seconds: int = 1800,
        priority: ev.Priority = "standard",
        provider_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> v.JobView:
        """Submit a job and hold its reserve. Returns the job view (queue_position included);
        a repeated idempotency key returns the first job's current view. Raises
        InsufficientFunds (402, shortfall_halala), ValidationError / ImageNotAllowed (400),
        NotFound."""
        return await self.submit_job_as(
            job_view,
            renter_id,
            container_spec,
            gpu_requirements,
            max_duration_seconds=max_duration_seconds,
            priority=priority,
            provider_id=provider_id,
            idempotency_key=idempotency_key,
        )

    async def submit_job_as(
        self,
        view: Callable[[State, Job], T],
        renter_id: str,
        container_spec: ev.ContainerSpec,
        gpu_requirements: ev.GpuRequirements | None = None,
        *,
        max_duration_seconds: int = 1800,
        priority: ev.Priority = "standard",
        provider_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> T:
        """`submit_job` answering with `view(state, job)`, built in the batch right after the
        job's events are folded: a caller that answers with a few of the job's fields (the
        API's submit reply) builds only those, not the whole job view."""
        c = cmd.SubmitJob(
            job_id=self.new_id("job"),
            renter_id=renter_id,
            container_spec=container_spec,
            gpu_requirements=gpu_requirements or ev.GpuRequirements(),
            priority=priority,
            max_duration_seconds=max_duration_seconds,
            provider_id=provider_id,
            idempotency_key=idempotency_key,
        )

        def answer(s: State, new: list[Event]) -> T:
            job_id = c.job_id
            if not new and idempotency_key is not None:
                job_id = s.submit_keys[(renter_id, idempotency_key)].job_id
            return view(s, s.jobs[job_id])

        result: T = await self._execute(c, answer, f"renter:{renter_id}")
        return result

    async def cancel_job(self, job_id: str, renter_id: str | None = None) -> v.JobView:
        """Cancel a job: by its renter (`renter_id`), or by an admin (None). Returns the job
        view with its settlement. Raises NotFound (unknown or not the renter's),
        InvalidTransition (ended otherwise); cancelling a cancelled job returns it."""
        c = cmd.CancelJob(job_id=job_id, renter_id=renter_id)
        actor = f"renter:{renter_id}" if renter_id else "admin"
        result: v.JobView = await self._execute(c, lambda s, e: job_view(s, s.jobs[job_id]), actor)
        return result

    async def requeue_job(self, job_id: str) -> v.JobView:
        """Admin: requeue a failed job with a new hold at its own rate. Returns the job view.
        Raises NotFound, InvalidTransition (not failed), InsufficientFunds."""
        c = cmd.RequeueJob(job_id=job_id)
        result: v.JobView = await self._execute(
            c, lambda s, e: job_view(s, s.jobs[job_id]), "admin"
        )
        return result

    # --- providers ---------------------------------------------------------------------------

    async def register_provider(
        self, name: str, email: str, gpu_model: str, gpu_count: int, vram_gb: int
    ) -> v.ProviderCreated:
        """Register a provider. Returns its id, API key (shown only here) and approval
        status. Raises ValidationError."""
        key = new_api_key("provider")
        provider_id = self.new_id("p")
        c = cmd.RegisterProvider(
            provider_id=provider_id,
            name=name,
            email=email,
            gpu_model=gpu_model,
            gpu_count=gpu_count,
            vram_gb=vram_gb,
            key_hash=hash_key(key),
        )

        def answer(s: State, new: list[Event]) -> v.ProviderCreated:
            approved = s.providers[provider_id].approved
            return v.ProviderCreated(
                provider_id=provider_id,
                api_key=key,
                approval_status="approved" if approved else "pending",
            )

        result: v.ProviderCreated = await self._execute(c, answer, "anonymous")
        return result

    async def _flag(
        self, provider_id: str, flag: cmd.ProviderFlag, actor: str
    ) -> v.ProviderProfile:
        c = cmd.SetProviderFlag(provider_id=provider_id, flag=flag)
        result: v.ProviderProfile = await self._execute(
            c,
            lambda s, e: provider_view(s, s.providers[provider_id], self.clock(), self.settings),
            actor,
        )
        return result

    async def approve_provider(self, provider_id: str) -> v.ProviderProfile:
        """Admin: approve. Returns the provider view. Raises NotFound."""
        return await self._flag(provider_id, "approve", "admin")

    async def suspend_provider(self, provider_id: str) -> v.ProviderProfile:
        """Admin: suspend (no new jobs). Returns the provider view. Raises NotFound."""
        return await self._flag(provider_id, "suspend", "admin")

    async def unsuspend_provider(self, provider_id: str) -> v.ProviderProfile:
        """Admin: lift a suspension. Returns the provider view. Raises NotFound."""
        return await self._flag(provider_id, "unsuspend", "admin")

    async def pause_provider(self, provider_id: str) -> v.ProviderProfile:
        """The provider stops taking new jobs. Returns the provider view. Raises NotFound."""
        return await self._flag(provider_id, "pause", f"provider:{provider_id}")

    async def resume_provider(self, provider_id: str) -> v.ProviderProfile:
        """The provider takes jobs again. Returns the provider view. Raises NotFound."""
        return await self._flag(provider_id, "resume", f"provider:{provider_id}")

    async def heartbeat(
        self,
        provider_id: str,
        gpus: Sequence[ev.GpuInfo] = (),
        running_job_ids: Sequence[str] = (),
        daemon_version: str = "",
        accepting_jobs: bool = True,
    ) -> v.HeartbeatReply:
        """Record a heartbeat and renew the leases of the listed jobs it holds. Returns its
        time, the provider's flags and `cancel_jobs`: the listed jobs the provider should stop
        (ended, or no longer its lease). Raises NotFound, ValidationError."""
        c = cmd.Heartbeat(
            provider_id=provider_id,
            gpus=tuple(gpus),
            running_job_ids=tuple(running_job_ids),
            daemon_version=daemon_version,
            accepting_jobs=accepting_jobs,
        )

        def answer(s: State, new: list[Event]) -> v.HeartbeatReply:
            p = s.providers[provider_id]
            beat = new[0]
            assert isinstance(beat, ev.ProviderHeartbeat)
            return v.HeartbeatReply(
                timestamp=rfc3339(beat.at_us),
                approval_status="approved" if p.approved else "pending",
                paused=p.paused,
                suspended=p.suspended,
                cancel_jobs=jobs_to_cancel(s, provider_id, c.running_job_ids),
            )

        result: v.HeartbeatReply = await self._execute(c, answer, f"provider:{provider_id}")
        return result

    async def claim_jobs(self, provider_id: str) -> list[v.LeasedJob]:
        """Poll for work: lease queued jobs up to the provider's free GPUs (if it takes new
        jobs), then return every job leased to it and not ended, oldest lease first, each as
        a lease view (container_spec with env included).
        Raises NotFound."""
        c = cmd.ClaimJobs(provider_id=provider_id)

        def answer(s: State, new: list[Event]) -> list[v.LeasedJob]:
            jobs = [s.jobs[j] for j in s.providers[provider_id].leased]
            jobs.sort(key=lambda j: (j.assigned_at_us or 0, j.submit_seq))
            return [lease_view(j) for j in jobs]

        result: list[v.LeasedJob] = await self._execute(c, answer, f"provider:{provider_id}")
        return result

    async def start_job(self, provider_id: str, job_id: str, attempt: int) -> v.LeasedJob:
        """The provider started the container. Returns the lease view. Raises NotFound,
        LeaseLost (old attempt), InvalidTransition (the job ended)."""
        c = cmd.StartJob(provider_id=provider_id, job_id=job_id, attempt=attempt)
        result: v.LeasedJob = await self._execute(
            c, lambda s, e: lease_view(s.jobs[job_id]), f"provider:{provider_id}"
        )
        return result

    async def report_result(
        self,
        provider_id: str,
        job_id: str,
        attempt: int,
        outcome: ev.Outcome,
        *,
        exit_code: int | None = None,
        runtime_seconds: float = 0,
        stdout: str = "",
        stderr: str = "",
        truncated: bool = False,
        error: str = "",
    ) -> v.JobView:
        """A job's result (`outcome`: completed, timed_out, cancelled, failed). Returns the
        job view with its settlement; the same result again returns the same view. Raises
        NotFound, LeaseLost (old attempt), Conflict (a different result for an attempt already
        reported, or for an ended job), ValidationError."""
        c = cmd.ReportResult(
            provider_id=provider_id,
            job_id=job_id,
            attempt=attempt,
            outcome=outcome,
            exit_code=exit_code,
            runtime_seconds=runtime_seconds,
            stdout=stdout,
            stderr=stderr,
            truncated=truncated,
            error=error,
        )
        result: v.JobView = await self._execute(
            c, lambda s, e: job_view(s, s.jobs[job_id]), f"provider:{provider_id}"
        )
        return result

    # --- withdrawals -------------------------------------------------------------------------

    async def withdraw(self, provider_id: str, amount_halala: int, iban: str) -> v.WithdrawalView:
        """Request a payout of earnings to a Saudi IBAN. Returns the withdrawal view
        (withdrawal_id, status "pending", ...). Raises ValidationError (under the minimum,
        bad IBAN), InsufficientFunds, NotFound."""
        wid = self.new_id("wd")
        c = cmd.RequestWithdrawal(
            withdrawal_id=wid, provider_id=provider_id, amount_halala=amount_halala, iban=iban
        )
        result: v.WithdrawalView = await self._execute(
            c, lambda s, e: withdrawal_view(s.withdrawals[wid]), f"provider:{provider_id}"
        )
        return result

    async def complete_withdrawal(self, withdrawal_id: str) -> v.WithdrawalView:
        """Admin: the payout was made. Returns the withdrawal view. Raises NotFound,
        InvalidTransition (already rejected)."""
        return await self._decide_withdrawal(withdrawal_id, True, "")

    async def reject_withdrawal(self, withdrawal_id: str, reason: str = "") -> v.WithdrawalView:
        """Admin: refuse the payout; the amount goes back to earnings. Returns the withdrawal
        view. Raises NotFound, InvalidTransition (already completed)."""
        return await self._decide_withdrawal(withdrawal_id, False, reason)

    async def _decide_withdrawal(self, wid: str, approve: bool, reason: str) -> v.WithdrawalView:
        c = cmd.DecideWithdrawal(withdrawal_id=wid, approve=approve, reason=reason)
        result: v.WithdrawalView = await self._execute(
            c, lambda s, e: withdrawal_view(s.withdrawals[wid]), "admin"
        )
        return result

    # --- platform ----------------------------------------------------------------------------

    async def set_price(self, gpu_model: str, halala_per_gpu_hour: int) -> v.PriceView:
        """Admin: the price of a GPU model for jobs submitted afterwards. Raises
        ValidationError."""
        c = cmd.SetPrice(gpu_model=gpu_model, halala_per_gpu_hour=halala_per_gpu_hour)
        result: v.PriceView = await self._execute(
            c, lambda s, e: price_view(s.pricing[gpu_key(gpu_model)]), "admin"
        )
        return result

    async def allow_image(self, reference: str) -> dict[str, Any]:
        """Admin: allowlist an image (exact, "prefix*" or "repo@sha256:"). Returns
        {reference, allowed: True}. Raises ValidationError."""
        c = cmd.AllowImage(reference=reference)
        result: dict[str, Any] = await self._execute(
            c, lambda s, e: {"reference": reference, "allowed": True}, "admin"
        )
        return result

    async def remove_image(self, reference: str) -> dict[str, Any]:
        """Admin: take an image off the allowlist. Returns {reference, allowed: False}.
        Raises NotFound."""
        c = cmd.RemoveImage(reference=reference)
        result: dict[str, Any] = await self._execute(
            c, lambda s, e: {"reference": reference, "allowed": False}, "admin"
        )
        return result

    # --- time --------------------------------------------------------------------------------

    async def sweep(self, now_us: int | None = None) -> int:
        """End expired leases, jobs past their deadline and jobs queued too long, as of
        `now_us` (default: the service clock). Returns how many events it appended."""
        ended: list[str] = []
        try:
            for _ in range(MAX_SWEEP_ROUNDS):
                types: list[str] = await self._execute(
                    cmd.Sweep(), lambda s, e: [_tag(x) for x in e], "system", now_us
                )
                ended.extend(types)
                if len(types) < self.settings.sweep_limit:
                    break
        except Exception:
            with contextlib.suppress(Exception):
                self.observer.swept(ended, failed=True)
            raise
        with contextlib.suppress(Exception):
            self.observer.swept(ended, failed=False)
        return len(ended)

    # --- reads from memory (for tools and tests; the API reads dcp_app.queries) --------------

    def job(self, job_id: str) -> v.JobView:
        """The job view from memory (may be one batch ahead of disk). Raises NotFound, also
        for an ended job that has left memory (the read models still hold it)."""
        j = self.state.jobs.get(job_id)
        if j is None:
            raise NotFound(f"job {job_id} not found")
        return job_view(self.state, j)

    async def reconciliation(self) -> v.Reconciliation:
        """The ledger's sum and accounts from memory, and the log's head."""
        head_seq, head_hash = await self.store.head()
        try:
            check_all(self.state)
            ok = True
        except DcpError:
            ok = False
        return v.Reconciliation(
            sum_halala=sum(self.state.balances.values()),
            accounts=[
                v.AccountBalance(account=a, balance_halala=b)
                for a, b in sorted(self.state.balances.items())
            ],
            events=self.state.seq,
            head_seq=head_seq,
            head_hash=head_hash,
            invariants_ok=ok and head_seq == self.state.seq,
        )
