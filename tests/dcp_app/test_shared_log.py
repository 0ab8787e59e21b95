"""The service on a log shared with other processes: a store fault whose outcome is unknown,
and two services taking turns on one PostgreSQL log (several `dcp serve` nodes)."""

from __future__ import annotations

import asyncio

import pytest

from dcp_app.service import LedgerService
from dcp_app.views import JobView
from dcp_events.errors import StoreError
from dcp_projections.errors import InsufficientFunds

from .conftest import SETTINGS, Env, open_store


async def _submitted(env: Env) -> int:
    records = await env.store.read_all(0, 100_000)
    return sum(1 for r in records if r.type == "job.submitted")


async def test_a_batch_whose_commit_went_unheard_is_not_decided_again(env: Env, monkeypatch):
    """The append committed but the caller heard a fault (COMMIT cut off): the service must
    not decide the command again, which would submit a second job; the caller gets the
    StoreError (503) and may retry with an idempotency key."""
    rid = await env.renter()
    real = env.store.append_atomic

    async def commit_then_fail(*args, **kw):
        await real(*args, **kw)
        raise StoreError("connection lost during COMMIT")

    monkeypatch.setattr(env.store, "append_atomic", commit_then_fail)
    with pytest.raises(StoreError, match="COMMIT"):
        await env.submit(rid)
    monkeypatch.setattr(env.store, "append_atomic", real)
    assert await _submitted(env) == 1
    # Memory was folded again from the log: it holds the one job, and goes on deciding.
    cost = next(iter(env.svc.state.jobs.values())).cost_halala
    assert env.svc.state.held(rid) == cost
    await env.submit(rid)
    assert await _submitted(env) == 2 and env.svc.state.held(rid) == 2 * cost


async def test_two_services_on_one_postgresql_log_take_turns(postgres_env: Env, monkeypatch):
    """Two services (two nodes) on one PostgreSQL log, 60 concurrent submits through each
    against funds for 50: exactly 50 accepted, and no batch failed on a stale head (each
    decided in its turn, on the state after the other's batches)."""
    # Turns are the PostgreSQL store's (SQLite's counterpart: the second-writer tests).
    env = postgres_env
    rid = await env.renter(credit=0)
    probe = await env.renter()
    cost = (await env.submit(probe)).cost_halala
    await env.svc.credit(rid, 50 * cost, "exactly-50")
    other_store = await open_store(env.db)
    other = await LedgerService.open(other_store, SETTINGS, clock=env.clock)
    recovered: list[int] = []
    for svc in (env.svc, other):
        real = svc._recover

        async def spy(batch, error=None, real=real):  # type: ignore[no-untyped-def]
            recovered.append(len(batch))
            await real(batch, error)

        monkeypatch.setattr(svc, "_recover", spy)
    try:
        other_env = Env(env.path, other_store, other, env.clock, env.queries, env.db)
        outcomes = await asyncio.gather(
            *(e.submit(rid) for _ in range(60) for e in (env, other_env)),
            return_exceptions=True,
        )
        accepted = [o for o in outcomes if isinstance(o, JobView)]
        refused = [o for o in outcomes if isinstance(o, InsufficientFunds)]
        assert (len(accepted), len(refused)) == (50, 70), outcomes
        assert recovered == []
        await other.catch_up()
        await env.svc.catch_up()
        for svc in (env.svc, other):
            assert svc.state.available(rid) == 0 and svc.state.held(rid) == 50 * cost
    finally:
        await other.close()
        await other_store.close()
