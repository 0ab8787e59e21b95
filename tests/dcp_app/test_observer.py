"""The service's observer: told about every batch and sweep; its faults change nothing."""

from dcp_events.store import GroupCommit
from tests.dcp_app.conftest import Env


class Recorder:
    def __init__(self) -> None:
        self.batches: list[tuple[list[tuple[str, str | None]], int]] = []
        self.sweeps: list[tuple[list[str], bool]] = []

    def batch_done(self, decided, events, seconds):  # type: ignore[no-untyped-def]
        assert seconds >= 0
        self.batches.append((list(decided), events))

    def swept(self, ended, failed):  # type: ignore[no-untyped-def]
        self.sweeps.append((list(ended), failed))


class Broken:
    def batch_done(self, decided, events, seconds):  # type: ignore[no-untyped-def]
        raise RuntimeError("observer bug")

    def swept(self, ended, failed):  # type: ignore[no-untyped-def]
        raise RuntimeError("observer bug")


async def test_batches_sweeps_and_commits_are_observed(env: Env):
    """Accepted and refused commands are reported with their codes; group commits with sizes."""
    seen = Recorder()
    commits: list[GroupCommit] = []
    env.svc.observer = seen
    env.store.on_commit = commits.append
    start, _ = await env.store.head()
    rid = await env.renter(credit=0)
    refused = None
    try:
        await env.submit(rid)
    except Exception as e:
        refused = getattr(e, "code", None)
    env.clock.advance(10)
    await env.svc.sweep()
    decided = [d for batch, _ in seen.batches for d in batch]
    assert ("RegisterRenter", None) in decided
    assert refused == "insufficient_funds" and ("SubmitJob", refused) in decided
    assert ("Sweep", None) in decided and seen.sweeps == [([], False)]
    assert sum(events for _, events in seen.batches) == sum(c.events for c in commits) > 0
    assert all(c.appends >= 1 and c.commit_s >= 0 and not c.failed for c in commits)
    head, _ = await env.store.head()
    assert sum(c.events for c in commits) == head - start


async def test_a_failing_observer_changes_nothing(env: Env):
    """An observer that raises neither fails a command nor makes the service decide it again."""
    env.svc.observer = Broken()
    env.store.on_commit = Broken().batch_done  # type: ignore[assignment]
    rid = await env.renter()
    job = await env.submit(rid)
    await env.svc.sweep()
    head, _ = await env.store.head()
    assert env.svc.state.seq == head
    assert list(env.svc.state.jobs) == [job.job_id]
    submitted = [e for e in await env.store.read_all(0, 1000) if e.type == "job.submitted"]
    assert len(submitted) == 1  # decided once, appended once
