#!/usr/bin/env python3
"""Print what the worker's GPU discovery finds on this machine, before a provider goes live.

It runs the same probes as `dcp worker --gpus auto`, in the same order (NVML through
nvidia-ml-py, then nvidia-smi), shows what each one saw, and then the heartbeat's `gpus` list.
It also says whether Docker can hand GPUs to containers (the NVIDIA runtime or hook).

Exit status: 0 when a GPU was found, 1 when there is none (the reasons are printed).
Usage: python scripts/gpu_probe.py [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dcp_worker.gpu import discover, discover_nvidia_smi, discover_nvml


def docker_gpu_runtime() -> str:
    """What Docker offers for GPUs: its runtimes, or why that could not be read."""
    hook = shutil.which("nvidia-container-runtime-hook") or shutil.which("nvidia-ctk")
    try:
        out = subprocess.run(
            ["docker", "info", "--format", "{{json .Runtimes}}"],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"docker not usable ({type(e).__name__}); NVIDIA hook: {hook or 'absent'}"
    if out.returncode != 0:
        return f"docker does not answer; NVIDIA hook: {hook or 'absent'}"
    runtimes = sorted(json.loads(out.stdout or "{}"))
    nvidia = "nvidia" in runtimes or hook is not None
    return f"runtimes {runtimes}; NVIDIA hook: {hook or 'absent'}; GPUs to containers: {nvidia}"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description="Show what the DCP worker's GPU discovery finds.")
    p.add_argument("--json", action="store_true", help="print the inventory as JSON only")
    args = p.parse_args(argv)
    inv = discover()
    if args.json:
        print(json.dumps({"source": inv.source, "gpus": inv.as_payload(), "errors": inv.errors}))
        return 0 if inv.devices else 1
    for name, probe in (
        ("NVML (nvidia-ml-py)", discover_nvml),
        ("nvidia-smi", discover_nvidia_smi),
    ):
        try:
            found = probe()
            print(f"{name}: {len(found.devices)} GPU(s), driver {found.driver_version}, "
                  f"CUDA {found.cuda_version}")  # fmt: skip
        except Exception as e:  # report every probe's failure, whatever it is
            print(f"{name}: unavailable ({type(e).__name__}: {e})")
    print(f"Docker: {docker_gpu_runtime()}")
    if not inv.devices:
        print("NO GPU FOUND: `dcp worker --gpus auto` will not take jobs on this machine.")
        for reason in inv.errors:
            print(f"  - {reason}")
        print("Use `--gpus none` only for testing; it runs jobs without GPU devices.")
        return 1
    print(f"The worker will use {inv.source}: {len(inv.devices)} GPU(s)")
    for d in inv.devices:
        print(
            f"  [{d.index}] {d.model} {d.uuid}: {d.vram_free_mb}/{d.vram_total_mb} MiB free, "
            f"util {d.utilization_pct}%, {d.temperature_c} C"
        )
    print("heartbeat gpus:", json.dumps(inv.as_payload()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
