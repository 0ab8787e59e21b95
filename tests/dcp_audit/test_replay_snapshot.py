"""replay --snapshot: a snapshot held to a fold of the log from scratch."""

import json
import shutil

import msgspec

from dcp_app import snapshots
from dcp_app.queries import Queries
from dcp_app.service import LedgerService
from dcp_audit.cli import main
from dcp_events.sqlite_store import SqliteEventStore


async def take_snapshot(path, snap_dir, ended_in_memory, history_in_memory=None):
    """Open the service on the log (ended jobs beyond the cap leave memory, and deposit
    references and decided withdrawals beyond theirs) and snapshot it."""
    store = await SqliteEventStore.open(path)
    queries = await Queries.open(path)
    bounded = {} if history_in_memory is None else {"history": queries}
    svc = await LedgerService.open(
        store, job_owner=queries.job_owner, ended_in_memory=ended_in_memory, snapshot_dir=snap_dir,
        history_in_memory=history_in_memory or 0, **bounded,
    )  # fmt: skip
    try:
        made = await svc.snapshot_now()
        ended = len(svc.state.ended)
        if history_in_memory is not None:
            assert len(svc.state.deposit_refs) == history_in_memory
    finally:
        await svc.close()
        await queries.close()
        await store.close()
    assert made is not None
    return made, ended


def replay_json(path, snap, capsys):
    capsys.readouterr()  # the service's log lines
    code = main(["replay", "--db", str(path), "--snapshot", str(snap), "--json"])
    return code, json.loads(capsys.readouterr().out)


async def test_a_true_snapshot_matches_the_fold(simulated_log, tmp_path, capsys):
    path = tmp_path / "dcp.db"
    shutil.copyfile(simulated_log, path)
    snap, ended = await take_snapshot(
        path, tmp_path / "snaps", ended_in_memory=20, history_in_memory=3
    )
    assert ended == 20  # the simulated log ended more jobs than that: some left memory
    code, report = replay_json(path, snap, capsys)
    assert code == 0 and report["ok"] is True
    assert any(c.startswith(f"snapshot {snap.name}") for c in report["compared"])


async def test_a_snapshot_that_differs_from_the_fold_is_named(simulated_log, tmp_path, capsys):
    """A snapshot whose body hash is right but whose state is not the log's: a difference
    per thing that differs, and exit status 1."""
    path = tmp_path / "dcp.db"
    shutil.copyfile(simulated_log, path)
    snap, _ = await take_snapshot(path, tmp_path / "snaps", ended_in_memory=20, history_in_memory=3)
    data = snap.read_bytes()
    header, _ = snapshots.read_header(data)
    loaded = snapshots.decode(data)
    account = sorted(loaded.state.balances)[0]
    loaded.state.balances[account] += 1
    reference, credit = next(iter(loaded.state.deposit_refs.items()))
    loaded.state.deposit_refs[reference] = msgspec.structs.replace(credit, amount_halala=1)
    _, _, queued = next(iter(loaded.state.queue))
    loaded.state.jobs[queued].attempt += 1
    snap.write_bytes(snapshots.encode(loaded.state, loaded.versions, header.head_hash))
    code, report = replay_json(path, snap, capsys)
    assert code == 1 and report["ok"] is False
    keys = {(d["table"], d["key"]) for d in report["differences"]}
    assert ("snapshot.balances", account) in keys and ("snapshot.jobs", queued) in keys
    assert ("snapshot.deposit_refs", reference) in keys


async def test_a_snapshot_of_another_log_is_refused(
    simulated_log, store_log_path, tmp_path, capsys
):
    path = tmp_path / "simulated.db"  # store_log_path is tmp_path / "dcp.db"
    shutil.copyfile(simulated_log, path)
    snap, _ = await take_snapshot(store_log_path, tmp_path / "snaps", ended_in_memory=20)
    code, report = replay_json(path, snap, capsys)
    assert code == 1
    assert [(d["table"], d["key"]) for d in report["differences"]] in (
        [("snapshot", "head_hash")],
        [("snapshot", "seq")],
    )
    data = bytearray(snap.read_bytes())
    data[2:6] = b"\xff\xff\xff\xff"  # the header's length: not a snapshot any more
    snap.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["replay", "--db", str(path), "--snapshot", str(snap)]) == 2
    assert "corrupt" in capsys.readouterr().err
