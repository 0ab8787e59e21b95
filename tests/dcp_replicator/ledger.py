"""Logs for the replicator's tests and benchmark, written by the real ledger: scripts/simulate.py's
workload (`Sim`) driving `dcp_app.service.LedgerService` on a real SQLite file, so the events,
postings and read-model rows the replicator mirrors are the application's own.

    path = tmp_path / "dcp.db"
    await make_db(path, 3000)                 # a fresh log of at least 3,000 events, every
                                              # read-model table with rows
    async with await Ledger.open(path) as ledger:
        await ledger.grow(200)                # at least 200 more, while a test watches

Deterministic for a seed. A ledger reopened on an existing file folds its log and carries on
with the renters and providers it finds, its clock after the last thing that happened.
"""

from __future__ import annotations

import functools
import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec

from dcp_app.queries import Queries
from dcp_app.service import LedgerService
from dcp_app.topups import TopUps
from dcp_events.sqlite_store import SqliteEventStore
from dcp_projections import commands as cmd

SIMULATE = Path(__file__).resolve().parents[2] / "scripts" / "simulate.py"
START_US = 1_750_000_000 * 1_000_000


@functools.cache
def simulate() -> ModuleType:
    """scripts/simulate.py, imported once (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("dcp_simulate", SIMULATE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Ledger:
    """A LedgerService over a SQLite file with the simulator's workload to drive it."""

    def __init__(self, store: SqliteEventStore, owners: Queries, svc: LedgerService, sim: Any):
        self.store, self.owners, self.svc, self.sim = store, owners, svc, sim

    @classmethod
    async def open(cls, path: Path, seed: int = 7, renters: int = 20, providers: int = 6) -> Ledger:
        """The ledger at `path`; a new file gets `renters` funded renters and `providers`
        approved providers first."""
        sim_mod = simulate()
        rng = random.Random(seed)
        clock = [START_US]
        store = await SqliteEventStore.open(path)
        owners = await Queries.open(path)

        def ids(prefix: str) -> str:
            return f"{prefix}-{rng.getrandbits(64):016x}"

        # The simulator's settings, but any earnings may be withdrawn: its short jobs leave a
        # small fleet with less than the usual minimum, and every table should have rows.
        settings = msgspec.structs.replace(sim_mod.SETTINGS, min_withdrawal_halala=1)
        svc = await LedgerService.open(
            store, settings, clock=lambda: clock[0], ids=ids, job_owner=owners.job_owner
        )
        sim = sim_mod.Sim(svc, rng, clock)
        state = svc.state
        if not state.renters and not state.providers:  # a new ledger (its genesis prices only)
            await sim.setup(n_renters=renters, n_providers=providers)
        else:
            sim.renters = list(state.renters)
            sim.providers = list(state.providers)
            seen = [p.last_heartbeat_us or 0 for p in state.providers.values()]
            seen += [j.submitted_at_us for j in state.jobs.values()]
            clock[0] = max([START_US, *seen]) + 1_000_000
        return cls(store, owners, svc, sim)

    @property
    def head(self) -> int:
        return self.svc.state.seq

    async def grow(self, events: int, round_size: int = 32) -> int:
        """Run rounds of `round_size` commands until at least `events` more events are in the
        log; returns the head."""
        want = self.head + events
        self.sim.round_size = round_size
        while self.head < want:
            await self.sim.run(self.sim.sent + round_size)
        return self.head

    async def pay_in_and_out(self) -> None:
        """What the simulator leaves out, so every mirrored table has rows: gateway top-ups
        (one paid, one refunded, one still pending) and a withdrawal of half the earnings of
        each provider that has any, completed or rejected."""
        svc, topups = self.svc, TopUps(self.svc)
        renter = self.sim.renters[0]
        for i, ending in enumerate(["paid", "refunded", "pending"]):
            key = f"gateway-{self.head}-{i}"
            await topups.request(renter, 10_000, idempotency_key=key)
            topup_id = svc.state.topup_keys[(renter, key)]
            await topups.record_invoice(topup_id, f"inv-{key}", f"https://pay.example/{key}")
            if ending == "pending":
                continue
            paid = cmd.ObserveTopUp(
                topup_id=topup_id,
                invoice_id=f"inv-{key}",
                invoice_status="paid",
                payment_id=f"pay-{key}",
                payment_status="paid",
                amount_halala=10_000,
                currency="SAR",
            )
            await topups.observe(paid)
            if ending == "refunded":
                await topups.refund(topup_id)
                await topups.settle_refund(topup_id, succeeded=True)
        for i, pid in enumerate(self.sim.providers):
            earned = svc.state.earnings(pid)
            if earned >= 2:
                await self.sim.withdraw(pid, earned // 2)
                wid = self.sim.pending.pop()
                if i % 2:
                    await svc.reject_withdrawal(wid, "name mismatch")
                else:
                    await svc.complete_withdrawal(wid)

    async def close(self) -> None:
        try:
            await self.svc.close()
        finally:
            await self.owners.close()
            await self.store.close()

    async def __aenter__(self) -> Ledger:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def make_db(path: Path, events: int, seed: int = 7) -> int:
    """A fresh log at `path` with at least `events` events and their read models; returns
    its head seq."""
    async with await Ledger.open(path, seed) as ledger:
        await ledger.grow(events)
        await ledger.pay_in_and_out()
        return ledger.head
