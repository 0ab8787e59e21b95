"""The worker's job slots and GPU devices: what a job takes when it starts, and gives back.

A job takes `max(1, gpu_count)` slots. With `--gpus auto` the slots are the GPUs found and a job
also takes `gpu_count` device UUIDs (handed to Docker as DeviceRequests); with `--gpus none`
the slots are the registered `gpu_count` and no device is handed out.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Grant:
    """What one job holds: its slots and (with `auto`) its devices."""

    slots: int
    devices: list[str] = field(default_factory=list)


class DevicePool:
    """Slots and free devices. Single-threaded: only the event loop calls it."""

    def __init__(self) -> None:
        self.capacity = 0
        self._with_devices = False
        self._free: list[str] = []
        self._used = 0

    def configure(self, capacity: int, devices: list[str] | None) -> None:
        """At start-up: `devices` the GPU UUIDs to hand out, or None to run without devices."""
        self.capacity = capacity
        self._with_devices = devices is not None
        self._free = list(devices or [])
        self._used = 0

    @property
    def free_slots(self) -> int:
        return self.capacity - self._used

    @property
    def free_devices(self) -> list[str]:
        return list(self._free)

    def acquire(self, gpu_count: int) -> Grant | None:
        """Take what a job of `gpu_count` GPUs needs, or None when it does not fit now (the
        platform assigns only what fits, so it will once a running job ends)."""
        slots = max(1, gpu_count)
        if slots > self.free_slots:
            return None
        devices: list[str] = []
        if self._with_devices:
            devices = self._free[:gpu_count]
            del self._free[:gpu_count]
        self._used += slots
        return Grant(slots, devices)

    def adopt(self, gpu_count: int, devices: list[str]) -> Grant:
        """A container found running at start-up: it holds its slots even past the capacity
        (it runs whatever we decide), and those of its devices that are still free."""
        held = [d for d in devices if d in self._free]
        for d in held:
            self._free.remove(d)
        slots = max(1, gpu_count)
        self._used += slots
        return Grant(slots, held)

    def release(self, grant: Grant) -> None:
        self._used -= grant.slots
        self._free.extend(grant.devices)
