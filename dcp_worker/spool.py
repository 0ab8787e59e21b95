"""The durable spool: one file per result not yet accepted by the API.

A result is written to a temporary file, fsynced, renamed into place and the directory fsynced,
so after a crash a spool file is either whole or absent. Files are named by job and attempt,
so writing the same result twice leaves one file.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

MAX_SPOOL_FILES = 10_000  # a listing is cut here; more pending results than this is a fault
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Spool:
    """Pending results under `root/pending`; refused ones under `root/dead` for a human."""

    def __init__(self, root: Path) -> None:
        self.pending = root / "pending"
        self.dead = root / "dead"
        for d in (self.pending, self.dead):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A crash can leave half-written temporaries; they never became results.
        for tmp in self.pending.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        # Job ids of pending results, kept in memory so a heartbeat can list them without I/O.
        self._job_ids: dict[str, str] = {}
        self._lock = threading.Lock()  # the worker writes from threads, reads from the loop
        for path in self.list():
            try:
                self._job_ids[path.name] = str(self.read(path)["job_id"])
            except (OSError, ValueError, KeyError):
                continue  # the delivery loop buries it

    @staticmethod
    def name(job_id: str, attempt: int) -> str:
        return f"{_SAFE.sub('_', job_id)}.{attempt}.json"

    def put(self, result: dict[str, Any]) -> Path:
        """Store a result durably; returns its path. Idempotent per (job_id, attempt)."""
        path = self.pending / self.name(result["job_id"], int(result["attempt"]))
        write_atomic(path, json.dumps(result, sort_keys=True).encode())
        with self._lock:
            self._job_ids[path.name] = str(result["job_id"])
        return path

    def has(self, job_id: str, attempt: int) -> bool:
        """True if a result for this attempt is pending, or was refused and kept in `dead`."""
        name = self.name(job_id, attempt)
        return (self.pending / name).exists() or (self.dead / name).exists()

    def pending_job_ids(self) -> set[str]:
        """Jobs whose results wait for delivery (their leases should stay alive)."""
        with self._lock:
            return set(self._job_ids.values())

    def list(self) -> list[Path]:
        """Pending result files, oldest first, at most MAX_SPOOL_FILES."""
        files = []
        with os.scandir(self.pending) as it:
            for entry in it:
                if entry.name.endswith(".json") and not entry.name.startswith("."):
                    try:
                        mtime = entry.stat().st_mtime_ns
                    except FileNotFoundError:
                        # Delivered (or buried) by another thread between the listing and the
                        # stat: it is no longer pending, so it is not listed.
                        continue
                    files.append((mtime, Path(entry.path)))
                    if len(files) >= MAX_SPOOL_FILES:
                        break
        return [p for _, p in sorted(files)]

    @staticmethod
    def read(path: Path) -> dict[str, Any]:
        data = json.loads(path.read_bytes())
        if not isinstance(data, dict):
            raise ValueError(f"{path.name} does not hold a result object")
        return data

    def remove(self, path: Path) -> None:
        """Forget a delivered (or lease-lost) result."""
        path.unlink(missing_ok=True)
        _fsync_dir(self.pending)
        with self._lock:
            self._job_ids.pop(path.name, None)

    def bury(self, path: Path) -> None:
        """Move a result the API refused for good to `dead`, for a human to look at."""
        os.replace(path, self.dead / path.name)
        _fsync_dir(self.pending)
        _fsync_dir(self.dead)
        with self._lock:
            self._job_ids.pop(path.name, None)
