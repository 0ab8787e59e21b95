"""Snapshots beside the log (dcp_app.snapshots): start-up from the newest that matches, the
tail folded after it, and every unusable file (corrupt, incompatible, ahead of the log, from
another log) ignored with a log line, so the state is always the one a fold from scratch
gives. Real SQLite files under tmp_path."""

import shutil
from pathlib import Path

import msgspec
import pytest
from structlog.testing import capture_logs

from dcp_app import snapshots
from dcp_app.service import LedgerService
from dcp_events.catalogue import ContainerSpec, GpuRequirements
from dcp_events.sqlite_store import SqliteEventStore
from dcp_projections.fold import check_all
from dcp_projections.rows import all_rows
from dcp_projections.state import GENESIS_PRICES, State
from tests.dcp_app.conftest import IMAGE, SETTINGS, Clock

FAR = (10**9, 10**9)  # never by itself: the tests say when


async def open_svc(path: Path, snap: Path | None, every=FAR) -> LedgerService:
    store = await SqliteEventStore.open(path)
    return await LedgerService.open(
        store, SETTINGS, clock=Clock(), snapshot_dir=snap, snapshot_every=every
    )


async def close(svc: LedgerService) -> None:
    await svc.close()
    await svc.store.close()


async def work(svc: LedgerService, jobs: int = 3) -> None:
    """Some of everything: a renter, a provider, jobs queued, leased and completed."""
    await svc.allow_image(IMAGE)
    r = (await svc.register_renter("R", "r@example.sa")).renter_id
    await svc.credit(r, 500_000, f"seed-{r}")
    p = (await svc.register_provider("P", "p@example.sa", "H100", 2, 80)).provider_id
    await svc.approve_provider(p)
    await svc.heartbeat(p)
    for i in range(jobs):
        await svc.submit_job(
            r, ContainerSpec(image=IMAGE), GpuRequirements(gpu_type="H100"), idempotency_key=f"{i}"
        )
    leases = await svc.claim_jobs(p)
    await svc.report_result(p, leases[0].job_id, 1, "completed", runtime_seconds=5)


def same_as_scratch(svc: LedgerService, scratch: LedgerService) -> None:
    check_all(svc.state)
    assert svc.state.seq == scratch.state.seq
    assert all_rows(svc.state) == all_rows(scratch.state)
    assert list(svc.state.queue) == list(scratch.state.queue)
    assert svc.state.submit_keys == scratch.state.submit_keys
    assert svc._versions == scratch._versions


@pytest.fixture
async def log_with_snapshot(tmp_path):
    """A log, a snapshot of it, then more events after the snapshot (the tail)."""
    db, snap = tmp_path / "dcp.db", tmp_path / "dcp.db.snapshots"
    svc = await open_svc(db, snap)
    await work(svc)
    path = await svc.snapshot_now()
    assert path is not None and path.exists()
    await work(svc, jobs=2)  # the tail
    await close(svc)
    return db, snap, path


async def test_start_up_loads_the_snapshot_and_folds_the_tail(log_with_snapshot):
    db, snap, path = log_with_snapshot
    svc, scratch = await open_svc(db, snap), await open_svc(db, None)
    try:
        assert svc.loaded_from == path
        assert 0 < snapshots.read_header(path.read_bytes())[0].seq < svc.state.seq
        same_as_scratch(svc, scratch)
        await work(svc)  # and it decides and appends on from there
        await close(scratch)
        scratch = await open_svc(db, None)
        same_as_scratch(svc, scratch)
    finally:
        await close(svc)
        await close(scratch)


async def load_ignoring(db: Path, snap: Path) -> tuple[LedgerService, list[dict]]:
    with capture_logs() as logs:
        svc = await open_svc(db, snap)
    ignored = [e for e in logs if e["event"] == "snapshot_ignored"]
    scratch = await open_svc(db, None)
    try:
        same_as_scratch(svc, scratch)
    finally:
        await close(scratch)
    return svc, ignored


async def test_a_corrupt_snapshot_is_ignored_and_an_older_one_used(log_with_snapshot):
    db, snap, older = log_with_snapshot
    svc = await open_svc(db, snap)
    newest = await svc.snapshot_now()
    await close(svc)
    assert newest is not None and newest != older
    data = bytearray(newest.read_bytes())
    data[-10] ^= 0xFF  # one flipped bit in the body
    newest.write_bytes(bytes(data))
    svc, ignored = await load_ignoring(db, snap)
    try:
        assert svc.loaded_from == older
        assert [(e["path"], e["reason"]) for e in ignored] == [(str(newest), "corrupt")]
    finally:
        await close(svc)
    newest.write_bytes(b"\x00\x00\x00\x05garbage")  # not even a header
    older.write_bytes(b"")
    svc, ignored = await load_ignoring(db, snap)
    try:
        assert svc.loaded_from is None  # folded from the start
        assert [e["reason"] for e in ignored] == ["corrupt", "corrupt"]
    finally:
        await close(svc)


async def test_a_snapshot_from_another_log_is_ignored(log_with_snapshot, tmp_path):
    """A snapshot at a sequence this log has, taken of another log: foreign."""
    db, snap, _ = log_with_snapshot
    other = await open_svc(tmp_path / "other.db", tmp_path / "other.snapshots")
    await other.allow_image("another/image:1")  # the first after the genesis differs
    made = await other.snapshot_now()
    await close(other)
    first = len(GENESIS_PRICES) + 1
    assert made is not None and snapshots.read_header(made.read_bytes())[0].seq == first
    shutil.rmtree(snap)
    snap.mkdir()
    shutil.copy(made, snap / made.name)
    svc, ignored = await load_ignoring(db, snap)
    try:
        assert svc.loaded_from is None and [e["reason"] for e in ignored] == ["foreign"]
    finally:
        await close(svc)


async def test_a_snapshot_ahead_of_the_log_is_ignored(log_with_snapshot, tmp_path):
    """A log restored from an older backup: the snapshot is beyond its head."""
    _, snap, _ = log_with_snapshot
    backup = tmp_path / "backup.db"
    svc = await open_svc(backup, None)
    await svc.allow_image(IMAGE)
    await close(svc)
    svc, ignored = await load_ignoring(backup, snap)
    try:
        assert svc.loaded_from is None and [e["reason"] for e in ignored] == ["ahead_of_log"]
    finally:
        await close(svc)


async def test_an_incompatible_snapshot_is_ignored(log_with_snapshot):
    """Another format version, or taken with other parameters: incompatible."""
    db, snap, path = log_with_snapshot
    header, body = snapshots.read_header(path.read_bytes())
    old = msgspec.msgpack.encode(msgspec.structs.replace(header, version=snapshots.VERSION + 1))
    path.write_bytes(snapshots._LEN.pack(len(old)) + old + bytes(body))
    svc, ignored = await load_ignoring(db, snap)
    try:
        assert svc.loaded_from is None and [e["reason"] for e in ignored] == ["incompatible"]
    finally:
        await close(svc)
    other = msgspec.msgpack.encode(msgspec.structs.replace(header, ended_cap=5))
    path.write_bytes(snapshots._LEN.pack(len(other)) + other + bytes(body))
    svc, ignored = await load_ignoring(db, snap)
    try:
        assert svc.loaded_from is None and [e["reason"] for e in ignored] == ["incompatible"]
    finally:
        await close(svc)


async def test_snapshots_are_written_every_n_events_and_old_ones_removed(tmp_path):
    db, snap = tmp_path / "dcp.db", tmp_path / "snaps"
    svc = await open_svc(db, snap, every=(5, 10**9))
    try:
        for _ in range(3):
            await work(svc, jobs=2)
        if svc._snapshot_task is not None:
            await svc._snapshot_task
        written = snapshots.files(snap)
        assert len(written) == snapshots.KEEP
        seqs = [snapshots.read_header(p.read_bytes())[0].seq for p in written]
        assert seqs == sorted(seqs, reverse=True) and seqs[0] > 5
    finally:
        await close(svc)
    svc = await open_svc(db, snap)
    try:
        assert svc.loaded_from == written[0]
    finally:
        await close(svc)


# Parts of a State a snapshot does not carry because they are derived from the rest or are the
# header's: the queue (from the queued jobs), the fold's scratch set.
DERIVED = {
    "seq",
    "ended_cap",
    "idempotency_window_us",
    "history_cap",
    "topups_cap",
    "cross_stream_checks",  # always on in a service's state, which is all a snapshot holds
    "queue",
    "touched",
    "_specs",  # the fold's table of shared container specs, filled again from the jobs
    "_needs",
}


def test_every_part_of_the_state_survives_a_snapshot():
    """A snapshot carries every attribute of the State, top-ups included: encode, decode and
    compare attribute by attribute. A part added to the State and forgotten here fails."""
    from dcp_projections import commands as c
    from tests.dcp_projections.test_topups import market, paid, run

    s = market(renters=2)
    run(s, c.RequestTopUp(topup_id="t1", renter_id="r0", amount_halala=5_000, idempotency_key="k"))
    run(s, c.RecordInvoice(topup_id="t1", invoice_id="inv1", checkout_url="https://pay/1"))
    run(s, paid("t1", "p1", 5_000, source="webhook"))
    run(s, c.RequestTopUp(topup_id="t2", renter_id="r1", amount_halala=700))
    loaded = snapshots.decode(snapshots.encode(s, {"renter-r0": 4}, "ab" * 32))
    parts = set(vars(s)) - DERIVED
    assert parts <= set(snapshots.Body.__struct_fields__), parts - set(
        snapshots.Body.__struct_fields__
    )
    for name in sorted(parts | {"seq"}):
        got, want = getattr(loaded.state, name), getattr(s, name)
        assert dict(got) == dict(want) if isinstance(want, dict) else got == want, name
    assert list(loaded.state.queue) == list(s.queue) and loaded.versions == {"renter-r0": 4}
    assert s.topups and s.topup_payments and s.topup_keys  # the case covers top-ups


async def test_a_decoded_snapshot_shares_equal_values_as_the_fold_did(log_with_snapshot):
    """msgpack decodes each occurrence of a string as a new one; the decode makes the copies
    one object again (a sixth of a big log's state was such copies), and the state it gives
    is the same (the start-up tests above compare it with a fold from scratch)."""
    _, _, path = log_with_snapshot
    st = snapshots.decode(path.read_bytes()).state
    balance_keys = {id(a) for a in st.balances}
    assert st.account_seq and all(id(a) in balance_keys for a in st.account_seq)
    ids = {id(r.renter_id) for r in st.renters.values()} | {
        id(p.provider_id) for p in st.providers.values()
    }
    assert len(st.jobs) >= 3
    for job in st.jobs.values():
        assert id(job.renter_id) in ids
        assert all(id(p) in ids for p in job.leases.values())
        assert job.provider_id is None or id(job.provider_id) in ids
    assert len({id(j.container_spec) for j in st.jobs.values()}) == 1  # all ContainerSpec(IMAGE)
    assert len({id(j.gpu_requirements) for j in st.jobs.values()}) == 1
    assert all(id(c.subject_id) in ids for c in st.credentials.values())
    assert st.deposit_refs and all(id(d.renter_id) in ids for d in st.deposit_refs.values())
    assert all(id(r) in ids for r, _ in st.submit_keys)
    job_ids = {id(j) for j in st.jobs}
    leased = [j for p in st.providers.values() for j in p.leased]
    assert leased and all(id(j) in job_ids for j in leased)
    assert st.ended and all(id(j) in job_ids for j in st.ended)


def test_a_snapshot_written_in_parts_is_the_framed_file(tmp_path):
    """The service writes the header and the body separately (no joined copy of the body):
    the file is byte for byte the framed snapshot, and it loads."""
    s = State(ended_cap=3, history_cap=2, topups_cap=2)
    body = snapshots.encode_body(s, {"renter-r0": 4})
    params = snapshots.params_of(s)
    header = snapshots.header_at(body, 7, "ab" * 32, params)
    path = snapshots.write(tmp_path, 7, header, body)
    assert path.read_bytes() == snapshots.frame_at(body, 7, "ab" * 32, params)
    assert snapshots.decode(path.read_bytes(), params).versions == {"renter-r0": 4}
