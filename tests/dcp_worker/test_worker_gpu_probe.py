"""scripts/gpu_probe.py runs and says clearly what it found."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_probe_reports_gpus_or_says_there_are_none():
    """Exit 0 with a list of GPUs, or exit 1 with NO GPU FOUND and the reasons."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts/gpu_probe.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if run.returncode == 0:
        assert "The worker will use" in run.stdout
    else:
        assert run.returncode == 1 and "NO GPU FOUND" in run.stdout, run.stdout + run.stderr
    as_json = subprocess.run(
        [sys.executable, str(ROOT / "scripts/gpu_probe.py"), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    data = json.loads(as_json.stdout)
    assert data["source"] in ("nvml", "nvidia-smi", "none")
    assert (as_json.returncode == 0) == bool(data["gpus"])
