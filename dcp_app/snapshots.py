"""Snapshots of the domain state beside the log, so start-up folds only the tail.

A snapshot file is a small msgpack header (format, version, the sequence and head hash it was
taken at, the state's parameters, the body's sha256) followed by the msgpack body: the
state's entities and the stream versions. It depends on nothing but the `EventStore`
interface (the hash of the event at its sequence, read back through `read_all`), so the
PostgreSQL store uses the same files.

A snapshot can make start-up fast, never wrong: `load_newest` takes the newest file whose
version and parameters are this code's, whose body hashes to what its header says, and whose
sequence and hash are the log's; anything else it logs (`snapshot_ignored` with the reason:
corrupt, incompatible, ahead_of_log, foreign) and tries the next older one, then none (a fold
from the start). `dcp audit replay --snapshot FILE` checks one against a fold from scratch.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections import OrderedDict
from pathlib import Path

import msgspec
import structlog
from sortedcontainers import SortedList

from dcp_events.catalogue import ContainerSpec, GpuRequirements
from dcp_events.store import EventStore
from dcp_projections.state import (
    PRIORITY_RANK,
    Credential,
    DepositRef,
    Job,
    Price,
    Provider,
    Renter,
    State,
    SubmitKey,
    TopUp,
    Withdrawal,
)

FORMAT = "dcp-snapshot"
# Bump whenever an entity's fields or their meaning change: an older file is then ignored.
# 2: top-ups; 3: submit keys carry the request's fingerprint; 4: deposit references and decided
# withdrawals bounded (history_cap), the deposits' running total; 5: settled top-ups bounded
# (their settled list, the top-ups' running total)
VERSION = 5
KEEP = 2  # files kept; older ones are removed after each write
_LEN = struct.Struct(">I")  # the header's length, before it

log = structlog.get_logger("dcp_app.snapshots")


class Header(msgspec.Struct, frozen=True, kw_only=True):
    format: str
    version: int
    seq: int
    head_hash: str
    ended_cap: int | None
    idempotency_window_us: int
    body_sha256: str
    history_cap: int | None = None  # (a default, so an older header decodes as incompatible)
    topups_cap: int | None = None


class Body(msgspec.Struct, kw_only=True):
    balances: dict[str, int]
    account_seq: dict[str, int]
    renters: list[Renter]
    providers: list[Provider]
    jobs: list[Job]  # every job in memory, in the state's order
    ended: list[str]  # the ended ones, oldest ending first
    pricing: dict[str, Price]
    images: dict[str, int]
    withdrawals: list[Withdrawal]
    credentials: list[Credential]
    submit_keys: list[tuple[str, str, SubmitKey]]  # oldest first
    deposit_refs: list[tuple[str, DepositRef]]  # oldest credit first
    deposits_halala: int
    decided: list[str]  # the decided withdrawals in memory, oldest decision first
    topups: list[TopUp]
    topup_payments: dict[str, str]
    topup_invoices: dict[str, str]
    topup_keys: list[tuple[str, str, str]]  # (renter, idempotency key, top-up)
    topups_settled: list[str]  # the settled top-ups in memory, oldest settlement first
    topups_credited_halala: int
    versions: dict[str, int]  # stream -> version, for the service's appends


class Loaded(msgspec.Struct):
    state: State
    versions: dict[str, int]
    path: Path


# (ended_cap, idempotency_window_us, history_cap, topups_cap) of a State
Params = tuple[int | None, int, int | None, int | None]


def params_of(state: State) -> Params:
    """The parameters a snapshot of `state` is taken and loaded with."""
    return (state.ended_cap, state.idempotency_window_us, state.history_cap, state.topups_cap)


_header_decoder = msgspec.msgpack.Decoder(Header)


def encode(state: State, versions: dict[str, int], head_hash: str) -> bytes:
    """The snapshot file's bytes for `state` (taken at `state.seq`, whose hash is `head_hash`)."""
    return frame(encode_body(state, versions), state, head_hash)


def encode_body(state: State, versions: dict[str, int]) -> bytes:
    """The body: everything that must be read while the state holds still."""
    return msgspec.msgpack.encode(
        Body(
            balances=state.balances,
            account_seq=state.account_seq,
            renters=list(state.renters.values()),
            providers=list(state.providers.values()),
            jobs=list(state.jobs.values()),
            ended=list(state.ended),
            pricing=state.pricing,
            images=state.images,
            withdrawals=list(state.withdrawals.values()),
            credentials=list(state.credentials.values()),
            submit_keys=[(r, k, v) for (r, k), v in state.submit_keys.items()],
            deposit_refs=list(state.deposit_refs.items()),
            deposits_halala=state.deposits_halala,
            decided=list(state.decided),
            topups=list(state.topups.values()),
            topup_payments=state.topup_payments,
            topup_invoices=state.topup_invoices,
            topup_keys=[(r, k, t) for (r, k), t in state.topup_keys.items()],
            topups_settled=list(state.topups_settled),
            topups_credited_halala=state.topups_credited_halala,
            versions=versions,
        )
    )


def frame(body: bytes, state: State, head_hash: str) -> bytes:
    """Header + body: the header names `state`'s sequence and parameters (read them before the
    state moves on: `Params` and seq are plain values) and the body's hash."""
    return frame_at(body, state.seq, head_hash, params_of(state))


def frame_at(body: bytes, seq: int, head_hash: str, params: Params) -> bytes:
    """Header + body for a body taken at `seq`; hashes the body (in a thread, if you like)."""
    return header_at(body, seq, head_hash, params) + body


def header_at(body: bytes, seq: int, head_hash: str, params: Params) -> bytes:
    """What precedes `body` in its file (the header's length, the header, naming the body's
    hash): `write(directory, seq, header, body)` then writes the file without the copy of the
    body that joining the two would make (tens of MB on a big log)."""
    header = msgspec.msgpack.encode(
        Header(
            format=FORMAT,
            version=VERSION,
            seq=seq,
            head_hash=head_hash,
            ended_cap=params[0],
            idempotency_window_us=params[1],
            history_cap=params[2],
            topups_cap=params[3],
            body_sha256=hashlib.sha256(body).hexdigest(),
        )
    )
    return _LEN.pack(len(header)) + header


class Unusable(Exception):
    """Why a snapshot file cannot be used: `reason` is one word for the log."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def read_header(data: bytes) -> tuple[Header, memoryview]:
    """The header and the body's bytes; Unusable("corrupt" / "incompatible")."""
    view = memoryview(data)
    try:
        (n,) = _LEN.unpack_from(view)
        header = _header_decoder.decode(view[_LEN.size : _LEN.size + n])
    except (struct.error, msgspec.DecodeError) as e:
        raise Unusable("corrupt", f"unreadable header ({e})") from None
    if header.format != FORMAT or header.version != VERSION:
        raise Unusable("incompatible", f"{header.format} version {header.version}")
    return header, view[_LEN.size + n :]


def decode(data: bytes, params: Params | None = None) -> Loaded:
    """Rebuild the state from a snapshot's bytes; Unusable if it is corrupt or, given
    `params`, was taken from a state with others (None: take the file's)."""
    header, body_bytes = read_header(data)
    taken = (header.ended_cap, header.idempotency_window_us, header.history_cap, header.topups_cap)
    if params is not None and taken != params:
        raise Unusable(
            "incompatible",
            f"taken keeping {header.ended_cap} ended jobs, a {header.idempotency_window_us} us"
            f" key window, {header.history_cap} references and {header.topups_cap} settled"
            f" top-ups, not {params}",
        )
    if hashlib.sha256(body_bytes).hexdigest() != header.body_sha256:
        raise Unusable("corrupt", "the body does not match its hash")
    try:
        body = decode_body(body_bytes)
    except msgspec.DecodeError as e:
        raise Unusable("corrupt", f"undecodable body ({e})") from None
    state = State(
        ended_cap=header.ended_cap,
        idempotency_window_us=header.idempotency_window_us,
        history_cap=header.history_cap,
        topups_cap=header.topups_cap,
    )
    state.seq = header.seq
    state.balances = body.balances
    state.account_seq = body.account_seq
    state.renters = {r.renter_id: r for r in body.renters}
    state.providers = {p.provider_id: p for p in body.providers}
    state.jobs = {j.job_id: j for j in body.jobs}
    for j in body.jobs:  # what later submissions share (the decode made them one already)
        state.shared(j.container_spec, j.gpu_requirements)
    state.ended = OrderedDict.fromkeys(body.ended)
    state.queue = SortedList(
        (PRIORITY_RANK[j.priority], j.submit_seq, j.job_id)
        for j in body.jobs
        if j.status == "queued"
    )
    state.pricing = body.pricing
    state.images = body.images
    state.withdrawals = {w.withdrawal_id: w for w in body.withdrawals}
    state.credentials = {c.key_hash: c for c in body.credentials}
    state.submit_keys = OrderedDict(((r, k), v) for r, k, v in body.submit_keys)
    state.deposit_refs = OrderedDict(body.deposit_refs)
    state.deposits_halala = body.deposits_halala
    state.decided = OrderedDict.fromkeys(body.decided)
    state.topups = {t.topup_id: t for t in body.topups}
    state.topup_payments = body.topup_payments
    state.topup_invoices = body.topup_invoices
    state.topup_keys = {(r, k): t for r, k, t in body.topup_keys}
    state.topups_settled = OrderedDict.fromkeys(body.topups_settled)
    state.topups_credited_halala = body.topups_credited_halala
    return Loaded(state, body.versions, Path())


# The body's fields decoded one at a time (see `decode_body`): each is first taken as raw
# msgpack bytes (a view of the file's, no copy), then decoded by its field's own decoder.
_FIELDS = msgspec.structs.fields(Body)
_RawBody = msgspec.defstruct(
    "_RawBody", [(f.name, msgspec.Raw) for f in _FIELDS], kw_only=True, module=__name__
)
_raw_body_decoder = msgspec.msgpack.Decoder(_RawBody)
_field_decoders = {f.name: msgspec.msgpack.Decoder(f.type) for f in _FIELDS}


def decode_body(data: bytes | memoryview) -> Body:
    """Decode a body field by field, making equal values one object as it goes; raises
    msgspec.DecodeError (or ValidationError, one of its kinds) if it is not a body.

    msgpack decodes every occurrence of a string into a string of its own, where the fold
    that built the state had one object: `balances` and `account_seq` keyed by one account
    string, a renter's id in its jobs, credentials and deposit references the id its events
    carried. Decoded whole, those copies were about 60 MB of a 1M-event log's 240 MB state
    (100,000 renters); and jobs' container specs and GPU requirements (frozen Structs)
    repeat by the thousand with a handful of distinct values. Freeing the copies after the
    whole body was decoded gave nothing back: they lay between the objects kept, as holes of
    the allocator's pools. Field by field, each field's copies are freed before the next
    field is decoded, whose objects then fill those holes. Values and types are those of the
    file: only which equal objects are the same one changes."""
    raw = _raw_body_decoder.decode(data)
    parts: dict[str, object] = {}

    def field(name: str) -> object:
        value = _field_decoders[name].decode(getattr(raw, name))
        parts[name] = value
        return value

    balances: dict[str, int] = field("balances")  # type: ignore[assignment]
    account_seq: dict[str, int] = field("account_seq")  # type: ignore[assignment]
    if list(balances) == list(account_seq):  # the fold inserts both in one order
        parts["account_seq"] = dict(zip(balances, account_seq.values(), strict=True))
    else:
        accounts = {a: a for a in balances}
        parts["account_seq"] = {accounts.get(a, a): s for a, s in account_seq.items()}
        del accounts
    del account_seq
    renters: list[Renter] = field("renters")  # type: ignore[assignment]
    providers: list[Provider] = field("providers")  # type: ignore[assignment]
    ids: dict[str, str] = {r.renter_id: r.renter_id for r in renters}
    ids.update((p.provider_id, p.provider_id) for p in providers)
    jobs: list[Job] = field("jobs")  # type: ignore[assignment]
    ids.update((j.job_id, j.job_id) for j in jobs)
    _share_jobs(jobs, ids)
    for p in providers:
        if p.leased:
            p.leased = {ids.get(j, j) for j in p.leased}
    ended: list[str] = field("ended")  # type: ignore[assignment]
    parts["ended"] = [ids.get(j, j) for j in ended]
    del ended
    # Frozen Structs: set in place (a replacement would leave the old one's hole).
    force = msgspec.structs.force_setattr
    get = ids.get
    credentials: list[Credential] = field("credentials")  # type: ignore[assignment]
    for c in credentials:
        if (subject := get(c.subject_id)) is not None:
            force(c, "subject_id", subject)
    refs: list[tuple[str, DepositRef]] = field("deposit_refs")  # type: ignore[assignment]
    for _, d in refs:
        if (renter := get(d.renter_id)) is not None:
            force(d, "renter_id", renter)
    keys: list[tuple[str, str, SubmitKey]] = field("submit_keys")  # type: ignore[assignment]
    for _, _, v in keys:
        if (job_id := get(v.job_id)) is not None:
            force(v, "job_id", job_id)
    parts["submit_keys"] = [(get(r, r), k, v) for r, k, v in keys]
    del keys
    withdrawals: list[Withdrawal] = field("withdrawals")  # type: ignore[assignment]
    for w in withdrawals:
        w.provider_id = ids.get(w.provider_id, w.provider_id)
    topups: list[TopUp] = field("topups")  # type: ignore[assignment]
    for t in topups:
        t.renter_id = ids.get(t.renter_id, t.renter_id)
    del ids
    for f in _FIELDS:  # the rest (the stream versions last: they fill what is left)
        if f.name not in parts and f.name != "versions":
            field(f.name)
    field("versions")
    return Body(**parts)  # type: ignore[arg-type]


def _share_jobs(jobs: list[Job], ids: dict[str, str]) -> None:
    specs: dict[bytes, ContainerSpec] = {}
    needs: dict[GpuRequirements, GpuRequirements] = {}
    gpu_keys: dict[str, str] = {}
    encode = msgspec.msgpack.encode
    for j in jobs:
        j.renter_id = ids.get(j.renter_id, j.renter_id)
        if j.provider_id is not None:
            j.provider_id = ids.get(j.provider_id, j.provider_id)
        if j.leases:
            j.leases = {a: ids.get(p, p) for a, p in j.leases.items()}
        j.container_spec = specs.setdefault(encode(j.container_spec), j.container_spec)
        j.gpu_requirements = needs.setdefault(j.gpu_requirements, j.gpu_requirements)
        j.gpu_key = gpu_keys.setdefault(j.gpu_key, j.gpu_key)


def file_name(seq: int) -> str:
    return f"snapshot-{seq:012d}.msgpack"


def files(directory: Path) -> list[Path]:
    """Snapshot files in `directory`, newest (highest sequence) first."""
    if not directory.is_dir():
        return []
    return sorted(directory.glob("snapshot-*.msgpack"), reverse=True)


def write(directory: Path, seq: int, data: bytes, *more: bytes) -> Path:
    """Write `data` and then each of `more` (the parts of one file, e.g. `header_at`'s and the
    body) atomically (temporary file, fsync, rename, fsync the directory), then keep only the
    KEEP newest files. Blocking: call it in a thread."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / file_name(seq)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        for part in more:
            f.write(part)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    for old in files(directory)[KEEP:]:
        old.unlink(missing_ok=True)
    return path


async def hash_at(store: EventStore, seq: int) -> str | None:
    """The hash of the event at `seq` in `store`'s log, or None if the log is shorter."""
    records = await store.read_all(seq - 1, 1)
    return records[0].hash if records and records[0].seq == seq else None


async def load_newest(store: EventStore, directory: Path, params: Params) -> Loaded | None:
    """The newest snapshot in `directory` that matches `store`'s log and these parameters,
    or None; every file passed over is logged with its reason."""
    head_seq, _ = await store.head()
    for path in files(directory):
        try:
            data = path.read_bytes()
            header, _ = read_header(data)
            if header.seq > head_seq:
                raise Unusable("ahead_of_log", f"taken at seq {header.seq}, log ends at {head_seq}")
            if await hash_at(store, header.seq) != header.head_hash:
                raise Unusable("foreign", f"the log's event {header.seq} has another hash")
            loaded = decode(data, params)
        except Unusable as e:
            log.warning("snapshot_ignored", path=str(path), reason=e.reason, detail=str(e))
            continue
        except OSError as e:
            log.warning("snapshot_ignored", path=str(path), reason="unreadable", detail=repr(e))
            continue
        loaded.path = path
        return loaded
    return None
