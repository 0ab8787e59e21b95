"""The audit tools on a log written by the live service, read models and all."""

import pytest

from dcp_audit._log import open_readonly
from dcp_audit.cli import main
from dcp_audit.replay import replay
from dcp_audit.verify import verify

from ._logs import build_service_log


@pytest.fixture
async def service_log(tmp_path):
    path = tmp_path / "live.db"
    await build_service_log(path)
    return path


def test_live_log_verifies_and_replays_clean(service_log):
    """verify passes and the live read models equal the replay, row for row."""
    conn = open_readonly(service_log)
    try:
        summary = verify(conn)
        report = replay(conn)
    finally:
        conn.close()
    assert summary.sum_halala == 0 and summary.money_events > 10
    assert report.fault is None
    assert [str(d) for d in report.differences] == []
    assert report.stored_seq == report.head_seq == summary.head_seq
    assert (
        main(["replay", "--db", str(service_log), "--until-seq", str(summary.head_seq // 2)]) == 0
    )


def test_live_read_model_tampering_is_reported(service_log):
    """A job's stored settlement changed behind the log's back is named by replay."""
    from ._logs import writable

    conn = writable(service_log)
    job_id = conn.execute(
        "SELECT job_id FROM jobs WHERE status = 'completed' ORDER BY job_id LIMIT 1"
    ).fetchone()[0]
    conn.execute(
        "UPDATE jobs SET provider_earned_halala = provider_earned_halala + 1 WHERE job_id = ?",
        (job_id,),
    )
    conn.close()
    assert main(["replay", "--db", str(service_log)]) == 1
    conn = open_readonly(service_log)
    try:
        (d,) = replay(conn).differences
    finally:
        conn.close()
    assert (d.table, d.key) == ("jobs", job_id)
    assert d.detail.startswith("provider_earned_halala: stored ")
