"""Read-model rows as pure functions of the state.

Each `*_row` returns a dict keyed by column name, in the table's column order, built from the
table's spec (`dcp_projections.tables`, where each table is defined once); `TABLES` names each
table's columns and key. `changed_rows(state, touched)` gives the upserts and
deletes for the entities a batch touched; `all_rows(state)` gives every row (rebuild).
Rows depend only on the events folded (never on a clock), so a rebuild yields identical rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from operator import attrgetter, itemgetter
from typing import Any

import msgspec

from dcp_events.event import Event
from dcp_projections import tables
from dcp_projections.state import (
    Credential,
    DepositRef,
    Job,
    Price,
    Provider,
    Renter,
    State,
    TopUp,
    Touched,
    Withdrawal,
)

Row = dict[str, Any]

# table -> (key column, columns in order), from the specs (dcp_projections.tables).
TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    t.name: (t.key[0], t.column_names) for t in tables.ROW_TABLES
}

POSTING_COLUMNS = tables.POSTINGS.column_names

_credential = tables.CREDENTIALS.row_builder()
renter_row: Callable[[Renter], Row] = tables.RENTERS.row_builder()
provider_row: Callable[[Provider], Row] = tables.PROVIDERS.row_builder()
job_row: Callable[[Job], Row] = tables.JOBS.row_builder()
_job_output = tables.JOB_OUTPUTS.row_builder()
_account = tables.ACCOUNTS.row_builder()
withdrawal_row: Callable[[Withdrawal], Row] = tables.WITHDRAWALS.row_builder()
price_row: Callable[[Price], Row] = tables.PRICING.row_builder()
_image = tables.IMAGE_ALLOWLIST.row_builder()
topup_row: Callable[[TopUp], Row] = tables.TOPUPS.row_builder()
_deposit = tables.DEPOSITS.row_builder()


def credential_row(key_hash: str, c: Credential) -> Row:
    return _credential(c)


def deposit_row(reference: str, d: DepositRef) -> Row:
    return _deposit((reference, d))


def withdrawal_of_row(row: Row) -> Withdrawal:
    """The withdrawal a `withdrawals` row holds (its columns are the entity's fields): how a
    decided withdrawal that left memory comes back for a decision."""
    return Withdrawal(**{c: row[c] for c in tables.WITHDRAWALS.column_names})


def topup_of_row(row: Row) -> TopUp:
    """The top-up a `topups` row holds (its columns are the entity's fields): how a settled
    top-up that left memory comes back for a decision."""
    return TopUp(**{c: row[c] for c in tables.TOPUPS.column_names})


def deposit_of_row(row: Row) -> DepositRef:
    """The credit a `deposits` row records."""
    return DepositRef(row["renter_id"], row["amount_halala"], row["last_seq"])


def job_output_row(j: Job) -> Row | None:
    return None if j.output is None else _job_output(j)


def account_row(state: State, account: str) -> Row:
    return _account((account, state.balances.get(account, 0), state.account_seq.get(account, 0)))


def image_row(reference: str, seq: int) -> Row:
    return _image((reference, seq))


class RowChanges(msgspec.Struct):
    """Rows to upsert and keys to delete, per table."""

    upserts: dict[str, list[Row]]
    deletes: dict[str, list[str]]


def _rows_of(state: State, kind: str, key: str) -> Iterator[tuple[str, Row | None]]:
    """(table, row or None for "delete this key") for one touched entity."""
    if kind == "job":
        job = state.jobs[key]
        yield "jobs", job_row(job)
        out = job_output_row(job)
        yield "job_outputs", out  # None (delete) after an admin requeue cleared the output
    elif kind == "account":
        yield "accounts", account_row(state, key)
    elif kind == "provider":
        yield "providers", provider_row(state.providers[key])
    elif kind == "renter":
        yield "renters", renter_row(state.renters[key])
    elif kind == "withdrawal":
        yield "withdrawals", withdrawal_row(state.withdrawals[key])
    elif kind == "credential":
        yield "credentials", credential_row(key, state.credentials[key])
    elif kind == "topup":
        yield "topups", topup_row(state.topups[key])
    elif kind == "deposit":
        yield "deposits", deposit_row(key, state.deposit_refs[key])
    elif kind == "price":
        yield "pricing", price_row(state.pricing[key])
    elif kind == "image":
        seq = state.images.get(key)
        yield "image_allowlist", None if seq is None else image_row(key, seq)
    else:
        raise ValueError(f"unknown entity kind {kind!r}")


def _key_of(table: str, kind: str, key: str, state: State) -> str:
    if table == "pricing":
        return state.pricing[key].gpu_model
    return key


def changed_rows(state: State, touched: Touched) -> RowChanges:
    """The upserts and deletes that bring the read models up to `state` for `touched`."""
    changes = RowChanges(upserts={t: [] for t in TABLES}, deletes={t: [] for t in TABLES})
    for kind, key in sorted(touched):
        for table, row in _rows_of(state, kind, key):
            if row is None:
                changes.deletes[table].append(_key_of(table, kind, key, state))
            else:
                changes.upserts[table].append(row)
    return changes


def all_rows(state: State) -> dict[str, list[Row]]:
    """Every read-model row of `state` (what a rebuild writes), per table."""
    out: dict[str, list[Row]] = {t: [] for t in TABLES}
    out["credentials"] = [credential_row(k, c) for k, c in state.credentials.items()]
    out["renters"] = [renter_row(r) for r in state.renters.values()]
    out["providers"] = [provider_row(p) for p in state.providers.values()]
    for j in state.jobs.values():
        out["jobs"].append(job_row(j))
        o = job_output_row(j)
        if o is not None:
            out["job_outputs"].append(o)
    out["accounts"] = [account_row(state, a) for a in state.balances]
    out["withdrawals"] = [withdrawal_row(w) for w in state.withdrawals.values()]
    out["pricing"] = [price_row(p) for p in state.pricing.values()]
    out["image_allowlist"] = [image_row(r, s) for r, s in state.images.items()]
    out["topups"] = [topup_row(t) for t in state.topups.values()]
    out["deposits"] = [deposit_row(r, d) for r, d in state.deposit_refs.items()]
    return out


def _tuple_builder(table: tables.Table) -> Callable[[Any], tuple[Any, ...]]:
    """A function from one entity to its row as a tuple in column order: the row builder's
    values without the dict around them (what a rebuild binds). The plain columns are read
    by one `attrgetter` call, the others by their getters, and `itemgetter` puts the values
    in column order: C calls but for the getters."""
    plain = [c.name for c in table.columns if c.get is None]
    getters = [c.get for c in table.columns if c.get is not None]
    order, n_plain, n_got = [], 0, len(plain)
    for c in table.columns:  # where each column's value is in (plain..., got...)
        if c.get is None:
            order.append(n_plain)
            n_plain += 1
        else:
            order.append(n_got)
            n_got += 1
    read = attrgetter(*plain) if len(plain) > 1 else None
    if not getters and read is not None:
        return read  # every column a plain attribute, in column order
    arrange = itemgetter(*order)

    def row(entity: Any) -> tuple[Any, ...]:
        if read is not None:
            values = read(entity)
        else:
            values = tuple(getattr(entity, name) for name in plain)
        got: tuple[Any, ...] = tuple([get(entity) for get in getters])
        return arrange(values + got)  # type: ignore[no-any-return]

    return row


_T = {t.name: _tuple_builder(t) for t in tables.ROW_TABLES}


def all_tuples(state: State) -> dict[str, list[tuple[Any, ...]]]:
    """`all_rows(state)` as tuples in column order (the values of each row's dict), built
    without the dicts: the same rows, at a third of the cost (a rebuild writes them)."""
    t = _T
    job, output = t["jobs"], t["job_outputs"]
    image, deposit, account = t["image_allowlist"], t["deposits"], t["accounts"]
    balances, account_seq = state.balances, state.account_seq
    return {
        "credentials": list(map(t["credentials"], state.credentials.values())),
        "renters": list(map(t["renters"], state.renters.values())),
        "providers": list(map(t["providers"], state.providers.values())),
        "jobs": list(map(job, state.jobs.values())),
        "job_outputs": [output(j) for j in state.jobs.values() if j.output is not None],
        "accounts": [account((a, b, account_seq.get(a, 0))) for a, b in balances.items()],
        "withdrawals": list(map(t["withdrawals"], state.withdrawals.values())),
        "pricing": list(map(t["pricing"], state.pricing.values())),
        "image_allowlist": [image(item) for item in state.images.items()],
        "topups": list(map(t["topups"], state.topups.values())),
        "deposits": [deposit(item) for item in state.deposit_refs.items()],
    }


def posting_rows(
    seq: int, event: Event, recorded_at_us: int
) -> Iterable[tuple[int, int, str, int, str, str | None, int]]:
    """The `postings` rows of one event, in POSTING_COLUMNS order."""
    postings = getattr(event, "postings", ())
    if not postings:
        return ()
    tag = str(event.__struct_config__.tag)
    job_id = getattr(event, "job_id", None)
    return [
        (seq, i, p.account, p.amount_halala, tag, job_id, recorded_at_us)
        for i, p in enumerate(postings)
    ]
