"""The application service: commands in, durable events out (docs/design.md).

`LedgerService` holds the whole domain state in memory, folded from the log at start. Every
command goes through one queue; a single loop takes a bounded batch, decides each command
against the state (folding its events at once, so later commands of the batch see them), and
appends the whole batch with `append_atomic(expected_head=<the state's seq>)`, the read models
written by the tx hook in the same transaction. Callers get their answer only once the batch
is durable. Before each batch it folds what other processes appended meanwhile (on a shared
PostgreSQL log, in the log's turn, so no other node appends in between); if a batch still
fails because the log moved, the state is folded again from the log and each command of the
batch is decided again on its own, once; after a store fault its callers get the StoreError.

Every command method is a coroutine returning a `dcp_app.views` Struct (the same types the
read queries return, encoded as they are by the HTTP layer) and raising a
`dcp_projections.errors.DomainError` (with `code` and `status`) when the domain refuses, or
`dcp_events.errors.StoreError` when the log cannot be written. `authenticate`, `job` and
`leases_of` read the in-memory state synchronously.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import structlog

from dcp_app import readmodel, snapshots
from dcp_app import views as v
from dcp_app.observer import NullObserver, ServiceObserver
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
from dcp_events.errors import ConcurrencyError, DcpError, StaleHeadError, StoreError
from dcp_events.event import Event
from dcp_events.store import AppendRequest, EventStore, NewEvent, RecordedEvent
from dcp_projections import commands as cmd
from dcp_projections.decisions import decide
from dcp_projections.errors import DomainError, NotFound
from dcp_projections.fold import apply, check_all
from dcp_projections.history import job_from_stream, jobs_to_recall, renter_named
from dcp_projections.jobs import jobs_to_cancel
from dcp_projections.rows import changed_rows
from dcp_projections.settings import Settings
from dcp_projections.state import GENESIS_PRICES, LEASED, State, gpu_key
from dcp_projections.streams import renter_stream, stream_of

Clock = Callable[[], int]
# Builds a command's answer from the state right after its events were folded.
Answer = Callable[[State, list[Event]], Any]
# The renter whose job this is, from the read models (None if no such job): how the service
# finds the stream of an ended job it no longer holds when the command names only the job.
JobOwner = Callable[[str], Awaitable[str | None]]

MAX_BATCH = 512  # commands decided and appended together
MAX_QUEUED = 20_000  # commands waiting; submitters wait beyond this (backpressure)
READ_CHUNK = 10_000  # events read per call while folding the log
CLOSE_TIMEOUT_S = 10.0  # how long close() lets queued commands finish
MAX_SWEEP_ROUNDS = 100  # sweeps of `sweep_limit` jobs each, per sweep() call
# Ended jobs kept in memory (most recent endings) when the service can fold older ones back:
# late and repeated results come within minutes, so nearly every such decision finds its job.
ENDED_IN_MEMORY = 10_000
SNAPSHOT_EVERY_EVENTS = 100_000  # a snapshot after this many events since the last...
SNAPSHOT_EVERY_S = 600.0  # ...or this long after it, if anything was appended

log = structlog.get_logger("dcp_app.service")


def _tag(event: Event) -> str:
    """An event's stable type tag (`job.failed`)."""
    return str(type(event).__struct_config__.tag)


def wall_clock_us() -> int:
    """Now, in integer microseconds since the Unix epoch (UTC)."""
    return time.time_ns() // 1000


def hash_key(api_key: str) -> str:
    """Hex sha256 of an API key: the only form in which keys are stored."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key(role: str) -> str:
    """A fresh key, `dcp-<role>-<32 hex>`."""
    return f"dcp-{role}-{secrets.token_hex(16)}"


def new_id(prefix: str) -> str:
    """A fresh random id, `<prefix>-<16 hex>`."""
    return f"{prefix}-{secrets.token_hex(8)}"


class _CatchUp:
    """Not a command: fold what other processes appended, decide nothing (`catch_up`)."""


CATCH_UP = _CatchUp()


class _Pending(msgspec.Struct):
    command: cmd.Command | _CatchUp
    answer: Answer
    actor: str
    future: asyncio.Future[Any]
    now_us: int | None = None  # decide as of this time instead of the clock's


class LedgerService:
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
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.new_id = ids
        self.codec = codec
        self.job_owner = job_owner
        # Without a way to find an old job's renter, every ended job stays in memory.
        self.ended_cap: int | None = ended_in_memory if job_owner is not None else None
        self.state = self._new_state()
        self.snapshot_dir = snapshot_dir
        self.snapshot_every = snapshot_every
        self._snapshot_seq = 0  # the sequence of the last snapshot loaded or written
        self._snapshot_at = time.monotonic()
        self._snapshot_task: asyncio.Task[None] | None = None
        self.loaded_from: Path | None = None  # the snapshot start-up began from, if any
        # The newest snapshot loaded or written: (its sequence, when it was written as Unix
        # seconds, its size in bytes), for the operators' metrics; None before the first.
        self.last_snapshot: tuple[int, float, int] | None = None
        self._versions: dict[str, int] = {}
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(MAX_QUEUED)
        self._loop_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        self._in_flight: list[_Pending] = []
        self._closing = False
        # True when memory may hold events that never became durable (a batch failed and
        # the log could not be folded again then): the next batch refolds first.
        self._stale = False
        self.batches = 0  # appended batches, for tests and metrics
        self.observer: ServiceObserver = NullObserver()  # dcp_http.metrics sets its own

    @classmethod
    async def open(
        cls,
        store: EventStore,
        settings: Settings | None = None,
        *,
        clock: Clock = wall_clock_us,
        ids: Callable[[str], str] = new_id,
        background_sweeps: bool = False,
        job_owner: JobOwner | None = None,
        ended_in_memory: int = ENDED_IN_MEMORY,
        snapshot_dir: Path | None = None,
        snapshot_every: tuple[int, float] = (SNAPSHOT_EVERY_EVENTS, SNAPSHOT_EVERY_S),
        genesis_prices: Sequence[tuple[str, int]] = GENESIS_PRICES,
    ) -> LedgerService:
        """Fold the log into memory and start deciding commands.

        `clock` gives now in microseconds; `ids` makes new renter, provider, job and
        withdrawal ids from a prefix (random by default; a simulation passes a seeded one so
        a seed replays the same run). With `background_sweeps`, a task runs `sweep()` every
        `settings.sweep_interval_s`. With `job_owner` (job id -> renter id, from the read
        models) only live jobs and the `ended_in_memory` most recently ended stay in memory;
        a command about an older one folds it back from its renter's stream first. With
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
        )
        await svc._load()
        if svc.state.seq == 0 and genesis_prices:
            await svc._append_genesis(genesis_prices)
        svc._loop_task = asyncio.create_task(svc._run(), name="dcp-ledger-batches")
        if background_sweeps:
            svc._sweep_task = asyncio.create_task(svc._sweep_forever(), name="dcp-sweeps")
        return svc

    async def close(self) -> None:
        """Stop taking commands, finish the queued ones (for at most CLOSE_TIMEOUT_S), then
        stop the background tasks; a command still waiting then fails with StoreError."""
        self._closing = True
        if self._snapshot_task is not None:
            with contextlib.suppress(Exception):
                await self._snapshot_task
        if self._sweep_task is not None:
            self._sweep_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweep_task
        if self._loop_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained(), CLOSE_TIMEOUT_S)
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for p in self._in_flight:
            if not p.future.done():
                p.future.set_exception(StoreError("ledger service closed"))
        while not self._queue.empty():
            p = self._queue.get_nowait()
            if not p.future.done():
                p.future.set_exception(StoreError("ledger service closed"))

    async def _drained(self) -> None:
        while self._in_flight or not self._queue.empty():
            await asyncio.sleep(0.005)

    @property
    def queue_depth(self) -> int:
        """Commands waiting for the command loop (not counting the batch being decided)."""
        return self._queue.qsize()

    @property
    def ready(self) -> bool:
        """True while the command loop runs (for /readyz)."""
        return not self._closing and self._loop_task is not None and not self._loop_task.done()

    # --- the log -> memory -------------------------------------------------------------------

    async def _append_genesis(self, prices: Sequence[tuple[str, int]]) -> None:
        """Append the seed prices of a new ledger as its first events, with their rows. If
        another process appended first (several nodes on a fresh database), that log is folded
        instead: only the first to append gives a log its genesis."""
        state, now = self.state, self.clock()
        events: list[Event] = [
            ev.PriceSet(gpu_model=m, halala_per_gpu_hour=p, at_us=now) for m, p in prices
        ]
        for event in events:
            apply(state, state.seq + 1, event)
        hook = readmodel.batch_writer(events, 1, changed_rows(state, state.touched))
        state.touched.clear()
        requests = self._requests(events, ["genesis"] * len(events))
        try:
            results = await self.store.append_atomic(requests, expected_head=0, tx_hook=hook)
        except StaleHeadError:
            await self._load()
            return
        for r in results:
            self._versions[r.stream_id] = r.last_version

    def _new_state(self) -> State:
        return State(ended_cap=self.ended_cap)

    async def _load(self) -> None:
        """(Re)build the state: from the newest matching snapshot, if any, and the log after
        it; else by folding the whole log."""
        state = self._new_state()
        versions: dict[str, int] = {}
        if self.snapshot_dir is not None:
            params = (state.ended_cap, state.idempotency_window_us)
            loaded = await snapshots.load_newest(self.store, self.snapshot_dir, params)
            if loaded is not None:
                state, versions = loaded.state, loaded.versions
                self._snapshot_seq, self.loaded_from = state.seq, loaded.path
                with contextlib.suppress(OSError):
                    st = loaded.path.stat()
                    self.last_snapshot = (state.seq, st.st_mtime, st.st_size)
                log.info("snapshot_loaded", path=str(loaded.path), seq=state.seq)
        while True:
            batch = await self.store.read_all(state.seq, READ_CHUNK)
            if not batch:
                break
            await self._fold_records(state, versions, batch)
            state.trim_ended()
            state.touched.clear()
        check_all(state)
        self.state, self._versions = state, versions

    async def _fold_records(
        self, state: State, versions: dict[str, int], records: Sequence[RecordedEvent]
    ) -> None:
        """Fold appended records; an admin requeue of a job no longer in memory first folds
        that job back from its renter's stream (the requeue's fold needs the whole job)."""
        for rec in records:
            event = self.codec.decode(rec)
            if isinstance(event, ev.JobRequeued) and event.job_id not in state.jobs:
                await self._recall(state, event.job_id, event.renter_id)
            apply(state, rec.seq, event)
            versions[rec.stream_id] = rec.stream_version

    async def _recall(self, state: State, job_id: str, renter_id: str | None) -> None:
        """Fold job `job_id` back from its renter's stream up to `state.seq` and put it in
        memory; nothing happens for a job the log does not hold (the decision answers
        NotFound as for any unknown job)."""
        if renter_id is None:
            if self.job_owner is None:
                return
            renter_id = await self.job_owner(job_id)
            if renter_id is None:
                return
        stream = renter_stream(renter_id)
        events: list[tuple[int, Event]] = []
        version = 1
        while True:
            records = await self.store.read_stream(stream, version, READ_CHUNK)
            events.extend((r.seq, self.codec.decode(r)) for r in records if r.seq <= state.seq)
            if len(records) < READ_CHUNK or records[-1].seq > state.seq:
                break
            version = records[-1].stream_version + 1
        job = job_from_stream(events, job_id)
        if job is not None:
            state.recall(job)

    # --- the command loop --------------------------------------------------------------------

    async def _execute(
        self, command: cmd.Command, answer: Answer, actor: str, now_us: int | None = None
    ) -> Any:
        if self._closing or self._loop_task is None or self._loop_task.done():
            raise StoreError("ledger service is not running")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(command, answer, actor, fut, now_us))
        return await fut

    async def execute(self, command: cmd.Command, answer: Answer, actor: str) -> Any:
        """Decide `command` in the batch loop and return `answer(state, events)` once durable;
        for the application modules beside this one (dcp_app.topups). Raises as `_execute`."""
        return await self._execute(command, answer, actor)

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = self._in_flight = [first]
            try:
                if self._shared and not self._stale:
                    # Most of what others appended is folded before the turn is taken: the
                    # turn then covers only the last few events, and the others wait less.
                    await self._catch_up()
                async with self._turn():
                    # Taken once the turn is ours: what queued while another process held it
                    # joins this batch, so nodes sharing a log decide fewer, larger batches.
                    while len(batch) < MAX_BATCH and not self._queue.empty():
                        batch.append(self._queue.get_nowait())
                    answer = await self._decide_in_turn(batch)
                # The batch is durable: its callers are answered once the turn is given back,
                # so the other nodes do not wait while this one writes its responses.
                answer()
            except Exception as e:  # a fault in the batch: refold, retry or fail its commands
                await self._recover(batch, e)
            self._in_flight = []
            if self.snapshot_dir is not None and self._snapshot_due():
                await self._snapshot()

    def _snapshot_due(self) -> bool:
        if self._snapshot_task is not None and not self._snapshot_task.done():
            return False  # one write at a time
        since = self.state.seq - self._snapshot_seq
        events, seconds = self.snapshot_every
        return since >= events or (since > 0 and time.monotonic() - self._snapshot_at >= seconds)

    async def _snapshot(self) -> None:
        """Encode the state between two batches (msgspec: 0.16 s for the 22 MB of a
        1M-event log's state here), then hash, write, fsync and rename the file in a thread,
        so the commands that follow wait for neither the hash nor the disk."""
        head_seq, head_hash = await self.store.head()
        state = self.state
        if head_seq != state.seq or self.snapshot_dir is None:
            return  # another process appended: the next batch folds it, then we try again
        body = snapshots.encode_body(state, self._versions)
        params = (state.ended_cap, state.idempotency_window_us)
        self._snapshot_seq, self._snapshot_at = state.seq, time.monotonic()
        self._snapshot_task = asyncio.create_task(
            self._write_snapshot(self.snapshot_dir, state.seq, head_hash, params, body),
            name="dcp-snapshot",
        )

    async def _write_snapshot(
        self, directory: Path, seq: int, head_hash: str, params: snapshots.Params, body: bytes
    ) -> None:
        def frame_and_write() -> tuple[Path, int]:
            data = snapshots.frame_at(body, seq, head_hash, params)
            return snapshots.write(directory, seq, data), len(data)

        try:
            path, size = await asyncio.to_thread(frame_and_write)
        except OSError as e:  # the log is the truth: a missing snapshot only slows a start
            log.warning("snapshot_failed", seq=seq, error=repr(e))
            return
        self.last_snapshot = (seq, time.time(), size)
        log.info("snapshot_written", path=str(path), seq=seq, bytes=len(body))

    async def snapshot_now(self) -> Path | None:
        """Write a snapshot of the state as it is now and wait for it (for tools and tests);
        None without a snapshot directory or when another process appended meanwhile."""
        if self._snapshot_task is not None:
            await self._snapshot_task
        await self._snapshot()
        task = self._snapshot_task
        if task is None:
            return None
        await task
        if self.snapshot_dir is None or self._snapshot_seq != self.state.seq:
            return None
        return self.snapshot_dir / snapshots.file_name(self.state.seq)

    async def _recover(self, batch: list[_Pending], error: Exception | None = None) -> None:
        """After a failed batch: fold the log again (dropping what the failed attempt folded
        in memory only), then decide each command again on its own, once.

        Except after a store fault (the connection broke, the server is away): the batch may
        have committed without our hearing so (COMMIT cut off), and deciding its commands
        again could do each twice (a second job, a second lease). Its callers get the
        StoreError (503) and retry, with their idempotency keys where the outcome matters.
        A stale head or version clash is no such fault: the store wrote nothing.
        """
        try:
            await self._load()
        except Exception as e:
            self._stale = True  # memory may hold the failed batch: refold before the next
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(StoreError(f"cannot fold the log: {e!r}"))
            return
        if isinstance(error, StoreError) and not isinstance(
            error, (StaleHeadError, ConcurrencyError)
        ):
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(error)
            return
        for p in batch:
            if p.future.done():
                continue
            try:
                await self._run_batch([p])
            except Exception as e:
                try:
                    await self._load()  # memory equal to the log before the caller resumes
                except Exception:
                    self._stale = True
                if not p.future.done():
                    p.future.set_exception(e if isinstance(e, DcpError) else StoreError(repr(e)))

    async def _catch_up(self) -> None:
        """Fold what other processes appended since our last batch (bounded reads), so a
        decision sees their events and our append does not fail on a stale head."""
        # read_all until a short read, not head() first: one round trip per batch where the
        # log is shared, whether or not another process appended.
        while True:
            batch = await self.store.read_all(self.state.seq, READ_CHUNK)
            if batch:
                await self._fold_records(self.state, self._versions, batch)
            if len(batch) < READ_CHUNK:
                break

    async def catch_up(self) -> None:
        """Fold what other processes appended, through the command loop (so it never runs
        beside a batch's decisions), and return once done: e.g. before answering "unknown
        key" for a key another node has just registered. Raises StoreError as `_execute`."""
        await self._execute(CATCH_UP, lambda s, e: None, "system")  # type: ignore[arg-type]

    @property
    def _shared(self) -> bool:
        """Whether the store takes turns between processes (so others append meanwhile)."""
        return getattr(self.store, "turn", None) is not None

    def _turn(self) -> contextlib.AbstractAsyncContextManager[None]:
        """The log's deciding turn where the store has turns (several processes on one
        PostgreSQL log: PostgresEventStore.turn): fold, decide and append then run without
        another process appending in between, so the head check passes instead of failing
        and refolding; the check still guards whatever happens to the turn. Elsewhere none."""
        turn = getattr(self.store, "turn", None)
        return turn() if turn is not None else contextlib.nullcontext()

    async def _run_batch(self, batch: list[_Pending]) -> None:
        async with self._turn():
            answer = await self._decide_in_turn(batch)
        answer()

    async def _decide_in_turn(self, batch: list[_Pending]) -> Callable[[], None]:
        if self._stale:
            await self._load()
            self._stale = False
        return await self._decide_and_append(batch)

    async def _decide_and_append(self, batch: list[_Pending]) -> Callable[[], None]:
        """Decide `batch` and append its events; returns what answers its callers (call it
        once the batch is durable: it is when this returns)."""
        started = time.perf_counter()
        await self._catch_up()
        state = self.state
        head = state.seq
        state.touched.clear()
        events: list[Event] = []
        outcomes: list[tuple[_Pending, bool, Any]] = []
        actors: list[str] = []
        caught_up: list[_Pending] = []
        for p in batch:
            if p.future.done():  # the caller gave up (cancelled) before its turn
                continue
            if isinstance(p.command, _CatchUp):
                caught_up.append(p)
                continue
            now_us = p.now_us if p.now_us is not None else self.clock()
            for job_id in jobs_to_recall(state, p.command, now_us):
                await self._recall(state, job_id, renter_named(p.command))
            try:
                new = decide(state, p.command, now_us, self.settings)
            except DomainError as refused:
                outcomes.append((p, False, refused))
                continue
            for event in new:
                apply(state, state.seq + 1, event)  # raises InvariantError: the batch fails
            events.extend(new)
            actors.extend([p.actor] * len(new))
            outcomes.append((p, True, p.answer(state, new)))
        if events:
            if head == 0:  # the first batch ever also writes the seeded prices' rows
                state.touched.update(("price", key) for key in state.pricing)
            changes = changed_rows(state, state.touched)
            hook = readmodel.batch_writer(events, head + 1, changes)
            requests = self._requests(events, actors)
            # StaleHeadError (another process appended) and every other fault propagate to
            # _run, which refolds the log and decides the commands again.
            results = await self.store.append_atomic(requests, expected_head=head, tx_hook=hook)
            if results[-1].last_seq != state.seq:
                raise StoreError(f"appended up to {results[-1].last_seq}, folded {state.seq}")
            for r in results:
                self._versions[r.stream_id] = r.last_version
            self.batches += 1
        # The batch is durable: an observer's fault must not send it to _recover, which would
        # decide its commands again.
        with contextlib.suppress(Exception):
            self.observer.batch_done(
                [
                    (type(p.command).__name__, None if ok else getattr(value, "code", "refused"))
                    for p, ok, value in outcomes
                ],
                len(events),
                time.perf_counter() - started,
            )
        state.trim_ended()  # the rows of what leaves are written (or nothing changed)

        def answer() -> None:
            for p in caught_up:
                if not p.future.done():
                    p.future.set_result(None)
            for p, ok, value in outcomes:
                if p.future.done():
                    continue
                if ok:
                    p.future.set_result(value)
                else:
                    p.future.set_exception(value)

        return answer

    def _requests(self, events: list[Event], actors: list[str]) -> list[AppendRequest]:
        """One request per run of consecutive events of one stream, so the log keeps the
        order in which the events were decided and folded."""
        requests: list[AppendRequest] = []
        versions: dict[str, int] = {}
        run: list[NewEvent] = []
        run_stream = ""
        for event, actor in zip(events, actors, strict=True):
            stream = stream_of(event)
            if run and stream != run_stream:
                requests.append(self._request(run_stream, run, versions))
                run = []
            run_stream = stream
            run.append(self.codec.encode(event, actor))
        if run:
            requests.append(self._request(run_stream, run, versions))
        return requests

    def _request(self, stream: str, run: list[NewEvent], versions: dict[str, int]) -> AppendRequest:
        expected = versions.get(stream, self._versions.get(stream, 0))
        versions[stream] = expected + len(run)
        return AppendRequest(stream, expected, list(run))

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

        def answer(s: State, new: list[Event]) -> v.JobView:
            job_id = c.job_id
            if not new and idempotency_key is not None:
                job_id = s.submit_keys[(renter_id, idempotency_key)].job_id
            return job_view(s, s.jobs[job_id])

        result: v.JobView = await self._execute(c, answer, f"renter:{renter_id}")
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

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            with contextlib.suppress(DcpError):
                await self.sweep()

    # --- reads from memory (for tools and tests; the API reads dcp_app.queries) --------------

    def job(self, job_id: str) -> v.JobView:
        """The job view from memory (may be one batch ahead of disk). Raises NotFound, also
        for an ended job that has left memory (the read models still hold it)."""
        j = self.state.jobs.get(job_id)
        if j is None:
            raise NotFound(f"job {job_id} not found")
        return job_view(self.state, j)

    def leases_of(self, provider_id: str) -> list[str]:
        """Ids of the jobs leased to a provider and not ended."""
        p = self.state.providers.get(provider_id)
        if p is None:
            raise NotFound(f"provider {provider_id} not found")
        return sorted(j for j in p.leased if self.state.jobs[j].status in LEASED)

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
