"""The fold's hot paths: what each one leaves in the state, field by field, and what it refuses."""

import msgspec
import pytest

from dcp_events import catalogue as ev
from dcp_events.event import Event
from dcp_projections import money
from dcp_projections.errors import InvariantError
from dcp_projections.fold import _FOLDS, apply, check_all
from dcp_projections.jobs import submit_fingerprint
from dcp_projections.state import Job, State

AT = 1_700_000_000_000_000


def _world() -> State:
    state = State()
    events: list[Event] = [
        ev.RenterRegistered(renter_id="r", name="R", email="r@x.sa", key_hash="hr", at_us=AT),
        ev.DepositCredited(
            renter_id="r", amount_halala=5000, reference="d1", at_us=AT,
            postings=money.credit("r", 5000),
        ),
        ev.ProviderRegistered(
            provider_id="p", name="P", email="p@x.sa", gpu_model="H100", gpu_count=2,
            vram_gb=80, key_hash="hp", approved=True, at_us=AT,
        ),
    ]  # fmt: skip
    for e in events:
        apply(state, state.seq + 1, e)
    return state


def _submitted(**changes: object) -> ev.JobSubmitted:
    fields: dict = dict(
        job_id="j1", renter_id="r", container_spec=ev.ContainerSpec(image="img:1", env={"A": "1"}),
        gpu_requirements=ev.GpuRequirements(gpu_type="H-100", min_vram_gb=40, gpu_count=2),
        priority="economy", max_duration_seconds=600, requested_provider_id="p",
        idempotency_key="k1", price_halala_per_gpu_hour=709, rate_halala_per_hour=1277,
        cost_halala=213, attempt=1, at_us=AT + 5, postings=money.hold("r", 213),
    )  # fmt: skip
    fields.update(changes)
    return ev.JobSubmitted(**fields)


def test_a_submission_folds_into_a_job_with_each_field_from_its_event():
    """The Job a submission makes (built positionally) holds each field where its name says."""
    state = _world()
    e = _submitted()
    apply(state, 10, e)
    job = state.jobs["j1"]
    want = Job(
        job_id="j1", renter_id="r", status="queued", container_spec=e.container_spec,
        gpu_requirements=e.gpu_requirements, priority="economy", max_duration_seconds=600,
        requested_provider_id="p", idempotency_key="k1", price_halala_per_gpu_hour=709,
        rate_halala_per_hour=1277, cost_halala=213, submitted_at_us=AT + 5, submit_seq=10,
        queued_at_us=AT + 5, attempt=1, gpu_key="h100", first_attempt=1, last_seq=10,
    )  # fmt: skip
    assert msgspec.structs.asdict(job) == msgspec.structs.asdict(want)
    assert list(state.queue) == [(2, 10, "j1")]
    assert state.renters["r"].held_reserves_halala == 213
    assert state.held("r") == 213 and state.available("r") == 5000 - 213
    key = state.submit_keys[("r", "k1")]
    assert (key.job_id, key.at_us) == ("j1", AT + 5)
    assert key.fingerprint == submit_fingerprint(
        e.container_spec, e.gpu_requirements, "economy", 600, "p"
    )
    check_all(state)


def test_every_event_type_has_a_fold():
    """Each catalogue type folds through the table or the top-ups' fold; nothing else."""
    topup_types = {t for t in ev.ALL_EVENTS if t.__struct_config__.tag.startswith("renter.topup")}
    assert set(_FOLDS) == set(ev.ALL_EVENTS) - topup_types


def test_an_event_type_no_fold_knows_is_refused():
    """A type outside the catalogue raises InvariantError, as before the dispatch table."""

    class Stray(Event, tag="stray.event", frozen=True, kw_only=True):
        at_us: int

    with pytest.raises(InvariantError, match="no fold for Stray"):
        apply(State(), 1, Stray(at_us=1))


def _leased_world() -> State:
    state = _world()
    apply(state, 10, _submitted(gpu_requirements=ev.GpuRequirements(gpu_type="H100")))
    apply(
        state, 11,
        ev.JobClaimed(
            job_id="j1", renter_id="r", provider_id="p", attempt=1, lease_expires_us=AT + 100,
            at_us=AT + 10, gpu_price_halala_per_gpu_hour=709,
        ),
    )  # fmt: skip
    return state


def test_a_heartbeat_records_what_it_says_and_renews_the_leases():
    """Each field of a heartbeat lands on its provider; a renewal moves the lease's expiry."""
    state = _leased_world()
    gpus = (ev.GpuInfo(model="H100", count=2, utilization_pct=40),)
    state.touched.clear()
    hb = ev.ProviderHeartbeat(
        provider_id="p", at_us=AT + 20, gpus=gpus, running_job_ids=("j1",),
        daemon_version="2.1", accepting_jobs=False,
        renewals=(ev.LeaseRenewal(job_id="j1", attempt=1, lease_expires_us=AT + 500),),
    )  # fmt: skip
    apply(state, 12, hb)
    p = state.providers["p"]
    assert (p.last_heartbeat_us, p.gpus, p.accepting_jobs, p.daemon_version, p.last_seq) == (
        AT + 20, gpus, False, "2.1", 12,
    )  # fmt: skip
    job = state.jobs["j1"]
    assert (job.lease_expires_us, job.last_seq) == (AT + 500, 12)
    assert state.touched == {("provider", "p"), ("job", "j1")}
    # The next one says the same of the GPUs and changes the rest.
    apply(state, 13, msgspec.structs.replace(hb, at_us=AT + 30, accepting_jobs=True, renewals=()))
    assert (p.last_heartbeat_us, p.gpus, p.accepting_jobs, p.daemon_version, p.last_seq) == (
        AT + 30, gpus, True, "2.1", 13,
    )  # fmt: skip
    assert job.lease_expires_us == AT + 500
    check_all(state)


@pytest.mark.parametrize(
    "renewal",
    [
        ev.LeaseRenewal(job_id="j1", attempt=2, lease_expires_us=AT + 500),  # another attempt
        ev.LeaseRenewal(job_id="nope", attempt=1, lease_expires_us=AT + 500),  # no such job
    ],
)
def test_a_heartbeat_renewing_a_lease_that_does_not_hold_is_refused(renewal):
    """A renewal of a lease the provider does not hold breaks the fold."""
    state = _leased_world()
    hb = ev.ProviderHeartbeat(provider_id="p", at_us=AT + 20, renewals=(renewal,))
    with pytest.raises(InvariantError, match="does not hold"):
        apply(state, 12, hb)


def test_a_heartbeat_of_an_unknown_provider_is_refused():
    """A heartbeat names a registered provider."""
    with pytest.raises(InvariantError, match="unknown provider q"):
        apply(_world(), 10, ev.ProviderHeartbeat(provider_id="q", at_us=AT))


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (
            ev.JobClaimed(
                job_id="nope", renter_id="r", provider_id="p", attempt=1, lease_expires_us=AT,
                at_us=AT,
            ),
            "unknown job nope of renter r",
        ),
        (
            ev.JobClaimed(
                job_id="j1", renter_id="r", provider_id="q", attempt=1, lease_expires_us=AT,
                at_us=AT,
            ),
            "unknown provider q",
        ),
        (
            ev.JobClaimed(
                job_id="j1", renter_id="r", provider_id="p", attempt=2, lease_expires_us=AT,
                at_us=AT,
            ),
            r"claim of j1 \(queued, 1\)",
        ),
        (
            ev.JobStarted(job_id="j1", renter_id="r2", provider_id="p", attempt=1, at_us=AT),
            "unknown job j1 of renter r2",
        ),
        (
            ev.JobStarted(job_id="j1", renter_id="r", provider_id="p", attempt=1, at_us=AT),
            r"start of j1 \(queued, 1\)",
        ),
        (
            ev.JobCompleted(
                job_id="j1", renter_id="r2", provider_id="p", attempt=1,
                reported_runtime_seconds=1, measured_runtime_seconds=1, output=ev.JobOutput(),
                settlement=ev.Settlement(refunded_halala=213), at_us=AT, postings=(),
            ),
            "unknown job j1 of renter r2",
        ),
    ],
)  # fmt: skip
def test_a_job_event_that_does_not_fit_its_job_is_refused(event, error):
    """Claims, starts and completions name a known job of their renter in the right state."""
    state = _world()
    apply(state, 10, _submitted())
    with pytest.raises(InvariantError, match=error):
        apply(state, 11, event)
