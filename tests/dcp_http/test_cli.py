"""The `dcp` console script: `dcp serve` as a real process, and the sub-command skeleton."""

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from dcp_cli import main as cli

from ._live import free_port

ROOT = Path(__file__).resolve().parents[2]


def _wait_healthy(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("dcp serve did not come up")


def test_dcp_serve_runs_the_api_on_a_sqlite_file(tmp_path):
    """`dcp serve` listens where the flags say (a flag beats its variable) and stops cleanly."""
    port = free_port()
    db = tmp_path / "served.db"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DCP_PORT": str(free_port()),  # the --port flag wins over this
        "DCP_ADMIN_TOKEN": "serve-test-token-0123456789abcdefgh",
        "DCP_SWEEP_INTERVAL_S": "0.2",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "dcp_cli", "serve", "--db", str(db), "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, proc)
        assert httpx.get(f"{url}/readyz").json()["status"] == "ready"
        r = httpx.post(
            f"{url}/api/renters/register", json={"name": "cli", "email": "cli@example.com"}
        )
        assert r.status_code == 201
        key = r.json()["api_key"]
        assert httpx.get(f"{url}/api/renters/me", params={"key": key}).status_code == 200
        images = httpx.get(
            f"{url}/api/admin/images",
            headers={"x-admin-token": "serve-test-token-0123456789abcdefgh"},
        )
        assert images.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    # uvicorn shuts down cleanly, then re-raises the signal it caught (exit by SIGTERM).
    assert proc.returncode in (0, -signal.SIGTERM), err.decode()
    assert b"Application shutdown complete" in err
    assert db.exists()
    logs = (out + err).decode()
    assert key not in logs and "serve-test-token-0123456789abcdefgh" not in logs
    lines = [json.loads(x) for x in logs.splitlines() if x.startswith("{")]
    assert any(x["event"] == "http_request" and x["status"] == 201 for x in lines)


def test_dcp_serve_refuses_a_bad_setting(tmp_path):
    """An unusable environment value stops `dcp serve` with exit 2, naming the variable."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DCP_LEASE_TTL_S": "soon"}
    r = subprocess.run(
        [sys.executable, "-m", "dcp_cli", "serve", "--db", str(tmp_path / "x.db")],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert r.returncode == 2 and b"DCP_LEASE_TTL_S" in r.stderr


def test_help_lists_every_command(capsys):
    """`dcp --help` names serve, worker, replicate and audit."""
    try:
        cli.main(["--help"])
    except SystemExit as e:
        assert e.code == 0
    text = capsys.readouterr().out
    for command in ("serve", "worker", "replicate", "audit"):
        assert command in text


def test_a_built_command_gets_its_arguments(monkeypatch, tmp_path):
    """A sub-command's own `main(argv)` gets the words after its name and sets the exit code."""
    pkg = tmp_path / "dcp_fake_tool"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "cli.py").write_text(
        "def main(argv):\n    return 7 if argv == ['verify', '-x'] else 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.DELEGATES, "audit", "dcp_fake_tool.cli")
    assert cli.main(["audit", "verify", "-x"]) == 7


def test_every_delegate_is_a_module_with_a_main():
    """Each sub-command names one module that exists and has `main(argv)`."""
    for command, module_name in cli.DELEGATES.items():
        assert callable(importlib.import_module(module_name).main), command
