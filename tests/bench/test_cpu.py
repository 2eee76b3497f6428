"""The bench's CPU accounting: a session's processes counted, a window interpolated."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench.affinity import cpus_allowed, plan_affinity
from bench.cpu import CpuSampler, SessionCpu

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def test_a_session_counts_its_children_once() -> None:
    # A parent that burns 0.2 s and starts a child that burns 0.2 s and is reaped.
    code = (
        "import subprocess, sys\n"
        + BURN.format(s=0.2)
        + f"subprocess.run([sys.executable, '-c', {BURN.format(s=0.2)!r}], check=True)\n"
        + "import time; time.sleep(5)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        cpu = SessionCpu(proc.pid, rescan_s=0.0)
        deadline = time.monotonic() + 10
        seen = 0.0
        while time.monotonic() < deadline and seen < 0.4:
            seen = cpu() or 0.0
            time.sleep(0.05)
        # Both burns (plus two interpreter start-ups), and not twice the child's.
        assert 0.4 <= seen < 1.3
    finally:
        proc.kill()
        proc.wait()
    assert SessionCpu(proc.pid)() is None  # gone


def test_between_interpolates_readings() -> None:
    clock = iter([0.0, 1.0, 3.0])
    sampler = CpuSampler({"x": lambda: next(clock)}, interval_s=1.0)
    for t in (100.0, 101.0, 102.0):
        sampler._times.append(t)  # noqa: SLF001 - readings at known times
        sampler._values["x"].append(sampler._counters["x"]())  # noqa: SLF001
    assert sampler.between("x", 100.5, 101.5) == 1.5  # 0.5 -> 2.0
    assert sampler.between("x", 95.0, 101.0) is None  # before the readings


def test_pinned_processes_run_on_the_system_cpu() -> None:
    assert not plan_affinity(unpinned=True).pinned
    plan = plan_affinity(unpinned=False)
    if plan.system_cpus is None:
        pytest.skip(f"not pinned here: {plan.why}")
    proc = subprocess.Popen(plan.command([sys.executable, "-c", "import time; time.sleep(3)"]))
    try:
        time.sleep(0.5)
        assert cpus_allowed(proc.pid) == str(plan.system_cpus[0])
    finally:
        proc.kill()
        proc.wait()
