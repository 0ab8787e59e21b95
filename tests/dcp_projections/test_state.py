"""The state's own bookkeeping: equal container specs and GPU requirements are one object
across the jobs folded (a job keeps what its decoded event carried otherwise), in a bounded
table."""

from __future__ import annotations

from dcp_events.catalogue import ContainerSpec, GpuRequirements
from dcp_projections import commands as c
from dcp_projections import state as state_module
from dcp_projections.rows import all_rows
from dcp_projections.state import State
from tests.dcp_projections.test_topups import market, run


def funded() -> State:
    s = market()
    run(s, c.CreditDeposit(renter_id="r0", amount_halala=10**9, reference="seed"))
    run(s, c.AllowImage(reference="img:1"))
    return s


def submit(s: State, job_id: str, env: dict[str, str], gpu: str = "any") -> None:
    spec = ContainerSpec(image="img:1", command=("python", "train.py"), env=env)
    run(
        s,
        c.SubmitJob(
            job_id=job_id,
            renter_id="r0",
            container_spec=spec,
            gpu_requirements=GpuRequirements(gpu_type=gpu),
        ),
    )


def test_jobs_with_equal_specs_share_one_object():
    """Each folded event is decoded anew, yet jobs with equal specs and requirements hold one
    object; an env in another order is another spec (the rows write its order)."""
    s = funded()
    submit(s, "j1", {"A": "1", "B": "2"})
    submit(s, "j2", {"A": "1", "B": "2"})
    submit(s, "j3", {"B": "2", "A": "1"})
    submit(s, "j4", {"A": "1", "B": "2"}, gpu="H100")
    j1, j2, j3, j4 = (s.jobs[j] for j in ("j1", "j2", "j3", "j4"))
    assert j1.container_spec is j2.container_spec and j1.gpu_requirements is j2.gpu_requirements
    assert j3.container_spec == j1.container_spec and j3.container_spec is not j1.container_spec
    assert list(j3.container_spec.env) == ["B", "A"]
    assert j4.container_spec is j1.container_spec and j4.gpu_requirements != j1.gpu_requirements
    unshared = funded()
    for job_id, env in (("j1", {"A": "1", "B": "2"}), ("j2", {"A": "1", "B": "2"})):
        submit(unshared, job_id, env)
        unshared._specs.clear()
    assert unshared.jobs["j1"].container_spec is not unshared.jobs["j2"].container_spec
    assert all_rows(unshared)["jobs"] == [r for r in all_rows(s)["jobs"] if r["job_id"] < "j3"]


def test_the_table_of_shared_specs_is_bounded(monkeypatch):
    """A renter making every spec unique does not grow the table past its bound."""
    monkeypatch.setattr(state_module, "SHARED_SPECS_MAX", 3)
    s = funded()
    for i in range(10):
        submit(s, f"j{i}", {"RUN": str(i)})
        assert len(s._specs) <= 3
    assert len({id(j.container_spec) for j in s.jobs.values()}) == 10
