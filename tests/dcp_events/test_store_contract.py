"""The contract every EventStore implementation keeps (run against each in conftest.store)."""

import asyncio
import random

import pytest

from dcp_events.chain import GENESIS_HASH, canonical_bytes, chain_hash
from dcp_events.errors import ConcurrencyError, StaleHeadError, StoreError
from dcp_events.store import AppendRequest

from .conftest import ev


async def test_append_assigns_sequence_and_versions(store):
    """Events get contiguous global sequences and per-stream versions from 1."""
    r1 = await store.append("a", 0, [ev(1), ev(2)])
    r2 = await store.append("b", 0, [ev(3)])
    r3 = await store.append("a", 2, [ev(4)])
    assert (r1.first_seq, r1.last_seq, r1.last_version) == (1, 2, 2)
    assert (r2.first_seq, r2.last_version) == (3, 1)
    assert (r3.first_seq, r3.last_version) == (4, 3)
    events = await store.read_all()
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert [(e.stream_id, e.stream_version) for e in events] == [
        ("a", 1),
        ("a", 2),
        ("b", 1),
        ("a", 3),
    ]


async def test_version_clash_raises_and_writes_nothing(store):
    """An append naming a stale version is refused with ConcurrencyError."""
    await store.append("a", 0, [ev()])
    with pytest.raises(ConcurrencyError) as info:
        await store.append("a", 0, [ev()])
    assert info.value.actual_version == 1
    assert len(await store.read_all()) == 1


async def test_expected_version_none_skips_the_check(store):
    """None as expected version appends at the end, whatever it is."""
    await store.append("a", None, [ev()])
    r = await store.append("a", None, [ev()])
    assert r.last_version == 2


async def test_idempotency_key_reuse_returns_first_result(store):
    """A reused key returns the first append's result and writes nothing."""
    first = await store.append("a", 0, [ev(1), ev(2)], idempotency_key="k1")
    again = await store.append("a", 2, [ev(3)], idempotency_key="k1")
    assert again.duplicate and not first.duplicate
    assert (again.first_seq, again.last_seq, again.last_version) == (1, 2, 2)
    assert len(await store.read_all()) == 2


async def test_concurrent_same_key_writes_once(store):
    """Many tasks racing with one idempotency key write exactly one event."""
    results = await asyncio.gather(
        *[store.append("a", None, [ev(i)], idempotency_key="same") for i in range(50)]
    )
    assert sum(not r.duplicate for r in results) == 1
    assert len(await store.read_all()) == 1


async def test_empty_append_and_empty_key_refused(store):
    """An append with no events, or with an empty idempotency key, is a StoreError."""
    with pytest.raises(StoreError):
        await store.append("a", 0, [])
    with pytest.raises(StoreError):
        await store.append("a", 0, [ev()], idempotency_key="")


async def test_read_stream_and_pagination(store):
    """read_stream returns one stream in version order; read_all pages by sequence."""
    for i in range(10):
        await store.append("s", i, [ev(i)])
        await store.append(f"other{i}", 0, [ev(i)])
    stream = await store.read_stream("s", from_version=4, limit=3)
    assert [e.stream_version for e in stream] == [4, 5, 6]
    page1 = await store.read_all(0, 7)
    page2 = await store.read_all(page1[-1].seq, 100)
    assert [e.seq for e in page1 + page2] == list(range(1, 21))


async def test_hash_chain_links_every_event(store):
    """Each event's hash is sha256(prev_hash || canonical) and prev_hash is the last hash."""
    await store.append("a", 0, [ev(1), ev(2)], idempotency_key="k")
    await store.append("b", 0, [ev(3)])
    prev = GENESIS_HASH
    for e in await store.read_all():
        assert e.prev_hash == prev
        canonical = canonical_bytes(
            e.seq,
            e.stream_id,
            e.stream_version,
            e.type,
            e.schema_version,
            e.recorded_at_us,
            e.actor,
            e.idempotency_key,
            e.payload,
        )
        assert e.hash == chain_hash(prev, canonical)
        prev = e.hash
    assert await store.head() == (3, prev)


async def test_empty_log_head_is_genesis(store):
    """An empty log reports sequence 0 and the all-zero genesis hash."""
    assert await store.head() == (0, GENESIS_HASH)


async def test_atomic_append_is_all_or_nothing(store):
    """A clash in one stream of an atomic append writes none of its streams."""
    await store.append("b", 0, [ev()])
    with pytest.raises(ConcurrencyError):
        await store.append_atomic([AppendRequest("a", 0, [ev()]), AppendRequest("b", 0, [ev()])])
    assert len(await store.read_all()) == 1


async def test_atomic_append_checks_expected_head(store):
    """expected_head guards against another writer having appended since the caller read."""
    await store.append("a", 0, [ev()])
    with pytest.raises(StaleHeadError):
        await store.append_atomic([AppendRequest("b", 0, [ev()])], expected_head=0)
    res = await store.append_atomic([AppendRequest("b", 0, [ev()])], expected_head=1)
    assert res[0].first_seq == 2


async def test_tx_hook_commits_and_rolls_back_with_the_events(store, hook_probe):
    """Writes made by tx_hook share the events' fate: a failing hook writes nothing."""
    seen = []

    def last_seq(recorded):
        seen.extend(e.seq for e in recorded)
        return recorded[-1].seq

    await store.append_atomic(
        [AppendRequest("a", 0, [ev(), ev()])], tx_hook=hook_probe.hook(last_seq)
    )
    assert seen == [1, 2]
    assert hook_probe.read() == 2

    bad_hook = hook_probe.hook(lambda recorded: 99, fail=True)
    with pytest.raises(StoreError):
        await store.append_atomic([AppendRequest("b", 0, [ev()])], tx_hook=bad_hook)
    assert len(await store.read_all()) == 2
    assert hook_probe.read() == 2


async def test_failing_hook_fails_only_its_own_append(store, hook_probe):
    """In a group commit, the append whose hook raises fails alone; the others commit."""
    bad_hook = hook_probe.hook(lambda recorded: 99, fail=True)
    outcomes = await asyncio.gather(
        store.append("a", 0, [ev(1)]),
        store.append_atomic([AppendRequest("b", 0, [ev(2)])], tx_hook=bad_hook),
        store.append("c", 0, [ev(3)]),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], StoreError)
    assert [e.stream_id for e in await store.read_all()] == ["a", "c"]
    assert hook_probe.read() is None


async def test_version_clash_fails_only_the_clashing_caller(store):
    """Concurrent appends share a commit; the one naming a stale version alone is refused."""
    await store.append("x", 0, [ev()])
    outcomes = await asyncio.gather(
        *[store.append(f"s{i}", 0, [ev(i)]) for i in range(20)],
        store.append("x", 0, [ev()]),
        *[store.append(f"t{i}", 0, [ev(i)]) for i in range(20)],
        return_exceptions=True,
    )
    assert isinstance(outcomes[20], ConcurrencyError)
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 40
    assert [e.seq for e in await store.read_all()] == list(range(1, 42))


async def test_many_tasks_with_clashing_versions(store):
    """200 tasks race on 10 streams with read-then-append retries: no lost or doubled event.

    Clashes fail only the clashing caller; everyone else in the same group commits.
    """
    rng = random.Random(7)
    clashes = 0

    async def worker(i: int) -> None:
        nonlocal clashes
        stream = f"s{rng.randrange(10)}"
        while True:
            current = await store.read_stream(stream, 1, 100_000)
            try:
                await store.append(stream, len(current), [ev(i)])
                return
            except ConcurrencyError:
                clashes += 1

    await asyncio.gather(*[worker(i) for i in range(200)])
    events = await store.read_all(0, 10_000)
    assert len(events) == 200
    assert sorted(int(e.payload.split(b'"n":')[1].split(b",")[0]) for e in events) == list(
        range(200)
    )
    for s in {e.stream_id for e in events}:
        versions = [e.stream_version for e in events if e.stream_id == s]
        assert versions == list(range(1, len(versions) + 1))
    assert clashes > 0  # the test really raced


async def test_tail_yields_events_as_they_commit(store):
    """tail() yields existing events, then new ones soon after they commit."""
    await store.append("a", 0, [ev(1)])
    got: list[int] = []

    async def consume():
        async for batch in store.tail(0, batch_size=2):
            got.extend(e.seq for e in batch)
            if len(got) >= 5:
                return

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    for i in range(4):
        await store.append("a", i + 1, [ev(i)])
    await asyncio.wait_for(task, 5)
    assert got == [1, 2, 3, 4, 5]


async def test_closed_store_refuses_appends(store):
    """After close, append raises StoreError rather than hanging."""
    await store.close()
    with pytest.raises(StoreError):
        await store.append("a", 0, [ev()])
