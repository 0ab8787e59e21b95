"""The command loop behind `dcp_app.service.LedgerService`: commands in, durable events out
(docs/design.md).

`CommandLoop` holds the whole domain state in memory, folded from the log at start
(dcp_app.foldlog, from the newest matching snapshot if there is one). Every command goes
through one queue; a single loop takes a bounded batch, decides each command against the state
(folding its events at once, so later commands of the batch see them), and appends the whole
batch with `append_atomic(expected_head=<the state's seq>)`, the read models written by the tx
hook in the same transaction. Callers get their answer only once the batch is durable. Before
each batch it folds what other processes appended meanwhile (on a shared PostgreSQL log, in
the log's turn, so no other node appends in between); if a batch still fails because the log
moved, the state is folded again from the log and each command of the batch is decided again
on its own, once; after a store fault its callers get the StoreError. Between batches it
writes a snapshot when one is due (dcp_app.snapshots). An empty log first gets its genesis
prices (`start(genesis_prices)`).

The command wrappers (`submit_job`, `heartbeat`, ...) are `LedgerService`'s; this module knows
commands only as `dcp_projections.commands` values and answers as callables.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec
import structlog

from dcp_app import foldlog, readmodel, snapshots
from dcp_app.observer import NullObserver, ServiceObserver
from dcp_events import catalogue as ev
from dcp_events.codec import Codec
from dcp_events.errors import ConcurrencyError, DcpError, StaleHeadError, StoreError
from dcp_events.event import Event
from dcp_events.store import AppendRequest, EventStore, NewEvent
from dcp_projections import commands as cmd
from dcp_projections.decisions import decide
from dcp_projections.errors import DomainError
from dcp_projections.fold import apply, check_all
from dcp_projections.history import (
    TOPUP_REQUESTED_TAG,
    TOPUP_TAGS,
    TopUpLookup,
    job_from_stream,
    jobs_to_recall,
    renter_named,
    row_to_recall,
    topup_from_stream,
    topups_to_recall,
)
from dcp_projections.rows import changed_rows
from dcp_projections.settings import Settings
from dcp_projections.state import GENESIS_PRICES, DepositRef, State, TopUp, Withdrawal
from dcp_projections.streams import renter_stream, stream_of

Clock = Callable[[], int]
# Builds a command's answer from the state right after its events were folded.
Answer = Callable[[State, list[Event]], Any]
# The renter whose job this is, from the read models (None if no such job): how the service
# finds the stream of an ended job it no longer holds when the command names only the job.
JobOwner = Callable[[str], Awaitable[str | None]]


class History(Protocol):
    """What the read models hold of the history a bounded state let go of (dcp_app.queries
    answers them): a deposit reference's credit, a withdrawal and a gateway top-up as the
    domain holds them."""

    async def deposit_ref(self, reference: str) -> DepositRef | None: ...

    async def withdrawal(self, withdrawal_id: str) -> Withdrawal | None: ...

    async def topup_entity(self, lookup: TopUpLookup) -> TopUp | None: ...


MAX_BATCH = 512  # commands decided and appended together
MAX_QUEUED = 20_000  # commands waiting; submitters wait beyond this (backpressure)
READ_CHUNK = 10_000  # events read per call while folding the log
CLOSE_TIMEOUT_S = 10.0  # how long close() lets queued commands finish
# Ended jobs kept in memory (most recent endings) when the service can fold older ones back:
# late and repeated results come within minutes, so nearly every such decision finds its job.
ENDED_IN_MEMORY = 10_000
# Deposit references and decided withdrawals kept in memory (the most recent ones) when the
# service can look older ones up in the read models (`History`): a repeated credit comes
# within seconds, and an older one costs one indexed read.
HISTORY_IN_MEMORY = 10_000
SNAPSHOT_EVERY_EVENTS = 100_000  # a snapshot after this many events since the last...
SNAPSHOT_EVERY_S = 600.0  # ...or this long after it, if anything was appended
FREEZE_AFTER_EVENTS = 100_000  # start-up freezes the state it folded from a log this long
_REQUEUED = str(ev.JobRequeued.__struct_config__.tag)

log = structlog.get_logger("dcp_app.service")


def wall_clock_us() -> int:
    """Now, in integer microseconds since the Unix epoch (UTC)."""
    return time.time_ns() // 1000


class _CatchUp:
    """Not a command: fold what other processes appended, decide nothing (`catch_up`)."""


CATCH_UP = _CatchUp()


class _Pending(msgspec.Struct):
    command: cmd.Command | _CatchUp
    answer: Answer
    actor: str
    future: asyncio.Future[Any]
    now_us: int | None = None  # decide as of this time instead of the clock's


class CommandLoop:
    """The batching machinery: the state, the queue, the batch loop, catch-up, recovery and
    snapshots. Start it with `await loop.start()` (LedgerService.open does)."""

    def __init__(
        self,
        store: EventStore,
        settings: Settings,
        clock: Clock,
        codec: Codec,
        job_owner: JobOwner | None = None,
        ended_in_memory: int = ENDED_IN_MEMORY,
        snapshot_dir: Path | None = None,
        snapshot_every: tuple[int, float] = (SNAPSHOT_EVERY_EVENTS, SNAPSHOT_EVERY_S),
        history: History | None = None,
        history_in_memory: int = HISTORY_IN_MEMORY,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.codec = codec
        self.job_owner = job_owner
        # Without a way to find an old job's renter, every ended job stays in memory.
        self.ended_cap: int | None = ended_in_memory if job_owner is not None else None
        # Likewise every deposit reference and withdrawal, without the read models to ask.
        self.history = history
        self.history_cap: int | None = history_in_memory if history is not None else None
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
        self._in_flight: list[_Pending] = []
        self._closing = False
        # True when memory may hold events that never became durable (a batch failed and
        # the log could not be folded again then): the next batch refolds first.
        self._stale = False
        self.batches = 0  # appended batches, for tests and metrics
        self.observer: ServiceObserver = NullObserver()  # dcp_http.metrics sets its own

    async def start(self, genesis_prices: Sequence[tuple[str, int]] = GENESIS_PRICES) -> None:
        """Fold the log into memory and start the batch loop. An empty log first gets its
        genesis: one `platform.price_set` per `genesis_prices` (docs/ledger.md, "Seed
        prices")."""
        await self._load()
        if self.state.seq == 0 and genesis_prices:
            await self._append_genesis(genesis_prices)
        if self.state.seq >= FREEZE_AFTER_EVENTS:
            # What start-up built (the state, the modules) lives as long as the process: out
            # of the cyclic collector's sight, it is not rescanned by every full collection.
            # Not for a small log (tests open many services in one process, and anything
            # frozen is never collected).
            gc.freeze()
        self._loop_task = asyncio.create_task(self._run(), name="dcp-ledger-batches")

    async def close(self) -> None:
        """Stop taking commands, finish the queued ones (for at most CLOSE_TIMEOUT_S), then
        stop the background tasks; a command still waiting then fails with StoreError."""
        self._closing = True
        if self._snapshot_task is not None:
            with contextlib.suppress(Exception):
                await self._snapshot_task
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
        # Settled top-ups share the window of deposit references and decided withdrawals.
        return State(
            ended_cap=self.ended_cap, history_cap=self.history_cap, topups_cap=self.history_cap
        )

    async def _load(self) -> None:
        """(Re)build the state: from the newest matching snapshot, if any, and the log after
        it; else by folding the whole log."""
        state = self._new_state()
        versions: dict[str, int] = {}
        if self.snapshot_dir is not None:
            params = snapshots.params_of(state)
            loaded = await snapshots.load_newest(self.store, self.snapshot_dir, params)
            if loaded is not None:
                state, versions = loaded.state, loaded.versions
                self._snapshot_seq, self.loaded_from = state.seq, loaded.path
                with contextlib.suppress(OSError):
                    st = loaded.path.stat()
                    self.last_snapshot = (state.seq, st.st_mtime, st.st_size)
                log.info("snapshot_loaded", path=str(loaded.path), seq=state.seq)
        with foldlog.no_gc():
            await self._fold_log(state, versions, trim=True)
        check_all(state)
        self.state, self._versions = state, versions

    async def _fold_log(
        self,
        state: State,
        versions: dict[str, int],
        until_seq: int | None = None,
        trim: bool = False,
    ) -> None:
        """Fold the log after `state.seq` (up to `until_seq`) into `state` by the one fold loop
        (dcp_app.foldlog), in bounded reads through the store interface, noting each stream's
        last version in `versions`; with `trim`, ended jobs beyond the cap leave memory after
        each batch (their rows are in the read models: at start-up, or written by the process
        that appended them).

        An admin requeue of a job no longer in memory first folds that job back from its
        renter's stream (the requeue's fold needs the whole job). That is done before the
        batch: the job was ended and out of memory when the batch began (jobs leave memory
        only between batches), and an ended job gets no events until it is requeued. A
        top-up event about a settled top-up no longer in memory (not requested in the same
        batch) likewise folds the top-up back from its renter's stream first.
        Raises DecodeError or InvariantError at a bad event.
        """
        batches = foldlog.store_batches(self.store, state.seq, until_seq, READ_CHUNK, versions)
        async for rows in batches:
            requested: set[str] = set()  # top-ups this batch of rows requests
            for row in rows:
                if row[1] == _REQUEUED:
                    event = self.codec.decode_payload(row[1], row[2], row[3])
                    assert isinstance(event, ev.JobRequeued)
                    if event.job_id not in state.jobs:
                        await self._recall(state, event.job_id, event.renter_id)
                elif state.topups_cap is not None and row[1] in TOPUP_TAGS:
                    e = self.codec.decode_payload(row[1], row[2], row[3])
                    topup_id, renter_id = e.topup_id, e.renter_id  # type: ignore[attr-defined]
                    if row[1] == TOPUP_REQUESTED_TAG:
                        requested.add(topup_id)
                    elif topup_id not in state.topups and topup_id not in requested:
                        await self._recall_topup(state, topup_id, renter_id)
            try:
                foldlog.fold_rows(state, rows, self.codec)
            except foldlog.FoldFault as f:
                raise f.error from None
            if trim:
                state.trim()

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
        job = job_from_stream(await self._renter_events(state, renter_id), job_id)
        if job is not None:
            state.recall(job)

    async def _recall_topup(self, state: State, topup_id: str, renter_id: str) -> None:
        """Fold top-up `topup_id` back from its renter's stream up to `state.seq` and put it in
        memory (for the fold of its next event: the read model may already hold that event's
        change, the stream up to `state.seq` holds exactly what the state lacks)."""
        events = await self._renter_events(state, renter_id, TOPUP_TAGS)
        t = topup_from_stream(events, renter_id, topup_id)
        if t is not None:
            state.recall_topup(t)

    async def _renter_events(
        self, state: State, renter_id: str, types: Collection[str] | None = None
    ) -> list[tuple[int, Event]]:
        """`(seq, event)` of renter `renter_id`'s stream up to `state.seq`, decoded, in bounded
        reads (only the event types in `types`, when given): what a recall folds back."""
        stream = renter_stream(renter_id)
        events: list[tuple[int, Event]] = []
        version = 1
        while True:
            records = await self.store.read_stream(stream, version, READ_CHUNK)
            events.extend(
                (r.seq, self.codec.decode(r))
                for r in records
                if r.seq <= state.seq and (types is None or r.type in types)
            )
            if len(records) < READ_CHUNK or records[-1].seq > state.seq:
                return events
            version = records[-1].stream_version + 1

    async def _recall_row(self, state: State, kind: str, key: str) -> None:
        """Read the deposit reference or withdrawal `key` back from the read models into
        memory (nothing for one they do not hold: the decision sees a new one). Their rows
        were written with the events that made them, and only rows already written leave
        memory, so what the read models say is what a state keeping everything holds."""
        history = self.history
        if history is None:
            return
        if kind == "deposit":
            ref = await history.deposit_ref(key)
            if ref is not None:
                state.recall_deposit(key, ref)
        else:
            w = await history.withdrawal(key)
            if w is not None:
                state.recall_withdrawal(w)

    # --- the command loop --------------------------------------------------------------------

    async def _execute(
        self, command: cmd.Command, answer: Answer, actor: str, now_us: int | None = None
    ) -> Any:
        if self._closing or self._loop_task is None or self._loop_task.done():
            raise StoreError("ledger service is not running")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        pending = _Pending(command, answer, actor, fut, now_us)
        if self._queue.full():  # backpressure: wait for room
            await self._queue.put(pending)
        else:  # what put() does then, without its coroutine (one per command)
            self._queue.put_nowait(pending)
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
        params = snapshots.params_of(state)
        self._snapshot_seq, self._snapshot_at = state.seq, time.monotonic()
        self._snapshot_task = asyncio.create_task(
            self._write_snapshot(self.snapshot_dir, state.seq, head_hash, params, body),
            name="dcp-snapshot",
        )

    async def _write_snapshot(
        self, directory: Path, seq: int, head_hash: str, params: snapshots.Params, body: bytes
    ) -> None:
        def frame_and_write() -> tuple[Path, int]:
            header = snapshots.header_at(body, seq, head_hash, params)
            return snapshots.write(directory, seq, header, body), len(header) + len(body)

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
        # log is shared, whether or not another process appended (store_batches stops at a
        # short read).
        await self._fold_log(self.state, self._versions)

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
            wanted = row_to_recall(state, p.command)
            if wanted is not None:
                await self._recall_row(state, *wanted)
            for lookup in topups_to_recall(state, p.command):
                if self.history is not None:
                    t = await self.history.topup_entity(lookup)
                    if t is not None:
                        state.recall_topup(t)
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
        state.trim()  # the rows of what leaves are written (or nothing changed)

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
