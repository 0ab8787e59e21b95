"""One scenario per money bug a peer GPU marketplace shipped; each must stay impossible here."""

import pytest

from dcp_events import catalogue as ev
from dcp_events.event import Posting
from dcp_projections import commands as c
from dcp_projections.decisions import decide
from dcp_projections.errors import InsufficientFunds, InvalidTransition, InvariantError
from dcp_projections.fold import apply, check_all
from dcp_projections.settings import Settings
from dcp_projections.state import State

S = 1_000_000
SETTINGS = Settings(max_attempts=2, queue_timeout_s=3600, lease_ttl_s=120)


class World:
    """A renter with money, an approved H100 provider online, one allowed image."""

    def __init__(self, credit: int = 100_000) -> None:
        self.state = State()
        self.now_us = 1_700_000_000 * S
        self.do(c.AllowImage(reference="img:1"))
        self.do(c.RegisterRenter(renter_id="r", name="r", email="r@x.sa", key_hash="hr"))
        self.do(c.CreditDeposit(renter_id="r", amount_halala=credit, reference="dep"))
        self.do(
            c.RegisterProvider(
                provider_id="p",
                name="p",
                email="p@x.sa",
                gpu_model="H100",
                gpu_count=1,
                vram_gb=80,
                key_hash="hp",
            )
        )
        self.do(c.SetProviderFlag(provider_id="p", flag="approve"))
        self.do(c.Heartbeat(provider_id="p"))

    def do(self, command: c.Command, advance_s: int = 0) -> list:
        self.now_us += advance_s * S
        events = decide(self.state, command, self.now_us, SETTINGS)
        for e in events:
            apply(self.state, self.state.seq + 1, e)
        check_all(self.state)
        return events

    def submit(self, job_id: str = "j", duration: int = 3600) -> None:
        self.do(
            c.SubmitJob(
                job_id=job_id,
                renter_id="r",
                container_spec=ev.ContainerSpec(image="img:1"),
                gpu_requirements=ev.GpuRequirements(gpu_type="H100"),
                max_duration_seconds=duration,
            )
        )

    def claim(self) -> None:
        self.do(
            c.Heartbeat(provider_id="p", running_job_ids=tuple(self.state.providers["p"].leased))
        )
        self.do(c.ClaimJobs(provider_id="p"))

    def result(self, outcome: str, runtime: float, attempt: int = 1, advance_s: int = 0) -> list:
        return self.do(
            c.ReportResult(
                provider_id="p",
                job_id="j",
                attempt=attempt,
                outcome=outcome,  # type: ignore[arg-type]
                exit_code=0,
                runtime_seconds=runtime,
            ),
            advance_s,
        )

    @property
    def available(self) -> int:
        return self.state.available("r")


def test_cancelling_a_failed_refunded_job_does_not_refund_it_again():
    """Peer bug: cancel after a failure refunded the reserve a second time."""
    w = World()
    w.submit()
    w.claim()
    w.result("failed", 10)  # attempt 1 of 2: requeued
    w.claim()
    w.result("failed", 10, attempt=2)  # last attempt: failed, refunded in full
    assert w.state.jobs["j"].status == "failed"
    assert w.available == 100_000
    with pytest.raises(InvalidTransition):
        w.do(c.CancelJob(job_id="j", renter_id="r"))
    with pytest.raises(InvalidTransition):
        w.do(c.CancelJob(job_id="j"))  # nor by an admin
    assert w.available == 100_000 and w.state.held("r") == 0


def test_admin_requeue_of_a_refunded_job_reserves_again():
    """Peer bug: a requeued job whose reserve had been refunded ran for free."""
    w = World()
    w.submit()
    reserve = w.state.jobs["j"].cost_halala
    w.do(c.Sweep(), advance_s=3601)  # queue timeout: failed, refunded
    assert w.state.jobs["j"].status == "failed" and w.available == 100_000
    w.do(c.RequeueJob(job_id="j"))
    assert w.state.held("r") == reserve and w.available == 100_000 - reserve
    # And a renter who has spent the refund meanwhile is refused with the exact shortfall.
    poor = World(credit=355)
    poor.submit(duration=1800)  # reserve 355: everything
    poor.do(c.Sweep(), advance_s=3601)  # failed, 355 back
    poor.do(
        c.SubmitJob(
            job_id="k",
            renter_id="r",
            container_spec=ev.ContainerSpec(image="img:1"),
            gpu_requirements=ev.GpuRequirements(gpu_type="H100"),
            max_duration_seconds=60,
        )
    )  # reserve 12
    with pytest.raises(InsufficientFunds) as e:
        poor.do(c.RequeueJob(job_id="j"))
    assert e.value.shortfall_halala == 12 == 355 - poor.available


def test_settlement_never_charges_more_than_the_reserve():
    """Peer bug: a long reported runtime charged past the reserve, driving balances negative."""
    w = World(credit=709)  # exactly one H100 hour
    w.submit(duration=3600)
    w.claim()
    w.do(c.StartJob(provider_id="p", job_id="j", attempt=1))
    w.result("completed", 800_000, advance_s=800_000)
    job = w.state.jobs["j"]
    assert job.settlement is not None
    assert job.settlement.actual_cost_halala == job.cost_halala == 709
    assert w.available == 0 and w.state.held("r") == 0
    # A forged event charging past the reserve is refused by the fold itself.
    w2 = World(credit=709)
    w2.submit(duration=3600)
    forged = ev.JobCancelled(
        job_id="j",
        renter_id="r",
        attempt=1,
        by="admin",
        was_status="queued",
        settlement=ev.Settlement(
            actual_cost_halala=800, refunded_halala=-91, platform_fee_halala=800
        ),
        at_us=w2.now_us,
        postings=(
            Posting("renter:r:held", -709),
            Posting("renter:r:available", -91),
            Posting("platform:revenue", 800),
        ),
    )
    with pytest.raises(InvariantError):
        apply(w2.state, w2.state.seq + 1, forged)


@pytest.mark.parametrize("how", ["queue_timeout", "lease_expired"])
def test_a_job_failed_by_a_sweep_is_refunded(how):
    """Peer bug: jobs failed by the background sweep kept their hold forever."""
    w = World()
    w.submit()
    if how == "queue_timeout":
        w.do(c.Sweep(), advance_s=3601)
    else:
        for attempt in (1, 2):
            w.claim()
            assert w.state.jobs["j"].attempt == attempt
            w.do(c.Sweep(), advance_s=121)  # no heartbeat lists it: the lease runs out
    job = w.state.jobs["j"]
    assert job.status == "failed" and not job.hold_open
    assert job.settlement is not None and job.settlement.refunded_halala == job.cost_halala
    assert w.available == 100_000 and w.state.held("r") == 0


def test_settlement_uses_the_rate_fixed_at_submission():
    """Peer bug: settlement re-priced the job at the current price, not its estimate's."""
    w = World()
    w.submit(duration=3600)
    rate = w.state.jobs["j"].rate_halala_per_hour
    w.do(c.SetPrice(gpu_model="H100", halala_per_gpu_hour=50_000))
    w.claim()
    w.do(c.StartJob(provider_id="p", job_id="j", attempt=1))
    w.result("completed", 3600, advance_s=3600)
    job = w.state.jobs["j"]
    assert job.rate_halala_per_hour == rate == 709
    assert job.settlement is not None and job.settlement.actual_cost_halala == job.cost_halala
    # A requeue holds the original reserve again, also at the original rate.
    w2 = World()
    w2.submit()
    cost = w2.state.jobs["j"].cost_halala
    w2.do(c.SetPrice(gpu_model="H100", halala_per_gpu_hour=50_000))
    w2.do(c.Sweep(), advance_s=3601)
    w2.do(c.RequeueJob(job_id="j"))
    assert w2.state.jobs["j"].cost_halala == cost and w2.state.held("r") == cost


def test_no_per_job_counter_moves_twice():
    """Peer bug: a retried report or a double sweep incremented a job's counters twice."""
    w = World()
    w.submit()
    w.claim()
    w.do(c.Sweep(), advance_s=121)
    assert w.state.jobs["j"].attempt == 2
    assert w.do(c.Sweep()) == []  # the same expiry swept again changes nothing
    assert w.state.jobs["j"].attempt == 2
    w.claim()
    w.do(c.StartJob(provider_id="p", job_id="j", attempt=2))
    assert w.do(c.StartJob(provider_id="p", job_id="j", attempt=2)) == []
    first = w.result("completed", 60, attempt=2, advance_s=60)
    earned = w.state.earnings("p")
    assert first and earned > 0
    assert w.result("completed", 60, attempt=2) == []  # the retry is recognised
    assert w.state.earnings("p") == earned
    assert w.state.jobs["j"].holds == 1
