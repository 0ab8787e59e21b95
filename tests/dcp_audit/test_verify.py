"""verify: a sound log passes; each kind of tampering is caught at the right sequence."""

import json
import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from dcp_app import foldlog
from dcp_audit import verify as verify_module
from dcp_audit._log import open_readonly
from dcp_audit.cli import main
from dcp_audit.errors import AuditError, AuditFault
from dcp_audit.verify import BATCH_SIZE, verify
from dcp_events.chain import canonical_bytes, chain_hash

from ._logs import first_seq_of_type, rechain_from, rehash, row, writable


def run_verify(path: Path, **kw):
    conn = open_readonly(path)
    try:
        return verify(conn, **kw)
    finally:
        conn.close()


class _FixedShare(verify_module._Share):
    """The second process's part of the chain pass ends at `at` (a test's choice), whatever
    the pace."""

    at = 0

    def __init__(self, until_seq: int) -> None:
        super().__init__(until_seq)
        self.stop.value = min(self.at, until_seq)

    def paced(self, busy_s: float, waited_s: float, events: int) -> None:
        pass


def split_at(monkeypatch: pytest.MonkeyPatch, seq: int, start: str = "fork") -> None:
    """Make a parallel verify's second process read and chain-check events 1..seq only,
    and this one the rest; the second process started by `start` (forked by default, as the
    command forks it: a test process runs asyncio's helper threads, so it would spawn)."""
    monkeypatch.setattr(_FixedShare, "at", seq)
    monkeypatch.setattr(verify_module, "_Share", _FixedShare)
    monkeypatch.setattr(foldlog, "process_context", lambda: multiprocessing.get_context(start))


def fault_of(path: Path) -> AuditFault:
    """The fault verify reports, which must be the same with the chain pass in a second
    process as in this one, whatever the batch size, and wherever the second process's part
    of the chain ends and this one's begins (just before, at or after the fault). The second
    process is spawned first (the default where threads run, as here), then forked."""
    with pytest.raises(AuditFault) as info:
        run_verify(path, parallel=False)
    with pytest.raises(AuditFault) as info_parallel:
        run_verify(path, parallel=True)
    assert str(info_parallel.value) == str(info.value)
    # Small batches, so the fold can stop early at a fault the chain pass found first.
    with pytest.raises(AuditFault) as info_small:
        run_verify(path, parallel=True, batch_size=7)
    assert str(info_small.value) == str(info.value)
    seq = info.value.seq
    for at in (0, seq - 1, seq, seq + 1):
        with pytest.MonkeyPatch.context() as patch:
            split_at(patch, at)
            for batch_size in (BATCH_SIZE, 7):
                with pytest.raises(AuditFault) as info_split:
                    run_verify(path, parallel=True, batch_size=batch_size)
                assert str(info_split.value) == str(info.value), (at, batch_size)
    return info.value


@pytest.mark.parametrize("parallel", [False, True])
def test_sound_log_verifies(log_path, parallel):
    """A log built through the store passes every check; balances sum to zero."""
    summary = run_verify(log_path, parallel=parallel)
    conn = sqlite3.connect(log_path)
    head_seq, head_hash = conn.execute("SELECT max(seq), hash FROM events").fetchone()
    assert summary.events == summary.head_seq == head_seq
    assert summary.head_hash == head_hash
    assert summary.sum_halala == 0
    assert summary.money_events > 0
    assert summary.invariants_checked


@pytest.mark.parametrize("where", ["nothing", "first", "middle", "head"])
def test_sound_log_verifies_wherever_the_chain_pass_is_split(log_path, monkeypatch, where):
    """The second process's part of the read and chain pass ending anywhere (before the first
    event, after it, halfway, at the head) gives the summary of one pass here."""
    whole = run_verify(log_path, parallel=False)
    at = {"nothing": 0, "first": 1, "middle": whole.head_seq // 2, "head": whole.head_seq}
    split_at(monkeypatch, at[where])
    for batch_size in (BATCH_SIZE, 7):
        split = run_verify(log_path, parallel=True, batch_size=batch_size)
        assert (split.events, split.head_seq, split.head_hash) == (
            whole.events,
            whole.head_seq,
            whole.head_hash,
        )
        assert (split.money_events, split.balances) == (whole.money_events, whole.balances)


def test_share_moves_by_what_the_fold_could_have_checked_while_it_waited():
    """A wait as long as the fold of the batch before (so the chain is half as fast again:
    a checked and folded event costs this process 3 units of its 1-unit fold time per event
    plus the wait) moves the split forward by a third of a batch; no wait moves nothing."""
    share = verify_module._Share(1000)
    share.paced(busy_s=1.0, waited_s=1.0, events=300)
    assert share.stop.value == 900
    share.paced(busy_s=1.0, waited_s=0.0, events=300)
    assert share.stop.value == 900


def test_big_log_takes_the_second_process_by_default(store_log_path, monkeypatch):
    """A log of PARALLEL_MIN_EVENTS or more is read and chain-checked in a second process
    without being asked, and a tampered payload is still found there at its seq."""
    conn = writable(store_log_path)
    seq = first_seq_of_type(conn, "renter.deposit_credited")
    payload = str(row(conn, seq)["payload"])
    conn.execute("UPDATE events SET payload = ? WHERE seq = ?", (payload + " ", seq))
    head = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
    conn.close()
    splits: list[int] = []
    real_split = verify_module._split

    def counted(*args, **kwargs):
        splits.append(1)
        return real_split(*args, **kwargs)

    monkeypatch.setattr(verify_module, "_split", counted)
    monkeypatch.setattr(verify_module, "PARALLEL_MIN_EVENTS", head + 1)  # the log is small
    with pytest.raises(AuditFault) as small:
        run_verify(store_log_path)
    assert splits == []
    monkeypatch.setattr(verify_module, "PARALLEL_MIN_EVENTS", head)  # now it is big
    with pytest.raises(AuditFault) as big:
        run_verify(store_log_path)
    assert splits == [1]
    assert (
        (big.value.seq, big.value.check) == (small.value.seq, small.value.check) == (seq, "chain")
    )


def test_spawned_second_process_finds_the_same_fault(store_log_path, monkeypatch):
    """Where forking is not safe the second process is spawned (a fresh interpreter): the
    same rows, the same fault."""
    conn = writable(store_log_path)
    seq = first_seq_of_type(conn, "job.claimed")
    conn.execute("DELETE FROM events WHERE seq = ?", (seq,))
    conn.close()
    with pytest.raises(AuditFault) as here:
        run_verify(store_log_path, parallel=False)
    split_at(monkeypatch, seq // 2, "spawn")
    with pytest.raises(AuditFault) as spawned:
        run_verify(store_log_path, parallel=True, batch_size=7)
    assert str(spawned.value) == str(here.value)
    assert (spawned.value.seq, spawned.value.check) == (seq, "sequence")


def test_inlined_canonical_form_matches_chain_module(log_path):
    """The hot loop's inlined hashing agrees with dcp_events.chain on every stored event."""
    conn = sqlite3.connect(log_path)
    prev = "0" * 64
    for r in conn.execute(
        "SELECT seq, stream_id, stream_version, type, schema_version, recorded_at_us, actor,"
        " idempotency_key, payload, prev_hash, hash FROM events ORDER BY seq"
    ):
        canonical = canonical_bytes(*r[:8], r[8].encode())
        assert r[9] == prev
        assert chain_hash(prev, canonical) == r[10]
        prev = r[10]


def test_payload_byte_changed(log_path):
    """One byte of one payload changed: caught by the chain at that event."""
    conn = writable(log_path)
    seq = first_seq_of_type(conn, "renter.deposit_credited")
    payload = str(row(conn, seq)["payload"])
    i = payload.index('"reference":"') + len('"reference":"')
    tampered = payload[:i] + chr(ord(payload[i]) + 1) + payload[i + 1 :]
    conn.execute("UPDATE events SET payload = ? WHERE seq = ?", (tampered, seq))
    conn.close()
    f = fault_of(log_path)
    assert (f.seq, f.check) == (seq, "chain")
    assert "altered" in f.detail


def test_event_deleted(log_path):
    """A deleted event is named as missing at its own sequence."""
    conn = writable(log_path)
    seq = first_seq_of_type(conn, "job.claimed")
    conn.execute("DELETE FROM events WHERE seq = ?", (seq,))
    conn.close()
    f = fault_of(log_path)
    assert (f.seq, f.check) == (seq, "sequence")
    assert "missing" in f.detail


def test_two_events_swapped(log_path):
    """Two events swapped in place: caught by the chain at the first of them."""
    conn = writable(log_path)
    a = first_seq_of_type(conn, "job.started")
    b = a + 5
    ra, rb = row(conn, a), row(conn, b)
    cols = [c for c in ra if c != "seq"]
    # stream (stream_id, stream_version) is unique: park one row out of the way first.
    conn.execute("UPDATE events SET stream_version = -stream_version + 1000000 WHERE seq = ?", (a,))
    for target, src in ((b, ra), (a, rb)):
        sets = ", ".join(f"{c} = ?" for c in cols)
        conn.execute(f"UPDATE events SET {sets} WHERE seq = ?", [src[c] for c in cols] + [target])
    conn.close()
    f = fault_of(log_path)
    assert (f.seq, f.check) == (a, "chain")


def test_amount_changed_and_rehashed(log_path):
    """An amount changed and its own hash recomputed: the event passes alone, but its
    successor's prev_hash gives it away, and the fault names the altered event."""
    conn = writable(log_path)
    seq = first_seq_of_type(conn, "renter.deposit_credited")
    payload = json.loads(str(row(conn, seq)["payload"]))
    old = payload["amount_halala"]
    new = old * 10
    payload["amount_halala"] = new
    payload["postings"] = [
        {**p, "amount_halala": new if p["amount_halala"] == old else -new}
        for p in payload["postings"]
    ]
    conn.execute(
        "UPDATE events SET payload = ? WHERE seq = ?",
        (json.dumps(payload, separators=(",", ":")), seq),
    )
    rehash(conn, seq)
    conn.close()
    f = fault_of(log_path)
    assert (f.seq, f.check) == (seq, "chain")
    assert "recomputed" in f.detail


def test_unbalanced_postings_rechained(log_path):
    """A forger who rewrites every hash after an unbalanced posting is caught by the postings
    check at that event."""
    conn = writable(log_path)
    seq = first_seq_of_type(conn, "job.completed")
    payload = json.loads(str(row(conn, seq)["payload"]))
    payload["postings"][0]["amount_halala"] += 1
    conn.execute("UPDATE events SET payload = ? WHERE seq = ?", (json.dumps(payload), seq))
    rechain_from(conn, seq)
    conn.close()
    f = fault_of(log_path)
    assert (f.seq, f.check) == (seq, "postings")


def test_bad_schema_rechained(log_path):
    """A payload that no longer fits its schema is caught by the decode check."""
    conn = writable(log_path)
    seq = first_seq_of_type(conn, "job.submitted")
    payload = json.loads(str(row(conn, seq)["payload"]))
    payload["cost_halala"] = "lots"
    conn.execute("UPDATE events SET payload = ? WHERE seq = ?", (json.dumps(payload), seq))
    rechain_from(conn, seq)
    conn.close()
    f = fault_of(log_path)
    assert (f.seq, f.check) == (seq, "decode")


def test_balanced_theft_rechained(log_path):
    """Balanced postings that break a money rule (50 halala of the platform's fee moved to
    the provider) pass the postings check and are caught by the fold's invariants."""
    conn = writable(log_path)
    seq = conn.execute(
        "SELECT min(seq) FROM events WHERE type = 'job.completed'"
        " AND payload LIKE '%\"account\":\"provider:%' AND payload LIKE '%platform:revenue%'"
    ).fetchone()[0]
    payload = json.loads(str(row(conn, seq)["payload"]))
    for p in payload["postings"]:
        if p["account"].startswith("provider:"):
            p["amount_halala"] += 50
        if p["account"] == "platform:revenue":
            p["amount_halala"] -= 50
    conn.execute("UPDATE events SET payload = ? WHERE seq = ?", (json.dumps(payload), seq))
    rechain_from(conn, seq)
    conn.close()
    f = fault_of(log_path)
    assert (f.seq, f.check) == (seq, "invariant")


def test_gateway_payment_credited_twice_rechained(store_log_path):
    """A second renter's top-up credit rewritten to name the first one's gateway payment
    (balanced, re-chained) is caught by the fold: one payment id credits once, ever."""
    conn = writable(store_log_path)
    first, second = (
        r[0]
        for r in conn.execute(
            "SELECT seq FROM events WHERE type = 'renter.topup_paid' ORDER BY seq LIMIT 2"
        )
    )
    paid = json.loads(str(row(conn, first)["payload"]))["payment_id"]
    payload = json.loads(str(row(conn, second)["payload"]))
    payload["payment_id"] = paid
    conn.execute("UPDATE events SET payload = ? WHERE seq = ?", (json.dumps(payload), second))
    rechain_from(conn, second)
    conn.close()
    f = fault_of(store_log_path)
    assert (f.seq, f.check) == (second, "invariant")
    assert "credited twice" in str(f)


def test_rechained_forgery_fails_the_published_head(log_path, capsys):
    """A forgery rechained to the head passes the chain, but not a head hash published before."""
    published = run_verify(log_path).head_hash
    conn = writable(log_path)
    seq = first_seq_of_type(conn, "job.claimed")
    conn.execute("UPDATE events SET actor = 'someone else' WHERE seq = ?", (seq,))
    rechain_from(conn, seq)
    conn.close()
    assert run_verify(log_path).head_hash != published
    assert main(["verify", "--db", str(log_path), "--head-hash", published]) == 1
    assert "published head hash" in capsys.readouterr().out


def test_truncated_log_fails_the_published_head(log_path):
    """Events cut off the end leave a sound chain; the published head hash catches it."""
    published = run_verify(log_path).head_hash
    conn = writable(log_path)
    conn.execute("DELETE FROM events WHERE seq > (SELECT max(seq) - 3 FROM events)")
    conn.close()
    assert main(["verify", "--db", str(log_path), "--head-hash", published]) == 1
    assert main(["verify", "--db", str(log_path)]) == 0


def test_cli_verify_ok(log_path, capsys):
    """`dcp audit verify` exits 0 with events, head seq, head hash and the sum of balances."""
    assert main(["verify", "--db", str(log_path)]) == 0
    out = capsys.readouterr().out
    summary = run_verify(log_path)
    assert f"head seq:        {summary.head_seq}" in out
    assert summary.head_hash in out
    assert "sum of balances: 0 halala" in out


def test_cli_verify_json_fault(log_path, capsys):
    """With --json a fault is one JSON object naming its sequence and check; exit 1."""
    conn = writable(log_path)
    seq = first_seq_of_type(conn, "job.claimed")
    conn.execute("DELETE FROM events WHERE seq = ?", (seq,))
    conn.close()
    assert main(["verify", "--db", str(log_path), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out == {"ok": False, "seq": seq, "check": "sequence", "detail": out["detail"]}


def test_cli_missing_db(tmp_path, capsys):
    """A missing file is exit 2 and is never created."""
    path = tmp_path / "nope.db"
    assert main(["verify", "--db", str(path)]) == 2
    assert not path.exists()
    assert "no event log" in capsys.readouterr().err


def test_open_readonly_refuses_other_files(tmp_path):
    """A SQLite file without an events table is not an event log."""
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(AuditError, match="not a DCP event log"):
        open_readonly(path)


def test_empty_log_verifies(tmp_path):
    """An empty log is sound: zero events, genesis head, nothing to sum."""
    from dcp_events.sqlite_store import apply_schema, open_connection

    path = tmp_path / "empty.db"
    apply_schema(open_connection(path))
    summary = run_verify(path)
    assert (summary.events, summary.head_hash, summary.sum_halala) == (0, "0" * 64, 0)


class _NoProcesses:
    """A start method that can start nothing (a sandbox without fork/exec)."""

    def get_start_method(self) -> str:
        return "fork"

    def Pipe(self, *args, **kwargs):
        raise OSError("no processes in this sandbox")

    Process = Pipe


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_no_second_process_falls_back(store_log_path, monkeypatch, start):
    """Where no second process can start, verify and replay run both passes here."""
    import dcp_audit._beside as beside_module
    from dcp_audit.replay import replay

    def refuse(*args, **kwargs):
        raise OSError("no processes in this sandbox")

    if start == "fork":
        monkeypatch.setattr(foldlog, "process_context", _NoProcesses)
        monkeypatch.setattr(beside_module, "process_context", _NoProcesses)
    else:
        spawn = foldlog.multiprocessing.get_context("spawn")
        monkeypatch.setattr(foldlog, "process_context", _NoProcesses)
        monkeypatch.setattr(beside_module, "process_context", lambda: spawn)
        monkeypatch.setattr(beside_module, "ProcessPoolExecutor", refuse)
    assert run_verify(store_log_path, parallel=True).sum_halala == 0
    conn = open_readonly(store_log_path)
    try:
        report = replay(conn, parallel=True)
    finally:
        conn.close()
    assert report.fault is None
    assert report.compared[0].startswith("postings: ")


def test_contents_pass_stops_past_a_known_fault(store_log_path):
    """Told of a fault at seq 10, the contents pass stops at the first batch end past it."""
    from dcp_audit.verify import check_contents

    conn = open_readonly(store_log_path)
    try:
        result = check_contents(conn, 10**9, batch_size=4, stop_at=lambda: 10)
    finally:
        conn.close()
    assert (result.events, result.fault) == (12, None)
