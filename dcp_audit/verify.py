"""`dcp audit verify`: check the whole log, event by event, and report the first fault.

Two passes over the events 1..head, each in sequence order:

- the chain pass (`check_chain`):
  1. sequence: each event is the one after its predecessor (1, 2, 3, ... no gap);
  2. chain: its hash is sha256(prev_hash || canonical bytes) (docs/audit.md), and its
     prev_hash is its predecessor's hash;
- the contents pass (`check_contents`):
  3. decode: its payload decodes against the schema of its type and version;
  4. postings: a money event's postings sum to zero;
  5. invariant: folding it into the domain state keeps every money rule
     (dcp_projections.fold); after the last event the whole state passes `check_all` and the
     fold's balances equal the balances summed from the postings alone.

One read of the file feeds both: each batch of rows is chain-checked, then the rows that
passed go on to the contents pass (`_chained`). On a log of PARALLEL_MIN_EVENTS or more the
read and the chain pass run in a second process, forked (dcp_app.foldlog.handed_over), which
hands the rows over through a pipe while this one decodes and folds: verification takes as
long as the slower of the two, not the sum, and the file is read once, not twice. The fault
reported is the earliest (sequence, then check order); a chain fault stops the rows there,
so the contents pass never runs past it. Each event is decoded once; the decoded event feeds
both the postings check and the fold.
"""

from __future__ import annotations

import ctypes
import sqlite3
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from multiprocessing.sharedctypes import RawValue
from typing import Any

from dcp_app.foldlog import (
    FoldFault,
    Row,
    fold_batches,
    handed_over,
    no_gc,
    piped_batches,
    sqlite_batches,
)
from dcp_audit._log import file_of, head, open_readonly
from dcp_audit.errors import AuditFault
from dcp_events.chain import GENESIS_HASH
from dcp_events.codec import Codec, default_codec
from dcp_projections.errors import InvariantError
from dcp_projections.fold import check_all
from dcp_projections.state import State

BATCH_SIZE = 20_000  # rows per read: big enough to amortise the query, small enough to bound memory
FIRST_BATCH = 1_000  # rows of the first read of a pass: the fold starts on them early
PARALLEL_MIN_EVENTS = 10_000  # below this a second process costs more than it saves
CHECK_ORDER = {"sequence": 0, "chain": 1, "decode": 2, "postings": 3, "invariant": 4}

# A fold's five columns first (seq, type, schema_version, payload, recorded_at_us: one read
# feeds both passes), then the rest the hash covers. The text columns only hashed come as
# BLOBs, their UTF-8 bytes: what the hash covers, without a str between; the payload too.
_CHAIN_COLUMNS = (
    "seq, type, schema_version, CAST(payload AS BLOB), recorded_at_us, CAST(stream_id AS BLOB),"
    " stream_version, CAST(actor AS BLOB), CAST(idempotency_key AS BLOB), prev_hash, hash"
)
_FOLD_WIDTH = 5  # a row's first five columns are a fold's (dcp_app.foldlog.Row)

Fault = tuple[int, str, str]  # (seq, check, detail): plain data, so it crosses processes


@dataclass(frozen=True)
class Summary:
    """What a clean verification found."""

    events: int
    head_seq: int
    head_hash: str
    sum_halala: int  # the sum of every account's balance: 0 in a sound ledger
    accounts: int
    money_events: int
    invariants_checked: bool
    elapsed_s: float
    balances: dict[str, int] = field(repr=False, default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """The summary as JSON-ready data (without the per-account balances)."""
        return {
            "ok": True,
            "events": self.events,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "sum_halala": self.sum_halala,
            "accounts": self.accounts,
            "money_events": self.money_events,
            "invariants_checked": self.invariants_checked,
            "elapsed_s": round(self.elapsed_s, 3),
        }


@dataclass(frozen=True)
class ChainResult:
    """What the chain pass found: the last event checked and its hash, or the first fault."""

    head_seq: int
    head_hash: str
    fault: Fault | None


@dataclass(frozen=True)
class ContentResult:
    """What the contents pass found: the balances from the postings, or the first fault."""

    events: int
    money_events: int
    balances: dict[str, int]
    fault: Fault | None


def verify(
    conn: sqlite3.Connection,
    *,
    invariants: bool = True,
    codec: Codec | None = None,
    batch_size: int = BATCH_SIZE,
    parallel: bool | None = None,
) -> Summary:
    """Verify the log readable through `conn`, up to its current head; return its summary.

    Raises AuditFault at the earliest fault, naming the sequence of the event at fault and the
    check that failed. With `invariants=False` the fold is skipped (chain, sequence, schemas
    and postings only). `parallel` reads the log and runs the chain pass in a second process;
    by default it does when the log is on a file and holds at least PARALLEL_MIN_EVENTS events.
    """
    started = time.perf_counter()
    last = head(conn)
    until = last[0] if last else 0
    path = file_of(conn)
    if parallel is None:
        parallel = path is not None and until >= PARALLEL_MIN_EVENTS
    if parallel and path is None:
        raise ValueError("a parallel verification needs a log on a file")
    codec = codec or default_codec()
    chained: list[ChainResult] = []  # the chain pass's result, once its batches are all in
    batches = (
        _split(conn, path, until, batch_size, chained)
        if parallel and path is not None
        else _kept(_chained(conn, until, batch_size), chained)
    )
    contents = _Contents(invariants, codec)
    with no_gc():
        try:
            content_fault = contents.check(batches)
            if content_fault is not None and not chained:
                # A chain fault at the same seq would come first: the one an altered event
                # whose hash was recomputed leaves, found at its successor, in this batch or
                # the next (which is not handed over then): the chain pass ends there.
                next(batches, None)
        finally:
            batches.close()
        chain = chained[0] if chained else None
        if content_fault is None and chain is not None and chain.fault is None:
            content_fault = contents.end(until)
    if chain is None:  # the contents fault comes before anything the chain pass could find
        chain = ChainResult(0, GENESIS_HASH, None)
    faults = [f for f in (chain.fault, content_fault) if f is not None]
    if faults:
        seq, check, detail = min(faults, key=lambda f: (f[0], CHECK_ORDER[f[1]]))
        raise AuditFault(seq, check, detail)
    return Summary(
        events=contents.events,
        head_seq=chain.head_seq,
        head_hash=chain.head_hash,
        sum_halala=sum(contents.balances.values()),
        accounts=len(contents.balances),
        money_events=contents.money_events,
        invariants_checked=invariants,
        elapsed_s=time.perf_counter() - started,
        balances=contents.balances,
    )


def check_chain(
    conn: sqlite3.Connection, until_seq: int, batch_size: int = BATCH_SIZE
) -> ChainResult:
    """Check sequence and hash chain of events 1..until_seq; stop at the first fault."""
    chain = _Chain()
    for rows in sqlite_batches(conn, until_seq, batch_size=batch_size, columns=_CHAIN_COLUMNS):
        if chain.check(rows) < len(rows):
            break
    return chain.result()


class _Chain:
    """The chain pass over the rows of `_CHAIN_COLUMNS`, batch after batch, in order."""

    def __init__(self) -> None:
        self.expect_seq = 1
        self.prev_hash = GENESIS_HASH
        self.prev_raw = bytes.fromhex(GENESIS_HASH)
        self.fault: Fault | None = None

    @classmethod
    def after(cls, done: ChainResult) -> _Chain:
        """The pass going on after `done`, a sound part of the chain: its last event and hash."""
        chain = cls()
        chain.expect_seq, chain.prev_hash = done.head_seq + 1, done.head_hash
        chain.prev_raw = bytes.fromhex(done.head_hash)
        return chain

    def result(self) -> ChainResult:
        """The last event that passed and its hash, or the first fault."""
        return ChainResult(self.expect_seq - 1, self.prev_hash, self.fault)

    def check(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """Check the next rows; return how many passed (all, or those before the row at
        which the first fault was found: see `fault`). Nothing is checked after a fault."""
        if self.fault is not None:
            return 0
        expect_seq, prev_hash, prev_raw = self.expect_seq, self.prev_hash, self.prev_raw
        fault: Fault | None = None
        i = 0
        for (
            seq,
            type_,
            schema_version,
            payload,
            at_us,
            sid,
            version,
            act,
            kb,
            prev,
            h,
        ) in rows:
            if seq != expect_seq:
                if seq > expect_seq:
                    fault = (
                        expect_seq,
                        "sequence",
                        f"event {expect_seq} is missing (next is {seq})",
                    )
                else:
                    fault = (seq, "sequence", f"seq {seq} out of order after {expect_seq - 1}")
                break
            # canonical_bytes() inlined: this is the hot loop (tests check it against chain.py).
            # The previous hash's raw bytes are the previous digest, kept: parsed from hex
            # only where the event records another prev_hash than its predecessor's hash.
            sb = b"%d" % seq
            ver = b"%d" % version
            typ = type_.encode()
            sv = b"%d" % schema_version
            at = b"%d" % at_us
            if kb is None:
                kb = b""
            if prev == prev_hash:
                raw = prev_raw
            else:
                try:
                    raw = bytes.fromhex(prev)
                except (ValueError, TypeError):
                    fault = (seq, "chain", f"prev_hash {prev!r} is not hex")
                    break
            digest = sha256(b"%b%d:%b,%d:%b,%d:%b,%d:%b,%d:%b,%d:%b,%d:%b,%d:%b,%d:%b," % (
                raw, len(sb), sb, len(sid), sid, len(ver), ver, len(typ), typ, len(sv), sv,
                len(at), at, len(act), act, len(kb), kb, len(payload), payload,
            )).digest()  # fmt: skip
            if digest.hex() != h:
                fault = (
                    seq,
                    "chain",
                    "hash does not match the event's contents (the event was altered)",
                )
                break
            if prev != prev_hash:
                # The event is intact with the prev_hash it records, so that was its
                # predecessor's hash when it was appended: the predecessor was altered since
                # and its own hash recomputed to hide it.
                if seq == 1:
                    fault = (1, "chain", "the first event does not chain from the genesis hash")
                else:
                    fault = (seq - 1, "chain", (
                        f"hash {prev_hash} is not the one seq {seq} chains to ({prev}): "
                        "the event was altered and its hash recomputed"
                    ))  # fmt: skip
                break
            prev_hash, prev_raw = h, digest
            expect_seq = seq + 1
            i += 1
        self.expect_seq, self.prev_hash, self.prev_raw, self.fault = (
            expect_seq,
            prev_hash,
            prev_raw,
            fault,
        )
        return i


def _chained(
    conn: sqlite3.Connection,
    until_seq: int,
    batch_size: int,
    after_seq: int = 0,
    chain: _Chain | None = None,
    stop: Any = None,
) -> Generator[list[Row], None, ChainResult]:
    """One read of the events for both passes: check each batch's chain, then yield the
    fold's columns of the rows that passed (those after `after_seq`); stop at the first chain
    fault and return what the chain pass found. The rows before a fault are still yielded: a
    contents fault among them comes first.

    The read goes on from `chain` (a fresh one: from the first event) up to `until_seq`, or
    to `stop.value` (a shared number, read before each batch) where that is lower. The
    batches start small (FIRST_BATCH) and double up to `batch_size`: the fold waiting for
    the second process's first batch waits for a small one."""
    chain = chain or _Chain()
    query = f"SELECT {_CHAIN_COLUMNS} FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
    read_seq = chain.expect_seq - 1
    size = min(batch_size, FIRST_BATCH)
    while True:
        last = until_seq if stop is None else min(until_seq, stop.value)
        if read_seq >= last:
            break
        rows = conn.execute(query, (read_seq, last, size)).fetchall()
        size = min(batch_size, 2 * size)
        if not rows:
            break
        read_seq = rows[-1][0]
        passed = chain.check(rows)
        if after_seq < read_seq:
            fold = [r[:_FOLD_WIDTH] for r in (rows if passed == len(rows) else rows[:passed])]
            if after_seq:
                fold = [r for r in fold if r[0] > after_seq]
            if fold:
                yield fold
        if chain.fault is not None:
            break
    return chain.result()


def _chained_file(
    path: str, until_seq: int, batch_size: int, stop: Any
) -> Generator[list[Row], None, ChainResult]:
    """`_chained` in the second process, on its own read-only connection, up to `stop`.

    Events up to `until_seq` never change (append-only), so this connection's snapshot holds
    the same events as the caller's.
    """
    conn = open_readonly(path)
    try:
        return (yield from _chained(conn, until_seq, batch_size, stop=stop))
    finally:
        conn.close()


class _Share:
    """Where the second process's part of the read and the chain pass ends; this process
    reads and chain-checks the rest itself once it has folded the rows handed over.

    It starts at the head. While this process waits for rows (the second one, reading and
    hashing, is the slower), it is brought forward by as many events as this one could have
    read, checked and folded in the time it waited: with `f` this process's time a folded
    event, `c` the second's time a checked event (the rate the rows come in), a wait of
    `waited_s` after `events` rows took `busy_s` moves `waited_s / (c + f)` events, where
    `f = busy_s / events` and `c = (busy_s + waited_s) / events`. Where the fold is the
    slower, nothing moves: the second process checks the whole chain. The second process
    reads `stop` before each batch; any split gives the same checks and the same faults.
    """

    def __init__(self, until_seq: int) -> None:
        self.stop = RawValue(ctypes.c_int64, until_seq)

    def paced(self, busy_s: float, waited_s: float, events: int) -> None:
        move = int(events * waited_s / (2 * busy_s + waited_s))
        self.stop.value = max(0, self.stop.value - move)


def _split(
    conn: sqlite3.Connection,
    path: str,
    until_seq: int,
    batch_size: int,
    out: list[ChainResult],
) -> Generator[list[Row], None, None]:
    """The rows of both passes, the first part read and chain-checked by a second process
    (`_Share` says how far), the rest here, from where it ended: its last event and hash.
    What the whole chain pass found is appended to `out` once the rows are all in."""
    share = _Share(until_seq)
    first: list[ChainResult] = []
    yield from handed_over(
        _chained_file,
        (path, until_seq, batch_size, share.stop),
        lambda after: _chained(conn, until_seq, batch_size, after),
        first,
        share.paced,
    )
    done = first[0]
    if done.fault is not None or done.head_seq >= until_seq:
        out.append(done)
        return
    out.append((yield from _chained(conn, until_seq, batch_size, chain=_Chain.after(done))))


def check_contents(
    conn: sqlite3.Connection,
    until_seq: int,
    invariants: bool = True,
    codec: Codec | None = None,
    batch_size: int = BATCH_SIZE,
    stop_at: Callable[[], int | None] | None = None,
    path: str | None = None,
) -> ContentResult:
    """Decode events 1..until_seq, check each money event's postings and (with `invariants`)
    fold them through the domain's money rules; stop at the first fault.

    `stop_at`, asked after each batch, may name a sequence where another pass already found a
    fault: once past it, no fault found here could come first, so the pass stops early.
    With `path` (the file behind `conn`) the events are read by another process
    (`dcp_app.foldlog.piped_batches`), so this one only decodes and folds them.
    """
    contents = _Contents(invariants, codec or default_codec())
    rows: Generator[list[Any], None, None] = (
        piped_batches(conn, path, until_seq, batch_size=batch_size)
        if path is not None
        else sqlite_batches(conn, until_seq, batch_size=batch_size)
    )
    try:
        fault = contents.check(rows, stop_at)
    finally:
        rows.close()  # a reader process, if any, is done
    if fault is None and not contents.stopped:
        fault = contents.end(until_seq)
    return ContentResult(contents.events, contents.money_events, contents.balances, fault)


def _kept(
    batches: Generator[list[Row], None, ChainResult], out: list[ChainResult]
) -> Generator[list[Row], None, None]:
    """The batches; what their generator returns is appended to `out` once they are all in."""
    out.append((yield from batches))


class _Contents:
    """The contents pass, batch after batch: decode, postings, fold; then the end checks."""

    def __init__(self, invariants: bool, codec: Codec) -> None:
        self.state = State() if invariants else None
        self.codec = codec
        self.balances: dict[str, int] = {}
        self.money_events = self.events = 0  # counted batch by batch (and up to a fault)
        self.stopped = False  # by `stop_at`

    def check(
        self,
        batches: Iterator[list[Row]],
        stop_at: Callable[[], int | None] | None = None,
    ) -> Fault | None:
        """Check every batch; the first fault, or None. `stop_at`: see `check_contents`."""
        balances = self.balances

        def check_postings(seq: int, event: Any, _at: int) -> None:
            self.money_events += 1
            total = 0
            for p in event.postings:
                amount = p.amount_halala
                total += amount
                balances[p.account] = balances.get(p.account, 0) + amount
            if total != 0:
                raise FoldFault(seq, "postings", f"postings sum to {total} halala, not 0")

        def after_batch(rows: Sequence[tuple[Any, ...]]) -> bool:
            self.events += len(rows)
            fault_seq = stop_at() if stop_at is not None else None
            self.stopped = fault_seq is not None and rows[-1][0] >= fault_seq
            return self.stopped

        counted = _counted(batches)
        try:
            fold_batches(self.state, counted, self.codec, check_postings, after_batch)
        except FoldFault as f:
            # The events of the batch before the one at fault passed every check.
            self.events += next(i for i, r in enumerate(counted.current) if r[0] == f.seq)
            return (f.seq, f.check, f.detail)
        return None

    def end(self, seq: int) -> Fault | None:
        """The checks after the last event, `seq` (none without invariants)."""
        return _check_end(self.state, seq, self.balances) if self.state is not None else None


class _counted:
    """Batches, remembering the one being folded (to count the events before a fault)."""

    def __init__(self, batches: Iterator[list[tuple[Any, ...]]]) -> None:
        self._batches = batches
        self.current: list[tuple[Any, ...]] = []

    def __iter__(self) -> _counted:
        return self

    def __next__(self) -> list[tuple[Any, ...]]:
        self.current = next(self._batches)
        return self.current


def _check_end(state: State, seq: int, balances: dict[str, int]) -> Fault | None:
    """The whole-state checks after the last event: the fold's ledger is the postings' ledger."""
    try:
        check_all(state)
    except InvariantError as e:
        return (seq, "invariant", f"after the last event: {e}")
    if state.balances != balances:
        diff = sorted(
            a
            for a in state.balances.keys() | balances.keys()
            if state.balances.get(a) != balances.get(a)
        )
        return (seq, "invariant", f"folded balances differ from the postings on {diff[:5]}")
    return None
