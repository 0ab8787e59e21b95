"""Errors raised by the event log. Every one is a `DcpError`."""


class DcpError(Exception):
    """Base of every error DCP raises on purpose."""


class StoreError(DcpError):
    """The event store could not do what was asked (I/O fault, closed store, bad schema)."""


class ConcurrencyError(StoreError):
    """An append named an expected stream version that is no longer the stream's last one."""

    def __init__(self, stream_id: str, expected_version: int | None, actual_version: int) -> None:
        super().__init__(
            f"stream {stream_id!r} is at version {actual_version}, not {expected_version}"
        )
        self.stream_id = stream_id
        self.expected_version = expected_version
        self.actual_version = actual_version


class StaleHeadError(StoreError):
    """An atomic append expected a log head that another writer has since moved."""

    def __init__(self, expected_head: int, actual_head: int) -> None:
        super().__init__(f"log head is {actual_head}, not the expected {expected_head}")
        self.expected_head = expected_head
        self.actual_head = actual_head


class DecodeError(DcpError):
    """A stored event does not decode against the schema of its type and version."""
