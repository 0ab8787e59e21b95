"""A job's output as stored: capped, hashed, and fingerprinted with its report."""

from __future__ import annotations

import hashlib

from dcp_projections import commands as cmd
from dcp_projections.settlement import ceil_seconds


def cap(text: str, cap_bytes: int) -> tuple[str, bool]:
    data = text.encode()
    if len(data) <= cap_bytes:
        return text, False
    return data[:cap_bytes].decode(errors="ignore"), True


def output_sha256(stdout: str, stderr: str) -> str:
    """Hex sha256 over stdout then stderr, each as UTF-8 preceded by its 8-byte length."""
    h = hashlib.sha256()
    for part in (stdout.encode(), stderr.encode()):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def result_fingerprint(c: cmd.ReportResult) -> str:
    """What makes two reports "the same result": outcome, exit code, runtime, output, error."""
    h = hashlib.sha256()
    for part in (
        c.outcome,
        repr(c.exit_code),
        str(ceil_seconds(c.runtime_seconds)),
        output_sha256(c.stdout, c.stderr),
        repr(c.truncated),
        c.error,
    ):
        data = part.encode()
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()
