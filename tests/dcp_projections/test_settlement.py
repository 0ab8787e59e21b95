"""Settlement is SPEC section 2, in integers: properties over any rate, reserve and runtime."""

from hypothesis import given
from hypothesis import strategies as st

from dcp_projections.money import settle
from dcp_projections.settlement import (
    billable_seconds,
    charge,
    rate_halala_per_hour,
    reserve_halala,
    settle_ending,
    settlement_is_consistent,
    split,
)

prices = st.integers(0, 100_000)
gpu_counts = st.integers(1, 64)
priorities = st.sampled_from(["priority", "standard", "economy"])
durations = st.integers(60, 86400)
runtimes = st.integers(0, 200_000)


@st.composite
def jobs(draw):
    """(rate, reserve, max_duration) of a job as submit prices it."""
    rate = rate_halala_per_hour(draw(prices), draw(gpu_counts), draw(priorities))
    max_duration = draw(durations)
    return rate, reserve_halala(rate, max_duration), max_duration


def test_seed_examples():
    """The SPEC's worked numbers: 101 -> 75 + 26, 1 -> 0 + 1; H200 at priority."""
    assert split(101) == (75, 26)
    assert split(1) == (0, 1)
    assert split(0) == (0, 0)
    assert rate_halala_per_hour(919, 1, "priority") == 1103  # ceil(1102.8)
    assert rate_halala_per_hour(33, 3, "economy") == 90  # ceil(89.1)
    assert reserve_halala(709, 1800) == 355  # ceil(354.5)


@given(st.integers(0, 10**12))
def test_split_sums_to_the_charge_and_provider_gets_floor_75(actual):
    """provider + platform == charge; provider == floor(75%)."""
    provider, platform = split(actual)
    assert provider + platform == actual
    assert provider == actual * 75 // 100
    assert 0 <= platform <= actual


@given(jobs(), runtimes, runtimes)
def test_charge_never_exceeds_reserve_and_refund_completes_it(job, reported, measured):
    """charge <= reserve, refund + charge == reserve, every identity holds."""
    rate, reserve, max_duration = job
    s = charge(reserve, rate, billable_seconds(reported, measured, max_duration))
    assert 0 <= s.actual_cost_halala <= reserve
    assert s.refunded_halala + s.actual_cost_halala == reserve
    assert settlement_is_consistent(reserve, s)
    assert sum(p.amount_halala for p in settle("r", "p", reserve, s)) == 0


@given(jobs(), runtimes, runtimes, st.integers(0, 10_000))
def test_charge_is_monotone_in_runtime(job, reported, measured, more):
    """Running longer never costs less."""
    rate, reserve, max_duration = job
    a = charge(reserve, rate, billable_seconds(reported, measured, max_duration))
    b = charge(reserve, rate, billable_seconds(reported + more, measured + more, max_duration))
    assert a.actual_cost_halala <= b.actual_cost_halala


@given(jobs(), runtimes, runtimes)
def test_billable_is_the_least_of_reported_measured_and_max(job, reported, measured):
    """billable = min(ceil(reported), ceil(measured), max_duration)."""
    _, _, max_duration = job
    assert billable_seconds(reported, measured, max_duration) == min(
        reported, measured, max_duration
    )


@given(jobs(), runtimes, runtimes)
def test_every_row_of_the_endings_table(job, reported, measured):
    """completed / cancelled running: by runtime; timed_out: the whole reserve when it ran to
    its limit; cancelled queued and failed: nothing charged, everything back."""
    rate, reserve, max_duration = job
    common = {"reserve": reserve, "rate": rate, "max_duration_seconds": max_duration}
    by_runtime = charge(reserve, rate, min(reported, measured, max_duration))
    for ending in ("completed", "cancelled_running"):
        s = settle_ending(ending, reported_s=reported, measured_s=measured, **common)
        assert s == by_runtime
    timed_out = settle_ending(
        "timed_out", reported_s=reported, measured_s=max(measured, max_duration), **common
    )
    assert timed_out.actual_cost_halala == reserve and timed_out.refunded_halala == 0
    assert timed_out.provider_earned_halala == reserve * 75 // 100
    for ending in ("cancelled_queued", "failed"):
        s = settle_ending(ending, reported_s=reported, measured_s=measured, **common)
        assert s.actual_cost_halala == 0 and s.provider_earned_halala == 0
        assert s.refunded_halala == reserve


@given(jobs())
def test_a_full_run_costs_exactly_the_reserve(job):
    """Billing the whole max duration charges exactly the estimate: one rate, no drift."""
    rate, reserve, max_duration = job
    assert charge(reserve, rate, max_duration).actual_cost_halala == reserve


def test_no_float_in_settlement_source():
    """No float literal or division reaches money arithmetic."""
    import inspect

    import dcp_projections.settlement as m

    assert m  # the module under test
    for fn in (charge, split, rate_halala_per_hour, reserve_halala, billable_seconds):
        body = inspect.getsource(fn)
        body = body.split('"""')[-1] if '"""' in body else body
        assert " / " not in body and "float(" not in body
