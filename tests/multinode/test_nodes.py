"""Three real `dcp serve` processes on one PostgreSQL database (issue 12, several nodes).

Every node takes every request; what one node decides rests only on the log, folded before it
decides and guarded by the append's head check, so clients spread over the nodes see one
ledger: no halala spent twice, no job leased twice, nothing acknowledged lost when a node dies.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg

from ._nodes import Node, job_body
from .checks import verify_chain


def _same_books(nodes: list[Node]) -> dict[str, Any]:
    """Every node reports the same head and the same reconciliation, with the books at zero
    and the invariants holding; returns that reconciliation."""
    # A command through each node folds whatever the others appended (sweeps do too).
    for node in nodes:
        node.api.ok(
            "POST", "/api/admin/images", json={"reference": "sync/image:1"}, headers=node.api.admin
        )
    ready = [node.ready() for node in nodes]
    assert len({r["head_seq"] for r in ready}) == 1, ready
    assert ready[-1]["events_behind"] == 0, ready  # the last to decide has folded everything
    recs = [node.reconciliation() for node in nodes]
    first = recs[0]
    for r in recs[1:]:
        assert (r["head_seq"], r["head_hash"]) == (first["head_seq"], first["head_hash"])
        assert r["accounts"] == first["accounts"]
    assert first["sum_halala"] == 0 and first["invariants_ok"], first
    return first


async def _post_all(
    requests: list[tuple[str, dict[str, Any], dict[str, str]]],
) -> list[httpx.Response]:
    """POST every (url, json, headers) at once, each on its own connection."""
    limits = httpx.Limits(max_connections=len(requests) + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        return await asyncio.gather(
            *(http.post(u, json=body, headers=h) for u, body, h in requests)
        )


def test_200_submits_against_funds_for_50_through_three_nodes(pg_url, start_nodes):
    """200 concurrent submits for one renter with funds for exactly 50, sent to all three
    nodes at once: exactly 50 are accepted, the rest refused with 402, and every node
    reports the same balance (nothing available, 50 holds)."""
    nodes = start_nodes(pg_url, 3)
    a, b, c = nodes
    a.api.allow_image()
    probe = a.api.renter(credit_halala=10_000_000)
    cost = a.api.submit(probe)["job"]["cost_halala"]
    assert cost > 0
    renter = b.api.renter()  # registered through b, used through every node at once
    c.api.credit(renter["renter_id"], 50 * cost)

    sent = [
        (f"{nodes[i % 3].url}/api/jobs/submit", job_body(), renter["headers"]) for i in range(200)
    ]
    replies = asyncio.run(_post_all(sent))
    codes = Counter(r.status_code for r in replies)
    assert codes == {201: 50, 402: 150}, codes
    assert {r.json()["code"] for r in replies if r.status_code == 402} == {"insufficient_funds"}
    accepted = {r.json()["job"]["job_id"] for r in replies if r.status_code == 201}
    assert len(accepted) == 50
    for node in nodes:
        bal = node.api.balance(renter)
        assert (bal["available_halala"], bal["held_halala"]) == (0, 50 * cost), node.name
        password = urlsplit(pg_url).password
        assert password and f":{password}@" not in node.log()  # the URL's password stays out
    _same_books(nodes)
    verify_chain(pg_url)


def test_one_job_claimed_by_two_providers_through_two_nodes_is_leased_once(pg_url, start_nodes):
    """Two providers poll for the one queued job at the same moment, through two different
    nodes: one gets the lease, the other nothing; again over several rounds."""
    nodes = start_nodes(pg_url, 3)
    a, b, c = nodes
    a.api.allow_image()
    renter = a.api.renter(credit_halala=10_000_000)
    winners: Counter[str] = Counter()
    for _ in range(8):
        p1, p2 = b.api.provider(), c.api.provider()
        job_id = a.api.submit(renter)["job"]["job_id"]

        async def claim_both(p1: dict[str, Any], p2: dict[str, Any]) -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as http:
                return await asyncio.gather(
                    http.get(f"{b.url}/api/providers/jobs/next", headers=p1["headers"]),
                    http.get(f"{c.url}/api/providers/jobs/next", headers=p2["headers"]),
                )

        r1, r2 = asyncio.run(claim_both(p1, p2))
        assert r1.status_code == r2.status_code == 200, (r1.text, r2.text)
        got = [
            name
            for name, r in (("b", r1), ("c", r2))
            if (r.json().get("job") or {}).get("job_id") == job_id
        ]
        assert len(got) == 1, (r1.json(), r2.json())
        winners[got[0]] += 1
        job = a.api.ok("GET", f"/api/jobs/{job_id}", headers=renter["headers"])["job"]
        holder = p1 if got[0] == "b" else p2
        assert job["provider_id"] == holder["provider_id"] and job["attempt"] == 1, job
        # The loser holds nothing; its heartbeat has no job of this one to cancel either.
        loser = p2 if got[0] == "b" else p1
        assert (c if loser is p2 else b).api.ok(
            "GET", "/api/providers/jobs/next", headers=loser["headers"]
        )["job"] is None
    _same_books(nodes)
    verify_chain(pg_url)


def test_a_node_killed_under_load_loses_nothing_acknowledged(pg_url, start_nodes):
    """Clients submit through all three nodes; one node is SIGKILLed mid-load. Every submit
    acknowledged (201) is in the ledger, a submit whose answer was lost lands once when
    retried with its Idempotency-Key, the other two nodes go on, the killed one comes back
    caught up, and the books are at zero on every node with the chain intact."""
    nodes = start_nodes(pg_url, 3)
    a, b, c = nodes
    a.api.allow_image()
    renter = a.api.renter(credit_halala=10**9)
    keys = itertools.count()
    acked: dict[str, str] = {}  # idempotency key -> job id
    lost: list[tuple[str, str]] = []  # (key, node) whose answer never came
    after_kill: Counter[str] = Counter()
    killed_at: list[float] = []

    async def client(node: Node, stop_at: float) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            while time.monotonic() < stop_at:
                key = f"k-{next(keys)}"
                headers = {**renter["headers"], "idempotency-key": key}
                # Counted by when the request left: an answer the killed node wrote before it
                # died can still be read after the kill returns (under load it was, once).
                sent_after_kill = bool(killed_at)
                try:
                    r = await http.post(
                        f"{node.url}/api/jobs/submit", json=job_body(), headers=headers
                    )
                except httpx.HTTPError:
                    lost.append((key, node.name))
                    if not node.alive() or killed_at:
                        await asyncio.sleep(0.05)
                    continue
                if r.status_code == 201:
                    acked[key] = r.json()["job"]["job_id"]
                    if sent_after_kill:
                        after_kill[node.name] += 1
                else:
                    assert r.status_code == 503, r.text  # never a 500
                    lost.append((key, node.name))

    async def load() -> None:
        stop_at = time.monotonic() + 6.0
        tasks = [asyncio.create_task(client(n, stop_at)) for n in nodes for _ in range(4)]
        await asyncio.sleep(2.5)
        await asyncio.to_thread(c.kill)
        killed_at.append(time.monotonic())
        await asyncio.gather(*tasks)

    asyncio.run(load())
    assert not c.alive()
    assert len(acked) > 20, len(acked)
    assert after_kill["node0"] > 0 and after_kill["node1"] > 0, after_kill
    assert after_kill["node2"] == 0
    # Every acknowledged submit is there, through either survivor.
    for i, job_id in enumerate(sorted(acked.values())):
        node = (a, b)[i % 2]
        assert node.api.ok("GET", f"/api/jobs/{job_id}", headers=renter["headers"])
    # A lost answer: the same key again lands once (the job the first try made, if it did).
    retried = {}
    for key, _ in lost:
        r = a.api.ok(
            "POST",
            "/api/jobs/submit",
            201,
            json=job_body(),
            headers={**renter["headers"], "idempotency-key": key},
        )
        retried[key] = r["job"]["job_id"]
        again = b.api.ok(
            "POST",
            "/api/jobs/submit",
            201,
            json=job_body(),
            headers={**renter["headers"], "idempotency-key": key},
        )
        assert again["job"]["job_id"] == r["job"]["job_id"]
    for key, job_id in acked.items():  # an acknowledged key again: the same job, not a new one
        if int(key[2:]) % 25 == 0:
            r = b.api.ok(
                "POST",
                "/api/jobs/submit",
                201,
                json=job_body(),
                headers={**renter["headers"], "idempotency-key": key},
            )
            assert r["job"]["job_id"] == job_id
    jobs = set(acked.values()) | set(retried.values())
    assert len(jobs) == len(acked) + len(retried)
    cost = a.api.submit(renter)["job"]["cost_halala"]  # one more, to know the price
    bal = a.api.balance(renter)
    assert bal["held_halala"] == (len(jobs) + 1) * cost
    c.start()  # the killed node comes back and folds what the others did meanwhile
    rec = _same_books(nodes)
    assert verify_chain(pg_url) == rec["head_seq"]


def test_sweeps_on_every_node_expire_each_lease_once(pg_url, start_nodes):
    """Every node sweeps (every 0.2 s here); leases that lapse are ended by exactly one of
    them: one job.lease_expired per lapsed attempt, the job queued again, nothing settled
    twice, the books at zero on every node."""
    nodes = start_nodes(pg_url, 3, DCP_LEASE_TTL_S="1", DCP_SWEEP_INTERVAL_S="0.2")
    a = nodes[0]
    a.api.allow_image()
    renter = a.api.renter(credit_halala=10_000_000)
    jobs = [nodes[i % 3].api.submit(renter)["job"]["job_id"] for i in range(6)]
    for i in range(6):  # each job leased by a provider that then goes quiet
        p = nodes[(i + 1) % 3].api.provider()
        got = nodes[(i + 2) % 3].api.ok("GET", "/api/providers/jobs/next", headers=p["headers"])
        assert got["job"] is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        views = [a.api.ok("GET", f"/api/jobs/{j}", headers=renter["headers"])["job"] for j in jobs]
        if all(v["status"] == "queued" for v in views):
            break
        time.sleep(0.2)
    assert all(v["status"] == "queued" for v in views), views
    time.sleep(1.0)  # more sweeps on every node, over jobs already requeued
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT type, payload::json ->> 'job_id', count(*) FROM events"
            " WHERE type IN ('job.claimed', 'job.lease_expired') GROUP BY 1, 2"
        ).fetchall()
    counts = {(t, j): n for t, j, n in rows}
    # Each claim that lapsed (a slow machine may let a provider claim a job already requeued
    # once) ended exactly once, whichever node swept it.
    for j in jobs:
        assert counts[("job.lease_expired", j)] == counts[("job.claimed", j)], (j, counts)
    rec = _same_books(nodes)
    assert verify_chain(pg_url) == rec["head_seq"]
