"""The read-model tables, each defined once: name, key, columns (kind, nullability, how the
value comes from the domain's state), secondary indexes, and whether and as what the replicator
mirrors it.

Everything else is derived from these specs: the rows (`dcp_projections.rows`), the DDL of
each backend (`ddl`; schemas/postgres/002_projections.sql is its output, and a test checks that
the SQLite and PostgreSQL schemas both equal the specs), the upsert and insert SQL
(dcp_app.readside), the ALTER TABLE that brings an existing database a new column (`add_column`,
at its next catch-up), and the replicator's column maps (dcp_replicator.tables). Adding a column
is one edit here plus the DDL a fresh database gets (docs/design.md, "Read models").

Kinds: `int` (integer halala, microseconds, counts), `text`, `bool` (stored as 0/1 on both
backends, so the same SQL reads it), `json` (text holding JSON; the replicator's target types
it JSONB).
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any, Literal

import msgspec

from dcp_projections.state import Job

Kind = Literal["int", "text", "bool", "json"]
Dialect = Literal["sqlite", "postgres"]
Row = dict[str, Any]

_json = msgspec.json.Encoder()


class Column(msgspec.Struct, frozen=True):
    """One column: its name, kind, whether it may be NULL, how its value comes from the
    table's entity (default: the entity's attribute of that name), the replicator target's
    name for it when that differs, and whether the replicator copies it at all (never a key
    or a hash, even in a mirrored table)."""

    name: str
    kind: Kind
    nullable: bool = False
    get: Callable[[Any], Any] | None = None
    mirror_as: str | None = None
    mirrored: bool = True


class Table(msgspec.Struct, frozen=True):
    """One read-model table. `mirror`: the replicator target's table, None if never mirrored.
    `seq_column`: the column holding the sequence of the row's last change."""

    name: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    indexes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    mirror: str | None = None
    seq_column: str = "last_seq"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def row_builder(self) -> Callable[[Any], Row]:
        """A function from one entity to its row (a dict in column order)."""
        getters = tuple(
            (c.name, c.get if c.get is not None else attrgetter(c.name)) for c in self.columns
        )

        def row(entity: Any) -> Row:
            return {name: get(entity) for name, get in getters}

        return row


def _col(name: str, kind: Kind = "text", **kw: Any) -> Column:
    return Column(name, kind, **kw)


def _int(name: str, **kw: Any) -> Column:
    return Column(name, "int", **kw)


def _settled(field: str) -> Callable[[Job], int | None]:
    def get(j: Job) -> int | None:
        s = j.settlement
        return getattr(s, field) if s is not None else None

    return get


def _first(pair: tuple[Any, Any]) -> Any:
    return pair[0]


_LAST_SEQ = _int("last_seq")

# Never mirrored: API key hashes and who they belong to.
CREDENTIALS = Table(
    "credentials",
    key=("key_hash",),
    columns=(
        _col("key_hash"),  # hex sha256 of the API key
        _col("role"),  # renter | provider
        _col("subject_id"),
        _LAST_SEQ,
    ),
)

RENTERS = Table(
    "renters",
    key=("renter_id",),
    columns=(_col("renter_id"), _col("name"), _col("email"), _int("created_at_us"), _LAST_SEQ),
    indexes=(("renters_last_seq", ("last_seq",)),),
    mirror="dcp_renters",
)

PROVIDERS = Table(
    "providers",
    key=("provider_id",),
    columns=(
        _col("provider_id"),
        _col("name"),
        _col("email"),
        _col("gpu_model"),
        _int("gpu_count"),
        _int("vram_gb"),
        _col("approval_status", get=lambda p: "approved" if p.approved else "pending"),
        _col("paused", "bool", get=lambda p: int(p.paused)),
        _col("suspended", "bool", get=lambda p: int(p.suspended)),
        _col("accepting_jobs", "bool", get=lambda p: int(p.accepting_jobs)),  # last heartbeat
        _col("daemon_version"),
        _int("last_heartbeat_us", nullable=True),  # NULL until the first heartbeat
        _col("gpus_json", "json", get=lambda p: _json.encode(p.gpus).decode(), mirror_as="gpus"),
        _int("created_at_us"),
        _LAST_SEQ,
    ),
    indexes=(("providers_last_seq", ("last_seq",)),),
    mirror="dcp_providers",
)

JOBS = Table(
    "jobs",
    key=("job_id",),
    columns=(
        _col("job_id"),
        _col("renter_id"),
        _col("provider_id", nullable=True),  # the current or last lease holder
        _col("requested_provider_id", nullable=True),  # asked for at submit, if any
        _col("status"),
        _col("image", get=lambda j: j.container_spec.image),
        _col(
            "command_json",
            "json",
            get=lambda j: _json.encode(j.container_spec.command).decode(),
            mirror_as="command",
        ),
        _col("gpu_type", get=lambda j: j.gpu_requirements.gpu_type),
        _int("min_vram_gb", get=lambda j: j.gpu_requirements.min_vram_gb),
        _int("gpu_count", get=lambda j: j.gpu_requirements.gpu_count),
        _col("priority"),
        _int("max_duration_seconds"),
        _int("rate_halala_per_hour"),
        _int("cost_halala"),  # the reserve of the current hold
        _int("actual_cost_halala", nullable=True, get=_settled("actual_cost_halala")),
        _int("refunded_halala", nullable=True, get=_settled("refunded_halala")),
        _int("provider_earned_halala", nullable=True, get=_settled("provider_earned_halala")),
        _int("platform_fee_halala", nullable=True, get=_settled("platform_fee_halala")),
        _int("attempt"),  # fencing number of the current lease
        _int("lease_expires_us", nullable=True),
        _int("submitted_at_us"),
        _int("submit_seq"),  # seq of job.submitted: the domain's queue order within a priority
        _int("assigned_at_us", nullable=True),
        _int("started_at_us", nullable=True),
        _int("ended_at_us", nullable=True),
        _int("exit_code", nullable=True, get=lambda j: j.output.exit_code if j.output else None),
        _col("error", nullable=True),
        _LAST_SEQ,
    ),
    indexes=(
        ("jobs_renter", ("renter_id", "submitted_at_us")),
        ("jobs_status", ("status",)),
        ("jobs_last_seq", ("last_seq",)),
    ),
    mirror="dcp_jobs",
)

# Output of ended jobs (not mirrored: it can be large and is the renter's data). Entity: a Job
# with an output.
JOB_OUTPUTS = Table(
    "job_outputs",
    key=("job_id",),
    columns=(
        _col("job_id"),
        _int("exit_code", nullable=True, get=lambda j: j.output.exit_code),
        _col("stdout", get=lambda j: j.output.stdout),
        _col("stderr", get=lambda j: j.output.stderr),
        _col("truncated", "bool", get=lambda j: int(j.output.truncated)),
        _col("sha256", get=lambda j: j.output.sha256),
        _LAST_SEQ,
    ),
)

# Entity: (account_id, balance_halala, last_seq). Ids like renter:<id>:available.
ACCOUNTS = Table(
    "accounts",
    key=("account_id",),
    columns=(
        _col("account_id", get=_first),
        _int("balance_halala", get=lambda a: a[1]),
        _int("last_seq", get=lambda a: a[2]),
    ),
    indexes=(("accounts_last_seq", ("last_seq",)),),
    mirror="dcp_accounts",
)

# One row per posting; seq is the event that carried it, idx its position in that event. A
# posting never changes, so its seq is its last_seq. Rows: dcp_projections.rows.posting_rows.
POSTINGS = Table(
    "postings",
    key=("seq", "idx"),
    columns=(
        _int("seq"),
        _int("idx"),
        _col("account_id"),
        _int("amount_halala"),
        _col("event_type"),
        _col("job_id", nullable=True),
        _int("recorded_at_us"),
    ),
    indexes=(("postings_account", ("account_id", "seq")),),
    mirror="dcp_postings",
    seq_column="seq",
)

WITHDRAWALS = Table(
    "withdrawals",
    key=("withdrawal_id",),
    columns=(
        _col("withdrawal_id"),
        _col("provider_id"),
        _int("amount_halala"),
        _col("iban"),
        _col("status"),  # pending | completed | rejected
        _int("requested_at_us"),
        _int("decided_at_us", nullable=True),
        _LAST_SEQ,
    ),
    indexes=(
        ("withdrawals_status", ("status",)),
        ("withdrawals_last_seq", ("last_seq",)),
    ),
    mirror="dcp_withdrawals",
)

PRICING = Table(
    "pricing",
    key=("gpu_model",),
    columns=(_col("gpu_model"), _int("halala_per_gpu_hour"), _LAST_SEQ),
    indexes=(("pricing_last_seq", ("last_seq",)),),
    mirror="dcp_pricing",
)

# Entity: (reference, last_seq).
IMAGE_ALLOWLIST = Table(
    "image_allowlist",
    key=("reference",),
    columns=(_col("reference", get=_first), _int("last_seq", get=lambda r: r[1])),
)

# Gateway top-ups (docs/payments.md): one row per top-up, in its latest status.
TOPUPS = Table(
    "topups",
    key=("topup_id",),
    columns=(
        _col("topup_id"),
        _col("renter_id"),
        _int("amount_halala"),
        _col("status"),  # pending | paid | failed | expired | disputed | refunding | refunded
        _col("invoice_id", nullable=True),  # the gateway's invoice, once created
        _col("checkout_url", nullable=True),  # the invoice's hosted payment page
        _col("payment_id", nullable=True),  # the gateway payment credited (or disputed)
        _col("reason"),  # why failed, expired, disputed or reversed
        _int("gateway_amount_halala", nullable=True),  # what the gateway said, for a dispute
        _col("gateway_currency", nullable=True),
        # The renter's Idempotency-Key: a request reusing it finds its top-up here once the
        # top-up has left memory (docs/design.md, "Bounded memory").
        _col("idempotency_key", nullable=True, mirrored=False),
        _int("created_at_us"),
        _int("updated_at_us"),
        _LAST_SEQ,
    ),
    indexes=(
        ("topups_renter", ("renter_id", "created_at_us")),
        ("topups_status", ("status", "updated_at_us")),
        ("topups_last_seq", ("last_seq",)),
        # How a decision finds a settled top-up that left memory by its payment or invoice
        # (by the renter's key: topups_renter, then that renter's top-ups).
        ("topups_payment", ("payment_id",)),
        ("topups_invoice", ("invoice_id",)),
    ),
    mirror="dcp_topups",
)

# Admin credits (SPEC: idempotent by reference, forever). Entity: (reference, DepositRef). The
# service keeps only recent references in memory and looks older ones up here before deciding
# a credit (docs/design.md, "Bounded memory"). Not mirrored: the postings carry the money.
DEPOSITS = Table(
    "deposits",
    key=("reference",),
    columns=(
        _col("reference", get=_first),
        _col("renter_id", get=lambda d: d[1].renter_id),
        _int("amount_halala", get=lambda d: d[1].amount_halala),
        _int("last_seq", get=lambda d: d[1].seq),  # the credit's event: a reference never changes
    ),
)

# How far the read models are: name -> last_seq (dcp_app.readmodel's checkpoint rows).
PROJECTION_STATE = Table(
    "projection_state", key=("name",), columns=(_col("name"), _int("last_seq"))
)

# The tables written from the state, keyed by one column, in their order of definition.
ROW_TABLES: tuple[Table, ...] = (
    CREDENTIALS,
    RENTERS,
    PROVIDERS,
    JOBS,
    JOB_OUTPUTS,
    ACCOUNTS,
    WITHDRAWALS,
    PRICING,
    IMAGE_ALLOWLIST,
    TOPUPS,
    DEPOSITS,
)
# Every read-model table, in the order the DDL creates them.
ALL: tuple[Table, ...] = (PROJECTION_STATE, *ROW_TABLES[:6], POSTINGS, *ROW_TABLES[6:])
BY_NAME: dict[str, Table] = {t.name: t for t in ALL}

_TYPES: dict[Dialect, dict[Kind, str]] = {
    "sqlite": {"int": "INTEGER", "text": "TEXT", "bool": "INTEGER", "json": "TEXT"},
    # bigint: halala and microseconds outgrow 32 bits; bool as smallint 0/1 so that the same
    # SQL (`paused = 0`, SUM(paused)) reads both backends.
    "postgres": {"int": "bigint", "text": "text", "bool": "smallint", "json": "text"},
}


def column_type(kind: Kind, dialect: Dialect) -> str:
    """The column type of `kind` on `dialect`."""
    return _TYPES[dialect][kind]


def create_table(table: Table, dialect: Dialect) -> str:
    """CREATE TABLE IF NOT EXISTS ... and its indexes, for `dialect`."""
    lines = [
        f"    {c.name} {column_type(c.kind, dialect)}{'' if c.nullable else ' NOT NULL'}"
        for c in table.columns
    ]
    lines.append(f"    PRIMARY KEY ({', '.join(table.key)})")
    body = ",\n".join(lines)
    strict = " STRICT" if dialect == "sqlite" else ""
    out = [f"CREATE TABLE IF NOT EXISTS {table.name} (\n{body}\n){strict};"]
    out += [
        f"CREATE INDEX IF NOT EXISTS {name} ON {table.name} ({', '.join(cols)});"
        for name, cols in table.indexes
    ]
    return "\n".join(out)


_ZERO: dict[Kind, str] = {"int": "0", "bool": "0", "text": "''", "json": "'null'"}


def add_column(table: Table, column: Column, dialect: Dialect) -> str:
    """ALTER TABLE adding `column` to a database written before it existed. A NOT NULL column
    gets a placeholder default for the rows already there; the rebuild that follows (the
    tables' fingerprint changed) writes every row's real value."""
    type_ = column_type(column.kind, dialect)
    null = "" if column.nullable else f" NOT NULL DEFAULT {_ZERO[column.kind]}"
    return f"ALTER TABLE {table.name} ADD COLUMN {column.name} {type_}{null}"


def ddl(dialect: Dialect) -> str:
    """The DDL of every read-model table for `dialect`, as a fresh database gets it."""
    return "\n\n".join(create_table(t, dialect) for t in ALL) + "\n"
