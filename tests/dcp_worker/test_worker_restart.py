"""The worker as a process: SIGKILL mid-job and a restart report each job exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]
ROOT = Path(__file__).resolve().parents[2]


def start_worker(url: str, key: str, state_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable, "-m", "dcp_worker.cli",
        "--api", url, "--gpus", "none", "--allow-image", "dcp-test/busybox:1",
        "--state-dir", str(state_dir), "--heartbeat-s", "0.5", "--poll-s", "0.2",
        "--drain-s", "2", "--min-free-disk-gb", "0.1", "--job-memory-mb", "64",
    ]  # fmt: skip
    env = {**os.environ, "DCP_PROVIDER_KEY": key}
    with log.open("ab") as f:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)


def container_running(provider_id: str) -> list[str]:
    return subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=sa.dcp.provider_id={provider_id}"],
        capture_output=True, text=True, timeout=20, check=True,
    ).stdout.split()  # fmt: skip


async def test_sigkill_mid_job_then_restart_reports_each_job_once(stub, tmp_path, kit):
    """Jobs that end while the worker is dead, or still run at restart, are reported once."""
    api, server = stub
    short = api.submit(["sh", "-c", "sleep 2; echo short-done"])
    long = api.submit(["sh", "-c", "sleep 6; echo long-done"])
    state, log = tmp_path / "state", tmp_path / "worker.log"
    first = start_worker(server.url, api.key, state, log)
    try:
        await kit.until(lambda: len(api.starts) == 2, 30)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert len(container_running(api.provider_id)) >= 1  # the jobs outlive the worker
        await kit.until(lambda: len(container_running(api.provider_id)) == 1, 20)
        assert not api.result_posts
        second = start_worker(server.url, api.key, state, log)
        try:
            await kit.until(lambda: api.accepted(short) and api.accepted(long), 30)
            await asyncio.sleep(2)  # room for a duplicate to show up, if there were one
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    for job, text in ((short, "short-done\n"), (long, "long-done\n")):
        posts = [b for _, b, _ in api.result_posts if b["job_id"] == job]
        assert len(posts) == 1, posts
        assert (posts[0]["outcome"], posts[0]["stdout"]) == ("completed", text)
    assert posts[0]["runtime_seconds"] >= 5.9  # the long job, timed by Docker across the gap
    assert kit.managed_containers(api.provider_id) == []
    assert not list((state / "spool" / "pending").iterdir())
    assert "recovered_running_job" in log.read_text()
    assert "recovered_ended_job" in log.read_text()
    assert api.key not in log.read_text()  # the key is in one route's path; never logged


async def test_restart_while_api_is_down_still_enforces_the_deadline(stub, tmp_path, kit):
    """Restarted during an API outage, the worker recovers from its cached registration, kills
    the job at its deadline, and delivers the `timed_out` result once the API is back."""
    api, server = stub
    job = api.submit(["sleep", "60"], max_duration_seconds=4)
    state, log = tmp_path / "state", tmp_path / "worker.log"
    first = start_worker(server.url, api.key, state, log)
    try:
        await kit.until(lambda: api.starts, 30)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    server.stop()
    second = start_worker(server.url, api.key, state, log)
    try:
        pending = state / "spool" / "pending"
        await kit.until(lambda: list(pending.glob("*.json")), 30)
        assert container_running(api.provider_id) == []
        assert not api.result_posts
        server.start()
        await kit.until(lambda: api.accepted(job), 60)
        await asyncio.sleep(1)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, log.read_text()[-3000:]
    [post] = [b for _, b, _ in api.result_posts if b["job_id"] == job]
    assert post["outcome"] == "timed_out" and 4 <= post["runtime_seconds"] < 10
    assert "api_unavailable_using_cached_registration" in log.read_text()


async def test_restart_kills_a_container_whose_lease_moved_on(stub, tmp_path, kit):
    """A container re-adopted at restart whose lease went elsewhere is killed (its result is
    refused 409 lease_lost and dropped), and the new attempt runs and is reported once."""
    api, server = stub
    api.gpu_count = 1
    job = api.submit(["sh", "-c", "sleep 4; echo finished"])
    state, log = tmp_path / "state", tmp_path / "worker.log"
    first = start_worker(server.url, api.key, state, log)
    try:
        await kit.until(lambda: api.starts, 30)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    api.take_lease_away(job)  # expired while the worker was down: the next poll is attempt 2
    second = start_worker(server.url, api.key, state, log)
    try:
        await kit.until(lambda: api.accepted(job), 40)
        await asyncio.sleep(1)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, log.read_text()[-3000:]
    [ok] = api.accepted(job)
    assert (ok["attempt"], ok["outcome"], ok["stdout"]) == (2, "completed", "finished\n")
    refused = [(b["attempt"], st) for _, b, st in api.result_posts if st != 200]
    assert refused == [(1, 409)]
    assert "job_lease_gone" in log.read_text()
    assert kit.managed_containers(api.provider_id) == []


async def test_container_created_but_never_started_is_reported_failed(stub, make_settings, kit):
    """A crash between create and start leaves a created container: recovery reports the
    attempt `failed` (the platform requeues it) instead of a made-up exit code."""
    from dcp_worker.api import LeasedJob
    from dcp_worker.container import DockerRunner

    api, _ = stub
    job_id = api.submit(["echo", "never"])
    api.jobs[job_id].status, api.jobs[job_id].attempt = "assigned", 1
    api.gpu_count = 0  # nothing new is assigned: only recovery acts
    settings = make_settings()
    runner = DockerRunner(settings)
    job = LeasedJob(job_id=job_id, attempt=1, image="dcp-test/busybox:1", command=["true"])
    await runner.create(
        runner.container_config(job, api.provider_id, []), runner.container_name(job)
    )
    await runner.close()
    async with kit.running(settings):
        await kit.until(lambda: api.accepted(job_id), 20)
    [r] = api.accepted(job_id)
    assert (r["outcome"], r["error"], r["exit_code"]) == (
        "failed",
        "worker_restarted_before_start",
        None,
    )
    assert kit.managed_containers(api.provider_id) == []
