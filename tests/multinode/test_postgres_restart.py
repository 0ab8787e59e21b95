"""PostgreSQL stopped and started again under load (issue 12): the nodes answer 503
`store_unavailable` while it is away (JSON, never a 500, never a half-written batch), reconnect
by themselves, and every command acknowledged before or after is there; a command whose
outcome the client could not see lands once when retried with its Idempotency-Key.

The server stopped here is a private throwaway cluster on a port of its own (initdb'd by
scripts/ci/postgres.sh with DCP_PG_PRIVATE=1), so the shared test server of other suites
running at the same time is never disturbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.dcp_http._live import free_port

from ._nodes import ROOT, Node, job_body
from .checks import verify_chain
from .test_nodes import _same_books


class PrivateServer:
    """A PostgreSQL cluster of this test's own: its URL, and stop/start."""

    def __init__(self, data: Path, port: int) -> None:
        self.data, self.port = data, port
        env = {**os.environ, "DCP_PG_PRIVATE": "1", "DCP_PG_DATA": str(data),
               "DCP_PG_PORT": str(port), "DCP_PG_DB": "dcp_restart"}  # fmt: skip
        out = subprocess.run(
            ["bash", str(ROOT / "scripts" / "ci" / "postgres.sh")],
            env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        if out.returncode != 0:
            pytest.fail(f"could not start a private PostgreSQL:\n{out.stderr}")
        self.url = out.stdout.strip().split("=", 1)[1].strip("'")
        self.pg_ctl = self._bindir() / "pg_ctl"

    @staticmethod
    def _bindir() -> Path:
        for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True):
            return candidate.parent
        found = shutil.which("pg_ctl")
        assert found, "no pg_ctl"
        return Path(found).parent

    def _pg_ctl(self, *args: str) -> None:
        cmd = [str(self.pg_ctl), "-D", str(self.data), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        """Fast shutdown: every session is ended at once, open transactions roll back."""
        self._pg_ctl("-m", "fast", "-w", "stop")

    def start(self) -> None:
        self._pg_ctl("-w", "-l", str(self.data / "server.log"), "-o",
                     f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1", "start")  # fmt: skip

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._pg_ctl("-m", "immediate", "-w", "stop")
        shutil.rmtree(self.data, ignore_errors=True)


@pytest.fixture
def private_pg(pg_server_dsn: str) -> Iterator[PrivateServer]:
    # pg_server_dsn: skip (or, under DCP_REQUIRE_POSTGRES, fail) where PostgreSQL is missing.
    data = Path("/tmp") / f"dcp-restart-pg-{uuid.uuid4().hex[:10]}"  # postgres may enter /tmp
    server = PrivateServer(data, free_port())
    try:
        yield server
    finally:
        server.destroy()


def test_nodes_ride_out_a_postgresql_restart(private_pg: PrivateServer, start_nodes):
    nodes = start_nodes(private_pg.url, 2)
    a = nodes[0]
    a.api.allow_image()
    renter = a.api.renter(credit_halala=10**9)
    keys = itertools.count()
    acked: dict[str, str] = {}  # idempotency key -> job id
    unseen: list[str] = []  # keys whose outcome the client never learnt
    phases: dict[str, Counter[int]] = {p: Counter() for p in ("before", "down", "after")}
    phase = ["before"]
    bodies_503: list[dict[str, str]] = []

    async def client(node: Node, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            while not stop.is_set():
                key = f"k-{next(keys)}"
                headers = {**renter["headers"], "idempotency-key": key}
                r = await http.post(f"{node.url}/api/jobs/submit", json=job_body(),
                                    headers=headers)  # fmt: skip
                now = phase[0]  # when the answer came
                phases[now][r.status_code] += 1
                if r.status_code == 201:
                    acked[key] = r.json()["job"]["job_id"]
                else:
                    assert r.status_code == 503, (now, r.status_code, r.text)  # never a 500
                    bodies_503.append(r.json())
                    unseen.append(key)
                    await asyncio.sleep(0.05)

    async def down_checks(http: httpx.AsyncClient, node: Node) -> None:
        key = {**renter["headers"], "idempotency-key": f"down-{node.name}"}
        unseen.append(f"down-{node.name}")
        r = await http.post(f"{node.url}/api/jobs/submit", json=job_body(), headers=key)
        assert r.status_code == 503 and r.json()["code"] == "store_unavailable", r.text
        r = await http.get(f"{node.url}/api/renters/balance", headers=renter["headers"])
        assert r.status_code == 503 and r.json()["code"] == "store_unavailable", r.text

    async def load() -> None:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(client(n, stop)) for n in nodes for _ in range(3)]
        deadline = time.monotonic() + 30
        while len(acked) < 30 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        phase[0] = "down"
        await asyncio.to_thread(private_pg.stop)
        await asyncio.sleep(1.0)
        # Commands and reads answer 503, as JSON, while the server is away (each after the
        # pools' connection timeout at most).
        async with httpx.AsyncClient(timeout=60) as http:
            await asyncio.gather(*(down_checks(http, node) for node in nodes))
        await asyncio.to_thread(private_pg.start)
        phase[0] = "after"
        after = len(acked)
        deadline = time.monotonic() + 60
        while len(acked) < after + 30 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*tasks)

    asyncio.run(load())
    assert phases["before"][201] > 0, phases
    # The load's own commands: some refused while the server was away (answered when the
    # pool gave up waiting, which may be after the restart), none lost, none a 500.
    assert sum(c[503] for c in phases.values()) > 0, phases
    assert phases["after"][201] > 0, phases  # the nodes reconnected by themselves
    assert {b["code"] for b in bodies_503} == {"store_unavailable"}, bodies_503[:3]
    for node in nodes:  # each node serves again, without a restart of its own
        assert node.ready()["status"] == "ready"
    # Every acknowledged submit is there.
    for i, job_id in enumerate(sorted(acked.values())):
        assert nodes[i % 2].api.ok("GET", f"/api/jobs/{job_id}", headers=renter["headers"])
    # Whatever the client could not see lands once when sent again with its key.
    retried: dict[str, str] = {}
    for i, key in enumerate(unseen):
        headers = {**renter["headers"], "idempotency-key": key}
        first = nodes[i % 2].api.ok("POST", "/api/jobs/submit", 201, json=job_body(),
                                    headers=headers)  # fmt: skip
        again = nodes[(i + 1) % 2].api.ok("POST", "/api/jobs/submit", 201, json=job_body(),
                                          headers=headers)  # fmt: skip
        assert again["job"]["job_id"] == first["job"]["job_id"]
        retried[key] = first["job"]["job_id"]
    jobs = set(acked.values()) | set(retried.values())
    assert len(jobs) == len(acked) + len(retried)  # no key made two jobs
    with psycopg.connect(private_pg.url) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE type = 'job.submitted'").fetchone()
    assert row is not None and row[0] == len(jobs)
    rec = _same_books(nodes)
    assert verify_chain(private_pg.url) == rec["head_seq"]
