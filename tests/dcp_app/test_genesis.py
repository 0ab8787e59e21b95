"""Seed prices are a new ledger's first events, not code constants a replay depends on
(docs/ledger.md, "Seed prices"); logs from before still replay the same."""

import asyncio

from dcp_app.service import LedgerService
from dcp_events.catalogue import PriceSet
from dcp_events.codec import default_codec
from dcp_projections.state import GENESIS_PRICES, SEED_PRICES, gpu_key
from tests.dcp_app.conftest import SETTINGS, Clock, Env, open_store


async def test_a_new_ledger_starts_with_its_seed_prices_as_events(env: Env):
    """The first events of a new log set every genesis price; their rows carry those seqs."""
    first = await env.store.read_all(0, len(GENESIS_PRICES))
    decoded = [default_codec().decode(r) for r in first]
    assert all(isinstance(e, PriceSet) for e in decoded)
    assert [(e.gpu_model, e.halala_per_gpu_hour) for e in decoded] == list(GENESIS_PRICES)
    assert {r.actor for r in first} == {"genesis"}
    rows = {p["gpu_model"]: p["halala_per_gpu_hour"] for p in await env.queries.pricing()}
    assert rows == dict(GENESIS_PRICES)
    seqs = {gpu_key(m): p.last_seq for m, p in env.svc.state.pricing.items()}
    assert sorted(seqs.values()) == list(range(1, len(GENESIS_PRICES) + 1))
    assert await env.rebuild_equals_live()
    # Reopening a ledger that has its genesis adds none.
    head = (await env.store.head())[0]
    again = await LedgerService.open(env.store, SETTINGS, clock=env.clock)
    await again.close()
    assert (await env.store.head())[0] == head


async def test_a_log_from_before_genesis_events_replays_the_same(empty_db: str):
    """A log whose first events are not a genesis (written before seed prices were events)
    gets none on reopening, and folds with the frozen seed table as before."""
    store = await open_store(empty_db)
    try:
        old = await LedgerService.open(store, SETTINGS, clock=Clock(), genesis_prices=())
        r = await old.register_renter("Old", "old@example.sa")
        await old.credit(r["renter_id"], 1000, "old-1")
        await old.close()
        head = (await store.head())[0]
        reopened = await LedgerService.open(store, SETTINGS, clock=Clock())
        try:
            assert (await store.head())[0] == head
            events = await store.read_all(0, 100)
            assert not any(e.type == "platform.price_set" for e in events)
            prices = {p.gpu_model: (p.halala_per_gpu_hour, p.last_seq)
                      for p in reopened.state.pricing.values()}  # fmt: skip
            assert prices == {m: (p, 0) for m, p in SEED_PRICES}
        finally:
            await reopened.close()
    finally:
        await store.close()


def test_the_seed_table_of_old_logs_is_frozen():
    """Logs without genesis events fold from this table: editing it would change their
    replay (new ledgers' prices are GENESIS_PRICES, written into their logs)."""
    assert SEED_PRICES == (
        ("H200", 919),
        ("H100", 709),
        ("A100", 450),
        ("RTX 4090", 100),
        ("default", 33),
    )


async def test_nodes_opening_a_fresh_ledger_at_once_give_it_one_genesis(empty_db: str):
    """Three services opening the same empty log at once: one genesis, the others fold it."""
    stores = [await open_store(empty_db) for _ in range(3)]
    try:
        svcs = await asyncio.gather(
            *(LedgerService.open(s, SETTINGS, clock=Clock()) for s in stores)
        )
        for svc in svcs:
            assert svc.state.seq == len(GENESIS_PRICES)
            assert {p.last_seq for p in svc.state.pricing.values()} != {0}
            await svc.close()
        events = await stores[0].read_all(0, 1000)
        assert [e.type for e in events] == ["platform.price_set"] * len(GENESIS_PRICES)
    finally:
        for s in stores:
            await s.close()
