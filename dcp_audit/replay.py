"""`dcp audit replay`: rebuild every projection in memory from the log and compare it with the
read models stored beside the log.

The fold is the domain's (`dcp_projections.fold.apply`) and the rows are the domain's
(`dcp_projections.rows`): the same functions the service uses to write the read models, run
here from an empty state over the log alone. What is compared depends on the point replayed to:

- the head (the default): every row of every read-model table must equal the rebuilt row, no
  row may be missing or extra, every posting row must match, and `projection_state` must say
  the read models are at the head;
- an earlier point N (`--until-seq N`, or `--as-of TIME`, the log as it stood then): the
  stored tables hold the state at the head, not at N, so a stored row can only be compared
  where it has not changed since: every stored row with `last_seq <= N` must equal the row
  rebuilt at N; every stored posting with `seq <= N` must equal the rebuilt one; and the
  balances summed from the stored postings up to N must equal the folded balances at N.
  Rows changed after N are counted and reported as not comparable.

Work split: this process folds and builds the rows; on a big log a second process reads the
log again to compare the postings batch by batch and digests every stored table, so a table
is read row by row here only if its digest differs (to name the differences). Reads are in
bounded batches, so memory holds the state and a batch, never the whole log.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from operator import itemgetter
from typing import Any

import msgspec

from dcp_app.foldlog import (
    ROW_COLUMNS,
    FoldFault,
    OnMoney,
    fold_batches,
    no_gc,
    piped_batches,
    sqlite_batches,
)
from dcp_app.readmodel import PROJECTION
from dcp_audit._beside import Beside, beside
from dcp_audit._log import file_of, head, open_readonly, seq_as_of
from dcp_audit.errors import AuditFault
from dcp_audit.verify import PARALLEL_MIN_EVENTS
from dcp_events.codec import Codec, default_codec
from dcp_events.errors import DecodeError
from dcp_projections.errors import InvariantError
from dcp_projections.fold import check_all
from dcp_projections.rows import POSTING_COLUMNS, TABLES, all_tuples, posting_rows
from dcp_projections.state import State

BATCH_SIZE = 20_000
MAX_DIFFERENCES = 100  # reported in full; the rest are only counted

_POSTINGS_SQL = (
    f"SELECT {', '.join(POSTING_COLUMNS)} FROM postings WHERE seq BETWEEN ? AND ? ORDER BY seq, idx"
)


@dataclass(frozen=True)
class Difference:
    """One way the stored read models differ from the rebuild."""

    table: str
    key: str
    detail: str

    def __str__(self) -> str:
        return f"{self.table}[{self.key}]: {self.detail}"


@dataclass
class Report:
    """What a replay found."""

    head_seq: int
    seq: int  # the point replayed to
    as_of_us: int | None
    stored_seq: int | None  # how far the stored read models say they are
    events: int = 0
    balances: dict[str, int] = field(default_factory=dict)
    compared: list[str] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    differences_total: int = 0
    fault: AuditFault | None = None
    elapsed_s: float = 0.0

    @property
    def sum_halala(self) -> int:
        return sum(self.balances.values())

    def differ(self, table: str, key: object, detail: str) -> None:
        self.differences_total += 1
        if len(self.differences) < MAX_DIFFERENCES:
            self.differences.append(Difference(table, str(key), detail))

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "ok": self.fault is None and self.differences_total == 0,
            "head_seq": self.head_seq,
            "seq": self.seq,
            "as_of_us": self.as_of_us,
            "stored_seq": self.stored_seq,
            "events": self.events,
            "sum_halala": self.sum_halala,
            "balances": dict(sorted(self.balances.items())),
            "compared": self.compared,
            "differences_total": self.differences_total,
            "differences": [vars(d) for d in self.differences],
            "fault": None
            if self.fault is None
            else {"seq": self.fault.seq, "check": self.fault.check, "detail": self.fault.detail},
            "elapsed_s": round(self.elapsed_s, 3),
        }


def replay(
    conn: sqlite3.Connection,
    *,
    until_seq: int | None = None,
    as_of_us: int | None = None,
    codec: Codec | None = None,
    batch_size: int = BATCH_SIZE,
    parallel: bool | None = None,
    also: Callable[[State, Report], None] | None = None,
) -> Report:
    """Fold the log up to a point (the head, `until_seq`, or the last event recorded by
    `as_of_us`), compare with the stored read models and return the report.

    A fold fault (an event that does not decode or breaks a money rule) ends the replay early
    and is set on `report.fault`; differences never stop it. `parallel` does the stored side
    (the postings comparison, and at the head the table digests) in a second process while
    this one folds; by default it does for a log on a file of at least PARALLEL_MIN_EVENTS
    events up to the point.
    """
    started = time.perf_counter()
    last = head(conn)
    head_seq = last[0] if last else 0
    if as_of_us is not None:
        seq = seq_as_of(conn, as_of_us)
    elif until_seq is not None:
        seq = max(0, min(until_seq, head_seq))
    else:
        seq = head_seq
    report = Report(head_seq=head_seq, seq=seq, as_of_us=as_of_us, stored_seq=_stored_seq(conn))
    if seq == head_seq and report.stored_seq != seq:
        report.differ(
            "projection_state",
            PROJECTION,
            f"the read models are at seq {report.stored_seq}, the log at {seq}",
        )
    codec = codec or default_codec()
    path = file_of(conn)
    if parallel is None:
        parallel = path is not None and seq >= PARALLEL_MIN_EVENTS
    state = State()
    stored_side: Beside[tuple[dict[int, str], dict[str, str] | None]] | None = None
    rebuilt_postings: PostingDigests | None = None
    with no_gc(), contextlib.ExitStack() as stack:
        if parallel:
            if path is None:
                raise ValueError("a parallel replay needs a log on a file")
            at_head = seq == head_seq
            stored_side = stack.enter_context(
                beside(
                    _stored_side_of_file,
                    path,
                    seq,
                    batch_size,
                    at_head,
                    inline=lambda: _stored_side(conn, seq, batch_size, at_head),
                )
            )
            rebuilt_postings = PostingDigests(batch_size)
        else:
            _merge_postings(report, compare_postings(conn, seq, codec, batch_size))
        try:
            _fold(
                conn,
                state,
                seq,
                codec,
                batch_size,
                path if parallel else None,
                rebuilt_postings.add if rebuilt_postings is not None else None,
            )
            check_all(state)
        except AuditFault as f:
            report.fault = f
        except InvariantError as e:
            report.fault = AuditFault(state.seq, "invariant", f"after the last event: {e}")
        report.events = state.seq
        report.balances = dict(state.balances)
        digests = None
        if stored_side is not None and rebuilt_postings is not None:
            stored_postings, digests = stored_side.result()
            folded = state.seq if report.fault is not None else seq
            _merge_postings(
                report,
                rebuilt_postings.compare(conn, stored_postings, seq, folded, codec, batch_size),
            )
        if report.fault is None:
            _compare_tables(conn, state, report, digests)
            if also is not None:  # a further comparison with the fold (a snapshot's)
                also(state, report)
    report.elapsed_s = time.perf_counter() - started
    return report


def _stored_seq(conn: sqlite3.Connection) -> int | None:
    try:
        row = conn.execute(
            "SELECT last_seq FROM projection_state WHERE name = ?", (PROJECTION,)
        ).fetchone()
    except sqlite3.OperationalError:  # a log without read-model tables
        return None
    return None if row is None else int(row[0])


def _fold(
    conn: sqlite3.Connection,
    state: State,
    seq: int,
    codec: Codec,
    batch_size: int,
    path: str | None = None,
    on_money: OnMoney | None = None,
) -> None:
    """Fold events 1..seq into `state` (dcp_app.foldlog's loop); raises AuditFault naming the
    event that fails. With `path` (the file behind `conn`) another process reads the events
    (dcp_app.foldlog.piped_batches). `on_money` sees each event that carries postings."""
    batches = (
        piped_batches(conn, path, seq, batch_size=batch_size)
        if path is not None
        else sqlite_batches(conn, seq, batch_size=batch_size)
    )
    try:
        fold_batches(state, batches, codec, on_money)
    except FoldFault as f:
        raise AuditFault(f.seq, f.check, f.detail) from None
    finally:
        batches.close()


@dataclass(frozen=True)
class PostingsResult:
    """The postings comparison: rows compared, the first differences and how many in all."""

    rows: int
    until_seq: int
    differences: list[Difference]
    total: int


def compare_postings(
    conn: sqlite3.Connection,
    until_seq: int,
    codec: Codec | None = None,
    batch_size: int = BATCH_SIZE,
    after_seq: int = 0,
) -> PostingsResult:
    """Compare the stored `postings` rows of events after_seq+1..until_seq with the rows the
    events carry, batch by batch. An event that does not decode is skipped here: the fold
    reports it."""
    codec = codec or default_codec()
    decode = codec.decode_payload
    collector = Report(head_seq=until_seq, seq=until_seq, as_of_us=None, stored_seq=None)
    n_postings = 0
    # Only money events carry postings, and a row decodes only to its own type: the others
    # (more than half of a log) need not be read or decoded here. Each stored range read
    # runs from the last money event compared to the next, so no stored posting goes unseen.
    money = [t for t, cls in codec.types.items() if "postings" in cls.__struct_fields__]
    query = (
        f"SELECT {ROW_COLUMNS} FROM events WHERE seq > ? AND seq <= ?"
        f" AND type IN ({', '.join('?' * len(money))}) ORDER BY seq LIMIT ?"
    )
    after = after_seq
    while True:
        rows = conn.execute(query, (after, until_seq, *money, batch_size)).fetchall()
        last = rows[-1][0] if rows else until_seq
        rebuilt: list[tuple[Any, ...]] = []
        for s, type_, schema_version, payload, recorded_at_us in rows:
            try:
                event = decode(type_, schema_version, payload)
            except DecodeError:
                continue
            if getattr(event, "postings", None):
                rebuilt.extend(posting_rows(s, event, recorded_at_us))
        stored = conn.execute(_POSTINGS_SQL, (after + 1, last)).fetchall()
        n_postings += len(rebuilt)
        if stored != rebuilt:
            _diff_postings(collector, stored, rebuilt)
        if not rows or last >= until_seq:
            break
        after = last
    return PostingsResult(n_postings, until_seq, collector.differences, collector.differences_total)


def _stored_side_of_file(
    path: str, until_seq: int, batch_size: int, digests: bool
) -> tuple[dict[int, str], dict[str, str] | None]:
    """The work that needs only the stored side, in a process of its own on its own
    read-only connection: the digests of the stored postings and (at the head) of the tables.

    Postings are written with their event and never change, so this snapshot agrees with the
    caller's up to `until_seq`. The tables can move on if the service writes meanwhile; a
    digest that no longer matches only sends the caller to compare that table row by row
    on its own snapshot.
    """
    conn = open_readonly(path)
    try:
        with no_gc():
            return _stored_side(conn, until_seq, batch_size, digests)
    finally:
        conn.close()


def _stored_side(
    conn: sqlite3.Connection, until_seq: int, batch_size: int, digests: bool
) -> tuple[dict[int, str], dict[str, str] | None]:
    postings = stored_posting_digests(conn, until_seq, batch_size)
    return postings, stored_table_digests(conn) if digests else None


def stored_posting_digests(conn: sqlite3.Connection, until_seq: int, span: int) -> dict[int, str]:
    """The digest (`_digest`) of the stored postings of each span of events: span k holds
    the events k*span+1 .. (k+1)*span (up to `until_seq`), in (seq, idx) order; a span
    without postings has none."""
    out = {}
    for lo in range(0, until_seq, span):
        rows = conn.execute(_POSTINGS_SQL, (lo + 1, min(lo + span, until_seq))).fetchall()
        if rows:
            out[lo // span] = _digest(rows)
    return out


class PostingDigests:
    """The posting rows of the events folded (`dcp_projections.rows.posting_rows`, as the
    fold shows each money event), digested span by span as `stored_posting_digests` digests
    the stored ones: the fold's process keeps one span's rows at a time, and only a span whose
    digests differ is compared row by row (`compare_postings`, which names each difference)."""

    def __init__(self, span: int) -> None:
        self.span = span
        self.rows = 0
        self.digests: dict[int, str] = {}
        self._k = 0
        self._open: list[tuple[Any, ...]] = []

    def add(self, seq: int, event: Any, recorded_at_us: int) -> None:
        k = (seq - 1) // self.span
        if k != self._k:
            self._close()
            self._k = k
        self._open.extend(posting_rows(seq, event, recorded_at_us))

    def _close(self) -> None:
        if self._open:
            self.digests[self._k] = _digest(self._open)
            self.rows += len(self._open)
            self._open = []

    def compare(
        self,
        conn: sqlite3.Connection,
        stored: dict[int, str],
        until_seq: int,
        folded_seq: int,
        codec: Codec,
        batch_size: int,
    ) -> PostingsResult:
        """The comparison with the stored digests, up to `until_seq`; spans past
        `folded_seq` (a fold that stopped at a fault) are compared row by row."""
        self._close()
        differences: list[Difference] = []
        total = 0
        for lo in range(0, until_seq, self.span):
            k, hi = lo // self.span, min(lo + self.span, until_seq)
            if hi <= folded_seq and self.digests.get(k) == stored.get(k):
                continue
            found = compare_postings(conn, hi, codec, batch_size, after_seq=lo)
            room = MAX_DIFFERENCES - len(differences)
            differences.extend(found.differences[: max(room, 0)])
            total += found.total
        return PostingsResult(self.rows, until_seq, differences, total)


def _merge_postings(report: Report, result: PostingsResult) -> None:
    report.compared.insert(
        0, f"postings: {result.rows} rows up to seq {result.until_seq}, all compared"
    )
    for d in result.differences:
        report.differ(d.table, d.key, d.detail)
    report.differences_total += result.total - len(result.differences)


def _diff_postings(
    report: Report, stored: list[tuple[Any, ...]], rebuilt: list[tuple[Any, ...]]
) -> None:
    by_key_stored = {(r[0], r[1]): r for r in stored}
    by_key_rebuilt = {(r[0], r[1]): r for r in rebuilt}
    for key in sorted(by_key_stored.keys() | by_key_rebuilt.keys()):
        a, b = by_key_stored.get(key), by_key_rebuilt.get(key)
        name = f"seq {key[0]} #{key[1]}"
        if a is None:
            report.differ("postings", name, "missing from the stored table")
        elif b is None:
            report.differ("postings", name, "stored, but no event carries it")
        elif a != b:
            report.differ("postings", name, _columns_differ(POSTING_COLUMNS, a, b))


def _columns_differ(columns: Iterable[str], stored: Iterable[Any], rebuilt: Iterable[Any]) -> str:
    parts = [
        f"{c}: stored {x!r}, rebuilt {y!r}"
        for c, x, y in zip(columns, stored, rebuilt, strict=True)
        if x != y
    ]
    return "; ".join(parts)


def _sorted_rows(rows: list[tuple[Any, ...]], key_i: int) -> list[tuple[Any, ...]]:
    rows.sort(key=itemgetter(key_i))
    return rows


def _digest(rows: list[tuple[Any, ...]]) -> str:
    """A fingerprint of a table: its rows as tuples in the table's column order, sorted by
    key (`_sorted_rows`), msgpack-encoded. Equal rows give equal digests; a digest that differs
    only sends the table to the row-by-row comparison (where 1 == True), so an encoding
    difference can cost time, never hide a difference."""
    return sha256(msgspec.msgpack.encode(rows)).hexdigest()


def stored_table_digests(conn: sqlite3.Connection) -> dict[str, str]:
    """The digest of every stored read-model table (see `_digest`)."""
    out = {}
    for table, (key_col, columns) in TABLES.items():
        rows = conn.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
        out[table] = _digest(_sorted_rows(rows, columns.index(key_col)))
    return out


def _compare_tables(
    conn: sqlite3.Connection,
    state: State,
    report: Report,
    stored_digests: dict[str, str] | None = None,
) -> None:
    """Compare every read-model table with the rebuild. At the head a table whose digest
    (computed beside the fold, in the second process) matches is equal as a whole; only a
    table that differs is read here row by row to name its differences."""
    at_head = report.seq == report.head_seq
    # The rows as tuples in column order: the values of the domain's row dicts
    # (dcp_projections.rows.all_tuples), what the stored tables give back.
    rebuilt_tables = all_tuples(state)
    for table, (key_col, columns) in TABLES.items():
        key_i = columns.index(key_col)
        rows = _sorted_rows(rebuilt_tables[table], key_i)
        if at_head and stored_digests is not None and stored_digests[table] == _digest(rows):
            report.compared.append(f"{table}: {len(rows)} rows, all compared")
            continue
        stored_rows = conn.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
        if at_head and _sorted_rows(stored_rows, key_i) == rows:
            report.compared.append(f"{table}: {len(rows)} rows, all compared")
            continue
        rebuilt = {r[key_i]: r for r in rows}
        seq_i = columns.index("last_seq")
        stored_n = compared = later = 0
        for row in stored_rows:
            stored_n += 1
            key = row[key_i]
            if not at_head and row[seq_i] > report.seq:
                later += 1  # changed after the point replayed to: not comparable
                rebuilt.pop(key, None)
                continue
            compared += 1
            want = rebuilt.pop(key, None)
            if want is None:
                report.differ(table, key, "stored, but not in the rebuild")
            elif row != want:
                report.differ(table, key, _columns_differ(columns, row, want))
        if at_head:
            for key in rebuilt:
                report.differ(table, key, "missing from the stored table")
            report.compared.append(f"{table}: {compared} rows, all compared")
        else:
            # A row rebuilt at N and absent now may have been deleted since (an image
            # removed): only stored rows unchanged since N can be held to the rebuild.
            report.compared.append(
                f"{table}: {compared} of {stored_n} stored rows unchanged since seq "
                f"{report.seq} compared; {later} changed or created after it, not comparable"
            )
    if not at_head:
        _compare_balances_at(conn, state, report)


def _compare_balances_at(conn: sqlite3.Connection, state: State, report: Report) -> None:
    """Balances at N from the stored postings alone must be the folded balances at N."""
    stored = dict(
        conn.execute(
            "SELECT account_id, sum(amount_halala) FROM postings WHERE seq <= ?"
            " GROUP BY account_id",
            (report.seq,),
        ).fetchall()
    )
    for account in sorted(stored.keys() | state.balances.keys()):
        a, b = stored.get(account, 0), state.balances.get(account, 0)
        if a != b:
            report.differ("accounts", account, f"balance at seq {report.seq}: stored postings "
                          f"sum to {a}, rebuilt {b}")  # fmt: skip
    report.compared.append(
        f"balances at seq {report.seq}: {len(stored)} accounts summed from the stored postings, "
        "all compared"
    )


def _rfc3339(us: int) -> str:
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    return dt.isoformat().replace("+00:00", "Z")


def render_text(report: Report) -> str:
    """The report for people: the point, the balances, what was compared, the differences."""
    lines: list[str] = []
    point = f"seq {report.seq}"
    if report.as_of_us is not None:
        point += f" (the log as it stood at {_rfc3339(report.as_of_us)})"
    lines.append(f"replayed {report.events} events to {point}; log head {report.head_seq}")
    if report.fault is not None:
        f = report.fault
        lines.append(f"FAULT at seq {f.seq}: {f.check}: {f.detail}")
    lines.append("")
    lines.append(f"balances as of seq {report.events} (halala):")
    width = max((len(a) for a in report.balances), default=10)
    for account, balance in sorted(report.balances.items()):
        lines.append(f"  {account:<{width}}  {balance:>16}")
    lines.append(f"  {'sum':<{width}}  {report.sum_halala:>16}")
    lines.append("")
    lines.append("compared with the stored read models:")
    lines.extend(f"  {c}" for c in report.compared)
    lines.append("")
    if report.differences_total:
        lines.append(f"{report.differences_total} differences:")
        lines.extend(f"  {d}" for d in report.differences)
        if report.differences_total > len(report.differences):
            lines.append(f"  ... and {report.differences_total - len(report.differences)} more")
    elif report.fault is None:
        lines.append("no differences")
    lines.append(f"took {report.elapsed_s:.2f} s")
    return "\n".join(lines) + "\n"
