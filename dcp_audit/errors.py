"""Errors of the audit tools. Every one is a `DcpError`."""

from __future__ import annotations

from dcp_events.errors import DcpError


class AuditError(DcpError):
    """The log cannot be audited at all: the file is missing or is not a DCP event log."""


class AuditFault(AuditError):
    """The log is broken: raised by `verify` at the first fault, naming its sequence.

    `check` says which check failed: `sequence` (a gap or a reordering), `chain` (a hash that
    does not match the event or its predecessor), `decode` (a payload that does not fit its
    schema), `postings` (a money event whose postings do not sum to zero) or `invariant` (the
    fold of the log breaks a money rule).
    """

    def __init__(self, seq: int, check: str, detail: str) -> None:
        super().__init__(f"seq {seq}: {check}: {detail}")
        self.seq = seq
        self.check = check
        self.detail = detail
