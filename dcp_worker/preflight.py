"""The worker's preflight checks, one definition each: the running worker's readiness check
and `dcp worker --check` both use them.

`dcp worker --check` runs every check once and prints one line per check, `ok` or `FAIL`
with what is wrong and what to do; it exits 1 if any failed (docs/worker.md).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from dcp_worker.api import ApiClient
from dcp_worker.container import DockerRunner
from dcp_worker.errors import ApiError, ApiUnavailable
from dcp_worker.gpu import NO_GPUS, GpuInventory, discover
from dcp_worker.settings import WorkerSettings

GPU_DISCOVER_TIMEOUT_S = 20.0


def disk_problem(info: dict[str, Any], settings: WorkerSettings) -> str | None:
    """Why the disk under Docker's data root is too full to take jobs, or None."""
    root = Path(info.get("DockerRootDir") or "/var/lib/docker")
    probe = root if root.exists() else settings.state_dir
    free_gb = shutil.disk_usage(probe).free / 1e9
    if free_gb < settings.min_free_disk_gb:
        return f"{free_gb:.1f} GB free under {probe}, below {settings.min_free_disk_gb} GB"
    return None


def gpu_problem(
    info: dict[str, Any], inventory: GpuInventory, settings: WorkerSettings
) -> str | None:
    """Why the GPUs cannot be used (none found, no NVIDIA container runtime), or None.
    Always None with `--gpus none`."""
    if settings.gpus != "auto":
        return None
    if not inventory.devices:
        found = "; ".join(inventory.errors) or "discovery found none"
        return f"no GPU found ({found}); on a machine without GPUs, run with --gpus none"
    runtimes = info.get("Runtimes") or {}
    if "nvidia" not in runtimes and not shutil.which("nvidia-container-runtime-hook"):
        return "the NVIDIA container runtime is not installed"
    return None


@dataclass(frozen=True)
class Check:
    """One check's verdict: its name, whether it passed, and what it found."""

    name: str
    ok: bool
    detail: str


async def run_checks(
    settings: WorkerSettings, discover_gpus: Callable[[], GpuInventory] = discover
) -> list[Check]:
    """Every preflight check, once, in order; later checks that need an earlier one say so."""
    checks: list[Check] = []

    def add(name: str, problem: str | None, fine: str) -> None:
        checks.append(Check(name, problem is None, problem or fine))

    allowed = settings.allowed_images
    add(
        "allowlist",
        None
        if allowed
        else "no image is allowed: pass --allow-image REF (or set "
        "DCP_WORKER_ALLOWED_IMAGES); an empty allowlist refuses every job",
        f"{len(allowed)} image(s) allowed: {', '.join(allowed[:5])}",
    )
    add("state_dir", _state_dir_problem(settings.state_dir), f"{settings.state_dir} is writable")

    info: dict[str, Any] | None = None
    try:
        docker = DockerRunner(settings)
        try:
            info = await docker.info()
        finally:
            await docker.close()
    except Exception as e:
        add("docker", f"the Docker engine does not answer: {type(e).__name__}: {e}", "")
    else:
        add("docker", None, f"engine {info.get('ServerVersion', '?')} answers")

    inventory = NO_GPUS
    if settings.gpus == "auto":
        try:
            async with asyncio.timeout(GPU_DISCOVER_TIMEOUT_S):
                inventory = await asyncio.to_thread(discover_gpus)
        except Exception as e:
            inventory = GpuInventory(source="none", errors=(f"{type(e).__name__}: {e}",))
    if info is None:
        add("disk", "not checked: Docker does not answer", "")
        if settings.gpus == "none":
            add("gpu", None, "not used (--gpus none)")
        else:
            problem = gpu_problem({}, inventory, settings)
            if problem is None or "runtime" in problem:
                problem = (
                    f"{_gpus(inventory)} found; the container runtime is not checked: "
                    "Docker does not answer"
                )
            add("gpu", problem, "")
    else:
        add("disk", disk_problem(info, settings), f"at least {settings.min_free_disk_gb} GB free")
        fine = (
            "not used (--gpus none)"
            if settings.gpus == "none"
            else f"{_gpus(inventory)}, NVIDIA container runtime present"
        )
        add("gpu", gpu_problem(info, inventory, settings), fine)

    api = ApiClient(settings.api_url, settings.provider_key, settings.http_timeout_s)
    try:
        checks.extend(await _api_checks(api, settings.api_url))
    finally:
        await api.aclose()
    return checks


def _gpus(inventory: GpuInventory) -> str:
    models = sorted({d.model for d in inventory.devices})
    return f"{len(inventory.devices)} GPU(s) ({', '.join(models)}, via {inventory.source})"


def _state_dir_problem(state_dir: Path) -> str | None:
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = state_dir / ".check"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        return f"cannot write under {state_dir}: {e.strerror or e}"
    return None


async def _api_checks(api: ApiClient, url: str) -> list[Check]:
    try:
        await api.health()
    except (ApiUnavailable, ApiError) as e:
        return [
            Check("api", False, f"{url} does not answer: {e}"),
            Check("key", False, "not checked: the API does not answer"),
            Check("approval", False, "not checked: the API does not answer"),
        ]
    checks = [Check("api", True, f"{url} answers")]
    try:
        me = await api.me()
    except ApiError as e:
        detail = f"the API refused the key: {e.status} {e.code}"
        if e.status == 401:
            detail += " (check DCP_PROVIDER_KEY: dcp-provider-<32 hex>, shown once at sign-up)"
        return [*checks, Check("key", False, detail), Check("approval", False, "not checked")]
    except ApiUnavailable as e:
        return [*checks, Check("key", False, str(e)), Check("approval", False, "not checked")]
    checks.append(Check("key", True, f"provider {me.provider_id}"))
    if me.approval_status != "approved":
        checks.append(
            Check("approval", False, "the provider is not approved yet: an admin must approve it")
        )
    elif me.suspended:
        checks.append(Check("approval", False, "the provider is suspended by an admin"))
    else:
        paused = " (paused: no new jobs until resumed)" if me.paused else ""
        checks.append(Check("approval", True, "approved" + paused))
    return checks


def report(checks: list[Check], out: TextIO = sys.stdout) -> int:
    """Print one line per check; 0 when all passed, else 1."""
    width = max(len(c.name) for c in checks)
    for c in checks:
        out.write(f"{'ok  ' if c.ok else 'FAIL'}  {c.name:<{width}}  {c.detail}\n")
    failed = [c.name for c in checks if not c.ok]
    out.write(f"{'all checks passed' if not failed else 'failed: ' + ', '.join(failed)}\n")
    return 0 if not failed else 1
