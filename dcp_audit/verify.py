"""`dcp audit verify`: check the whole log, event by event, and stop at the first fault.

For each event in sequence order, in one pass over one read snapshot:

1. sequence: the event is the one after its predecessor (1, 2, 3, ... no gap);
2. chain: its hash is sha256(prev_hash || canonical bytes) (docs/audit.md), and its prev_hash is
   its predecessor's hash;
3. decode: its payload decodes against the schema of its type and version;
4. postings: a money event's postings sum to zero;
5. invariant: folding it into the domain state keeps every money rule (dcp_projections.fold).

At the end the fold's balances must equal the balances summed from the postings alone, and
the whole state must pass `check_all`. Each event is decoded once, and the decoded event feeds
both the postings check and the fold.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from hashlib import sha256

from dcp_audit.errors import AuditFault
from dcp_events.chain import GENESIS_HASH
from dcp_events.codec import Codec, default_codec
from dcp_events.errors import DecodeError
from dcp_events.sqlite_store import iter_event_batches
from dcp_projections.errors import InvariantError
from dcp_projections.fold import apply, check_all
from dcp_projections.state import State

BATCH_SIZE = 20_000  # rows per read: big enough to amortise the query, small enough to bound memory


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


def verify(
    conn: sqlite3.Connection,
    *,
    invariants: bool = True,
    codec: Codec | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
) -> Summary:
    """Verify the log readable through `conn`; return its summary.

    Raises AuditFault at the first fault, naming the sequence of the event at fault and the
    check that failed. With `invariants=False` the fold is skipped (chain, sequence, schemas
    and postings only). `progress`, if given, is called with the last sequence of each batch.
    """
    started = time.perf_counter()
    codec = codec or default_codec()
    decode = codec.decode_payload
    state = State() if invariants else None
    balances: dict[str, int] = {}
    expect_seq = 1
    prev_hash = GENESIS_HASH
    money_events = 0
    for batch in iter_event_batches(conn, 0, batch_size):
        for rec in batch:
            seq = rec.seq
            if seq != expect_seq:
                if seq > expect_seq:
                    raise AuditFault(
                        expect_seq, "sequence", f"event {expect_seq} is missing (next is {seq})"
                    )
                raise AuditFault(seq, "sequence", f"seq {seq} out of order after {expect_seq - 1}")
            # canonical_bytes() inlined: this is the hot loop (tests check it against chain.py).
            sb = str(seq).encode()
            sid = rec.stream_id.encode()
            ver = str(rec.stream_version).encode()
            typ = rec.type.encode()
            sv = str(rec.schema_version).encode()
            at = str(rec.recorded_at_us).encode()
            act = rec.actor.encode()
            key = (rec.idempotency_key or "").encode()
            pay = rec.payload
            canonical = b"%d:%b,%d:%b,%d:%b,%d:%b,%d:%b,%d:%b,%d:%b,%d:%b,%d:%b," % (
                len(sb), sb, len(sid), sid, len(ver), ver, len(typ), typ, len(sv), sv,
                len(at), at, len(act), act, len(key), key, len(pay), pay,
            )  # fmt: skip
            try:
                digest = sha256(bytes.fromhex(rec.prev_hash) + canonical).hexdigest()
            except ValueError:
                raise AuditFault(seq, "chain", f"prev_hash {rec.prev_hash!r} is not hex") from None
            if digest != rec.hash:
                raise AuditFault(
                    seq, "chain", "hash does not match the event's contents (the event was altered)"
                )
            if rec.prev_hash != prev_hash:
                # The event is intact with the prev_hash it records, so that was its
                # predecessor's hash when it was appended: the predecessor was altered since
                # and its own hash recomputed to hide it.
                if seq == 1:
                    raise AuditFault(seq, "chain", "the first event does not chain from genesis")
                raise AuditFault(
                    seq - 1,
                    "chain",
                    f"hash {prev_hash} is not the one seq {seq} chains to ({rec.prev_hash}): "
                    "the event was altered and its hash recomputed",
                )
            try:
                event = decode(rec.type, rec.schema_version, pay)
            except DecodeError as e:
                raise AuditFault(seq, "decode", str(e)) from None
            postings = getattr(event, "postings", None)
            if postings:
                money_events += 1
                total = 0
                for p in postings:
                    amount = p.amount_halala
                    total += amount
                    balances[p.account] = balances.get(p.account, 0) + amount
                if total != 0:
                    raise AuditFault(seq, "postings", f"postings sum to {total} halala, not 0")
            if state is not None:
                try:
                    apply(state, seq, event)
                except InvariantError as e:
                    raise AuditFault(seq, "invariant", str(e)) from None
            prev_hash = rec.hash
            expect_seq = seq + 1
        if state is not None:
            state.touched.clear()  # the fold's write-back hints; nobody writes rows here
        if progress is not None:
            progress(expect_seq - 1)
    head_seq = expect_seq - 1
    if state is not None:
        _check_end(state, head_seq, balances)
    return Summary(
        events=head_seq,
        head_seq=head_seq,
        head_hash=prev_hash,
        sum_halala=sum(balances.values()),
        accounts=len(balances),
        money_events=money_events,
        invariants_checked=state is not None,
        elapsed_s=time.perf_counter() - started,
        balances=balances,
    )


def _check_end(state: State, head_seq: int, balances: dict[str, int]) -> None:
    """The whole-state checks after the last event: the fold's ledger is the postings' ledger."""
    try:
        check_all(state)
    except InvariantError as e:
        raise AuditFault(head_seq, "invariant", f"after the last event: {e}") from None
    if state.balances != balances:
        diff = sorted(
            a
            for a in state.balances.keys() | balances.keys()
            if state.balances.get(a) != balances.get(a)
        )
        raise AuditFault(
            head_seq, "invariant", f"folded balances differ from the postings on {diff[:5]}"
        )
