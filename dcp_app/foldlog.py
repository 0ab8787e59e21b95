"""Folding the log into a domain state: the one loop behind the service's start-up and
catch-up (dcp_app.batcher), the read-model rebuild (dcp_app.readmodel) and `dcp audit verify`
and `replay` (dcp_audit).

The loop takes the log in bounded batches of plain rows `(seq, type, schema_version, payload,
recorded_at_us)`, decodes each event, shows a money event to the caller (`on_money`: a
rebuild's posting rows, verify's postings check) and folds it with
`dcp_projections.fold.apply`. A fault names the event: `FoldFault(seq, "decode" | "invariant",
detail)`.

Where the rows come from is the caller's, so the same fold runs over any backend:
`store_batches` reads through the `EventStore` interface (SQLite or PostgreSQL), and
`sqlite_batches` reads only the five columns through a stdlib connection, the tools' fast
path (building full RecordedEvents for a fold that needs five of their eleven fields cost a
third of a replay).

Speed (issue 11): the rows are plain tuples (no RecordedEvent per event), the payload is read
as a BLOB (no UTF-8 decode into a str that msgspec would only encode back), each event is
decoded once by the codec's prebuilt decoder, and the cyclic garbage collector is paused for a
whole fold (`no_gc`): a fold allocates millions of objects that live on, and every generation-2
collection would rescan all of them, for nothing (the fold builds no reference cycles).
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import io
import multiprocessing
import os
import pickle
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar, Union, cast

import msgspec

from dcp_events.codec import Codec, default_codec
from dcp_events.errors import DcpError, DecodeError
from dcp_events.event import Event
from dcp_events.store import EventStore
from dcp_projections.errors import InvariantError
from dcp_projections.fold import apply
from dcp_projections.state import State

# (seq, type, schema_version, payload, recorded_at_us): what a fold needs of a stored event.
Row = tuple[int, str, int, Any, int]
ROW_COLUMNS = "seq, type, schema_version, CAST(payload AS BLOB), recorded_at_us"
BATCH_SIZE = 20_000  # events per read: amortises the query, bounds the memory
MAX_READ = 100_000  # the most events one read_all returns (the stores' MAX_READ_LIMIT)
# Called with (seq, event, recorded_at_us) for each decoded event that carries postings,
# before it is folded (a rebuild's posting rows, verify's postings check).
OnMoney = Callable[[int, Any, int], None]


class FoldFault(Exception):
    """The event at `seq` cannot be folded: it does not decode (`check` "decode") or breaks a
    money rule (`check` "invariant"); a caller's `on_event` may raise its own checks."""

    def __init__(self, seq: int, check: str, detail: str, error: DcpError | None = None) -> None:
        super().__init__(f"seq {seq}: {check}: {detail}")
        self.seq, self.check, self.detail = seq, check, detail
        # The domain's own error (DecodeError, InvariantError) for callers that raise it on.
        self.error: DcpError = error if error is not None else InvariantError(str(self))


_FAST: dict[int, tuple[Codec, Callable[[Any], Event]]] = {}


def _fast_decoder(codec: Codec) -> Callable[[Any], Event]:
    """A decoder over the union of `codec`'s event types, built once per codec."""
    hit = _FAST.get(id(codec))
    if hit is None or hit[0] is not codec:
        union: Any = Union[tuple(codec.types.values())]  # noqa: UP007 - built at run time
        hit = _FAST[id(codec)] = (codec, msgspec.json.Decoder(union).decode)
    return hit[1]


class Untracked(set[tuple[str, str]]):
    """The `touched` set a fold of the log folds into: it keeps nothing. The folds note each
    entity they change (`state.touched`) for the service's write-back; a fold of the log
    drops the notes anyway, so taking them costs a set insertion (and its growth) per note for
    nothing. `add` is a builtin that takes any one argument and does nothing with it."""

    add = staticmethod(id)  # type: ignore[assignment]


def fold_rows(
    state: State | None,
    rows: Sequence[Row],
    codec: Codec,
    on_money: OnMoney | None = None,
) -> None:
    """Decode and fold one batch of rows into `state`, in order; raises FoldFault at the
    first event that does not decode or breaks a money rule (the events before it are
    folded). The fold's write-back hints (`state.touched`) are not taken (and what was in it
    is dropped): whoever writes rows computes them itself. With `state` None the events are
    only decoded and shown to `on_money` (`dcp audit verify --no-invariants`).

    The hot path decodes a payload at its type's current schema version with the codec's
    prebuilt decoder directly (0.76 us an event here, against 0.94 us through
    `decode_payload`'s checks); anything else (an old version to upcast, an unknown type, a
    payload that does not decode) goes through `Codec.decode_payload`, which says why.
    """
    decode_fast, decode = _fast_decoder(codec), codec.decode_payload
    # One look-up per row: the type's class, its current version and whether it carries
    # postings (by type, not getattr(event, "postings"): most events have no such field, and
    # a missing attribute costs an exception raised and caught inside getattr).
    kinds = _kinds(codec, on_money is not None)
    if state is None:
        _fold_into(None, _no_fold, rows, kinds, decode_fast, decode, on_money)
        return
    touched, state.touched = state.touched, Untracked()
    try:
        _fold_into(state, apply, rows, kinds, decode_fast, decode, on_money)
    finally:
        state.touched = touched
        touched.clear()


_Kinds = dict[str, tuple[type, int, bool]]
_KINDS: dict[tuple[int, bool], tuple[Codec, _Kinds]] = {}


def _kinds(codec: Codec, money: bool) -> _Kinds:
    """type tag -> (class, current schema version, carries postings and `money` asked)."""
    hit = _KINDS.get((id(codec), money))
    if hit is None or hit[0] is not codec:
        table = {
            t: (cls, cls.schema_version, money and "postings" in cls.__struct_fields__)
            for t, cls in codec.types.items()
        }
        hit = _KINDS[(id(codec), money)] = (codec, table)
    return hit[1]


def _fold_into(
    state: State | None,
    fold: Callable[[Any, int, Event], object],
    rows: Sequence[Row],
    kinds: _Kinds,
    decode_fast: Callable[[Any], Event],
    decode: Callable[[str, int, Any], Event],
    on_money: OnMoney | None,
) -> None:
    for seq, type_, version, payload, at_us in rows:
        kind = kinds.get(type_)
        try:
            if kind is not None and version == kind[1]:
                event = decode_fast(payload)
                if type(event) is not kind[0]:
                    event = decode(type_, version, payload)  # raises: the tag differs
            else:
                event = decode(type_, version, payload)
        except (DecodeError, msgspec.ValidationError, msgspec.DecodeError):
            try:
                event = decode(type_, version, payload)
            except DecodeError as e:
                raise FoldFault(seq, "decode", str(e), e) from None
        if kind is not None and kind[2] and cast(Any, event).postings:
            on_money(seq, event, at_us)  # type: ignore[misc]  # kind[2]: on_money is set
        try:
            fold(state, seq, event)
        except InvariantError as e:
            raise FoldFault(seq, "invariant", str(e), e) from None


def _no_fold(state: Any, seq: int, event: Event) -> None:
    pass


def fold_batches(
    state: State | None,
    batches: Iterable[Sequence[Row]],
    codec: Codec | None = None,
    on_money: OnMoney | None = None,
    after_batch: Callable[[Sequence[Row]], bool] | None = None,
) -> State | None:
    """Fold every batch into `state` (None: decode only) and return it. `after_batch`,
    called after each batch, may return True to stop there. Raises FoldFault (see `fold_rows`)."""
    codec = codec or default_codec()
    for rows in batches:
        fold_rows(state, rows, codec, on_money)
        if after_batch is not None and after_batch(rows):
            break
    return state


def sqlite_batches(
    conn: sqlite3.Connection,
    until_seq: int | None = None,
    after_seq: int = 0,
    batch_size: int = BATCH_SIZE,
    columns: str = ROW_COLUMNS,
) -> Generator[list[tuple[Any, ...]], None, None]:
    """Batches of rows of `columns` (a fixed list starting with `seq`; by default a fold's
    five) for events after `after_seq` up to `until_seq` (default: the head), in order."""
    last = until_seq if until_seq is not None else 2**62
    query = f"SELECT {columns} FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
    while after_seq < last:
        rows = conn.execute(query, (after_seq, last, batch_size)).fetchall()
        if not rows:
            return
        after_seq = rows[-1][0]
        yield rows


PIPE_MIN_EVENTS = 50_000  # below this a reader process costs more than it saves
_ROWS = msgspec.msgpack.Decoder(list[tuple[int, str, int, bytes, int]])


def piped_batches(
    conn: sqlite3.Connection,
    path: str,
    until_seq: int,
    after_seq: int = 0,
    batch_size: int = BATCH_SIZE,
) -> Generator[list[Row], None, None]:
    """`sqlite_batches(conn, until_seq, after_seq, batch_size)` of the log file at `path`,
    read by a second process on its own read-only connection and handed over as one msgpack
    message a batch, so this process, the fold's, does not pay for the read.

    SQLite's read is about a fifth of a fold's CPU time (1.2-1.5 us an event for the five
    columns: the b-tree walk and a Python object per column); decoding the handed-over batch
    costs a third of that. The pipe holds a batch or two, so memory stays bounded and the
    reader runs at most that far ahead. The events up to `until_seq` never change
    (append-only), so the reader's snapshot holds the same ones as `conn`'s. Where no second
    process can run, or it fails, the rest is read here through `conn`: only slower. The
    reader is forked where that is safe (`process_context`).
    """
    yield from handed_over(
        _read_file,
        (path, until_seq, after_seq, batch_size),
        lambda after: sqlite_batches(conn, until_seq, max(after, after_seq), batch_size),
        [],
    )


def _read_file(
    path: str, until_seq: int, after_seq: int, batch_size: int
) -> Generator[list[tuple[Any, ...]], None, None]:
    """piped_batches' reader: the batches of the file at `path`, on a connection of its own."""
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        yield from sqlite_batches(conn, until_seq, after_seq, batch_size)
    finally:
        conn.close()


R = TypeVar("R")
Paced = Callable[[float, float, int], None]  # (busy_s, waited_s, events): see handed_over
# Makes the batches in the helper process (its arguments first); what it returns comes back.
Produce = Callable[..., Generator[list[Any], None, R]]


def handed_over(
    produce: Produce[R],
    args: tuple[Any, ...],
    resume: Callable[[int], Generator[list[Row], None, R]],
    result: list[R],
    paced: Paced | None = None,
) -> Generator[list[Row], None, None]:
    """The batches of rows that `produce(*args)` makes in a helper process (forked where that
    is safe: `process_context`), each handed over as one msgpack message; what `produce`
    returns is appended to `result` once the batches are all in. `produce` must yield
    batches of plain rows (ints, strs, bytes) in sequence order, none empty.

    Where no helper process can start, or it dies before it is done (or cannot send what it
    returned), `resume(last_seq)` makes the batches after the last one handed over here (and
    returns the result): only slower. Ending the generator early ends the helper.

    `paced(busy_s, waited_s, events)`, where given, hears of each wait for a batch that was
    not there yet when the consumer asked for it: how long the consumer had been busy with
    the batch before (`events` of them) and how long it then waited (the helper is the
    slower of the two by that much).
    """
    ctx = process_context()
    try:
        recv, send = ctx.Pipe(duplex=False)
        _widen(recv)
        helper = ctx.Process(  # type: ignore[attr-defined]
            target=_hand_over, args=(produce, args, send), daemon=True
        )
        helper.start()
        send.close()
    except OSError:
        result.append((yield from resume(0)))
        return
    inbox = io.FileIO(recv.fileno(), "rb", closefd=False)
    buffer = bytearray()
    last_seq = 0
    busy_s, events = 0.0, 0
    try:
        while True:
            if paced is not None and events and not recv.poll():
                waiting_since = time.perf_counter()
                recv.poll(None)
                paced(busy_s, time.perf_counter() - waiting_since, events)
            try:
                size = int.from_bytes(_read_exactly(inbox, bytearray(8)), "little")
                if size == 0:  # the batches are done: what produce returned follows
                    size = int.from_bytes(_read_exactly(inbox, bytearray(8)), "little")
                    result.append(pickle.loads(_read_exactly(inbox, bytearray(size))))
                    return
                if len(buffer) < size:
                    buffer = bytearray(size)
                blob = _read_exactly(inbox, memoryview(buffer)[:size])
            except (EOFError, OSError):  # the helper died: make the rest here
                result.append((yield from resume(last_seq)))
                return
            rows = cast(list[Row], _ROWS.decode(blob))
            last_seq, events = rows[-1][0], len(rows)
            handed = time.perf_counter()
            yield rows
            busy_s = time.perf_counter() - handed
    finally:
        recv.close()
        if helper.is_alive():
            helper.terminate()
        helper.join()


def _hand_over(produce: Produce[Any], args: tuple[Any, ...], send: Connection) -> None:
    """The helper process: every batch as one msgpack message after its length (8 bytes,
    little-endian), then a length of 0 and what `produce` returned, pickled, after its
    length."""
    try:
        encode = msgspec.msgpack.Encoder().encode
        fd = send.fileno()
        batches = produce(*args)
        while True:
            try:
                rows = next(batches)
            except StopIteration as done:
                returned = pickle.dumps(done.value)
                break
            blob = encode(rows)
            _write_all(fd, len(blob).to_bytes(8, "little"))
            _write_all(fd, blob)
        _write_all(fd, bytes(8) + len(returned).to_bytes(8, "little") + returned)
    except Exception:
        # The fold stopped early (a fault: nobody reads any more), or the file or a row
        # cannot be read (the fold makes the rest through its own connection and meets the
        # same error, reported there).
        pass
    finally:
        send.close()


def process_context() -> multiprocessing.context.BaseContext:
    """How to start a helper process (a reader, an audit's second pass): forked where that is
    safe, else spawned.

    A forked child starts in about a millisecond with every module already imported; a
    spawned one starts a fresh interpreter and imports what it runs (0.3-0.5 s of CPU here,
    more than a 100k-event verification's whole fold on an idle machine). Forking is safe
    on Linux where this process runs one thread (no lock another thread holds is copied,
    locked, into the child; macOS' system libraries are not fork-safe, which is why Python
    spawns there by default); the child opens its own connection and leaves every inherited
    one alone. Anywhere else the helper is spawned: nothing of this process's state is shared.
    """
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _read_exactly(inbox: io.FileIO, into: bytearray | memoryview) -> bytearray | memoryview:
    """Fill `into` from the pipe (straight into it: no buffer per read); EOFError if the
    writer closed it first."""
    view, got = memoryview(into), 0
    while got < len(view):
        n = inbox.readinto(view[got:])
        if not n:
            raise EOFError("the reader process ended")
        got += n
    return into


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _widen(pipe: Connection) -> None:
    """Let the pipe hold a megabyte where the system allows it (Linux: 64 KiB by default):
    a batch of several megabytes then crosses in a few reads, not a hundred."""
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)


async def store_batches(
    store: EventStore,
    after_seq: int = 0,
    until_seq: int | None = None,
    batch_size: int = BATCH_SIZE,
    versions: dict[str, int] | None = None,
) -> AsyncIterator[list[Row]]:
    """Batches of rows for events after `after_seq` up to `until_seq` (default: the head as
    reading goes), read through the store interface. `versions`, when given, gets each
    stream's last version read (the service's expected versions for its next appends).

    A read shorter than asked ends it (the head was reached), so catching up with a log
    nobody else appended to costs one round trip."""
    last = until_seq if until_seq is not None else 2**62
    while after_seq < last:
        n = min(batch_size, last - after_seq, MAX_READ)
        records = await store.read_all(after_seq, n)
        if not records:
            return
        if versions is not None:
            for r in records:
                versions[r.stream_id] = r.stream_version
        after_seq = records[-1].seq
        yield [(r.seq, r.type, r.schema_version, r.payload, r.recorded_at_us) for r in records]
        if len(records) < n:
            return


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while folding a whole log (see the module's
    docstring); it resumes, as it was, afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
