"""What every store does to an append before it writes: check it and build its chained rows.

Shared by the SQLite and PostgreSQL stores so that both refuse the same appends with the same
errors and write the same rows, hash chain included: the same appends give the same log, byte
for byte, on either backend. How a store looks up a stream's version or a used idempotency key
(a query per lookup, or one prefetch per group) is the store's business, passed in as functions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

from dcp_events.errors import ConcurrencyError, StaleHeadError, StoreError
from dcp_events.store import AppendRequest, AppendResult, RecordedEvent

MAX_EVENTS_PER_APPEND = 10_000

# The column order of every stored row, in both backends.
COLUMNS = (
    "seq, stream_id, stream_version, type, schema_version, payload, recorded_at_us, actor,"
    " idempotency_key, prev_hash, hash"
)


def now_us() -> int:
    """The time every event of one group commit is recorded at (microseconds, UTC)."""
    return time.time_ns() // 1000


def validate(requests: Sequence[AppendRequest]) -> None:
    """Refuse, before queueing, what no store may write: StoreError."""
    for r in requests:
        if not r.events:
            raise StoreError(f"append to {r.stream_id!r} has no events")
        if len(r.events) > MAX_EVENTS_PER_APPEND:
            raise StoreError(f"append of {len(r.events)} events exceeds the bound")
        if r.idempotency_key == "":
            raise StoreError("an idempotency key may not be empty")


def row_to_event(row: Sequence[Any]) -> RecordedEvent:
    """A stored row (in COLUMNS order, payload as text) as a RecordedEvent."""
    return RecordedEvent(
        seq=row[0],
        stream_id=row[1],
        stream_version=row[2],
        type=row[3],
        schema_version=row[4],
        payload=row[5].encode(),
        recorded_at_us=row[6],
        actor=row[7],
        idempotency_key=row[8],
        prev_hash=row[9],
        hash=row[10],
    )


@dataclass
class Unit:
    """One caller's share of a group commit: written all-or-nothing."""

    requests: Sequence[AppendRequest]
    expected_head: int | None
    tx_hook: Any
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[AppendResult]]
    n_events: int = field(init=False)

    def __post_init__(self) -> None:
        self.n_events = sum(len(r.events) for r in self.requests)


@dataclass
class Checked:
    """A unit that passed its checks: its results, rows, the new head, what it moved."""

    results: list[AppendResult]
    rows: list[tuple[Any, ...]]
    head_seq: int
    head_hash: str
    versions: dict[str, int]
    keys: dict[str, AppendResult]


def resolve_all(pairs: list[tuple[asyncio.Future[Any], Any]]) -> None:
    """Answer each waiting caller with its result or its error."""
    for fut, outcome in pairs:
        if fut.done():  # the caller gave up waiting; its events are durable all the same
            continue
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)


# A fresh sha256 as a copy of this empty one: copying skips the digest lookup that each
# hashlib.sha256() call makes (about half the cost of hashing one event).
_new_hash = sha256().copy


def _ns(b: bytes) -> bytes:
    """A netstring, the unit of the canonical form (dcp_events.chain)."""
    return b"%d:%b," % (len(b), b)


def check_unit(
    unit: Unit,
    head_seq: int,
    head_hash: str,
    now: int,
    version_of: Callable[[str], int],
    seen_key: Callable[[str], AppendResult | None],
) -> Checked:
    """Check one unit against the log as it stands after the units before it in its group,
    and build its rows (hash chain included); writes nothing.

    `version_of(stream)` is the stream's last version (0 if new) and `seen_key(key)` the result
    (duplicate=True) of an earlier append with that key, both counting earlier units of the
    group. Raises StaleHeadError, ConcurrencyError.
    """
    if unit.expected_head is not None and unit.expected_head != head_seq:
        raise StaleHeadError(unit.expected_head, head_seq)
    results: list[AppendResult] = []
    rows: list[tuple[Any, ...]] = []
    versions: dict[str, int] = {}
    keys: dict[str, AppendResult] = {}
    for req in unit.requests:
        key = req.idempotency_key
        if key is not None:
            seen = keys.get(key) or seen_key(key)
            if seen is not None:
                results.append(seen)
                continue
        version = versions.get(req.stream_id)
        if version is None:
            version = version_of(req.stream_id)
        if req.expected_version is not None and req.expected_version != version:
            raise ConcurrencyError(req.stream_id, req.expected_version, version)
        first_seq = head_seq + 1
        # The hot path of every append: canonical_bytes() and chain_hash() inlined (tests check
        # it against them). What the events of a request share is encoded once: the stream, the
        # time, the key, and per (type, schema version, actor) the run of fields between the
        # version and the payload. Each event is then one format and one hash of
        # prev_hash || canonical, started from a copy of an empty hash (cheaper than a new one).
        stream_id = req.stream_id
        shared = _ns(stream_id.encode())
        tail = _ns(str(now).encode())
        key_ns = _ns((key or "").encode())
        middles: dict[tuple[str, int, str], bytes] = {}
        prev = bytes.fromhex(head_hash)
        for ev in req.events:
            head_seq += 1
            version += 1
            type_, sv, actor, payload = ev.type, ev.schema_version, ev.actor, ev.payload
            middle = middles.get((type_, sv, actor))
            if middle is None:
                middle = b"%b%b%b%b%b" % (
                    _ns(type_.encode()),
                    _ns(str(sv).encode()),
                    tail,
                    _ns(actor.encode()),
                    key_ns,
                )
                middles[(type_, sv, actor)] = middle
            seq_b, ver_b = b"%d" % head_seq, b"%d" % version
            h = _new_hash()
            h.update(
                b"%b%d:%b,%b%d:%b,%b%d:%b," % (
                    prev, len(seq_b), seq_b, shared, len(ver_b), ver_b, middle, len(payload),
                    payload,
                )
            )  # fmt: skip
            prev = h.digest()
            hex_ = prev.hex()
            rows.append(
                (head_seq, stream_id, version, type_, sv, payload.decode(), now, actor, key,
                 head_hash, hex_)
            )  # fmt: skip
            head_hash = hex_
        versions[req.stream_id] = version
        results.append(AppendResult(req.stream_id, first_seq, head_seq, version))
        if key is not None:
            keys[key] = AppendResult(req.stream_id, first_seq, head_seq, version, True)
    return Checked(results, rows, head_seq, head_hash, versions, keys)
