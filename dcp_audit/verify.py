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

The passes need nothing from each other, so on a big log the chain pass runs in a second
process while this one folds (and a third reads the events for the fold,
dcp_app.foldlog.piped_batches): verification takes as long as the slower pass, not the sum. The
fault reported is the earliest of the two passes' first faults (sequence, then check order).
Each event is decoded once; the decoded event feeds both the postings check and the fold.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

from dcp_app.foldlog import FoldFault, fold_batches, no_gc, piped_batches, sqlite_batches
from dcp_audit._beside import beside
from dcp_audit._log import file_of, head, open_readonly
from dcp_audit.errors import AuditFault
from dcp_events.chain import GENESIS_HASH
from dcp_events.codec import Codec, default_codec
from dcp_projections.errors import InvariantError
from dcp_projections.fold import check_all
from dcp_projections.state import State

BATCH_SIZE = 20_000  # rows per read: big enough to amortise the query, small enough to bound memory
PARALLEL_MIN_EVENTS = 50_000  # below this a second process costs more than it saves
CHECK_ORDER = {"sequence": 0, "chain": 1, "decode": 2, "postings": 3, "invariant": 4}

# The payload as a BLOB: its UTF-8 bytes are what the hash covers, without a str between.
_CHAIN_COLUMNS = (
    "seq, stream_id, stream_version, type, schema_version, recorded_at_us, actor,"
    " idempotency_key, CAST(payload AS BLOB), prev_hash, hash"
)

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
    and postings only). `parallel` runs the chain pass in a second process; by default it does
    when the log is on a file and holds at least PARALLEL_MIN_EVENTS events.
    """
    started = time.perf_counter()
    last = head(conn)
    until = last[0] if last else 0
    path = file_of(conn)
    if parallel is None:
        parallel = path is not None and until >= PARALLEL_MIN_EVENTS
    codec = codec or default_codec()
    with no_gc():
        if parallel:
            if path is None:
                raise ValueError("a parallel verification needs a log on a file")
            with beside(
                _check_chain_of_file,
                path,
                until,
                batch_size,
                inline=lambda: check_chain(conn, until, batch_size),
            ) as chain_pass:

                def chain_fault_seq() -> int | None:
                    done = chain_pass.ready()
                    return done.fault[0] if done is not None and done.fault else None

                contents = check_contents(
                    conn, until, invariants, codec, batch_size, chain_fault_seq, path
                )
                chain = chain_pass.result()
        else:
            chain = check_chain(conn, until, batch_size)
            # Content faults after a chain fault cannot come first: stop there.
            stop = chain.fault[0] if chain.fault else until
            contents = check_contents(conn, stop, invariants, codec, batch_size)
    faults = [f for f in (chain.fault, contents.fault) if f is not None]
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


def _check_chain_of_file(path: str, until_seq: int, batch_size: int) -> ChainResult:
    """The chain pass in a process of its own, on its own read-only connection.

    Events up to `until_seq` never change (append-only), so this connection's snapshot holds
    the same events as the caller's.
    """
    conn = open_readonly(path)
    try:
        return check_chain(conn, until_seq, batch_size)
    finally:
        conn.close()


def check_chain(
    conn: sqlite3.Connection, until_seq: int, batch_size: int = BATCH_SIZE
) -> ChainResult:
    """Check sequence and hash chain of events 1..until_seq; stop at the first fault."""
    expect_seq = 1
    prev_hash = GENESIS_HASH
    prev_raw = bytes.fromhex(GENESIS_HASH)
    for rows in sqlite_batches(conn, until_seq, batch_size=batch_size, columns=_CHAIN_COLUMNS):
        for (
            seq,
            stream_id,
            version,
            type_,
            schema_version,
            at_us,
            actor,
            key,
            payload,
            prev,
            h,
        ) in rows:
            if seq != expect_seq:
                if seq > expect_seq:
                    detail = f"event {expect_seq} is missing (next is {seq})"
                    return ChainResult(expect_seq - 1, prev_hash, (expect_seq, "sequence", detail))
                detail = f"seq {seq} out of order after {expect_seq - 1}"
                return ChainResult(expect_seq - 1, prev_hash, (seq, "sequence", detail))
            # canonical_bytes() inlined: this is the hot loop (tests check it against chain.py).
            # The previous hash's raw bytes are the previous digest, kept: parsed from hex
            # only where the event records another prev_hash than its predecessor's hash.
            sb = b"%d" % seq
            sid = stream_id.encode()
            ver = b"%d" % version
            typ = type_.encode()
            sv = b"%d" % schema_version
            at = b"%d" % at_us
            act = actor.encode()
            kb = key.encode() if key else b""
            if prev == prev_hash:
                raw = prev_raw
            else:
                try:
                    raw = bytes.fromhex(prev)
                except (ValueError, TypeError):
                    detail = f"prev_hash {prev!r} is not hex"
                    return ChainResult(seq - 1, prev_hash, (seq, "chain", detail))
            digest = sha256(b"%b%d:%b,%d:%b,%d:%b,%d:%b,%d:%b,%d:%b,%d:%b,%d:%b,%d:%b," % (
                raw, len(sb), sb, len(sid), sid, len(ver), ver, len(typ), typ, len(sv), sv,
                len(at), at, len(act), act, len(kb), kb, len(payload), payload,
            )).digest()  # fmt: skip
            if digest.hex() != h:
                detail = "hash does not match the event's contents (the event was altered)"
                return ChainResult(seq - 1, prev_hash, (seq, "chain", detail))
            if prev != prev_hash:
                # The event is intact with the prev_hash it records, so that was its
                # predecessor's hash when it was appended: the predecessor was altered since
                # and its own hash recomputed to hide it.
                if seq == 1:
                    detail = "the first event does not chain from the genesis hash"
                    return ChainResult(0, prev_hash, (1, "chain", detail))
                detail = (
                    f"hash {prev_hash} is not the one seq {seq} chains to ({prev}): "
                    "the event was altered and its hash recomputed"
                )
                return ChainResult(seq - 1, prev_hash, (seq - 1, "chain", detail))
            prev_hash, prev_raw = h, digest
            expect_seq = seq + 1
    return ChainResult(expect_seq - 1, prev_hash, None)


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
    state = State() if invariants else None
    balances: dict[str, int] = {}
    money_events = events = 0  # counted batch by batch (and up to a fault)
    stopped = False

    def check_postings(seq: int, event: Any, _at: int) -> None:
        nonlocal money_events
        money_events += 1
        total = 0
        for p in event.postings:
            amount = p.amount_halala
            total += amount
            balances[p.account] = balances.get(p.account, 0) + amount
        if total != 0:
            raise FoldFault(seq, "postings", f"postings sum to {total} halala, not 0")

    def after_batch(rows: Sequence[tuple[Any, ...]]) -> bool:
        nonlocal stopped, events
        events += len(rows)
        fault_seq = stop_at() if stop_at is not None else None
        stopped = fault_seq is not None and rows[-1][0] >= fault_seq
        return stopped

    rows: Generator[list[Any], None, None] = (
        piped_batches(conn, path, until_seq, batch_size=batch_size)
        if path is not None
        else sqlite_batches(conn, until_seq, batch_size=batch_size)
    )
    batches = _counted(rows)
    try:
        fold_batches(state, batches, codec, check_postings, after_batch)
    except FoldFault as f:
        rows.close()
        # The events of the batch before the one at fault passed every check.
        before = next(i for i, r in enumerate(batches.current) if r[0] == f.seq)
        return ContentResult(events + before, money_events, balances, (f.seq, f.check, f.detail))
    rows.close()  # a reader process, if any, is done
    if stopped:
        return ContentResult(events, money_events, balances, None)
    fault = _check_end(state, until_seq, balances) if state is not None else None
    return ContentResult(events, money_events, balances, fault)


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
