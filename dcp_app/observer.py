"""What the ledger service tells an observer (metrics) about its work.

The service calls these after the fact; an observer must be quick and must not raise. The
default, `NullObserver`, does nothing, so the service runs the same with or without metrics and
`dcp_app` needs no metrics library.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class ServiceObserver(Protocol):
    """Receives the service's batch and sweep figures."""

    def batch_done(
        self, decided: Sequence[tuple[str, str | None]], events: int, seconds: float
    ) -> None:
        """A batch was decided and (when it had events) appended durably. `decided` holds one
        (command name, refusal code or None) per command; `seconds` is the whole batch."""

    def swept(self, ended: Sequence[str], failed: bool) -> None:
        """One `sweep()` call ended: the types of the events it appended, or failed."""


class NullObserver:
    """The observer of a service nobody observes."""

    def batch_done(
        self, decided: Sequence[tuple[str, str | None]], events: int, seconds: float
    ) -> None:
        return None

    def swept(self, ended: Sequence[str], failed: bool) -> None:
        return None
