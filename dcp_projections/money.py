"""The legs of every money movement (SPEC section 2), built here and nowhere else, and `post`,
which folds an event's legs into the balances with the money rules checked.

A decision puts the legs one of these functions builds into its event; the fold builds them
again from the state and `post` refuses an event that carries other legs. Changing a
movement is then one edit, and the decision and the fold cannot drift apart. A leg of 0 is
left out (it is noise in the ledger).
"""

from __future__ import annotations

from dcp_events.catalogue import Settlement
from dcp_events.event import Posting
from dcp_projections import ledger
from dcp_projections.errors import InvariantError
from dcp_projections.state import State

Legs = tuple[Posting, ...]


def credit(renter_id: str, amount_halala: int) -> Legs:
    """Money paid in: an admin deposit, a paid top-up, a reversed refund (world:deposits ->
    available)."""
    return (
        Posting(ledger.WORLD_DEPOSITS, -amount_halala),
        Posting(ledger.renter_available(renter_id), amount_halala),
    )


def refund(renter_id: str, amount_halala: int) -> Legs:
    """A top-up's credit taken back (available -> world:deposits)."""
    return (
        Posting(ledger.renter_available(renter_id), -amount_halala),
        Posting(ledger.WORLD_DEPOSITS, amount_halala),
    )


def sandbox_credit(renter_id: str, amount_halala: int) -> Legs:
    """A sandbox self top-up (platform:adjustments -> available)."""
    return (
        Posting(ledger.PLATFORM_ADJUSTMENTS, -amount_halala),
        Posting(ledger.renter_available(renter_id), amount_halala),
    )


def hold(renter_id: str, reserve: int) -> Legs:
    """A job's reserve held (available -> held); none for a free job."""
    if reserve == 0:
        return ()
    return (
        Posting(ledger.renter_available(renter_id), -reserve),
        Posting(ledger.renter_held(renter_id), reserve),
    )


def settle(renter_id: str, provider_id: str | None, reserve: int, s: Settlement) -> Legs:
    """A hold of `reserve` released as `s` settles it: the refund back to available, the fee
    to the platform, the provider's share to its earnings."""
    legs = [Posting(ledger.renter_held(renter_id), -reserve)] if reserve else []
    if s.refunded_halala:
        legs.append(Posting(ledger.renter_available(renter_id), s.refunded_halala))
    if s.platform_fee_halala:
        legs.append(Posting(ledger.PLATFORM_REVENUE, s.platform_fee_halala))
    if provider_id is not None and s.provider_earned_halala:
        legs.append(Posting(ledger.provider_earnings(provider_id), s.provider_earned_halala))
    return tuple(legs)


def withdraw(provider_id: str, amount_halala: int) -> Legs:
    """A withdrawal requested (earnings -> payout_pending)."""
    return (
        Posting(ledger.provider_earnings(provider_id), -amount_halala),
        Posting(ledger.provider_payout_pending(provider_id), amount_halala),
    )


def pay_out(provider_id: str, amount_halala: int) -> Legs:
    """A withdrawal completed (payout_pending -> world:payouts)."""
    return (
        Posting(ledger.provider_payout_pending(provider_id), -amount_halala),
        Posting(ledger.WORLD_PAYOUTS, amount_halala),
    )


def return_withdrawal(provider_id: str, amount_halala: int) -> Legs:
    """A withdrawal rejected (payout_pending -> back to earnings)."""
    return (
        Posting(ledger.provider_payout_pending(provider_id), -amount_halala),
        Posting(ledger.provider_earnings(provider_id), amount_halala),
    )


# --- folding -------------------------------------------------------------------------------


def post(state: State, seq: int, got: Legs, want: Legs) -> None:
    """Fold the legs `got` an event recorded at `seq` carries into the balances.

    Raises InvariantError unless they are the legs `want` the fold built (in any order, zero
    legs aside), sum to 0, leave no renter or provider account negative, and leave each
    renter's held balance equal to the reserves of its unsettled jobs (which the caller has
    already updated). The sum of all balances then stays 0 by construction.
    """
    if got != want:  # the decisions write the legs in this order: the common, cheap case
        _same_legs(seq, got, want)
    _add_legs(state, seq, got)
    for p in got:
        account = p.account
        bal = state.balances[account]
        if bal < 0 and ledger.must_not_go_negative(account):
            raise InvariantError(f"seq {seq}: {account} would be {bal}")
        if account.endswith(":held") and account.startswith("renter:"):
            _check_held(state, seq, account, bal, account[7:-5])


def post_hold(state: State, seq: int, got: Legs, renter_id: str, reserve: int) -> None:
    """`post(state, seq, got, hold(renter_id, reserve))`, the same checks and errors, for the
    fold's most frequent money event (a submission; an admin requeue)."""
    want = hold(renter_id, reserve)
    if got != want:
        _same_legs(seq, got, want)
    # hold's legs: (available, -reserve), (held, reserve); none for a reserve of 0.
    _post_renter(state, seq, got, renter_id, want[1].account if reserve else None)


def post_settle(
    state: State,
    seq: int,
    got: Legs,
    renter_id: str,
    provider_id: str | None,
    reserve: int,
    s: Settlement,
) -> None:
    """`post(state, seq, got, settle(renter_id, provider_id, reserve, s))`, the same checks
    and errors, for every job's ending."""
    want = settle(renter_id, provider_id, reserve, s)
    if got != want:
        _same_legs(seq, got, want)
    # settle's legs begin with (held, -reserve), unless the reserve is 0.
    _post_renter(state, seq, got, renter_id, want[0].account if reserve else None)


def _post_renter(state: State, seq: int, got: Legs, renter_id: str, held: str | None) -> None:
    """`post`'s work, with its checks and errors, once `got` is known to hold the legs of a hold
    or a settlement of one of `renter_id`'s reserves (zero legs aside). Their accounts are then
    distinct, so each leg's new balance is already its account's final one and one pass does
    what `post`'s two do; and the one held account among them is `held`, this renter's (None
    when the reserve is 0: no held leg), so no leg's name is taken apart to find it."""
    total = 0
    balances = state.balances
    account_seq = state.account_seq
    touched = state.touched
    negative = False
    for p in got:
        account = p.account
        amount = p.amount_halala
        total += amount
        bal = balances.get(account, 0) + amount
        balances[account] = bal
        account_seq[account] = seq
        touched.add(("account", account))
        if bal < 0:
            negative = True
    if total != 0:
        raise InvariantError(f"seq {seq}: postings sum to {total}, not 0")
    if negative:  # `post`'s checks, leg by leg in its order, to raise what it raises
        for p in got:
            account = p.account
            bal = balances[account]
            if bal < 0 and ledger.must_not_go_negative(account):
                raise InvariantError(f"seq {seq}: {account} would be {bal}")
            if account == held:
                _check_held(state, seq, account, bal, renter_id)
    elif held is not None:
        bal = balances[held]
        renter = state.renters.get(renter_id)
        reserves = renter.held_reserves_halala if renter else 0
        if bal != reserves:
            raise InvariantError(f"seq {seq}: {held} is {bal}, unsettled reserves are {reserves}")


def _add_legs(state: State, seq: int, got: Legs) -> None:
    """Add each leg to its account's balance; raises InvariantError unless they sum to 0."""
    total = 0
    balances = state.balances
    account_seq = state.account_seq
    touched = state.touched
    for p in got:
        account = p.account
        amount = p.amount_halala
        total += amount
        balances[account] = balances.get(account, 0) + amount
        account_seq[account] = seq
        touched.add(("account", account))
    if total != 0:
        raise InvariantError(f"seq {seq}: postings sum to {total}, not 0")


def _check_held(state: State, seq: int, account: str, bal: int, renter_id: str) -> None:
    """A renter's held balance `bal` must equal the reserves of its unsettled jobs."""
    renter = state.renters.get(renter_id)
    reserves = renter.held_reserves_halala if renter else 0
    if bal != reserves:
        raise InvariantError(f"seq {seq}: {account} is {bal}, unsettled reserves are {reserves}")


def _same_legs(seq: int, got: Legs, want: Legs) -> None:
    want_t = tuple([p for p in want if p.amount_halala != 0])
    if got == want_t:
        return
    if sorted(got, key=_leg_key) != sorted(want_t, key=_leg_key):
        raise InvariantError(f"seq {seq}: postings {got} are not {want_t}")


def _leg_key(p: Posting) -> tuple[str, int]:
    return (p.account, p.amount_halala)
