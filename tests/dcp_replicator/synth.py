"""A synthetic DCP workload for the replicator's tests and benchmark, written through the real
event store.

Stand-in until scripts/simulate.py (the real domain) lands: it writes plausible events (renters,
providers, deposits and gateway top-ups, jobs that are submitted, claimed, started and settled,
heartbeats, withdrawals, pricing) with `SqliteEventStore.append_atomic`, and fills the
read-model tables of schemas/002_projections.sql in the same transaction through the store's
`tx_hook`, as the application does. Money follows SPEC section 2 (holds, 75/25 split,
refunds), so the postings of every event sum to zero. Deterministic for a given seed.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dcp_events.sqlite_store import SqliteEventStore
from dcp_events.store import AppendRequest, NewEvent, RecordedEvent

GPU_PRICES = {"H200": 919, "H100": 709, "A100": 450, "RTX 4090": 100}


def _apply(conn: sqlite3.Connection, recorded: Sequence[RecordedEvent]) -> None:
    """The tx_hook: write each event's row changes into the read models."""
    for ev in recorded:
        body = json.loads(ev.payload)
        for table, row in body.get("rows", []):
            row = {**row, "last_seq": ev.seq}
            cols = ", ".join(row)
            marks = ", ".join("?" for _ in row)
            conn.execute(
                f"INSERT OR REPLACE INTO {table} ({cols}) VALUES ({marks})", tuple(row.values())
            )
        for idx, (account, amount) in enumerate(body.get("postings", [])):
            conn.execute(
                "INSERT INTO postings (seq, idx, account_id, amount_halala, event_type, job_id,"
                " recorded_at_us) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (ev.seq, idx, account, amount, ev.type, body.get("job_id"), ev.recorded_at_us),
            )
            conn.execute(
                "INSERT INTO accounts (account_id, balance_halala, last_seq) VALUES (?, ?, ?)"
                " ON CONFLICT (account_id) DO UPDATE SET"
                " balance_halala = balance_halala + excluded.balance_halala,"
                " last_seq = excluded.last_seq",
                (account, amount, ev.seq),
            )
    conn.execute(
        "INSERT INTO projection_state (name, last_seq) VALUES ('synth', ?)"
        " ON CONFLICT (name) DO UPDATE SET last_seq = excluded.last_seq",
        (recorded[-1].seq,),
    )


class SynthWorkload:
    """Decides plausible events from its own in-memory state."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.n = 0
        self.renters: dict[str, int] = {}  # renter_id -> available
        self.providers: dict[str, dict[str, Any]] = {}
        self.earnings: dict[str, int] = {}
        self.jobs: dict[str, dict[str, Any]] = {}  # open jobs
        self.withdrawals: dict[str, dict[str, Any]] = {}  # pending
        self.now_us = 1_780_000_000_000_000
        self.prices = dict(GPU_PRICES)

    def _id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n:07d}"

    def next(self) -> tuple[str, NewEvent]:
        """One event (its stream and its row form)."""
        self.now_us += self.rng.randint(1_000, 2_000_000)
        r = self.rng.random()
        if len(self.renters) < 5 or r < 0.02:
            return self._register_renter()
        if len(self.providers) < 3 or r < 0.03:
            return self._register_provider()
        if r < 0.10:
            return self._deposit()
        if r < 0.30:
            return self._heartbeat()
        if r < 0.31:
            return self._pricing()
        if r < 0.33 and self.withdrawals:
            return self._complete_withdrawal()
        if r < 0.35:
            ev = self._request_withdrawal()
            if ev:
                return ev
        open_jobs = [j for j in self.jobs.values()]
        if r < 0.60 or not open_jobs:
            ev = self._submit()
            if ev:
                return ev
            return self._deposit()
        return self._advance(self.rng.choice(open_jobs))

    def _event(self, stream: str, type_: str, body: dict[str, Any]) -> tuple[str, NewEvent]:
        return stream, NewEvent(type=type_, schema_version=1, payload=json.dumps(body).encode())

    def _register_renter(self) -> tuple[str, NewEvent]:
        rid = self._id("r")
        self.renters[rid] = 0
        row = {
            "renter_id": rid,
            "name": f"Renter {rid}",
            "email": f"{rid}@example.sa",
            "created_at_us": self.now_us,
        }
        return self._event(f"renter-{rid}", "synth.renter_registered", {"rows": [["renters", row]]})

    def _register_provider(self) -> tuple[str, NewEvent]:
        pid = self._id("p")
        model = self.rng.choice(list(self.prices))
        row = {
            "provider_id": pid,
            "name": f"Provider {pid}",
            "email": f"{pid}@example.sa",
            "gpu_model": model,
            "gpu_count": self.rng.randint(1, 8),
            "vram_gb": 80,
            "approval_status": "approved",
            "paused": 0,
            "suspended": 0,
            "accepting_jobs": 1,
            "daemon_version": "1.0.0",
            "last_heartbeat_us": None,
            "gpus_json": "[]",
            "created_at_us": self.now_us,
        }
        self.providers[pid] = row
        self.earnings[pid] = 0
        return self._event(
            f"provider-{pid}", "synth.provider_registered", {"rows": [["providers", row]]}
        )

    def _deposit(self) -> tuple[str, NewEvent]:
        rid = self.rng.choice(list(self.renters))
        amount = self.rng.randint(10_000, 500_000)
        self.renters[rid] += amount
        postings = [["world:deposits", -amount], [f"renter:{rid}:available", amount]]
        if self.rng.random() < 0.5:  # paid in through the gateway: a top-up row too
            tid = self._id("tu")
            row = {
                "topup_id": tid,
                "renter_id": rid,
                "amount_halala": amount,
                "status": "paid",
                "invoice_id": f"inv-{tid}",
                "checkout_url": f"https://checkout.example/invoices/inv-{tid}",
                "payment_id": f"pay-{tid}",
                "reason": "",
                "gateway_amount_halala": None,
                "gateway_currency": None,
                "created_at_us": self.now_us,
                "updated_at_us": self.now_us,
            }
            body = {"rows": [["topups", row]], "postings": postings}
            return self._event(f"renter-{rid}", "synth.topup_paid", body)
        return self._event(f"renter-{rid}", "synth.deposited", {"postings": postings})

    def _heartbeat(self) -> tuple[str, NewEvent]:
        pid = self.rng.choice(list(self.providers))
        p = self.providers[pid]
        gpus = [
            {
                "model": p["gpu_model"],
                "vram_free_gb": self.rng.randint(0, 80),
                "utilisation_pct": self.rng.randint(0, 100),
                "temperature_c": 40 + i,
            }
            for i in range(p["gpu_count"])
        ]
        p.update(
            last_heartbeat_us=self.now_us,
            gpus_json=json.dumps(gpus),
            accepting_jobs=int(self.rng.random() < 0.9),
        )
        return self._event(f"provider-{pid}", "synth.heartbeat", {"rows": [["providers", p]]})

    def _pricing(self) -> tuple[str, NewEvent]:
        model = self.rng.choice(list(self.prices))
        self.prices[model] = max(1, self.prices[model] + self.rng.randint(-20, 20))
        row = {"gpu_model": model, "halala_per_gpu_hour": self.prices[model]}
        return self._event("platform", "synth.price_set", {"rows": [["pricing", row]]})

    def _submit(self) -> tuple[str, NewEvent] | None:
        rid = self.rng.choice(list(self.renters))
        model = self.rng.choice(list(self.prices))
        gpus = self.rng.randint(1, 2)
        rate = self.prices[model] * gpus
        max_s = self.rng.choice([600, 1800, 3600])
        reserve = -(-rate * max_s // 3600)
        if self.renters[rid] < reserve:
            return None
        self.renters[rid] -= reserve
        jid = self._id("job")
        job = {
            "job_id": jid,
            "renter_id": rid,
            "provider_id": None,
            "requested_provider_id": None,
            "status": "queued",
            "image": "dcp/busybox:1",
            "command_json": json.dumps(["sh", "-c", f"echo {jid}"]),
            "gpu_type": model,
            "min_vram_gb": 16,
            "gpu_count": gpus,
            "priority": "standard",
            "max_duration_seconds": max_s,
            "rate_halala_per_hour": rate,
            "cost_halala": reserve,
            "actual_cost_halala": None,
            "refunded_halala": None,
            "provider_earned_halala": None,
            "platform_fee_halala": None,
            "attempt": 0,
            "lease_expires_us": None,
            "submitted_at_us": self.now_us,
            "submit_seq": len(self.jobs) + 1,  # its place in submit order
            "assigned_at_us": None,
            "started_at_us": None,
            "ended_at_us": None,
            "exit_code": None,
            "error": None,
        }
        self.jobs[jid] = job
        return self._event(
            f"renter-{rid}",
            "synth.job_submitted",
            {
                "job_id": jid,
                "rows": [["jobs", job]],
                "postings": [
                    [f"renter:{rid}:available", -reserve],
                    [f"renter:{rid}:held", reserve],
                ],
            },
        )

    def _advance(self, job: dict[str, Any]) -> tuple[str, NewEvent]:
        rid, jid = job["renter_id"], job["job_id"]
        body: dict[str, Any] = {"job_id": jid}
        if job["status"] == "queued":
            job.update(
                status="assigned",
                provider_id=self.rng.choice(list(self.providers)),
                attempt=job["attempt"] + 1,
                assigned_at_us=self.now_us,
                lease_expires_us=self.now_us + 120_000_000,
            )
            kind = "synth.job_claimed"
        elif job["status"] == "assigned":
            job.update(status="running", started_at_us=self.now_us)
            kind = "synth.job_started"
        else:
            reserve = job["cost_halala"]
            secs = self.rng.randint(1, job["max_duration_seconds"])
            actual = min(reserve, -(-job["rate_halala_per_hour"] * secs // 3600))
            provider = actual * 75 // 100
            fee = actual - provider
            refund = reserve - actual
            job.update(
                status="completed",
                actual_cost_halala=actual,
                refunded_halala=refund,
                provider_earned_halala=provider,
                platform_fee_halala=fee,
                ended_at_us=self.now_us,
                exit_code=0,
                lease_expires_us=None,
            )
            pid = job["provider_id"]
            self.renters[rid] += refund
            self.earnings[pid] += provider
            body["postings"] = [
                [f"renter:{rid}:held", -reserve],
                [f"renter:{rid}:available", refund],
                [f"provider:{pid}:earnings", provider],
                ["platform:revenue", fee],
            ]
            del self.jobs[jid]
            kind = "synth.job_completed"
        body["rows"] = [["jobs", dict(job)]]
        return self._event(f"renter-{rid}", kind, body)

    def _request_withdrawal(self) -> tuple[str, NewEvent] | None:
        rich = [p for p, e in self.earnings.items() if e >= 1000]
        if not rich:
            return None
        pid = self.rng.choice(rich)
        amount = self.rng.randint(1000, self.earnings[pid])
        self.earnings[pid] -= amount
        wid = self._id("w")
        row = {
            "withdrawal_id": wid,
            "provider_id": pid,
            "amount_halala": amount,
            "iban": "SA0380000000608010167519",
            "status": "pending",
            "requested_at_us": self.now_us,
            "decided_at_us": None,
        }
        self.withdrawals[wid] = row
        return self._event(
            f"provider-{pid}",
            "synth.withdrawal_requested",
            {
                "rows": [["withdrawals", row]],
                "postings": [
                    [f"provider:{pid}:earnings", -amount],
                    [f"provider:{pid}:payout_pending", amount],
                ],
            },
        )

    def _complete_withdrawal(self) -> tuple[str, NewEvent]:
        wid = self.rng.choice(list(self.withdrawals))
        row = self.withdrawals.pop(wid)
        row.update(status="completed", decided_at_us=self.now_us)
        pid, amount = row["provider_id"], row["amount_halala"]
        return self._event(
            f"provider-{pid}",
            "synth.withdrawal_completed",
            {
                "rows": [["withdrawals", row]],
                "postings": [
                    [f"provider:{pid}:payout_pending", -amount],
                    ["world:payouts", amount],
                ],
            },
        )


async def write_events(
    store: SqliteEventStore, workload: SynthWorkload, n: int, per_append: int = 200
) -> None:
    """Append `n` events in appends of up to `per_append` events, read models included."""
    done = 0
    while done < n:
        k = min(per_append, n - done)
        requests = [
            AppendRequest(stream, None, [ev]) for stream, ev in (workload.next() for _ in range(k))
        ]
        await store.append_atomic(requests, tx_hook=_apply)
        done += k


async def make_db(path: Path, n: int, seed: int = 7) -> SynthWorkload:
    """A fresh log at `path` with `n` synthetic events; returns the workload to continue it."""
    workload = SynthWorkload(seed)
    store = await SqliteEventStore.open(path)
    try:
        await write_events(store, workload, n)
    finally:
        await store.close()
    return workload
