"""replay: the log refolded equals the stored read models; differences are named."""

import json
import sqlite3

import pytest

from dcp_app.readmodel import rebuild
from dcp_audit._log import open_readonly
from dcp_audit.cli import main, parse_time_us
from dcp_audit.replay import replay

from ._logs import T0_US, first_seq_of_type, writable


@pytest.fixture
def built(store_log_path):
    """The log with its read models written by the domain's rebuild."""
    rebuild(store_log_path)
    return store_log_path


def run_replay(path, **kw):
    conn = open_readonly(path)
    try:
        return replay(conn, **kw)
    finally:
        conn.close()


def stored_balances(path):
    conn = sqlite3.connect(path)
    return dict(conn.execute("SELECT account_id, balance_halala FROM accounts").fetchall())


@pytest.mark.parametrize("parallel", [False, True])
def test_replay_matches_rebuilt_read_models(built, parallel):
    """At the head every table matches and the balances are the stored ones."""
    report = run_replay(built, parallel=parallel)
    assert report.fault is None
    assert report.differences == []
    assert report.seq == report.head_seq == report.events
    assert report.balances == stored_balances(built)
    assert report.sum_halala == 0
    assert any(c.startswith("jobs: ") for c in report.compared)


def test_replay_names_a_changed_balance(built):
    """A read-model balance changed behind the log's back is reported, with both values."""
    conn = writable(built)
    conn.execute(
        "UPDATE accounts SET balance_halala = balance_halala + 100 WHERE account_id = ?",
        ("renter:r1:available",),
    )
    conn.close()
    report = run_replay(built)
    assert report.differences_total == 1
    d = report.differences[0]
    assert (d.table, d.key) == ("accounts", "renter:r1:available")
    assert "balance_halala: stored" in d.detail


@pytest.mark.parametrize("parallel", [False, True])
def test_replay_names_missing_and_extra_rows(built, parallel):
    """A deleted job row and a forged posting row are both reported, whether the postings
    are compared in this process or a second one."""
    conn = writable(built)
    conn.execute("DELETE FROM jobs WHERE job_id = 'j0-1'")
    conn.execute("INSERT INTO postings VALUES (2, 7, 'renter:r0:available', 5, 'forged', NULL, 0)")
    conn.close()
    report = run_replay(built, parallel=parallel)
    found = {(d.table, d.key, d.detail) for d in report.differences}
    assert report.differences_total == 2
    assert ("jobs", "j0-1", "missing from the stored table") in found
    assert ("postings", "seq 2 #7", "stored, but no event carries it") in found


def test_replay_lagging_read_models(store_log_path):
    """A log whose read models were never written differs: projection_state and every row."""
    report = run_replay(store_log_path)
    assert report.differences_total > 0
    assert report.differences[0].table == "projection_state"


def test_replay_until_seq(built):
    """At an earlier point, balances are the fold's at that point and the stored rows that
    have not changed since compare equal."""
    conn = sqlite3.connect(built)
    n = first_seq_of_type(conn, "job.completed", after=20)
    want = dict(
        conn.execute(
            "SELECT account_id, sum(amount_halala) FROM postings WHERE seq <= ? GROUP BY 1", (n,)
        ).fetchall()
    )
    report = run_replay(built, until_seq=n)
    assert report.fault is None and report.differences == []
    assert report.seq == report.events == n < report.head_seq
    assert report.balances == want
    assert any("not comparable" in c for c in report.compared)


@pytest.mark.parametrize("parallel", [False, True])
def test_replay_until_seq_catches_a_forged_early_posting(built, parallel):
    """A stored posting at or before the point is held to the rebuild."""
    conn = writable(built)
    seq = first_seq_of_type(conn, "renter.deposit_credited")
    conn.execute("UPDATE postings SET amount_halala = amount_halala + 1 WHERE seq = ?", (seq,))
    conn.close()
    report = run_replay(built, until_seq=seq + 3, parallel=parallel)
    tables = {d.table for d in report.differences}
    assert "postings" in tables and "accounts" in tables


def test_replay_as_of(built):
    """--as-of replays the events recorded by then."""
    conn = sqlite3.connect(built)
    rows = conn.execute("SELECT seq, recorded_at_us FROM events ORDER BY seq").fetchall()
    seq, at = rows[len(rows) // 2]
    later = [s for s, t in rows if t > at]
    expect = (later[0] - 1) if later else rows[-1][0]
    report = run_replay(built, as_of_us=at)
    assert report.seq == expect >= seq
    assert report.differences == []
    assert run_replay(built, as_of_us=rows[0][1] - 1).seq == 0


def test_replay_reports_a_fold_fault(built):
    """An event that breaks a money rule stops the fold; the fault names its sequence."""
    conn = writable(built)
    seq = first_seq_of_type(conn, "job.completed")
    payload = json.loads(conn.execute("SELECT payload FROM events WHERE seq = ?", (seq,))
                         .fetchone()[0])  # fmt: skip
    payload["postings"][0]["amount_halala"] += 1
    conn.execute("UPDATE events SET payload = ? WHERE seq = ?", (json.dumps(payload), seq))
    conn.close()
    report = run_replay(built)
    assert report.fault is not None and report.fault.seq == seq
    assert main(["replay", "--db", str(built)]) == 1


def test_cli_replay_text_and_json(built, capsys):
    """The CLI prints the balances; --json gives the same as one object; exit 0 when equal."""
    assert main(["replay", "--db", str(built)]) == 0
    text = capsys.readouterr().out
    assert "balances as of seq" in text and "renter:r0:available" in text
    assert "no differences" in text
    assert main(["replay", "--db", str(built), "--until-seq", "9", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["seq"] == 9 and out["sum_halala"] == 0


def test_cli_replay_refuses_both_points(built, capsys):
    """--until-seq and --as-of together are a usage error."""
    assert main(["replay", "--db", str(built), "--until-seq", "3", "--as-of", "0"]) == 2


def test_parse_time_us():
    """Times are RFC 3339 (UTC when no offset) or integer microseconds."""
    assert parse_time_us("1790000000000000") == 1_790_000_000_000_000
    assert parse_time_us("1970-01-01T00:00:01.000002Z") == 1_000_002
    assert parse_time_us("1970-01-01T03:00:01+03:00") == 1_000_000
    assert parse_time_us("1970-01-01 00:00:02") == 2_000_000
    assert parse_time_us("2026-09-21T14:13:20Z") == T0_US
