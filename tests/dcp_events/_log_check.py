"""Reading a whole log back outside any store, and checking it the way an auditor would."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import psycopg

from dcp_events._append import COLUMNS, row_to_event
from dcp_events.chain import GENESIS_HASH, canonical_bytes, chain_hash
from dcp_events.sqlite_store import iter_event_batches, open_connection
from dcp_events.store import RecordedEvent


def read_log(where: str | Path) -> Iterator[RecordedEvent]:
    """Every event of the log at `where` (a postgresql:// URL or a SQLite path), in order."""
    if str(where).startswith("postgresql://"):
        with psycopg.connect(str(where)) as conn:
            after = 0
            while True:
                rows = conn.execute(
                    f"SELECT {COLUMNS} FROM events WHERE seq > %s ORDER BY seq LIMIT 10000",
                    (after,),
                ).fetchall()
                if not rows:
                    return
                after = rows[-1][0]
                yield from (row_to_event(r) for r in rows)
    else:
        conn = open_connection(where)
        try:
            for batch in iter_event_batches(conn):
                yield from batch
        finally:
            conn.close()


def check_log(events: Iterable[RecordedEvent]) -> dict[str, int]:
    """Assert a dense sequence from 1, an intact hash chain and gapless stream versions;
    returns each stream's last version."""
    prev, expected_seq = GENESIS_HASH, 1
    versions: dict[str, int] = {}
    for e in events:
        assert e.seq == expected_seq, f"sequence gap at {expected_seq}"
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
        assert e.hash == chain_hash(prev, canonical), f"chain broken at {e.seq}"
        prev, expected_seq = e.hash, expected_seq + 1
        assert e.stream_version == versions.get(e.stream_id, 0) + 1
        versions[e.stream_id] = e.stream_version
    return versions
