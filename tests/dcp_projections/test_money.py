"""The fold's own posting of holds and settlements (`money.post_hold`, `money.post_settle`)
against the general `money.post` with the legs the fold builds: the same balances, the same
write-back notes, and the same InvariantError for any legs an event might carry."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcp_events.catalogue import Settlement
from dcp_events.event import Posting
from dcp_projections import ledger, money
from dcp_projections.errors import InvariantError
from dcp_projections.settlement import charge, refund_all
from dcp_projections.state import Renter, State

RENTER = "r-1"
PROVIDER = "p-1"


def _state(available: int, held: int, reserves: int) -> State:
    state = State()
    state.renters[RENTER] = Renter(
        renter_id=RENTER, name="n", email="e@x", created_at_us=0, last_seq=1,
        held_reserves_halala=reserves,
    )  # fmt: skip
    state.balances[ledger.renter_available(RENTER)] = available
    state.balances[ledger.renter_held(RENTER)] = held
    state.balances[ledger.PLATFORM_REVENUE] = 0
    return state


def _outcome(fn, state: State) -> tuple[str | None, dict, dict, set]:
    """What a posting did: its error (None when it passed) and what it left behind."""
    try:
        fn(state)
        error = None
    except InvariantError as e:
        error = str(e)
    return error, state.balances, state.account_seq, state.touched


def _same_as_post(state: State, got, want, fast) -> tuple[str | None, dict, dict, set]:
    """Run `fast` and `post(got, want)` on copies of `state`; assert they agree."""
    general = _outcome(lambda s: money.post(s, 7, got, want), copy.deepcopy(state))
    special = _outcome(fast, copy.deepcopy(state))
    assert special == general
    return special


def _variants(draw, legs: tuple[Posting, ...]) -> tuple[Posting, ...]:
    """The legs an event might carry: the fold's own, reordered, with a leg changed, dropped,
    added, or a zero leg beside them."""
    legs = list(legs)
    how = draw(st.sampled_from(["same", "reversed", "amount", "account", "drop", "extra", "zero"]))
    if how == "reversed":
        legs.reverse()
    elif how == "amount" and legs:
        i = draw(st.integers(0, len(legs) - 1))
        legs[i] = Posting(legs[i].account, legs[i].amount_halala + draw(st.integers(-3, 3)))
    elif how == "account" and legs:
        i = draw(st.integers(0, len(legs) - 1))
        other = draw(st.sampled_from([ledger.renter_held("r-2"), ledger.WORLD_DEPOSITS]))
        legs[i] = Posting(other, legs[i].amount_halala)
    elif how == "drop" and legs:
        legs.pop(draw(st.integers(0, len(legs) - 1)))
    elif how == "extra":
        legs.append(Posting(ledger.renter_held("r-2"), draw(st.integers(-3, 3))))
    elif how == "zero":
        legs.insert(draw(st.integers(0, len(legs))), Posting(ledger.PLATFORM_REVENUE, 0))
    return tuple(legs)


@given(
    data=st.data(),
    reserve=st.integers(0, 50),
    available=st.integers(-5, 100),
    held=st.integers(-5, 100),
    reserves_delta=st.integers(-2, 2),
)
def test_post_hold_is_post_with_the_hold_legs(data, reserve, available, held, reserves_delta):
    """post_hold passes, fails and changes the balances exactly as post(hold legs) does."""
    want = money.hold(RENTER, reserve)
    got = _variants(data.draw, want) if data.draw(st.booleans()) else want
    # The caller has already added the reserve: held agrees unless reserves_delta says not.
    state = _state(available, held, held + reserve + reserves_delta)
    _same_as_post(state, got, want, lambda s: money.post_hold(s, 7, got, RENTER, reserve))


@given(
    data=st.data(),
    reserve=st.integers(0, 60),
    rate=st.integers(0, 4000),
    billable_s=st.integers(0, 200),
    provider=st.sampled_from([PROVIDER, None]),
    refunded=st.booleans(),
    available=st.integers(-30, 100),
    reserves_delta=st.integers(-2, 2),
)
def test_post_settle_is_post_with_the_settlement_legs(
    data, reserve, rate, billable_s, provider, refunded, available, reserves_delta
):
    """post_settle passes, fails and changes the balances exactly as post(settle legs) does,
    for charged and refunded settlements, with and without a provider."""
    s = refund_all(reserve) if refunded else charge(reserve, rate, billable_s)
    want = money.settle(RENTER, provider, reserve, s)
    got = _variants(data.draw, want) if data.draw(st.booleans()) else want
    state = _state(available, reserve, reserves_delta)  # the caller released the reserve
    _same_as_post(
        state, got, want, lambda st_: money.post_settle(st_, 7, got, RENTER, provider, reserve, s)
    )


def test_post_hold_refuses_a_held_balance_that_is_not_the_reserves():
    """The held check is still made: a hold whose renter's reserves were not raised fails."""
    state = _state(100, 0, 0)
    with pytest.raises(InvariantError, match="unsettled reserves are 0"):
        money.post_hold(state, 7, money.hold(RENTER, 10), RENTER, 10)


def test_post_settle_refuses_a_leg_for_another_account():
    """Legs that are not the settlement's are refused, as post refuses them."""
    s = Settlement(refunded_halala=10)
    got = (Posting(ledger.renter_held(RENTER), -10), Posting(ledger.renter_available("r-2"), 10))
    state = _state(0, 10, 0)
    with pytest.raises(InvariantError, match="postings"):
        money.post_settle(state, 7, got, RENTER, None, 10, s)


def test_post_settle_refuses_a_negative_account():
    """An account left negative is refused (the renter's available one, here)."""
    s = Settlement(refunded_halala=10)
    state = _state(-20, 10, 0)
    with pytest.raises(InvariantError, match=r"renter:r-1:available would be -10"):
        money.post_settle(state, 7, money.settle(RENTER, None, 10, s), RENTER, None, 10, s)
