"""The worker against a real Docker engine and the stub API: every way a job can end."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import subprocess

import pytest

from dcp_worker.container import DockerRunner
from dcp_worker.settings import OUTPUT_CAP_BYTES

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]


async def test_success_and_nonzero_exit(stub, make_settings, kit):
    """A job that exits 0 and one that exits 3 both end `completed`, with output and runtime."""
    api, _ = stub
    ok = api.submit(["sh", "-c", "echo hello; echo oops >&2; sleep 1"])
    bad = api.submit(["sh", "-c", "echo before; exit 3"])
    async with kit.running(make_settings()):
        await kit.until(lambda: api.accepted(ok) and api.accepted(bad))
    [r_ok], [r_bad] = api.accepted(ok), api.accepted(bad)
    assert (r_ok["outcome"], r_ok["exit_code"]) == ("completed", 0)
    assert (r_ok["stdout"], r_ok["stderr"], r_ok["truncated"]) == ("hello\n", "oops\n", False)
    assert 0.9 <= r_ok["runtime_seconds"] < 5  # Docker records StartedAt just after exec
    assert (r_bad["outcome"], r_bad["exit_code"], r_bad["stdout"]) == ("completed", 3, "before\n")
    assert {(j, a) for _, j, a in api.starts} == {(ok, 1), (bad, 1)}
    assert kit.managed_containers(api.provider_id) == []  # cleaned up


async def test_timeout_kills_at_max_duration(stub, make_settings, kit):
    """A job still running at max_duration_seconds is killed and ends `timed_out`."""
    api, _ = stub
    job = api.submit(["sleep", "60"], max_duration_seconds=2)
    async with kit.running(make_settings()):
        await kit.until(lambda: api.accepted(job), 30)
    [r] = api.accepted(job)
    assert r["outcome"] == "timed_out"
    assert 2 <= r["runtime_seconds"] < 6
    assert r["exit_code"] == 137


async def test_cancel_from_heartbeat_reply(stub, make_settings, kit):
    """A `cancel_jobs` entry in a heartbeat reply kills the job, which ends `cancelled`."""
    api, _ = stub
    job = api.submit(["sh", "-c", "echo started; sleep 60"])
    async with kit.running(make_settings()):
        await kit.until(lambda: api.starts)
        api.cancel(job)
        await kit.until(lambda: api.accepted(job), 20)
    [r] = api.accepted(job)
    assert r["outcome"] == "cancelled" and r["stdout"] == "started\n"
    assert r["runtime_seconds"] < 20


async def test_output_cap(stub, make_settings, kit):
    """Each stream is cut to 1 MiB (its last bytes) and the result says `truncated`."""
    api, _ = stub
    big = api.submit(["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' 'x'; echo END"])
    small = api.submit(["sh", "-c", "head -c 1000 /dev/zero | tr '\\0' 'y' >&2"])
    async with kit.running(make_settings(job_memory_mb=128)):
        await kit.until(lambda: api.accepted(big) and api.accepted(small), 60)
    [r] = api.accepted(big)
    assert r["truncated"] is True
    assert len(r["stdout"].encode()) == OUTPUT_CAP_BYTES
    assert r["stdout"].endswith("xxxEND\n")
    [s] = api.accepted(small)
    assert s["truncated"] is False and s["stderr"] == "y" * 1000


async def test_output_cap_survives_log_rotation(stub, make_settings, kit):
    """Millions of short lines rotate the bounded log files; following the stream live still
    counts every byte, so the result keeps a full 1 MiB tail and says `truncated`."""
    api, _ = stub
    job = api.submit(["sh", "-c", "yes | head -c 4000000"])
    async with kit.running(make_settings(job_memory_mb=128)):
        await kit.until(lambda: api.accepted(job), 90)
    [r] = api.accepted(job)
    assert r["truncated"] is True
    assert r["stdout"] == "y\n" * (OUTPUT_CAP_BYTES // 2)


async def test_no_network_and_read_only_root(stub, make_settings, kit):
    """Inside the box: only loopback, a read-only root, a writable /tmp, no capabilities."""
    api, _ = stub
    script = (
        "ls /sys/class/net; "
        "touch /probe 2>/dev/null && echo root-writable || echo root-read-only; "
        "touch /tmp/probe && echo tmp-writable; "
        "grep CapEff /proc/self/status; "
        "wget -q -T 2 -O /dev/null http://10.0.0.1/ 2>/dev/null && echo net || echo no-net"
    )
    job = api.submit(["sh", "-c", script])
    async with kit.running(make_settings()):
        await kit.until(lambda: api.accepted(job))
    [r] = api.accepted(job)
    lines = r["stdout"].split()
    assert lines[0] == "lo" and "eth0" not in lines
    assert "root-read-only" in lines and "tmp-writable" in lines
    assert "CapEff:\t0000000000000000" in r["stdout"]
    assert "no-net" in lines


async def test_container_config_is_hardened(make_settings):
    """The HostConfig Docker records has every limit the issue asks for."""
    settings = make_settings()
    runner = DockerRunner(settings)
    from dcp_worker.api import LeasedJob

    job = LeasedJob(job_id="hard-1", attempt=1, image="dcp-test/busybox:1", command=["true"])
    config = runner.container_config(job, "prov_test_hardening", ["GPU-1"])
    config["HostConfig"].pop("DeviceRequests")  # no NVIDIA runtime on this machine
    cid = await runner.create(config, "dcp-hardening-test")
    try:
        out = subprocess.run(
            ["docker", "inspect", cid], capture_output=True, text=True, timeout=20, check=True
        ).stdout
        [c] = json.loads(out)
        h = c["HostConfig"]
        assert h["NetworkMode"] == "none" and h["ReadonlyRootfs"] is True
        assert h["CapDrop"] == ["ALL"] and h["SecurityOpt"] == ["no-new-privileges"]
        assert h["PidsLimit"] == settings.job_pids_limit
        assert h["Memory"] == h["MemorySwap"] == settings.job_memory_mb * 1024 * 1024
        assert h["NanoCpus"] == 500_000_000 and h["Init"] is True
        assert "/tmp" in h["Tmpfs"]
        assert h["LogConfig"]["Type"] == "json-file" and "max-size" in h["LogConfig"]["Config"]
        labels = c["Config"]["Labels"]
        assert labels["sa.dcp.job_id"] == "hard-1" and labels["sa.dcp.attempt"] == "1"
    finally:
        await runner.remove(cid)
        await runner.close()
    gpu = runner.container_config(job, "p", ["GPU-1", "GPU-2"])["HostConfig"]["DeviceRequests"]
    assert gpu == [{"Driver": "nvidia", "DeviceIDs": ["GPU-1", "GPU-2"], "Capabilities": [["gpu"]]}]


async def test_image_not_allowed_or_absent_is_refused_without_pull(stub, make_settings, kit):
    """An image off the allowlist, or allowed but absent, fails the job; nothing is pulled."""
    api, _ = stub
    off_list = api.submit(["true"], image="busybox:latest")
    absent = api.submit(["true"], image="dcp-test/absent:1")
    settings = make_settings(allowed_images=("dcp-test/busybox:1", "dcp-test/absent:1"))
    async with kit.running(settings):
        await kit.until(lambda: api.accepted(off_list) and api.accepted(absent))
    assert api.accepted(off_list)[0]["error"] == "image_not_allowed"
    assert api.accepted(absent)[0]["error"] == "image_not_present"
    assert api.accepted(absent)[0]["outcome"] == "failed"
    images = subprocess.run(
        ["docker", "images", "-q", "dcp-test/absent"], capture_output=True, text=True, timeout=20
    ).stdout
    assert images.strip() == ""


async def test_lost_lease_stops_the_job_and_drops_its_result(stub, make_settings, kit):
    """A job whose lease moves on is stopped; its 409 lease_lost result is dropped."""
    api, _ = stub
    api.gpu_count = 1
    job = api.submit(["sleep", "60"])
    settings = make_settings()
    async with kit.running(settings) as worker:
        await kit.until(lambda: api.starts)
        api.take_lease_away(job)  # the next poll leases it again, as attempt 2
        await kit.until(lambda: any(a == 2 for _, j, a in api.starts), 20)
        await kit.until(lambda: [b for _, b, s in api.result_posts if s == 409], 20)
        await kit.until(lambda: not worker.spool.list(), 10)
        api.cancel(job)
        await kit.until(lambda: api.accepted(job), 20)
    lost = [b for _, b, s in api.result_posts if s == 409]
    assert [b["attempt"] for b in lost] == [1]
    [r] = api.accepted(job)
    assert (r["attempt"], r["outcome"]) == (2, "cancelled")


async def test_api_down_then_back_delivers_once(stub, make_settings, kit):
    """Results made while the API is down wait in the spool and are delivered once."""
    api, server = stub
    job = api.submit(["sh", "-c", "sleep 2; echo done"])
    async with kit.running(make_settings()) as worker:
        await kit.until(lambda: api.starts)
        server.stop()
        await kit.until(lambda: worker.spool.list(), 20)  # ended while the API is down
        assert not api.result_posts
        server.start()
        await kit.until(lambda: api.accepted(job), 60)
        await kit.until(lambda: not worker.spool.list(), 10)
    posts = [b for _, b, _ in api.result_posts if b["job_id"] == job]
    assert len(posts) == 1 and posts[0]["stdout"] == "done\n"


async def test_heartbeats_keep_their_rhythm_while_jobs_run(stub, make_settings, kit):
    """Heartbeats stay near their interval while containers start, run, print and end."""
    api, _ = stub
    api.gpu_count = 4
    jobs = [
        api.submit(["sh", "-c", "head -c 2000000 /dev/zero | tr '\\0' 'z'; sleep 2"])
        for _ in range(2)
    ]
    jobs += [api.submit(["sh", "-c", f"sleep {s}; exit {s}"]) for s in (1, 2, 3, 1, 2, 3)]
    interval = 0.5
    async with kit.running(make_settings(heartbeat_s=interval, job_memory_mb=128)):
        await kit.until(lambda: api.starts)
        first = len(api.heartbeats)
        await kit.until(lambda: all(api.accepted(j) for j in jobs), 90)
        last = len(api.heartbeats)
    times = [t for t, _ in api.heartbeats[first:last]]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) >= 8
    print(
        f"\nheartbeat spacing while jobs ran (interval {interval}s, jitter 10%, n={len(gaps)}): "
        f"min {min(gaps):.3f}s median {statistics.median(gaps):.3f}s max {max(gaps):.3f}s"
    )
    assert max(gaps) < interval * 1.1 + 0.3  # a missed beat would be >= 2 * 0.45
    assert min(gaps) > interval * 0.9 - 0.3
    running = [hb["running_job_ids"] for _, hb in api.heartbeats[first:last]]
    assert any(running) and all(hb["accepting_jobs"] for _, hb in api.heartbeats[first:last])


async def test_drain_on_stop_kills_and_reports_failed(stub, make_settings, kit):
    """On stop: no new jobs, running jobs get the drain time, then are killed and reported."""
    api, _ = stub
    api.gpu_count = 1
    job = api.submit(["sleep", "60"])
    queued = api.submit(["true"])
    async with kit.running(make_settings(drain_s=1.0)) as worker:
        await kit.until(lambda: api.starts)
    assert worker.draining
    [r] = api.accepted(job)
    assert (r["outcome"], r["error"]) == ("failed", "worker_shutdown")
    assert not api.accepted(queued)
    assert api.heartbeats[-1][1]["accepting_jobs"] is False
    assert kit.managed_containers(api.provider_id) == []


async def test_slow_docker_call_does_not_delay_heartbeats(stub, make_settings, kit, monkeypatch):
    """Docker calls that take seconds (inspect, reading output) leave the heartbeat on time."""
    api, _ = stub
    inspect, read_attached = DockerRunner.inspect, DockerRunner.read_attached

    async def slow_inspect(self, container_id):
        await asyncio.sleep(1)
        return await inspect(self, container_id)

    async def slow_read(self, stream, timeout_s):
        await asyncio.sleep(3)
        return await read_attached(self, stream, timeout_s)

    monkeypatch.setattr(DockerRunner, "inspect", slow_inspect)
    monkeypatch.setattr(DockerRunner, "read_attached", slow_read)
    job = api.submit(["true"])
    async with kit.running(make_settings(heartbeat_s=0.4)):
        await kit.until(lambda: api.starts)
        first = len(api.heartbeats)
        await kit.until(lambda: api.accepted(job), 20)
        last = len(api.heartbeats)
    times = [t for t, _ in api.heartbeats[first:last]]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) >= 5 and max(gaps) < 0.4 * 1.1 + 0.3


async def test_auto_gpus_without_a_gpu_is_not_ready(stub, make_settings, kit):
    """`--gpus auto` on a machine with no GPU never asks for jobs, and says why."""
    api, _ = stub
    api.submit(["true"])
    settings = make_settings(gpus="auto")
    async with kit.running(settings) as worker:
        await asyncio.sleep(1.5)
        assert not worker.ready
    assert api.polls == 0 and not api.starts
