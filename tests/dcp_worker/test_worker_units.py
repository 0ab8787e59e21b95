"""Unit tests of the worker's pure parts: settings, allowlist, GPU parsing, spool, output cuts,
the device pool."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dcp_worker.api import parse_job
from dcp_worker.container import _cut_tail, _TailBuffer, parse_docker_time
from dcp_worker.errors import ApiError, ApiReplyInvalid, ConfigError
from dcp_worker.gpu import GpuDevice, GpuInventory, discover, parse_nvidia_smi
from dcp_worker.jobs import build_result
from dcp_worker.settings import image_allowed, parse_settings
from dcp_worker.spool import Spool

KEY = "dcp-provider-" + "a" * 32


def test_flags_win_over_environment():
    """A flag overrides its environment variable; the rest come from the environment."""
    env = {
        "DCP_API": "http://env:1",
        "DCP_PROVIDER_KEY": KEY,
        "DCP_WORKER_GPUS": "none",
        "DCP_WORKER_ALLOWED_IMAGES": "a:1, b:2 ,",
        "DCP_WORKER_HEARTBEAT_S": "7",
        "DCP_WORKER_POLL_S": "3",
        "DCP_WORKER_STATE_DIR": "/tmp/x",
    }
    s = parse_settings(["--api", "http://flag:2/", "--heartbeat-s", "9"], env)
    assert s.api_url == "http://flag:2"
    assert s.provider_key == KEY
    assert s.gpus == "none"
    assert s.allowed_images == ("a:1", "b:2")
    assert s.heartbeat_s == 9 and s.poll_s == 3
    assert s.state_dir == Path("/tmp/x")
    assert KEY not in repr(s)


def test_defaults():
    """Defaults follow the issue: auto GPUs, no image allowed, 30 s heartbeat, 5 s poll."""
    s = parse_settings(["--api", "http://a", "--key", KEY], {})
    assert (s.gpus, s.allowed_images, s.heartbeat_s, s.poll_s) == ("auto", (), 30.0, 5.0)
    assert s.state_dir == Path("~/.dcp-worker").expanduser()
    assert s.http_timeout_s <= s.heartbeat_s


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        ([], {}),
        (["--api", "http://a"], {}),
        (["--api", "http://a", "--key", KEY], {"DCP_WORKER_GPUS": "all"}),
        (["--api", "http://a", "--key", KEY], {"DCP_WORKER_POLL_S": "soon"}),
        (["--api", "http://a", "--key", KEY, "--heartbeat-s", "0"], {}),
    ],
)
def test_bad_settings_are_refused(argv, env):
    """A missing URL or key, or a value out of range, is a ConfigError."""
    with pytest.raises(ConfigError):
        parse_settings(argv, env)


def test_allowlist_matches_exact_digest_and_prefix():
    """Exact references, digests and `prefix*` entries allow; anything else refuses."""
    allowed = ["dcp/a:1", "repo@sha256:" + "0" * 64, "ghcr.io/dcp/*"]
    assert image_allowed("dcp/a:1", allowed)
    assert image_allowed("repo@sha256:" + "0" * 64, allowed)
    assert image_allowed("ghcr.io/dcp/train:2", allowed)
    assert not image_allowed("dcp/a:2", allowed)
    assert not image_allowed("repo:latest", allowed)
    assert not image_allowed("dcp/a:1", [])


def test_parse_job_reads_the_lease_shape():
    """A leased job from the API decodes; a string command runs through /bin/sh -c."""
    lease = {
        "job_id": "j1",
        "attempt": 2,
        "container_spec": {"image": "i:1", "command": "echo hi", "env": {"A": "1"}},
        "gpu_requirements": {"gpu_count": 2},
        "max_duration_seconds": 60,
    }
    job = parse_job(json.dumps(lease).encode())
    assert job.key == ("j1", 2)
    assert job.command == ["/bin/sh", "-c", "echo hi"]
    assert job.env == {"A": "1"} and job.gpu_count == 2
    with pytest.raises(ApiReplyInvalid, match="attempt"):
        parse_job(b'{"job_id": "j1", "container_spec": {"image": "i"}}')


def test_api_error_definite():
    """4xx other than 408/425/429 is definite; 5xx and 429 are worth retrying."""
    assert ApiError(400, "invalid", "").definite
    assert ApiError(409, "lease_lost", "").definite
    assert not ApiError(429, "rate_limited", "").definite
    assert not ApiError(503, "not_ready", "").definite


def test_nvidia_smi_output_parses():
    """The nvidia-smi CSV and banner give models, memory, utilisation and versions."""
    csv = (
        "0, GPU-aaa, NVIDIA H200, 143771, 143000, 3, 31, 560.35.03\n"
        "1, GPU-bbb, NVIDIA H200, 143771, 1000, [N/A], 40, 560.35.03\n"
    )
    inv = parse_nvidia_smi(
        csv, "| NVIDIA-SMI 560.35.03   Driver Version: 560.35.03   CUDA Version: 12.6 |"
    )
    assert inv.source == "nvidia-smi"
    assert [d.uuid for d in inv.devices] == ["GPU-aaa", "GPU-bbb"]
    assert inv.devices[1].utilization_pct is None
    assert (inv.driver_version, inv.cuda_version) == ("560.35.03", "12.6")
    payload = inv.as_payload()
    assert payload[1]["utilization_pct"] == 0 and payload[0]["count"] == 1
    assert set(payload[0]) == {
        "model",
        "count",
        "vram_total_mb",
        "vram_free_mb",
        "utilization_pct",
        "temperature_c",
        "driver_version",
        "cuda_version",
    }


def test_discover_says_why_when_there_is_no_gpu(monkeypatch):
    """With neither NVML nor nvidia-smi, discovery reports no device and both reasons."""
    import dcp_worker.gpu as gpu

    def fail() -> GpuInventory:
        raise OSError("absent")

    monkeypatch.setattr(gpu, "discover_nvml", fail)
    monkeypatch.setattr(gpu, "discover_nvidia_smi", fail)
    inv = discover()
    assert inv.source == "none" and not inv.devices and len(inv.errors) == 2
    dev = GpuDevice(
        index=0, uuid="u", model="m", vram_total_mb=1, vram_free_mb=1,
        utilization_pct=1, temperature_c=1,
    )  # fmt: skip
    monkeypatch.setattr(gpu, "discover_nvml", lambda: GpuInventory(source="nvml", devices=(dev,)))
    assert discover().source == "nvml"


def test_spool_is_durable_and_idempotent(tmp_path):
    """One file per (job, attempt); a rewrite keeps one; leftovers of a crash are swept."""
    spool = Spool(tmp_path)
    r = {"job_id": "j/1", "attempt": 1, "outcome": "completed"}
    p = spool.put(r)
    spool.put(r)
    assert spool.list() == [p] and spool.has("j/1", 1)
    assert spool.read(p) == r
    (spool.pending / ".x.json.tmp").write_text("{half")
    spool = Spool(tmp_path)
    assert spool.list() == [p] and not list(spool.pending.glob(".*.tmp"))
    spool.bury(p)
    assert spool.list() == [] and json.loads((spool.dead / p.name).read_text()) == r
    assert spool.has("j/1", 1)  # refused for good: kept, and never run again
    p2 = spool.put({"job_id": "k", "attempt": 2})
    assert spool.pending_job_ids() == {"k"}
    assert Spool(tmp_path).pending_job_ids() == {"k"}  # rebuilt from disk at start
    spool.remove(p2)
    assert not spool.has("k", 2) and spool.pending_job_ids() == set()


def test_spool_listing_skips_a_result_delivered_while_it_lists(tmp_path, monkeypatch):
    """Delivery removes files from a thread while the loop lists the spool (CI saw the stat of a
    just-removed file raise). The listing is cut in the real race window: each entry's file is
    unlinked after the directory read names it and before its stat."""
    import dcp_worker.spool as spool_mod

    spool = Spool(tmp_path)
    gone = spool.put({"job_id": "gone", "attempt": 1})
    kept = spool.put({"job_id": "kept", "attempt": 1})
    real_scandir = spool_mod.os.scandir

    class RacingScandir:
        def __init__(self, path):
            self.it = real_scandir(path)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.it.close()

        def __iter__(self):
            for entry in self.it:
                if entry.name == gone.name:
                    spool.remove(gone)  # what the delivery thread does
                yield entry

    monkeypatch.setattr(spool_mod.os, "scandir", RacingScandir)
    assert spool.list() == [kept]


def test_output_keeps_the_tail_on_a_character_boundary():
    """The cap keeps the last bytes and never starts inside a UTF-8 character."""
    buf = _TailBuffer(10)
    for chunk in (b"0123456789", b"abcdef", "é".encode() * 3):
        buf.write(chunk)
    assert buf.total == 22
    value = buf.value()
    assert len(value) <= 10 and value.decode() == value.decode("utf-8")
    assert _cut_tail(b"x" + "é".encode(), 2) == "é".encode()
    assert _cut_tail(b"abc", 10) == b"abc"


def test_docker_times_parse_to_microseconds():
    """Docker's nanosecond RFC 3339 times parse; its zero time is None."""
    t = parse_docker_time("2026-11-29T00:42:14.123456789Z")
    assert t == datetime(2026, 11, 29, 0, 42, 14, 123456, tzinfo=UTC)
    assert parse_docker_time("2026-11-29T00:42:14Z") == datetime(
        2026, 11, 29, 0, 42, 14, tzinfo=UTC
    )
    assert parse_docker_time("0001-01-01T00:00:00Z") is None


def test_result_body_has_only_the_spec_fields():
    """A result carries exactly the fields of SPEC section 5 (the API forbids others)."""
    body = build_result("j", 1, "failed", None, None, "image_not_allowed")
    assert set(body) == {
        "job_id",
        "attempt",
        "outcome",
        "exit_code",
        "runtime_seconds",
        "stdout",
        "stderr",
        "truncated",
        "error",
    }


def test_cli_refuses_missing_settings(capsys, monkeypatch):
    """`dcp worker` without an API URL or key exits 2 and says what is missing."""
    from dcp_worker.cli import main

    monkeypatch.delenv("DCP_API", raising=False)
    monkeypatch.delenv("DCP_PROVIDER_KEY", raising=False)
    assert main([]) == 2
    assert "DCP_API" in capsys.readouterr().err
    assert main(["--api", "http://127.0.0.1:9"]) == 2
    assert "DCP_PROVIDER_KEY" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("stdout", "stderr"),
    [("", ""), ("hello\n", ""), ("", "err"), ("ab", "c"), ("a", "bc"), ("é\u2028", "\x00")],
)
def test_worker_output_hash_is_the_platforms(stdout, stderr):
    """The hash the worker logs is the one the API reports (dcp_projections.output)."""
    from dcp_projections.output import output_sha256 as platform_hash
    from dcp_worker.container import output_sha256

    assert output_sha256(stdout, stderr) == platform_hash(stdout, stderr)


def test_device_pool_hands_out_slots_and_devices_and_takes_them_back():
    """A job takes max(1, gpu_count) slots and gpu_count devices; what does not fit waits;
    a release makes room again; a CPU job (gpu_count 0) takes a slot and no device."""
    from dcp_worker.devices import DevicePool

    pool = DevicePool()
    pool.configure(3, ["GPU-a", "GPU-b", "GPU-c"])
    two = pool.acquire(2)
    assert two is not None and (two.slots, two.devices) == (2, ["GPU-a", "GPU-b"])
    assert pool.acquire(2) is None and pool.free_slots == 1  # refused: nothing taken
    cpu = pool.acquire(0)
    assert cpu is not None and (cpu.slots, cpu.devices) == (1, [])
    assert pool.acquire(1) is None
    pool.release(two)
    assert pool.free_slots == 2 and sorted(pool.free_devices) == ["GPU-a", "GPU-b", "GPU-c"]
    pool.release(cpu)
    assert pool.free_slots == 3


def test_device_pool_without_devices_and_at_recovery():
    """`--gpus none` hands out slots only; an adopted container keeps only devices still free,
    and holds its slots even past the capacity."""
    from dcp_worker.devices import DevicePool

    pool = DevicePool()
    pool.configure(2, None)
    grant = pool.acquire(2)
    assert grant is not None and grant.devices == [] and pool.free_slots == 0
    pool.configure(1, ["GPU-a"])
    first = pool.adopt(1, ["GPU-a"])
    second = pool.adopt(1, ["GPU-a", "GPU-gone"])  # the same device claimed twice: once only
    assert (first.devices, second.devices) == (["GPU-a"], [])
    assert pool.free_slots == -1 and pool.acquire(0) is None
    pool.release(second)
    pool.release(first)
    assert (pool.free_slots, pool.free_devices) == (1, ["GPU-a"])
