"""CPU time of the processes under test, from ``/proc``, over a measured window.

A system's CPU time is that of every process in its session (the harness starts each
system in a session of its own): user + system time of each live member, plus the
time of members already reaped (``cutime``/``cstime`` of their parent), so a helper
process that comes and goes is counted once. The broker is one JVM: its pid.

:class:`CpuSampler` reads the counters every ``interval_s`` while a system runs, with
the wall-clock time of each reading, so that the CPU time between two moments known
only afterwards (the broker's append times of a system's first and last output) can
be read off by linear interpolation: the clock tick is 10 ms and the readings are
0.2 s apart, against windows of seconds.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["CpuSampler", "Reading", "SessionCpu"]

_TICK = os.sysconf("SC_CLK_TCK")

Reading = Callable[[], float | None]
"""A CPU counter: seconds so far, or None once the process is gone."""


def _stat(pid: int | str) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


class SessionCpu:
    """A :data:`Reading`: CPU seconds of every process in session ``sid`` (None once
    its leader is gone).

    The members are found by a scan of ``/proc`` at most every ``rescan_s`` (a scan
    reads every process's stat file; the members' are read at every call)."""

    def __init__(self, sid: int, rescan_s: float = 2.0) -> None:
        self.sid = sid
        self._rescan_s = rescan_s
        self._members: list[int] = [sid]
        self._scanned = 0.0

    def _scan(self) -> None:
        members = []
        for name in os.listdir("/proc"):
            if name.isdigit() and (f := _stat(name)) is not None and int(f[3]) == self.sid:
                members.append(int(name))
        self._members = members or [self.sid]
        self._scanned = time.monotonic()

    def __call__(self) -> float | None:
        if time.monotonic() - self._scanned > self._rescan_s:
            self._scan()
        total, leader = 0, False
        for pid in self._members:
            f = _stat(pid)
            if f is None or int(f[3]) != self.sid:
                continue  # gone (its time is in its parent's cutime once reaped)
            leader = leader or pid == self.sid
            total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        return total / _TICK if leader else None


class CpuSampler:
    """Readings of named CPU counters over wall-clock time, taken in the background.

    ``async with CpuSampler({"system": ..., "broker": ...}) as cpu:`` ... then
    ``cpu.between("system", t0, t1)``: the CPU seconds the counter grew by from wall
    time ``t0`` to ``t1`` (epoch seconds), interpolated between readings.
    """

    def __init__(self, counters: dict[str, Reading], interval_s: float = 0.2) -> None:
        self._counters = counters
        self._interval_s = interval_s
        self._times: list[float] = []
        self._values: dict[str, list[float | None]] = {name: [] for name in counters}
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        """Take one reading of every counter now."""
        self._times.append(time.time())
        for name, read in self._counters.items():
            self._values[name].append(read())

    async def _loop(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self._interval_s)

    async def __aenter__(self) -> CpuSampler:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.sample()

    def _at(self, name: str, t: float) -> float | None:
        if name not in self._values:
            return None  # not a counter of this sampler (no local broker, say)
        points: list[tuple[float, float]] = [
            (x, v) for x, v in zip(self._times, self._values[name], strict=True) if v is not None
        ]
        if not points:
            return None
        xs = [x for x, _ in points]
        i = bisect.bisect_left(xs, t)
        if i == 0:
            return points[0][1] if abs(xs[0] - t) < self._interval_s * 2 else None
        if i == len(points):
            return points[-1][1] if t - xs[-1] < self._interval_s * 2 else None
        (x0, v0), (x1, v1) = points[i - 1], points[i]
        return v0 + (v1 - v0) * (t - x0) / (x1 - x0) if x1 > x0 else v1

    def between(self, name: str, t0: float, t1: float) -> float | None:
        """CPU seconds of counter ``name`` from wall time ``t0`` to ``t1`` (None when the
        readings do not cover both moments)."""
        a, b = self._at(name, t0), self._at(name, t1)
        return None if a is None or b is None else b - a
