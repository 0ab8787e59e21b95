"""Many submits at once never spend the same halala twice."""

import asyncio

import httpx

from ._live import IMAGE, Api, serve


async def _storm(url, headers, n):
    body = {
        "container_spec": {"image": IMAGE},
        "gpu_requirements": {"gpu_type": "RTX 4090"},
        "max_duration_seconds": 3600,
    }
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        seen_available = []
        stop = asyncio.Event()

        async def watch():
            while not stop.is_set():
                r = await client.get("/api/renters/balance", headers=headers)
                seen_available.append(r.json())
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        responses = await asyncio.gather(
            *(client.post("/api/jobs/submit", json=body, headers=headers) for _ in range(n))
        )
        stop.set()
        await watcher
    return responses, seen_available


def test_200_concurrent_submits_against_a_balance_for_50(tmp_path):
    """Exactly 50 of 200 concurrent submits are accepted; the balance is never negative."""
    with serve(tmp_path / "storm.db", rate_limits=False) as server:
        api = Api(server)
        api.allow_image()
        renter = api.renter(credit_halala=50 * 100)  # each job reserves 100 halala
        responses, seen = asyncio.run(_storm(server.url, renter["headers"], 200))
        codes = [r.status_code for r in responses]
        assert codes.count(201) == 50, sorted(set(codes))
        assert codes.count(402) == 150
        assert all(r.json()["shortfall_halala"] == 100 for r in responses if r.status_code == 402)
        assert len({r.json()["job"]["job_id"] for r in responses if r.status_code == 201}) == 50
        assert seen and all(b["available_halala"] >= 0 and b["held_halala"] >= 0 for b in seen)
        assert api.balance(renter) == {
            "balance_halala": 5000,
            "held_halala": 5000,
            "available_halala": 0,
        }
        rec = api.ok("GET", "/api/admin/reconciliation", headers=api.admin)
        assert rec["sum_halala"] == 0 and rec["invariants_ok"] is True
        assert len(api.ok("GET", "/api/jobs?limit=200", headers=renter["headers"])["jobs"]) == 50
        api.close()
