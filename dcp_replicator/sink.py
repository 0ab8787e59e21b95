"""The sink interface: where the replicator sends batches, and where its checkpoint lives."""

from __future__ import annotations

from typing import Protocol

from dcp_replicator.source import Batch


class Sink(Protocol):
    """A replication target (see tests/dcp_replicator/test_sink_contract.py)."""

    name: str

    async def checkpoint(self) -> int:
        """The last seq whose effects the sink has acknowledged (0 if none).

        Raises SinkUnavailable if it cannot be read now."""
        ...

    async def apply(self, batch: Batch) -> None:
        """Make the target reflect `batch` and move the checkpoint to `batch.upto_seq`.

        Raises SinkUnavailable (transient: retry later), SinkRejected (permanent) or
        CheckpointConflict (another replicator moved the checkpoint). When it raises, the
        checkpoint has not moved."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
