"""`dcp replicate` to Supabase over real TCP: SUPABASE_URL points at a local HTTP server that
stands in for PostgREST (none can run here). The server hands each request to
pgrest.FakePostgrest, which executes PostgREST's upsert SQL on the real PostgreSQL; faults are
real socket events: a connection closed with no response, a response that never comes (the
client's timeout), a 503."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import psycopg
import pytest
import structlog

from dcp_replicator.checkpoint import CheckpointStore, checkpoint_path
from dcp_replicator.cli import main as cli_main
from dcp_replicator.postgres_sink import migration_files

from .conftest import assert_mirrored, head_seq
from .pgrest import FakePostgrest


class HttpServer:
    """A minimal HTTP/1.1 server (keep-alive, Content-Length bodies) in front of FakePostgrest."""

    def __init__(self, fake: FakePostgrest, hang_s: float) -> None:
        self.fake = fake
        self.hang_s = hang_s
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *lines = head.decode("latin-1").split("\r\n")
                method, target, _ = line.split(" ", 2)
                headers = [tuple(h.split(": ", 1)) for h in lines if h]
                length = int(dict((k.lower(), v) for k, v in headers).get("content-length", 0))
                body = await reader.readexactly(length)
                request = httpx.Request(
                    method, f"http://stand-in{target}", headers=headers, content=body
                )
                try:
                    response = await self.fake.handle(request)
                except httpx.ReadTimeout:  # answer too late: after the client's timeout
                    await asyncio.sleep(self.hang_s)
                    return
                except httpx.RemoteProtocolError:  # close without answering
                    return
                payload = response.content
                writer.write(
                    f"HTTP/1.1 {response.status_code} X\r\nContent-Length: {len(payload)}\r\n"
                    f"Content-Type: {response.headers.get('content-type', 'text/plain')}\r\n"
                    f"\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@pytest.fixture
def fresh_structlog():
    structlog.reset_defaults()  # the CLI configures it only when nobody has
    yield
    structlog.reset_defaults()


async def test_cli_replicates_to_supabase_through_socket_faults(
    ledger_db, pg_dsn, monkeypatch, capsys, fresh_structlog
):
    """Through dropped connections, a timeout and a 503 at the socket, `dcp replicate --once`
    mirrors everything; the checkpoint is in the local file; `status` reports it."""
    with psycopg.connect(pg_dsn) as conn:
        for f in migration_files():
            conn.execute(f.read_text())
    fake = FakePostgrest(pg_dsn)
    fake.faults.extend(["drop", None, "timeout", "503", None, "drop_after_commit"])
    async with HttpServer(fake, hang_s=2.0) as url:
        monkeypatch.setenv("SUPABASE_URL", url)
        monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "service-role-key")
        argv = ["--db", str(ledger_db), "--once", "--batch-rows", "1000", "--http-timeout-s", "1"]
        assert await asyncio.to_thread(cli_main, argv) == 0
        logs = capsys.readouterr().err
        assert await asyncio.to_thread(cli_main, ["--db", str(ledger_db), "status"]) == 0
        status = json.loads(capsys.readouterr().out)
    retries = [json.loads(line) for line in logs.splitlines() if "supabase_retry" in line]
    assert len(retries) == 4
    assert {r["reason"].split(":")[0] for r in retries} >= {"RemoteProtocolError", "ReadTimeout"}
    assert_mirrored(ledger_db, pg_dsn)
    cp = await CheckpointStore(checkpoint_path(ledger_db)).get("supabase")
    assert cp is not None and cp.last_seq == head_seq(ledger_db)
    assert status["checkpoint_seq"] == head_seq(ledger_db) and status["events_behind"] == 0
    assert status["checkpoint_from"] == "local"
