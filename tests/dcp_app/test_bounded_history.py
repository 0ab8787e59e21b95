"""Deposit references and decided withdrawals leave memory (docs/design.md, "Bounded
memory"): the service keeps the most recent ones and reads older ones back from the read
models before deciding, so a reference stays idempotent forever (the same terms credit
nothing and answer as before, other terms are 409) and a decided withdrawal answers as it did.
Real SQLite files and real PostgreSQL databases, the real read models answering."""

import itertools
import sqlite3
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

from dcp_app import snapshots
from dcp_app.queries import Queries
from dcp_app.read_sides import open_read_side
from dcp_app.readside import SCHEMA_ROW, tables_fingerprint
from dcp_app.service import LedgerService
from dcp_events.catalogue import ContainerSpec, GpuRequirements
from dcp_events.opener import is_postgres
from dcp_projections.errors import DomainError
from dcp_projections.fold import check_all
from dcp_projections.rows import POSTING_COLUMNS, TABLES
from tests.dcp_app.conftest import IMAGE, SETTINGS, Clock, open_store
from tests.pg import create_database, drop_database

IBAN = "SA0380000000608010167519"


class Ledger:
    def __init__(self, db: str, store: Any, svc: LedgerService, queries: Queries, clock: Clock):
        self.db, self.store, self.svc, self.queries, self.clock = db, store, svc, queries, clock

    async def restart(self, cap: int, snapshot_dir: Path | None = None) -> None:
        """Close the service and open it again on the same store and read models, keeping
        `cap` of history in memory, as a restart of `dcp serve` does."""
        await self.svc.close()
        self.svc = await LedgerService.open(
            self.store, SETTINGS, clock=self.clock, snapshot_dir=snapshot_dir,
            history=self.queries, history_in_memory=cap,
        )  # fmt: skip

    async def close(self) -> None:
        await self.svc.close()
        await self.queries.close()
        await self.store.close()


async def open_ledger(
    db: str, clock: Clock, cap: int | None, snapshot_dir: Path | None = None
) -> Ledger:
    """A ledger on `db`; `cap`: the deposit references and decided withdrawals it keeps in
    memory, reading older ones back from its read models (None: it keeps every one)."""
    store = await open_store(db)
    queries = await Queries.open(db)
    counter = itertools.count()
    bounded: dict[str, Any] = {} if cap is None else {"history": queries, "history_in_memory": cap}
    svc = await LedgerService.open(
        store,
        SETTINGS,
        clock=clock,
        ids=lambda prefix: f"{prefix}-{next(counter):04d}",
        snapshot_dir=snapshot_dir,
        **bounded,
    )
    return Ledger(db, store, svc, queries, clock)


@pytest.fixture(params=["sqlite", "postgres"])
def dbs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two fresh ledgers' names on one backend."""
    if request.param == "sqlite":
        yield str(tmp_path / "bounded.db"), str(tmp_path / "full.db")
        return
    server = request.getfixturevalue("pg_server_dsn")
    (a, url_a), (b, url_b) = create_database(server, "dcp_app"), create_database(server, "dcp_app")
    try:
        yield url_a, url_b
    finally:
        drop_database(server, a)
        drop_database(server, b)


async def outcome(call: Awaitable[Any]) -> Any:
    try:
        return await call
    except DomainError as e:
        return (type(e).__name__, e.status, str(e))


async def history(led: Ledger, credits: int = 6, withdrawals: int = 4) -> list[str]:
    """A renter credited `credits` times, another renter, and a provider that earned and had
    `withdrawals` withdrawals decided (completed and rejected in turn): their ids, then the
    withdrawals'."""
    svc = led.svc
    await svc.allow_image(IMAGE)
    rid = (await svc.register_renter("R", "r@example.sa")).renter_id
    other = (await svc.register_renter("O", "o@example.sa")).renter_id
    for i in range(credits):
        await svc.credit(rid, 10**7 + i, f"ref-{i}", "bank transfer")
    pid = (await svc.register_provider("P", "p@example.sa", "H100", 1, 80)).provider_id
    await svc.approve_provider(pid)
    await svc.set_price("H100", 100_000)
    await svc.heartbeat(pid)
    job = await svc.submit_job(
        rid, ContainerSpec(image=IMAGE, command=("train",)), GpuRequirements(gpu_type="H100"),
        max_duration_seconds=3600,
    )  # fmt: skip
    await svc.claim_jobs(pid)
    await svc.start_job(pid, job.job_id, 1)
    led.clock.advance(3600)
    await svc.report_result(pid, job.job_id, 1, "completed", exit_code=0, runtime_seconds=3600)
    ids = [rid, other, pid]
    for i in range(withdrawals):
        w = await svc.withdraw(pid, 1000 + i, IBAN)
        if i % 2:
            await svc.reject_withdrawal(w.withdrawal_id, "name mismatch")
        else:
            await svc.complete_withdrawal(w.withdrawal_id)
        ids.append(w.withdrawal_id)
    return ids


async def old_decisions(led: Ledger, ids: list[str]) -> list[Any]:
    """Every decision about an old reference and an old decided withdrawal."""
    svc, out = led.svc, []
    rid, other, _, completed, rejected = ids[:5]
    out.append(await outcome(svc.credit(rid, 10**7, "ref-0")))  # same terms: nothing credited
    out.append(await outcome(svc.credit(rid, 10**7 + 3, "ref-3", "again")))  # reason is no term
    out.append(await outcome(svc.credit(other, 10**7, "ref-0")))  # another renter: 409
    out.append(await outcome(svc.credit(rid, 10**7 + 1, "ref-0")))  # another amount: 409
    out.append(await outcome(svc.credit(other, 77, "ref-new")))  # a new reference credits
    out.append(await outcome(svc.credit(other, 77, "ref-new")))
    out.append(await outcome(svc.complete_withdrawal(completed)))  # the same view
    out.append(await outcome(svc.reject_withdrawal(completed)))  # completed: 409
    out.append(await outcome(svc.reject_withdrawal(rejected, "again")))  # rejected: the view
    out.append(await outcome(svc.complete_withdrawal(rejected)))
    out.append(await outcome(svc.complete_withdrawal("wd-nope")))  # never requested: 404
    recon = await svc.reconciliation()
    out.append(msgspec.structs.replace(recon, head_hash=""))  # recording times differ
    return out


def check_old_decisions(want: list[Any]) -> None:
    """The answers are the ones SPEC asks for (and not, say, all refusals)."""
    assert want[0].duplicate
    assert want[1].duplicate and want[1].available_halala == want[0].available_halala
    assert [want[i][:2] for i in (2, 3, 7, 9, 10)] == [
        ("Conflict", 409),
        ("Conflict", 409),
        ("InvalidTransition", 409),
        ("InvalidTransition", 409),
        ("NotFound", 404),
    ]
    assert not want[4].duplicate and want[4].available_halala == 77 and want[5].duplicate
    assert want[6].status == "completed" and want[8].status == "rejected"
    assert want[-1].invariants_ok and want[-1].sum_halala == 0


async def test_decisions_about_old_references_answer_as_before(dbs):
    """One ledger keeps no reference or decided withdrawal in memory, one keeps them all: fed
    the same commands, every answer is the same."""
    bounded = await open_ledger(dbs[0], Clock(), cap=0)
    full = await open_ledger(dbs[1], Clock(), cap=None)
    try:
        ids = await history(bounded)
        assert await history(full) == ids
        # The bounded ledger really let them go: nothing but pending work in memory.
        assert len(bounded.svc.state.deposit_refs) == 0 and bounded.svc.state.withdrawals == {}
        assert len(full.svc.state.deposit_refs) == 6 and len(full.svc.state.withdrawals) == 4
        got, want = await old_decisions(bounded, ids), await old_decisions(full, ids)
        assert got == want
        check_old_decisions(want)
        check_all(bounded.svc.state)
        assert bounded.svc.state.deposits_halala == full.svc.state.deposits_halala
        assert len(bounded.svc.state.deposit_refs) == 0 and bounded.svc.state.withdrawals == {}
    finally:
        await bounded.close()
        await full.close()


async def test_memory_stays_flat_while_credits_accumulate(tmp_path):
    """Credits and decided withdrawals past the cap: the maps stay at the cap (plus pending
    withdrawals), the books stay exact, and the read models hold every reference."""
    led = await open_ledger(str(tmp_path / "dcp.db"), Clock(), cap=5)
    svc = led.svc
    try:
        rid, _, pid = await history(led, credits=1, withdrawals=0)
        sizes = []
        for i in range(60):
            await svc.credit(rid, 100 + i, f"dep-{i}")
            if i % 5 == 0:
                w = await svc.withdraw(pid, 1000, IBAN)
                await svc.complete_withdrawal(w.withdrawal_id)
            sizes.append((len(svc.state.deposit_refs), len(svc.state.withdrawals)))
        assert max(s[0] for s in sizes) == 5 and sizes[-1] == (5, 5)
        assert max(s[1] for s in sizes) == 5
        check_all(svc.state)
        assert svc.state.deposits_halala == 10**7 + sum(100 + i for i in range(60))
        assert (await svc.reconciliation()).invariants_ok
        conn = sqlite3.connect(tmp_path / "dcp.db")
        try:
            assert conn.execute("SELECT count(*) FROM deposits").fetchone()[0] == 61
        finally:
            conn.close()
        # The oldest, long gone from memory, still credits nothing.
        again = await svc.credit(rid, 100, "dep-0")
        assert again.duplicate and len(svc.state.deposit_refs) == 5
    finally:
        await led.close()


async def test_old_references_answer_as_before_after_a_restart_from_a_snapshot(tmp_path):
    snap = tmp_path / "snapshots"
    full = await open_ledger(str(tmp_path / "full.db"), Clock(), cap=None)
    led = await open_ledger(str(tmp_path / "dcp.db"), Clock(), cap=2, snapshot_dir=snap)
    try:
        ids = await history(led)
        assert await history(full) == ids
        written = await led.svc.snapshot_now()
        assert written is not None
        before = led.svc.state
        await led.restart(2, snap)
        assert led.svc.loaded_from == written
        state = led.svc.state
        assert (
            list(state.deposit_refs) == list(before.deposit_refs) and len(state.deposit_refs) == 2
        )
        assert state.deposits_halala == before.deposits_halala and state.decided == before.decided
        got, want = await old_decisions(led, ids), await old_decisions(full, ids)
        assert got == want
        check_old_decisions(want)
    finally:
        await led.close()
        await full.close()


async def test_a_snapshot_of_the_old_version_is_ignored_and_the_log_folded(tmp_path, monkeypatch):
    snap = tmp_path / "snapshots"
    led = await open_ledger(str(tmp_path / "dcp.db"), Clock(), cap=2, snapshot_dir=snap)
    try:
        rid, other, *_ = await history(led)
        before = led.svc.state
        with monkeypatch.context() as m:
            m.setattr(snapshots, "VERSION", snapshots.VERSION - 1)
            assert await led.svc.snapshot_now() is not None
        await led.restart(2, snap)
        assert led.svc.loaded_from is None  # ignored: folded from the log
        state = led.svc.state
        assert state.balances == before.balances and state.deposits_halala == before.deposits_halala
        assert list(state.deposit_refs) == list(before.deposit_refs)
        assert (await led.svc.credit(rid, 10**7, "ref-0")).duplicate
        assert (await outcome(led.svc.credit(other, 10**7, "ref-0")))[0] == "Conflict"
    finally:
        await led.close()


def _fingerprint_without_deposits() -> int:
    """What `tables_fingerprint` was before the deposits table (the same formula)."""
    import hashlib

    old = {t: spec for t, spec in TABLES.items() if t != "deposits"}
    spec = repr((sorted(old.items()), POSTING_COLUMNS)).encode()
    return int.from_bytes(hashlib.sha256(spec).digest()[:7], "big")


async def _as_written_before_the_table(db: str) -> None:
    """Make `db`'s read models what the release before the deposits table left: no such table,
    and the fingerprint of the tables it had."""
    sql = ("DROP TABLE deposits", "UPDATE projection_state SET last_seq = ? WHERE name = ?")
    params = (_fingerprint_without_deposits(), SCHEMA_ROW)
    if is_postgres(db):
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
            await conn.execute(sql[0])
            await conn.execute(sql[1].replace("?", "%s"), params)
        return
    conn = sqlite3.connect(db)
    try:
        conn.execute(sql[0])
        conn.execute(sql[1], params)
        conn.commit()
    finally:
        conn.close()


async def test_a_ledger_written_before_the_deposits_table_gets_it_filled(dbs):
    """A database whose read models predate the table: its next catch-up creates and fills
    it from the log, so a reference credited back then is still a duplicate."""
    db = dbs[0]
    led = await open_ledger(db, Clock(), cap=0)
    try:
        rid, other, _ = await history(led, credits=3, withdrawals=0)
        available = (await led.svc.credit(rid, 10**7, "ref-0")).available_halala
    finally:
        await led.close()
    await _as_written_before_the_table(db)
    assert _fingerprint_without_deposits() != tables_fingerprint()
    side = await open_read_side(db)
    try:
        assert await side.behind() is not None
        report = await side.catch_up()
        assert report is not None and await side.behind() is None
    finally:
        await side.close()
    led = await open_ledger(db, Clock(), cap=0)
    try:
        again = await led.svc.credit(rid, 10**7 + 2, "ref-2")
        assert again.duplicate and again.available_halala == available
        assert (await outcome(led.svc.credit(other, 10**7, "ref-1")))[:2] == ("Conflict", 409)
        assert await led.queries.deposit_ref("ref-1") is not None
        assert (await led.svc.reconciliation()).invariants_ok
    finally:
        await led.close()
