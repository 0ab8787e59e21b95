"""Account names of the double-entry ledger (SPEC section 2) and which must stay >= 0."""

from __future__ import annotations

WORLD_DEPOSITS = "world:deposits"
WORLD_PAYOUTS = "world:payouts"
PLATFORM_REVENUE = "platform:revenue"
PLATFORM_ADJUSTMENTS = "platform:adjustments"


def renter_available(renter_id: str) -> str:
    return f"renter:{renter_id}:available"


def renter_held(renter_id: str) -> str:
    return f"renter:{renter_id}:held"


def provider_earnings(provider_id: str) -> str:
    return f"provider:{provider_id}:earnings"


def provider_payout_pending(provider_id: str) -> str:
    return f"provider:{provider_id}:payout_pending"


def must_not_go_negative(account: str) -> bool:
    """Renter and provider accounts never go below zero; world and platform ones may."""
    return account.startswith(("renter:", "provider:"))
