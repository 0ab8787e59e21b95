"""`dcp worker --check` as a real process against a real `dcp serve` and Docker engine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]
ROOT = Path(__file__).resolve().parents[2]
ADMIN = "check-admin-token-0123456789abcdefghij"
IMAGE = "dcp-test/busybox:1"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`dcp serve` on a fresh ledger; its base URL."""
    db = tmp_path_factory.mktemp("check") / "dcp.db"
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dcp_cli", "serve", "--db", str(db), "--port", str(port)],
        env={**_env(), "DCP_ADMIN_TOKEN": ADMIN},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "dcp serve did not come up"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)
        if proc.stderr:
            proc.stderr.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def provider(url: str, approve: bool) -> str:
    """A registered provider's key, approved by the admin if asked."""
    r = httpx.post(
        f"{url}/api/providers/register",
        json={
            "name": "check",
            "email": "check@example.com",
            "gpu_model": "RTX 4090",
            "gpu_count": 1,
            "vram_gb": 24,
        },
    )
    assert r.status_code == 201, r.text
    body = r.json()
    if approve:
        a = httpx.post(
            f"{url}/api/admin/providers/{body['provider_id']}/approve",
            headers={"x-admin-token": ADMIN},
        )
        assert a.status_code == 200, a.text
    return str(body["api_key"])


def check(tmp_path: Path, url: str, key: str, *extra: str) -> tuple[int, dict[str, str]]:
    """Run `dcp worker --check`; its exit code and {check: line}."""
    cmd = [sys.executable, "-m", "dcp_cli", "worker", "--check", "--api", url, "--key", key]
    cmd += ["--gpus", "none", "--state-dir", str(tmp_path / "state"), "--min-free-disk-gb", "0.1"]
    done = subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=120, env=_env())
    lines = {}
    for line in done.stdout.splitlines()[:-1]:
        verdict, name, *_ = line.split()
        lines[name] = line
        assert verdict in ("ok", "FAIL")
    assert done.stdout.splitlines()[-1].startswith(("all checks passed", "failed: "))
    return done.returncode, lines


def failed(lines: dict[str, str]) -> set[str]:
    return {name for name, line in lines.items() if line.startswith("FAIL")}


def test_all_well(tmp_path, platform):
    """An approved key, Docker up, an allowlist: every check passes, exit 0."""
    rc, lines = check(tmp_path, platform, provider(platform, True), "--allow-image", IMAGE)
    assert (rc, failed(lines)) == (0, set())
    assert set(lines) == {
        "allowlist",
        "state_dir",
        "docker",
        "disk",
        "gpu",
        "api",
        "key",
        "approval",
    }
    assert "--gpus none" in lines["gpu"]


def test_wrong_key(tmp_path, platform):
    """A key the platform does not know fails the key check, naming the 401."""
    rc, lines = check(tmp_path, platform, "dcp-provider-" + "0" * 32, "--allow-image", IMAGE)
    assert rc == 1 and "key" in failed(lines) and "401" in lines["key"]
    assert "api" not in failed(lines) and "docker" not in failed(lines)


def test_unapproved_provider(tmp_path, platform):
    """A provider no admin approved fails the approval check only."""
    rc, lines = check(tmp_path, platform, provider(platform, False), "--allow-image", IMAGE)
    assert (rc, failed(lines)) == (1, {"approval"})
    assert "not approved" in lines["approval"]


def test_empty_allowlist(tmp_path, platform):
    """No --allow-image fails the allowlist check only, saying how to fix it."""
    rc, lines = check(tmp_path, platform, provider(platform, True))
    assert (rc, failed(lines)) == (1, {"allowlist"})
    assert "--allow-image" in lines["allowlist"]


def test_unreachable_api(tmp_path, platform):
    """An API nobody listens on fails the api check, and the checks that need it."""
    rc, lines = check(
        tmp_path,
        f"http://127.0.0.1:{_free_port()}",
        provider(platform, True),
        "--allow-image",
        IMAGE,
    )
    assert (rc, failed(lines)) == (1, {"api", "key", "approval"})
    assert "does not answer" in lines["api"]
