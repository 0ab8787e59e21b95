"""Pricing and settlement, SPEC section 2, in integers only.

No float touches an amount, a rate or a split. The only float anywhere near money is the
runtime a provider reports, and it is turned into whole seconds (`ceil_seconds`) before any
arithmetic.
"""

from __future__ import annotations

import math
from typing import Literal

from dcp_events.catalogue import Settlement
from dcp_projections.priorities import PRIORITY_PCT as PRIORITY_PCT

PROVIDER_SHARE_PCT = 75
US_PER_S = 1_000_000

Ending = Literal[
    "completed",  # the container ran: charged by runtime
    "timed_out",  # killed at max_duration_seconds: up to the whole reserve
    "cancelled_queued",  # nothing charged
    "cancelled_running",  # charged by runtime
    "failed",  # infrastructure fault or queue timeout: nothing charged
]


def ceil_div(a: int, b: int) -> int:
    """ceil(a / b) for integers, b > 0, without floats."""
    return -(-a // b)


def ceil_seconds(runtime_s: float | int) -> int:
    """Whole seconds, rounded up, of a reported runtime (never negative)."""
    if isinstance(runtime_s, int):
        return max(0, runtime_s)
    return max(0, math.ceil(runtime_s))


def measured_seconds(from_us: int, to_us: int) -> int:
    """Whole seconds, rounded up, between two instants (0 if `to_us` is earlier)."""
    return ceil_div(max(0, to_us - from_us), US_PER_S)


def rate_halala_per_hour(price_halala_per_gpu_hour: int, gpu_count: int, priority: str) -> int:
    """ceil(price * gpu_count * multiplier_pct / 100)."""
    return ceil_div(price_halala_per_gpu_hour * gpu_count * PRIORITY_PCT[priority], 100)


def reserve_halala(rate_halala_per_hour: int, max_duration_seconds: int) -> int:
    """The prepay estimate: ceil(rate * max_duration_seconds / 3600)."""
    return ceil_div(rate_halala_per_hour * max_duration_seconds, 3600)


def billable_seconds(reported_s: int | None, measured_s: int, max_duration_seconds: int) -> int:
    """min(ceil(reported), ceil(measured), max_duration); a missing report does not count."""
    b = min(measured_s, max_duration_seconds)
    if reported_s is not None:
        b = min(b, reported_s)
    return max(0, b)


def split(actual_cost_halala: int) -> tuple[int, int]:
    """(provider, platform): the provider gets floor(75%), the platform the remainder."""
    provider = actual_cost_halala * PROVIDER_SHARE_PCT // 100
    return provider, actual_cost_halala - provider


def charge(reserve: int, rate: int, billable_s: int) -> Settlement:
    """Settle a hold by runtime: min(reserve, ceil(rate * billable / 3600)), split 75/25."""
    actual = min(reserve, ceil_div(rate * billable_s, 3600))
    provider, fee = split(actual)
    return Settlement(
        billable_seconds=billable_s,
        actual_cost_halala=actual,
        refunded_halala=reserve - actual,
        provider_earned_halala=provider,
        platform_fee_halala=fee,
    )


def refund_all(reserve: int) -> Settlement:
    """Settle a hold by charging nothing: the whole reserve goes back to available."""
    return Settlement(refunded_halala=reserve)


def settle_ending(
    ending: Ending,
    *,
    reserve: int,
    rate: int,
    max_duration_seconds: int,
    reported_s: int | None,
    measured_s: int,
) -> Settlement:
    """The settlement of one hold by how the job ended (SPEC section 2's endings table).

    `timed_out` charges by min(measured, max_duration): a job really killed at its limit has
    run at least that long, so it pays the whole reserve, while a provider that claims a
    time-out early cannot charge for time the server did not see.
    """
    if ending in ("cancelled_queued", "failed"):
        return refund_all(reserve)
    if ending == "timed_out":
        return charge(reserve, rate, billable_seconds(None, measured_s, max_duration_seconds))
    return charge(reserve, rate, billable_seconds(reported_s, measured_s, max_duration_seconds))


def settlement_is_consistent(reserve: int, s: Settlement) -> bool:
    """The identities every settlement obeys: charge <= reserve, refund + charge = reserve,
    provider + fee = charge, provider = floor(75%), nothing negative."""
    actual = s.actual_cost_halala
    provider = s.provider_earned_halala
    fee = s.platform_fee_halala
    return (
        0 <= actual <= reserve
        and s.refunded_halala + actual == reserve
        and provider + fee == actual
        and (provider, fee) == split(actual)
        and s.billable_seconds >= 0
    )
