"""A job never runs on a GPU dearer than the price it was given (docs/ledger.md, "Any GPU").

The probe submitted `gpu_type: "any"`, was priced at the default 33 halala/h, and got an H200
(919/h). The property drives submissions, price changes and claims in any order, and checks
every claim the decision makes against the rule; the fold is shown to refuse a claim that
breaks it.
"""

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcp_events import catalogue as ev
from dcp_projections import commands as c
from dcp_projections.decisions import decide
from dcp_projections.errors import InvariantError
from dcp_projections.fold import apply, check_all
from dcp_projections.pricing import gpu_price, job_gpu_key, may_run_on
from dcp_projections.settings import Settings
from dcp_projections.settlement import rate_halala_per_hour
from dcp_projections.state import State, gpu_key

S = 1_000_000
SETTINGS = Settings()
NOW = 1_700_000_000 * S
PROVIDER_GPUS = ["H200", "H100", "A100", "RTX 4090", "RTX 3060", "T4"]
ANY = ["any", "ANY", "*", "", "default", "Any"]
JOB_GPUS = [*PROVIDER_GPUS, "rtx-4090", *ANY]


class World:
    """Decide and fold, as the service does, checking every invariant after each step."""

    def __init__(self) -> None:
        self.state = State()
        self.claims: list[ev.JobClaimed] = []
        self.do(c.AllowImage(reference="img:1"))
        self.do(c.RegisterRenter(renter_id="r", name="r", email="r@x.sa", key_hash="hr"))
        self.do(c.CreditDeposit(renter_id="r", amount_halala=10**13, reference="dep"))

    def do(self, command: c.Command) -> list[Any]:
        events = decide(self.state, command, NOW, SETTINGS)
        for e in events:
            if isinstance(e, ev.JobClaimed):
                self.check_claim(e)
            apply(self.state, self.state.seq + 1, e)
        check_all(self.state)
        return events

    def check_claim(self, e: ev.JobClaimed) -> None:
        """The rule, spelled out: a named model runs on that model; any GPU, only where the
        GPU's price now is covered by the job's price (so its rate covers the GPU's rate)."""
        job = self.state.jobs[e.job_id]
        p = self.state.providers[e.provider_id]
        price = self.state.price_for(p.gpu_model)
        assert e.gpu_price_halala_per_gpu_hour == price
        if job.gpu_key:
            assert job.gpu_key == gpu_key(p.gpu_model)
        else:
            assert job.price_halala_per_gpu_hour >= price
            count, priority = job.gpu_requirements.gpu_count, job.priority
            assert job.rate_halala_per_hour >= rate_halala_per_hour(price, count, priority)
        self.claims.append(e)

    def provider(self, pid: str, gpu_model: str, gpu_count: int = 8) -> None:
        self.do(
            c.RegisterProvider(
                provider_id=pid,
                name=pid,
                email=f"{pid}@x.sa",
                gpu_model=gpu_model,
                gpu_count=gpu_count,
                vram_gb=80,
                key_hash="h" + pid,
            )
        )
        self.do(c.SetProviderFlag(provider_id=pid, flag="approve"))
        self.do(c.Heartbeat(provider_id=pid))

    def submit(self, job_id: str, gpu_type: str, **kw: Any) -> ev.JobSubmitted:
        (e,) = self.do(
            c.SubmitJob(
                job_id=job_id,
                renter_id="r",
                container_spec=ev.ContainerSpec(image="img:1"),
                gpu_requirements=ev.GpuRequirements(gpu_type=gpu_type, gpu_count=1),
                max_duration_seconds=600,
                **kw,
            )
        )
        assert isinstance(e, ev.JobSubmitted)
        return e


steps = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.sampled_from(JOB_GPUS), st.sampled_from(range(-1, 6))),
        st.tuples(
            st.just("price"), st.sampled_from([*PROVIDER_GPUS, "default"]), st.integers(0, 2000)
        ),
        st.tuples(st.just("claim"), st.sampled_from(range(6)), st.just(0)),
    ),
    min_size=1,
    max_size=40,
)


@settings(deadline=None)
@given(
    providers=st.lists(st.sampled_from(PROVIDER_GPUS), min_size=1, max_size=6),
    program=steps,
    priorities=st.sampled_from(["priority", "standard", "economy"]),
)
def test_no_claim_runs_a_job_on_a_gpu_its_price_does_not_cover(providers, program, priorities):
    """Over any order of submissions (some naming a provider), price changes and claims, every
    lease the decision makes obeys the rule, and the fold accepts it."""
    w = World()
    pids = []
    for i, model in enumerate(providers):
        pids.append(f"p{i}")
        w.provider(f"p{i}", model)
    for n, (kind, arg, extra) in enumerate(program):
        if kind == "submit":
            requested = pids[extra] if 0 <= extra < len(pids) else None
            w.submit(f"j{n}", arg, provider_id=requested, priority=priorities)
        elif kind == "price":
            w.do(c.SetPrice(gpu_model=arg, halala_per_gpu_hour=extra))
        else:
            w.do(c.ClaimJobs(provider_id=pids[arg % len(pids)]))


def test_an_any_gpu_job_is_not_leased_to_an_h200_but_runs_on_an_unpriced_gpu():
    """The probe's case: "any" is priced at default (33/h); the H200 (919/h) is passed over
    and the job waits for a GPU the default price covers."""
    w = World()
    w.provider("h200", "H200")
    w.provider("t4", "T4")
    for gpu_type in ANY:
        job = w.submit(f"any-{gpu_type or 'blank'}", gpu_type)
        assert job.price_halala_per_gpu_hour == 33
    assert w.do(c.ClaimJobs(provider_id="h200")) == []
    leased = w.do(c.ClaimJobs(provider_id="t4"))
    assert len(leased) == len(ANY) and {e.gpu_price_halala_per_gpu_hour for e in leased} == {33}


def test_an_any_gpu_job_for_a_named_provider_is_priced_at_that_providers_gpu():
    """Naming the provider names its GPU: the job is priced at 919 and runs there."""
    w = World()
    w.provider("h200", "H200")
    job = w.submit("j", "any", provider_id="h200")
    assert (job.price_halala_per_gpu_hour, job.rate_halala_per_hour) == (919, 919)
    (claim,) = w.do(c.ClaimJobs(provider_id="h200"))
    assert claim.gpu_price_halala_per_gpu_hour == 919


def test_a_price_change_after_submission_does_not_strand_a_named_job():
    """SPEC: nothing re-prices a job after submission, so an H100 job priced at 709 still runs
    on an H100 after the admin raises its price; an "any" job is held to the new price."""
    w = World()
    w.provider("h100", "H100")
    w.provider("t4", "T4")
    w.submit("named", "H100")
    w.submit("any", "any")
    w.do(c.SetPrice(gpu_model="H100", halala_per_gpu_hour=800))
    w.do(c.SetPrice(gpu_model="default", halala_per_gpu_hour=40))
    assert [e.job_id for e in w.do(c.ClaimJobs(provider_id="h100"))] == ["named"]
    assert w.do(c.ClaimJobs(provider_id="t4")) == []


@pytest.mark.parametrize("recorded", [919, 33, None])
def test_the_fold_refuses_a_claim_the_price_does_not_cover(recorded):
    """A claim of a 33/h "any" job by an H200 is an InvariantError, whatever price the
    claim records; a v1 claim (no price recorded, made before the rule) still folds."""
    w = World()
    w.provider("h200", "H200")
    w.submit("j", "any")
    claim = ev.JobClaimed(
        job_id="j",
        renter_id="r",
        provider_id="h200",
        attempt=1,
        lease_expires_us=NOW + 120 * S,
        at_us=NOW,
        gpu_price_halala_per_gpu_hour=recorded,
    )
    if recorded is None:
        apply(w.state, w.state.seq + 1, claim)
        assert w.state.jobs["j"].status == "assigned"
    else:
        with pytest.raises(InvariantError, match="claimed by"):
            apply(w.state, w.state.seq + 1, claim)


def test_the_fold_refuses_a_named_job_claimed_by_another_model():
    """An H100 job leased to an A100 is an InvariantError even at a price that covers it."""
    w = World()
    w.provider("a100", "A100")
    w.submit("j", "H100")
    claim = msgspec.structs.replace(
        ev.JobClaimed(
            job_id="j",
            renter_id="r",
            provider_id="a100",
            attempt=1,
            lease_expires_us=NOW + 120 * S,
            at_us=NOW,
        ),
        gpu_price_halala_per_gpu_hour=gpu_price(w.state, "A100"),
    )
    with pytest.raises(InvariantError):
        apply(w.state, w.state.seq + 1, claim)


def test_the_rule_by_itself():
    """may_run_on: named -> same model (names compare loosely); any -> price covered."""
    assert may_run_on(job_gpu_key("rtx-4090"), 100, "RTX 4090", 5000)
    assert not may_run_on(job_gpu_key("H100"), 10**6, "A100", 1)
    assert all(job_gpu_key(a) == "" for a in ANY)
    assert may_run_on("", 33, "T4", 33) and not may_run_on("", 33, "H200", 919)
