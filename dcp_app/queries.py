"""Read-side queries over the read-model tables, through the read side's query executor
(`dcp_app.readside.Reads`: SQLite or PostgreSQL), each written once for both backends.

Reads never see undurable state: the tables are written in the same transaction as the events
they come from. Every list is paginated with a bounded `limit` (at most MAX_LIMIT). Results are
the `dcp_app.views` Structs a command answers with (the same type from both paths); the gateway
top-ups and the operator's gauges are still plain dicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dcp_app import views as v
from dcp_app.read_sides import open_read_side
from dcp_app.readside import PROJECTION, Reads
from dcp_app.views import rfc3339
from dcp_projections import ledger
from dcp_projections.history import TopUpLookup
from dcp_projections.presence import heartbeat_bounds, presence
from dcp_projections.priorities import PRIORITY_RANK
from dcp_projections.rows import deposit_of_row, topup_of_row, withdrawal_of_row
from dcp_projections.settings import Settings
from dcp_projections.state import (
    DEFAULT_PRICE_KEY,
    SEED_PRICES,
    TOPUP_HOLDS_PAYMENT,
    DepositRef,
    TopUp,
    Withdrawal,
    gpu_key,
)
from dcp_projections.streams import renter_stream

MAX_LIMIT = 500
# The top-up holding a credited gateway payment (at most one: dcp_projections.topups.check).
_BY_PAYMENT = "SELECT * FROM topups WHERE payment_id = ? AND status IN ({})".format(
    ", ".join(f"'{s}'" for s in sorted(TOPUP_HOLDS_PAYMENT))
)
# The domain's queue order (dcp_projections.state.State.enqueue): priority rank, then the
# sequence of the job's submit event, which the `jobs` table stores as `submit_seq`.
_RANK = "CASE priority " + " ".join(f"WHEN '{n}' THEN {r}" for n, r in PRIORITY_RANK.items())
_RANK += " END"


# Account kinds summed for the operator's gauges (dcp_projections.ledger names the accounts).
# LIKE patterns (both backends have LIKE; GLOB is SQLite's). The `_` of payout_pending also
# matches any one character, and no other account kind differs there.
_ACCOUNT_KINDS = {
    "renter_available_halala": "renter:%:available",
    "renter_held_halala": "renter:%:held",
    "provider_earnings_halala": "provider:%:earnings",
    "provider_payout_pending_halala": "provider:%:payout_pending",
}


def _sum(expr: str) -> str:
    # PostgreSQL sums a bigint column as numeric (a Decimal in Python): the cast keeps every
    # total an integer on both backends.
    return f"CAST(COALESCE(SUM({expr}), 0) AS BIGINT)"


def _limit(limit: int) -> int:
    return max(1, min(int(limit), MAX_LIMIT))


class Queries:
    """Read models of one ledger. Open with `await Queries.open(db)` (a SQLite path or a
    postgresql:// URL), or wrap a `Reads` of your own."""

    def __init__(self, reads: Reads) -> None:
        self._reads = reads

    @classmethod
    async def open(cls, db: str | Path) -> Queries:
        """Read-only queries over the read models of `db` (the schema must exist)."""
        side = await open_read_side(db)
        try:
            return cls(await side.reads())
        finally:
            await side.close()

    async def close(self) -> None:
        await self._reads.close()

    async def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return await self._reads.all(sql, params)

    async def _one(self, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        return await self._reads.one(sql, params)

    # --- jobs --------------------------------------------------------------------------------

    async def _queue_position(self, row: dict[str, Any]) -> int:
        """1-based place of a queued job: the queued jobs of a higher priority, and those of
        its own submitted before it, come first (one count over the queued rows, by the
        `jobs_status` index)."""
        ahead = [n for n, r in PRIORITY_RANK.items() if r < PRIORITY_RANK[row["priority"]]]
        found = await self._one(
            "SELECT count(*) AS n FROM jobs WHERE status = 'queued' AND"
            f" (priority IN ({', '.join('?' * len(ahead)) or 'NULL'})"
            " OR (priority = ? AND submit_seq < ?))",
            (*ahead, row["priority"], row["submit_seq"]),
        )
        return (found["n"] if found else 0) + 1

    async def _queue_positions(self, rows: list[dict[str, Any]]) -> dict[str, int]:
        """The place of every queued job among `rows`, in one query whatever their number."""
        queued = [r for r in rows if r["status"] == "queued"]
        if len(queued) <= 1:
            return {r["job_id"]: await self._queue_position(r) for r in queued}
        found = await self._all(
            "SELECT job_id, n FROM (SELECT job_id, row_number() OVER"
            f" (ORDER BY {_RANK}, submit_seq) AS n FROM jobs WHERE status = 'queued') AS q"
            f" WHERE job_id IN ({', '.join('?' * len(queued))})",
            tuple(r["job_id"] for r in queued),
        )
        return {r["job_id"]: r["n"] for r in found}

    async def _job_views(self, rows: list[dict[str, Any]]) -> list[v.JobView]:
        positions = await self._queue_positions(rows)
        return [v.job_view_of_row(r, positions.get(r["job_id"])) for r in rows]

    async def job(
        self, job_id: str, *, renter_id: str | None = None, provider_id: str | None = None
    ) -> v.JobView | None:
        """The job view (as `dcp_app.views.job_view`), or None if unknown or, when `renter_id`
        or `provider_id` is given, not that renter's or provider's job.

        The owner is part of the one lookup, so another tenant's job and an unknown id take
        the same path and cost the same: checking the owner after loading the row (and
        counting a queued job's queue position) made another tenant's ids answer measurably
        slower than unknown ones.
        """
        sql = "SELECT * FROM jobs WHERE job_id = ?"
        params: list[Any] = [job_id]
        for column, value in (("renter_id", renter_id), ("provider_id", provider_id)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        row = await self._one(sql, tuple(params))
        if row is None:
            return None
        queued = row["status"] == "queued"
        return v.job_view_of_row(row, await self._queue_position(row) if queued else None)

    async def job_owner(self, job_id: str) -> str | None:
        """The renter of a job, or None if unknown: how the service finds the stream of an
        ended job it no longer holds in memory."""
        row = await self._one("SELECT renter_id FROM jobs WHERE job_id = ?", (job_id,))
        return None if row is None else str(row["renter_id"])

    async def deposit_ref(self, reference: str) -> DepositRef | None:
        """The credit an admin deposit reference made, or None if never credited: how the
        service decides a credit whose reference is no longer in memory."""
        row = await self._one(
            "SELECT renter_id, amount_halala, last_seq FROM deposits WHERE reference = ?",
            (reference,),
        )
        return None if row is None else deposit_of_row(row)

    async def withdrawal(self, withdrawal_id: str) -> Withdrawal | None:
        """The withdrawal as the domain holds it, or None: how the service decides about a
        decided withdrawal no longer in memory."""
        row = await self._one("SELECT * FROM withdrawals WHERE withdrawal_id = ?", (withdrawal_id,))
        return None if row is None else withdrawal_of_row(row)

    async def topup_entity(self, lookup: TopUpLookup) -> TopUp | None:
        """The top-up as the domain holds it, found by its id, the payment it holds, its
        invoice or its renter's idempotency key, or None: how the service decides about a
        settled top-up no longer in memory (one indexed read)."""
        params: tuple[str, ...] = (lookup.value,)
        if lookup.by == "topup_id":
            sql = "SELECT * FROM topups WHERE topup_id = ?"
        elif lookup.by == "payment_id":
            sql = _BY_PAYMENT
        elif lookup.by == "invoice_id":
            sql = "SELECT * FROM topups WHERE invoice_id = ?"
        else:  # by the topups_renter index, then that renter's top-ups
            sql = "SELECT * FROM topups WHERE renter_id = ? AND idempotency_key = ?"
            params = (lookup.renter_id, lookup.value)
        row = await self._one(sql + " LIMIT 1", params)
        return None if row is None else topup_of_row(row)

    async def jobs_of_renter(
        self, renter_id: str, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> v.JobsPage:
        """A renter's jobs, newest first, and the cursor of the next page (None: none). Pass
        `next_cursor` back as `cursor` for the next page; `status` filters."""
        sql = "SELECT * FROM jobs WHERE renter_id = ?"
        params: list[Any] = [renter_id]
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        if cursor:
            at, _, job_id = cursor.partition(":")
            sql += " AND (submitted_at_us, job_id) < (?, ?)"
            params += [int(at), job_id]
        n = _limit(limit)
        sql += " ORDER BY submitted_at_us DESC, job_id DESC LIMIT ?"
        rows = await self._all(sql, (*params, n + 1))
        more = len(rows) > n
        rows = rows[:n]
        nxt = f"{rows[-1]['submitted_at_us']}:{rows[-1]['job_id']}" if more and rows else None
        return v.JobsPage(jobs=await self._job_views(rows), next_cursor=nxt)

    async def jobs_of_provider(self, provider_id: str, limit: int = 50) -> list[v.JobView]:
        """The jobs a provider holds or held last, newest first."""
        rows = await self._all(
            "SELECT * FROM jobs WHERE provider_id = ? ORDER BY submitted_at_us DESC LIMIT ?",
            (provider_id, _limit(limit)),
        )
        return await self._job_views(rows)

    async def job_output(self, job_id: str) -> v.JobOutputView | None:
        """The job's output, or None."""
        row = await self._one(
            "SELECT job_id, exit_code, stdout, stderr, truncated, sha256 FROM job_outputs"
            " WHERE job_id = ?",
            (job_id,),
        )
        if row is None:
            return None
        return v.JobOutputView(
            job_id=row["job_id"],
            exit_code=row["exit_code"],
            stdout=row["stdout"],
            stderr=row["stderr"],
            truncated=bool(row["truncated"]),
            sha256=row["sha256"],
        )

    # --- renters -----------------------------------------------------------------------------

    async def balance(self, renter_id: str) -> v.Balance:
        """The renter's balances (zeros for an unknown renter)."""
        rows = await self._all(
            "SELECT account_id, balance_halala FROM accounts WHERE account_id IN (?, ?)",
            (ledger.renter_available(renter_id), ledger.renter_held(renter_id)),
        )
        by = {r["account_id"]: r["balance_halala"] for r in rows}
        available = by.get(ledger.renter_available(renter_id), 0)
        held = by.get(ledger.renter_held(renter_id), 0)
        return v.Balance(
            balance_halala=available + held, held_halala=held, available_halala=available
        )

    async def _renter_view(self, row: dict[str, Any]) -> v.RenterProfile:
        b = await self.balance(row["renter_id"])
        return v.RenterProfile(
            renter_id=row["renter_id"],
            name=row["name"],
            email=row["email"],
            created_at=rfc3339(row["created_at_us"]),
            balance_halala=b.balance_halala,
            held_halala=b.held_halala,
            available_halala=b.available_halala,
        )

    async def renter(self, renter_id: str) -> v.RenterProfile | None:
        """The renter's profile with its balances, or None."""
        row = await self._one(
            "SELECT renter_id, name, email, created_at_us FROM renters WHERE renter_id = ?",
            (renter_id,),
        )
        return None if row is None else await self._renter_view(row)

    async def ledger(
        self, renter_id: str, limit: int = 50, before_seq: int | None = None
    ) -> v.LedgerPage:
        """The renter's postings, newest first, before the event `before_seq`; the page's
        `next_cursor` is the `before_seq` of the next page (None: none)."""
        n = _limit(limit)
        rows = await self._all(
            "SELECT seq, idx, account_id, amount_halala, event_type, job_id, recorded_at_us"
            " FROM postings WHERE account_id IN (?, ?) AND seq < ?"
            " ORDER BY seq DESC, idx DESC LIMIT ?",
            (
                ledger.renter_available(renter_id),
                ledger.renter_held(renter_id),
                before_seq if before_seq is not None else 2**62,
                n + 1,
            ),
        )
        more = len(rows) > n
        if more:
            # A page ends at an event boundary so no event's legs are split across pages.
            rows = rows[:n]
            whole = [r for r in rows if r["seq"] != rows[-1]["seq"]]
            rows = whole or rows
        nxt = rows[-1]["seq"] if more and rows else None
        entries = [
            v.LedgerEntry(
                seq=r["seq"],
                account=r["account_id"],
                amount_halala=r["amount_halala"],
                event_type=r["event_type"],
                job_id=r["job_id"],
                recorded_at=rfc3339(r["recorded_at_us"]),
            )
            for r in rows
        ]
        return v.LedgerPage(entries=entries, next_cursor=None if nxt is None else str(nxt))

    # --- providers ---------------------------------------------------------------------------

    async def provider(
        self, provider_id: str, now_us: int, settings: Settings
    ) -> v.ProviderProfile | None:
        """The provider's view (presence, earnings and payout_pending included), or None."""
        row = await self._one("SELECT * FROM providers WHERE provider_id = ?", (provider_id,))
        if row is None:
            return None
        accounts = await self._all(
            "SELECT account_id, balance_halala FROM accounts WHERE account_id IN (?, ?)",
            (ledger.provider_earnings(provider_id), ledger.provider_payout_pending(provider_id)),
        )
        by = {r["account_id"]: r["balance_halala"] for r in accounts}
        return v.provider_view_of_row(
            row,
            presence(row["last_heartbeat_us"], now_us, settings),
            by.get(ledger.provider_earnings(provider_id), 0),
            by.get(ledger.provider_payout_pending(provider_id), 0),
        )

    async def marketplace(self, now_us: int, settings: Settings) -> list[v.MarketplaceEntry]:
        """Online, approved, unsuspended providers with the price of their GPU. At most
        MAX_LIMIT, most recent heartbeat first."""
        since, _ = heartbeat_bounds(now_us, settings)
        rows = await self._all(
            "SELECT provider_id, name, gpu_model, gpu_count, vram_gb, paused FROM providers"
            " WHERE approval_status = 'approved' AND suspended = 0 AND last_heartbeat_us >= ?"
            " ORDER BY last_heartbeat_us DESC LIMIT ?",
            (since, MAX_LIMIT),
        )
        prices = {gpu_key(p.gpu_model): p.halala_per_gpu_hour for p in await self.pricing()}
        return [
            v.MarketplaceEntry(
                provider_id=r["provider_id"],
                name=r["name"],
                gpu_model=r["gpu_model"],
                gpu_count=r["gpu_count"],
                vram_gb=r["vram_gb"],
                halala_per_gpu_hour=prices.get(gpu_key(r["gpu_model"]), prices[DEFAULT_PRICE_KEY]),
                state="online",
                paused=bool(r["paused"]),
            )
            for r in rows
        ]

    async def withdrawals(
        self,
        status: str | None = None,
        provider_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[v.WithdrawalView]:
        """Withdrawals, oldest request first, filtered by status and/or provider."""
        sql, params = "SELECT * FROM withdrawals WHERE 1 = 1", []
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        if provider_id is not None:
            sql += " AND provider_id = ?"
            params.append(provider_id)
        sql += " ORDER BY requested_at_us, withdrawal_id LIMIT ? OFFSET ?"
        rows = await self._all(sql, (*params, _limit(limit), max(0, int(offset))))
        return [v.withdrawal_view_of_row(r) for r in rows]

    # --- gateway top-ups ---------------------------------------------------------------------

    async def topup(self, topup_id: str, renter_id: str | None = None) -> v.TopUpView | None:
        """The top-up view (as `dcp_app.views.topup_view`), or None if unknown or, when
        `renter_id` is given, not that renter's."""
        sql, params = "SELECT * FROM topups WHERE topup_id = ?", [topup_id]
        if renter_id is not None:
            sql += " AND renter_id = ?"
            params.append(renter_id)
        row = await self._one(sql, tuple(params))
        return None if row is None else v.topup_view_of_row(row)

    async def topups(
        self,
        renter_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: tuple[int, str] | None = None,
    ) -> v.TopUpsPage:
        """Top-ups, newest first, of one renter and/or in one status, created before the
        (created_at_us, topup_id) cursor `before`, and the cursor of the next page
        (`created_at_us:topup_id`; None: none)."""
        sql = "SELECT * FROM topups WHERE 1 = 1"
        params: list[Any] = []
        if renter_id is not None:
            sql += " AND renter_id = ?"
            params.append(renter_id)
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        if before is not None:
            sql += " AND (created_at_us, topup_id) < (?, ?)"
            params += [before[0], before[1]]
        n = _limit(limit)
        sql += " ORDER BY created_at_us DESC, topup_id DESC LIMIT ?"
        rows = await self._all(sql, (*params, n + 1))
        more = len(rows) > n
        rows = rows[:n]
        nxt = f"{rows[-1]['created_at_us']}:{rows[-1]['topup_id']}" if more and rows else None
        return v.TopUpsPage(topups=[v.topup_view_of_row(r) for r in rows], next_cursor=nxt)

    async def topups_to_reconcile(
        self, updated_before_us: int, after: tuple[int, str], limit: int
    ) -> list[v.TopUpView]:
        """Pending and refunding top-ups not changed since `updated_before_us`, in
        (updated_at_us, topup_id) order after the cursor `after`: the reconcile sweep's next
        bounded page."""
        rows = await self._all(
            "SELECT * FROM topups WHERE status IN ('pending', 'refunding')"
            " AND updated_at_us <= ? AND (updated_at_us, topup_id) > (?, ?)"
            " ORDER BY updated_at_us, topup_id LIMIT ?",
            (updated_before_us, after[0], after[1], _limit(limit)),
        )
        return [v.topup_view_of_row(r) for r in rows]

    # --- platform ----------------------------------------------------------------------------

    async def pricing(self) -> list[v.PriceView]:
        """The price of each GPU model, by model name."""
        rows = await self._all(
            "SELECT gpu_model, halala_per_gpu_hour FROM pricing ORDER BY gpu_model"
        )
        if not any(gpu_key(r["gpu_model"]) == DEFAULT_PRICE_KEY for r in rows):
            # An empty log has no read-model rows yet: answer with the seeded table.
            have = {gpu_key(r["gpu_model"]) for r in rows}
            rows += [
                {"gpu_model": m, "halala_per_gpu_hour": p}
                for m, p in SEED_PRICES
                if gpu_key(m) not in have
            ]
        return [v.PriceView(**r) for r in rows]

    async def images(self) -> list[str]:
        """The image allowlist, sorted."""
        rows = await self._all("SELECT reference FROM image_allowlist ORDER BY reference")
        return [r["reference"] for r in rows]

    async def projection_seq(self) -> int:
        """The last event sequence the read models include (0 when none)."""
        row = await self._one("SELECT last_seq FROM projection_state WHERE name = ?", (PROJECTION,))
        return int(row["last_seq"]) if row else 0

    async def reconciliation(self) -> v.Reconciliation:
        """The ledger's sum and accounts from the read models, and the log's head.
        invariants_ok: the sum is 0, no renter or provider account is negative, and the read
        models have caught up with the log."""
        accounts = await self._all(
            "SELECT account_id, balance_halala FROM accounts ORDER BY account_id"
        )
        by = {r["account_id"]: r["balance_halala"] for r in accounts}
        head = await self._one("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
        head_seq = head["seq"] if head else 0
        seq = await self.projection_seq()
        total = sum(by.values())
        negative = [a for a, b in by.items() if b < 0 and ledger.must_not_go_negative(a)]
        return v.Reconciliation(
            sum_halala=total,
            accounts=[v.AccountBalance(account=a, balance_halala=b) for a, b in by.items()],
            events=seq,
            head_seq=head_seq,
            head_hash=head["hash"] if head else "0" * 64,
            invariants_ok=total == 0 and not negative and seq == head_seq,
        )

    # --- operations --------------------------------------------------------------------------

    async def gauges(self, now_us: int, settings: Settings) -> dict[str, Any]:
        """The operator's gauges, from the read models: jobs by status, providers by (state,
        approval_status), paused and suspended providers, halala summed by account kind, the
        ledger's sum and its negative must-stay-positive accounts, and the log's head against
        what the read models include. Sums only: no renter or provider is named."""
        jobs = await self._all("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
        online, stale = heartbeat_bounds(now_us, settings)  # presence(), as SQL
        providers = await self._all(
            "SELECT CASE WHEN last_heartbeat_us >= ? THEN 'online'"
            " WHEN last_heartbeat_us >= ? THEN 'stale' ELSE 'offline' END AS state,"
            f" approval_status, COUNT(*) AS n, {_sum('paused')} AS paused,"
            f" {_sum('suspended')} AS suspended"
            " FROM providers GROUP BY 1, 2",
            (online, stale),
        )
        sums = ", ".join(
            f"{_sum(f'CASE WHEN account_id LIKE {like!r} THEN balance_halala END')} AS {k}"
            for k, like in _ACCOUNT_KINDS.items()
        )
        money = await self._one(
            f"SELECT {sums}, {_sum('balance_halala')} AS total,"
            " COUNT(CASE WHEN (account_id LIKE 'renter:%' OR account_id LIKE 'provider:%')"
            " AND balance_halala < 0 THEN 1 END) AS negative FROM accounts"
        )
        named = await self._all(
            "SELECT account_id, balance_halala FROM accounts WHERE account_id IN (?, ?, ?, ?)",
            (ledger.PLATFORM_REVENUE, ledger.WORLD_DEPOSITS, ledger.WORLD_PAYOUTS,
             ledger.PLATFORM_ADJUSTMENTS),
        )  # fmt: skip
        head = await self._one("SELECT MAX(seq) AS seq FROM events")
        assert money is not None
        by_name = {r["account_id"]: r["balance_halala"] for r in named}
        return {
            "jobs": {r["status"]: r["n"] for r in jobs},
            "providers": [
                {
                    "state": r["state"],
                    "approval_status": r["approval_status"],
                    "count": r["n"],
                    "paused": r["paused"] or 0,
                    "suspended": r["suspended"] or 0,
                }
                for r in providers
            ],
            "renter_available_halala": money["renter_available_halala"],
            "renter_held_halala": money["renter_held_halala"],
            "provider_earnings_halala": money["provider_earnings_halala"],
            "provider_payout_pending_halala": money["provider_payout_pending_halala"],
            "platform_revenue_halala": by_name.get(ledger.PLATFORM_REVENUE, 0),
            "deposits_halala": -by_name.get(ledger.WORLD_DEPOSITS, 0),
            "payouts_halala": by_name.get(ledger.WORLD_PAYOUTS, 0),
            "platform_adjustments_halala": by_name.get(ledger.PLATFORM_ADJUSTMENTS, 0),
            "sum_halala": money["total"],
            "negative_accounts": money["negative"],
            "head_seq": (head or {}).get("seq") or 0,
            "projection_seq": await self.projection_seq(),
        }

    # --- browsing (the web plane's consoles) -------------------------------------------------

    async def job_counts(self) -> dict[str, int]:
        """How many jobs are in each status: {status: count}."""
        rows = await self._all("SELECT status, count(*) AS n FROM jobs GROUP BY status")
        return {r["status"]: r["n"] for r in rows}

    async def jobs(
        self, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[v.JobView]:
        """Every renter's jobs, newest first, optionally by status (admins only)."""
        sql, params = "SELECT * FROM jobs", []
        if status is not None:
            sql += " WHERE status = ?"
            params.append(status)
        sql += " ORDER BY submitted_at_us DESC, job_id DESC LIMIT ? OFFSET ?"
        rows = await self._all(sql, (*params, _limit(limit), max(0, int(offset))))
        return await self._job_views(rows)

    async def renters(self, limit: int = 50, offset: int = 0) -> list[v.RenterProfile]:
        """Renters with their balances, newest first."""
        rows = await self._all(
            "SELECT renter_id, name, email, created_at_us FROM renters"
            " ORDER BY created_at_us DESC, renter_id LIMIT ? OFFSET ?",
            (_limit(limit), max(0, int(offset))),
        )
        return [await self._renter_view(r) for r in rows]

    async def providers(
        self, now_us: int, settings: Settings, limit: int = 50, offset: int = 0
    ) -> list[v.ProviderProfile]:
        """Providers as `provider()` returns them, pending approval first, then by name."""
        rows = await self._all(
            "SELECT provider_id FROM providers ORDER BY approval_status = 'approved', name,"
            " provider_id LIMIT ? OFFSET ?",
            (_limit(limit), max(0, int(offset))),
        )
        found = [await self.provider(r["provider_id"], now_us, settings) for r in rows]
        return [p for p in found if p is not None]

    async def job_events(self, renter_id: str, job_id: str, limit: int = 100) -> list[v.JobEvent]:
        """The log's events of one job, in order. A job's events live in its renter's stream;
        at most `limit` of them."""
        r = self._reads
        rows = await self._all(
            f"SELECT seq, type, recorded_at_us, actor, {r.json_int('payload', 'attempt')}"
            " AS attempt FROM events WHERE stream_id = ? AND type LIKE 'job.%'"
            f" AND {r.json_text('payload', 'job_id')} = ? ORDER BY seq LIMIT ?",
            (renter_stream(renter_id), job_id, _limit(limit)),
        )
        return [
            v.JobEvent(
                seq=row["seq"],
                type=row["type"],
                recorded_at=rfc3339(row["recorded_at_us"]),
                actor=row["actor"],
                attempt=row["attempt"],
            )
            for row in rows
        ]
