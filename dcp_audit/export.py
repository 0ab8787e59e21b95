"""`dcp audit export`: the log as JSON lines, one event per line, in sequence order.

Each line is one JSON object with every field the hash covers plus the hash fields:
`seq, stream_id, stream_version, type, schema_version, recorded_at_us, actor,
idempotency_key, payload, prev_hash, hash`. `payload` is the stored JSON text itself, as a JSON
string, so its UTF-8 bytes are exactly the bytes that were hashed and anyone can recompute the
chain (docs/audit.md, scripts/reference_verifier.py).
"""

from __future__ import annotations

import sqlite3
from typing import BinaryIO

import msgspec

from dcp_events.sqlite_store import iter_event_batches

BATCH_SIZE = 20_000


class ExportLine(msgspec.Struct, frozen=True):
    """One exported event; the field order is the line's key order."""

    seq: int
    stream_id: str
    stream_version: int
    type: str
    schema_version: int
    recorded_at_us: int
    actor: str
    idempotency_key: str | None
    payload: str
    prev_hash: str
    hash: str


def export(
    conn: sqlite3.Connection,
    out: BinaryIO,
    *,
    after_seq: int = 0,
    until_seq: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> int:
    """Write the events with `after_seq < seq <= until_seq` to `out` as JSON lines.

    Returns how many were written. Reads bounded batches, so memory stays flat on any log.
    """
    encoder = msgspec.json.Encoder()
    buf = bytearray()
    n = 0
    for batch in iter_event_batches(conn, after_seq, batch_size):
        buf.clear()
        for rec in batch:
            if until_seq is not None and rec.seq > until_seq:
                out.write(buf)
                return n
            line = ExportLine(
                rec.seq,
                rec.stream_id,
                rec.stream_version,
                rec.type,
                rec.schema_version,
                rec.recorded_at_us,
                rec.actor,
                rec.idempotency_key,
                rec.payload.decode(),
                rec.prev_hash,
                rec.hash,
            )
            encoder.encode_into(line, buf, len(buf))
            buf += b"\n"
            n += 1
        out.write(buf)
    return n
