"""GPU discovery: NVML first (nvidia-ml-py), then nvidia-smi, else no GPU.

Blocking calls; the worker runs `discover` in a thread with a timeout.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field

NVIDIA_SMI_TIMEOUT_S = 10.0


@dataclass(frozen=True, kw_only=True)
class GpuDevice:
    """One GPU as the heartbeat reports it (SPEC section 4)."""

    index: int
    uuid: str
    model: str
    vram_total_mb: int
    vram_free_mb: int
    utilization_pct: int | None
    temperature_c: int | None


@dataclass(frozen=True, kw_only=True)
class GpuInventory:
    """What discovery found; `source` is nvml, nvidia-smi or none, `error` says why none."""

    source: str
    devices: tuple[GpuDevice, ...] = ()
    driver_version: str | None = None
    cuda_version: str | None = None
    errors: tuple[str, ...] = field(default=())

    def as_payload(self) -> list[dict[str, object]]:
        """The `gpus` list of a heartbeat body: one entry per device (count 1), so each GPU's
        utilisation and temperature stay visible."""
        return [
            {
                "model": d.model,
                "count": 1,
                "vram_total_mb": d.vram_total_mb,
                "vram_free_mb": d.vram_free_mb,
                "utilization_pct": d.utilization_pct if d.utilization_pct is not None else 0,
                "temperature_c": d.temperature_c if d.temperature_c is not None else 0,
                "driver_version": self.driver_version or "",
                "cuda_version": self.cuda_version or "",
            }
            for d in self.devices
        ]


NO_GPUS = GpuInventory(source="none")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def discover_nvml() -> GpuInventory:
    """Read every GPU through NVML. Raises if NVML is missing or fails."""
    import pynvml

    pynvml.nvmlInit()
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda_int = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        cuda = f"{cuda_int // 1000}.{(cuda_int % 1000) // 10}"
        devices = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            try:
                util: int | None = int(pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
            except pynvml.NVMLError:
                util = None
            try:
                temp: int | None = int(
                    pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
                )
            except pynvml.NVMLError:
                temp = None
            devices.append(
                GpuDevice(
                    index=i,
                    uuid=_text(pynvml.nvmlDeviceGetUUID(h)),
                    model=_text(pynvml.nvmlDeviceGetName(h)),
                    vram_total_mb=int(mem.total) // (1024 * 1024),
                    vram_free_mb=int(mem.free) // (1024 * 1024),
                    utilization_pct=util,
                    temperature_c=temp,
                )
            )
        return GpuInventory(
            source="nvml", devices=tuple(devices), driver_version=driver, cuda_version=cuda
        )
    finally:
        pynvml.nvmlShutdown()


def _int_or_none(s: str) -> int | None:
    try:
        return int(float(s))
    except ValueError:
        return None


def parse_nvidia_smi(csv_text: str, banner: str = "") -> GpuInventory:
    """Parse `nvidia-smi --query-gpu=... --format=csv,noheader,nounits` and its banner."""
    devices = []
    driver = None
    for line in csv_text.strip().splitlines():
        cols = [c.strip() for c in line.split(",")]
        if len(cols) < 8:
            continue
        index, uuid, name, total, free, util, temp, driver = cols[:8]
        devices.append(
            GpuDevice(
                index=int(index),
                uuid=uuid,
                model=name,
                vram_total_mb=_int_or_none(total) or 0,
                vram_free_mb=_int_or_none(free) or 0,
                utilization_pct=_int_or_none(util),
                temperature_c=_int_or_none(temp),
            )
        )
    m = re.search(r"CUDA Version:\s*([0-9.]+)", banner)
    return GpuInventory(
        source="nvidia-smi",
        devices=tuple(devices),
        driver_version=driver,
        cuda_version=m.group(1) if m else None,
    )


def discover_nvidia_smi() -> GpuInventory:
    """Ask nvidia-smi. Raises if it is missing, fails or times out."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise FileNotFoundError("nvidia-smi is not on PATH")
    query = (
        "index,uuid,name,memory.total,memory.free,utilization.gpu,temperature.gpu,driver_version"
    )
    csv = subprocess.run(
        [exe, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=NVIDIA_SMI_TIMEOUT_S,
        check=True,
    ).stdout
    banner = subprocess.run(
        [exe], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False
    ).stdout
    return parse_nvidia_smi(csv, banner)


def discover() -> GpuInventory:
    """NVML, then nvidia-smi; an inventory with source `none` and the reasons if both fail."""
    errors = []
    for name, probe in (("nvml", discover_nvml), ("nvidia-smi", discover_nvidia_smi)):
        try:
            inv = probe()
        except Exception as e:  # any failure of a probe means: try the next one
            errors.append(f"{name}: {type(e).__name__}: {e}")
            continue
        if inv.devices:
            return inv
        errors.append(f"{name}: no devices")
    return GpuInventory(source="none", errors=tuple(errors))
