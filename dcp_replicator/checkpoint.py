"""The replicator's own checkpoints, in a small SQLite file next to the database.

The Supabase sink has no transaction to share with its rows, so its checkpoint lives here and
is stored only after the sink acknowledged a batch (at least once: a crash in between sends
the batch again, which the idempotent upsert absorbs). The PostgreSQL sink keeps its
checkpoint in the target, in the same transaction as its rows; it also records it here, only
so `status` can answer while the target is down. The event log's own file is never written.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import TypeVar

import msgspec

from dcp_replicator.errors import ReplicatorError

T = TypeVar("T")


class Checkpoint(msgspec.Struct, frozen=True):
    """How far one sink got, and when that was recorded."""

    sink: str
    last_seq: int
    updated_at_us: int


def checkpoint_path(db_path: str | Path) -> Path:
    """Where the checkpoints of the replicator of `db_path` live: `<db>.replicator`."""
    p = Path(db_path)
    return p.with_name(p.name + ".replicator")


class CheckpointStore:
    """Durable per-sink checkpoints that only move forward."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        # WAL + NORMAL: a commit survives the process dying (SIGKILL) without an fsync per
        # batch, which would compete with the event log's own fsyncs on the same disk. An OS
        # crash may lose the last few checkpoints: those batches are sent again, which the
        # sinks absorb (forward-only rows).
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS checkpoints ("
            " sink TEXT PRIMARY KEY, last_seq INTEGER NOT NULL, updated_at_us INTEGER NOT NULL"
            ") STRICT"
        )
        return conn

    def _get(self, sink: str) -> Checkpoint | None:
        with closing(self._connect()) as conn:
            row = conn.execute(
                "SELECT sink, last_seq, updated_at_us FROM checkpoints WHERE sink = ?", (sink,)
            ).fetchone()
        return Checkpoint(*row) if row else None

    def _all(self) -> list[Checkpoint]:
        if not self.path.exists():
            return []
        with closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT sink, last_seq, updated_at_us FROM checkpoints ORDER BY sink"
            ).fetchall()
        return [Checkpoint(*r) for r in rows]

    def _put(self, sink: str, last_seq: int) -> None:
        with closing(self._connect()) as conn:
            conn.execute(
                "INSERT INTO checkpoints (sink, last_seq, updated_at_us) VALUES (?, ?, ?)"
                " ON CONFLICT (sink) DO UPDATE SET last_seq = excluded.last_seq,"
                " updated_at_us = excluded.updated_at_us"
                " WHERE excluded.last_seq > checkpoints.last_seq",
                (sink, last_seq, time.time_ns() // 1000),
            )

    async def get(self, sink: str) -> Checkpoint | None:
        """The sink's checkpoint, or None if it never stored one."""
        return await _run(self._get, sink)

    async def all(self) -> list[Checkpoint]:
        """Every sink's checkpoint."""
        return await _run(self._all)

    async def put(self, sink: str, last_seq: int) -> None:
        """Record that `sink` has everything up to `last_seq` (never moves back)."""
        await _run(self._put, sink, last_seq)


async def _run(fn: Callable[..., T], *args: object) -> T:
    try:
        return await asyncio.to_thread(fn, *args)
    except sqlite3.Error as e:
        raise ReplicatorError(f"checkpoint file: {e}") from e
