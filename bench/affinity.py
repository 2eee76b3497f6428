"""Which CPU each process of a benchmark run may use.

Pinned (the default when the harness may use two CPUs or more): every system under
test runs on one CPU, the *system CPU*, and the broker and the harness (the paced
producer, the measuring consumer, the watcher) on another, the *harness CPU*; the
same for every system. The harness pins itself before it starts the broker, so the
broker's JVM and every thread it makes inherit the harness CPU; a system's process is
started through ``taskset -c <system CPU>``, so it and all its threads and children
are on the system CPU from their first instruction. On a machine with more CPUs the
two highest allowed ones are used and the rest stay idle, so a run means the same as
on two. Unpinned (``bench/run --unpinned``, or fewer than two CPUs) nothing is set
and the scheduler places everything.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Affinity", "cpus_allowed", "plan_affinity"]


def _cpu_list(cpus: tuple[int, ...]) -> str:
    return ",".join(str(c) for c in cpus)


def cpus_allowed(pid: int) -> str | None:
    """The CPUs process ``pid`` may run on, as the kernel lists them (``0-1``, ``1``)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


@dataclass(frozen=True)
class Affinity:
    """The pinning plan of one run: ``system_cpus`` None means unpinned."""

    system_cpus: tuple[int, ...] | None
    harness_cpus: tuple[int, ...] | None
    why: str  # why pinned or not, for the results

    @property
    def pinned(self) -> bool:
        """Whether systems and the broker get CPUs of their own."""
        return self.system_cpus is not None

    def pin_harness(self) -> None:
        """Move this process (and what it starts from now on: the broker) to the harness
        CPU. Threads inherit the affinity of the thread that makes them, so this runs
        before the harness starts any thread."""
        if self.harness_cpus is not None:
            os.sched_setaffinity(0, set(self.harness_cpus))

    @contextlib.contextmanager
    def on_system_cpu(self) -> Iterator[None]:
        """Run this thread (and the processes it starts meanwhile) on the system CPU:
        for a system that runs inside the harness (replay's jobs), then back."""
        if self.system_cpus is None or self.harness_cpus is None:
            yield
            return
        os.sched_setaffinity(0, set(self.system_cpus))
        try:
            yield
        finally:
            os.sched_setaffinity(0, set(self.harness_cpus))

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run on the system CPU (``taskset`` execs it: the pid stays the same)."""
        if self.system_cpus is None:
            return argv
        return ["taskset", "-c", _cpu_list(self.system_cpus), *argv]

    def describe(self) -> str:
        """One line for the printed results."""
        if self.system_cpus is None or self.harness_cpus is None:
            return f"unpinned ({self.why}): the scheduler places systems, broker and harness"
        return (
            f"pinned: each system on CPU {_cpu_list(self.system_cpus)}, the broker and the "
            f"harness on CPU {_cpu_list(self.harness_cpus)} ({self.why})"
        )

    def params(self) -> dict[str, Any]:
        """What goes into the results' ``params``."""
        return {
            "pinned": self.pinned,
            "system_cpus": None if self.system_cpus is None else list(self.system_cpus),
            "broker_and_harness_cpus": (
                None if self.harness_cpus is None else list(self.harness_cpus)
            ),
            "why": self.why,
            "description": self.describe(),
        }


def plan_affinity(unpinned: bool) -> Affinity:
    """The plan for this machine: pinned unless asked not to or short of CPUs."""
    if unpinned:
        return Affinity(None, None, "--unpinned")
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return Affinity(None, None, f"only {len(allowed)} CPU allowed: nothing to pin apart")
    if shutil.which("taskset") is None:
        return Affinity(None, None, "taskset (util-linux) is not on PATH")
    harness, system = allowed[-2], allowed[-1]
    return Affinity((system,), (harness,), f"{len(allowed)} CPUs allowed")
