"""Which local read-model tables are mirrored, and how their columns map to the target's:
derived from the tables' one definition (dcp_projections.tables: `mirror`, `mirror_as`,
`mirrored`).

Every mirrored row carries `last_seq`. `credentials` (key hashes) and `job_outputs` are never
mirrored, nor `topups.idempotency_key` (a client's key). Local SQLite stores flags as 0/1
and JSON as text; the target has BOOLEAN and JSONB.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from dcp_projections import tables

Kind = Literal["int", "text", "bool", "json"]


class Column(msgspec.Struct, frozen=True):
    """One mirrored column: its local name, its target name, and its kind."""

    local: str
    target: str
    kind: Kind


class TableSpec(msgspec.Struct, frozen=True):
    """One mirrored table: local and target names, key columns, and every column in order."""

    local: str
    target: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    # Postings have no last_seq column locally: a posting never changes, so its seq is its
    # last_seq. `seq_expr` is the SQL for the row's last_seq in the local table.
    seq_expr: str = "last_seq"

    @property
    def target_columns(self) -> tuple[str, ...]:
        """Target column names, in order."""
        return tuple(c.target for c in self.columns)

    @property
    def target_key(self) -> tuple[str, ...]:
        """Target names of the key columns."""
        return tuple(next(c.target for c in self.columns if c.local == k) for k in self.key)


def _spec(table: tables.Table) -> TableSpec:
    """The mirror of one read-model table, from its definition (dcp_projections.tables)."""
    assert table.mirror is not None
    columns = [
        Column(local=c.name, target=c.mirror_as or c.name, kind=c.kind)
        for c in table.columns
        if c.mirrored  # a client's idempotency key stays local
    ]
    if table.seq_column != "last_seq":  # the target keeps every row's last_seq all the same
        columns.append(Column(local=table.seq_column, target="last_seq", kind="int"))
    return TableSpec(
        local=table.name,
        target=table.mirror,
        key=table.key,
        columns=tuple(columns),
        seq_expr=table.seq_column,
    )


RENTERS = _spec(tables.RENTERS)
PROVIDERS = _spec(tables.PROVIDERS)
JOBS = _spec(tables.JOBS)
ACCOUNTS = _spec(tables.ACCOUNTS)
POSTINGS = _spec(tables.POSTINGS)
WITHDRAWALS = _spec(tables.WITHDRAWALS)
PRICING = _spec(tables.PRICING)
TOPUPS = _spec(tables.TOPUPS)

MIRRORED: tuple[TableSpec, ...] = (
    RENTERS,
    PROVIDERS,
    JOBS,
    ACCOUNTS,
    POSTINGS,
    WITHDRAWALS,
    PRICING,
    TOPUPS,
)

NEVER_MIRRORED = frozenset(t.name for t in tables.ROW_TABLES if t.mirror is None)
