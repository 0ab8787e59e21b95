"""What every multi-node test checks at its end, straight from the PostgreSQL log."""

from __future__ import annotations

import psycopg

from dcp_events.chain import GENESIS_HASH, canonical_bytes, chain_hash


def verify_chain(url: str) -> int:
    """Recompute the whole hash chain from the `events` table: dense sequence 1..head, every
    hash linking to the one before, and the head row naming the last. Returns the head."""
    prev, expected_seq = GENESIS_HASH, 1
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT seq, stream_id, stream_version, type, schema_version, payload,"
            " recorded_at_us, actor, idempotency_key, prev_hash, hash FROM events ORDER BY seq"
        )
        for seq, stream, version, type_, schema, payload, at, actor, key, prev_hash, h in rows:
            assert seq == expected_seq, f"gap before seq {seq}"
            assert prev_hash == prev, f"seq {seq} does not link to {expected_seq - 1}"
            body = payload.encode() if isinstance(payload, str) else bytes(payload)
            canon = canonical_bytes(seq, stream, version, type_, schema, at, actor, key, body)
            assert chain_hash(prev, canon) == h, f"seq {seq}: hash does not match its bytes"
            prev, expected_seq = h, seq + 1
        head = conn.execute("SELECT seq, hash FROM events_head").fetchone()
    assert head == (expected_seq - 1, prev), (head, expected_seq - 1, prev)
    return expected_seq - 1
