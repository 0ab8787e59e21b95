"""Why the worker killed a container, written before the kill, beside the spool.

A container the worker kills exits like any other; after a crash, recovery reads the intent to
report the outcome the worker meant (`timed_out`, `cancelled`, `failed`) instead of
`completed`. Files are named like the spool's, one per job and attempt.
"""

from __future__ import annotations

import json
from pathlib import Path

from dcp_worker.spool import Spool, write_atomic


class Intents:
    """One small JSON file per (job, attempt) under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, job_id: str, attempt: int) -> Path:
        return self.root / Spool.name(job_id, attempt)

    def record(self, job_id: str, attempt: int, outcome: str, reason: str) -> None:
        """Durably note the outcome a kill is about to cause (fsynced before it returns)."""
        body = json.dumps({"outcome": outcome, "reason": reason}).encode()
        write_atomic(self.path(job_id, attempt), body)

    def read(self, job_id: str, attempt: int) -> str | None:
        """The outcome recorded for this attempt, or None (no kill was intended, or unreadable)."""
        try:
            return str(json.loads(self.path(job_id, attempt).read_bytes())["outcome"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def clear(self, job_id: str, attempt: int) -> None:
        self.path(job_id, attempt).unlink(missing_ok=True)
