"""The hash chain over the log (documented for outsiders in docs/audit.md).

hash(n) = sha256(bytes.fromhex(hash(n-1)) || canonical(n)), with hash(0) = 64 zeros. The
canonical form is the event's fields as netstrings (`<len>:<bytes>,`), in a fixed order, so it
can be recomputed in any language without a JSON library's opinions about escaping.
"""

from __future__ import annotations

import hashlib

GENESIS_HASH = "0" * 64


def canonical_bytes(
    seq: int,
    stream_id: str,
    stream_version: int,
    type_: str,
    schema_version: int,
    recorded_at_us: int,
    actor: str,
    idempotency_key: str | None,
    payload: bytes,
) -> bytes:
    """The bytes an event's hash covers, besides the previous hash."""
    parts = (
        str(seq).encode(),
        stream_id.encode(),
        str(stream_version).encode(),
        type_.encode(),
        str(schema_version).encode(),
        str(recorded_at_us).encode(),
        actor.encode(),
        (idempotency_key or "").encode(),
        payload,
    )
    return b"".join(b"%d:%b," % (len(p), p) for p in parts)


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    """hex sha256 of the previous hash's 32 raw bytes followed by the canonical bytes."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical).hexdigest()
