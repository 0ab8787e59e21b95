"""Errors raised by the replicator. Every one is a `DcpError`."""

from dcp_events.errors import DcpError


class ReplicatorError(DcpError):
    """Base of the replicator's errors."""


class SourceError(ReplicatorError):
    """The local SQLite file could not be read (missing, not a DCP database, I/O fault)."""


class SinkUnavailable(ReplicatorError):
    """The sink could not be reached or failed transiently (network, timeout, 5xx, restart).

    Nothing was acknowledged; the batch is sent again after a backoff.
    """


class SinkRejected(ReplicatorError):
    """The sink refused a batch for a reason that retrying will not fix (schema, auth, 4xx).

    The continuous replicator keeps retrying at its longest backoff, so an operator can fix the
    target while it waits; `--once` gives up and exits non-zero.
    """


class CheckpointConflict(ReplicatorError):
    """Another replicator moved this sink's checkpoint meanwhile; the batch was rolled back."""
