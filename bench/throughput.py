"""One system's throughput run: start it on the input topic, wait, count its output.

Events per second = records on the system's output topic / the time between the first
and the last of them, both stamped by the broker when it appended them
(``LogAppendTime``). So process start, group join and state recovery are outside the
window and need no warm-up rule; the first records after start-up are inside it.

CPU time per event over the same window: the CPU time the system's processes (and,
apart, the broker) used from the first output's append time to the last one's,
interpolated from readings taken every 0.2 s (:mod:`bench.cpu`), over the outputs.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bench.affinity import cpus_allowed
from bench.cpu import CpuSampler, Reading
from bench.system import Process, Run, System, cpu_seconds
from bench.topic import OUTPUT_CONFIG, OutputScan, Watcher, create_topics, scan_output
from bench.workload import Expected

__all__ = ["Measured", "run_throughput"]

_POLL_S = 0.5
_STALL_S = 30.0


@dataclass
class Measured:
    """A system's throughput run."""

    system: str
    outputs: int
    span_s: float
    rate: float | None
    startup_s: float | None  # process start to its first output
    ended: str  # complete | capped | timed out | stalled | exited
    verified: str
    process: Process | None = None
    cpu_s: float | None = None  # the system's CPU seconds over the output window
    broker_cpu_s: float | None = None  # the broker's, over the same window
    cpus: str | None = None  # the CPUs its process was allowed (Cpus_allowed_list)

    def _per_event(self, seconds: float | None) -> float | None:
        return None if seconds is None or not self.outputs else seconds * 1e6 / self.outputs

    @property
    def cpu_us_per_event(self) -> float | None:
        """The system's CPU microseconds per output, over its output window."""
        return self._per_event(self.cpu_s)

    @property
    def broker_cpu_us_per_event(self) -> float | None:
        """The broker's CPU microseconds per output, over the same window."""
        return self._per_event(self.broker_cpu_s)

    @property
    def cores(self) -> float | None:
        """The system's CPU time over the window as a share of one core."""
        return None if self.cpu_s is None or self.span_s <= 0 else self.cpu_s / self.span_s

    @property
    def complete(self) -> bool:
        """Whether the system processed the whole workload."""
        return self.ended == "complete"


async def run_throughput(
    run: Run,
    system: System,
    events: int,
    sample: list[Expected],
    *,
    cap_s: float | None,
    timeout_s: float,
    keep: bool = False,
) -> Measured:
    """Run ``system`` over the input topic; stop it unless ``keep`` (garrison stays up
    for the latency run), then read its output topic."""
    output = system.output(run)
    await create_topics(run.bootstrap, [output], run.partitions, OUTPUT_CONFIG)
    proc = system.process(run)
    started_wall = time.time()
    proc.start()
    counters: dict[str, Reading] = {"system": proc.cpu_seconds}
    if run.broker_pid is not None:
        pid = run.broker_pid
        counters["broker"] = lambda: cpu_seconds(pid)
    async with CpuSampler(counters) as cpu:
        ended = await _watch(run, system, proc, events, cap_s, timeout_s)
    cpus = cpus_allowed(proc.proc.pid) if proc.proc is not None else None
    if not keep or not proc.alive():
        await asyncio.to_thread(proc.stop)
    scan = await scan_output(run.bootstrap, output, [(e.tenant, e.instance) for e in sample])
    startup = None if scan.first_ms is None else scan.first_ms / 1000 - started_wall
    if ended == "complete":
        verified = _verify(scan, sample)
    else:
        verified = f"not checked ({ended})"
    window = (
        None
        if scan.first_ms is None or scan.last_ms is None
        else (scan.first_ms / 1000, scan.last_ms / 1000)
    )
    return Measured(
        system.name,
        scan.count,
        scan.span_s,
        scan.rate,
        startup,
        ended,
        verified,
        proc if keep and proc.alive() else None,
        cpu_s=None if window is None else cpu.between("system", *window),
        broker_cpu_s=None if window is None else cpu.between("broker", *window),
        cpus=cpus,
    )


async def _watch(
    run: Run, system: System, proc: Process, events: int, cap_s: float | None, timeout_s: float
) -> str:
    """Poll until the system is done, capped, stuck or dead; say which."""
    output, group = system.output(run), system.group(run)
    first = None
    last_hw, last_change, stable = -1, time.monotonic(), 0
    async with Watcher(run.bootstrap) as watch:
        while True:
            await asyncio.sleep(_POLL_S)
            now = time.monotonic()
            if not proc.alive():
                code = proc.proc.returncode if proc.proc is not None else "?"
                return f"exited (code {code}); see {proc.log_path}"
            hw = await watch.high_water(output)
            if hw > 0 and first is None:
                first = now
            if hw != last_hw:
                last_hw, last_change, stable = hw, now, 0
            else:
                stable += 1
            # Done: one output per event (or more: transaction markers, duplicates) and
            # the group has committed the whole input, or, for a system that commits
            # rarely, the output has not moved for 5 s.
            if hw >= events and (stable >= 10 or await watch.caught_up(group, run.input)):
                return "complete"
            if cap_s is not None and first is not None and now - first >= cap_s:
                return f"capped at {cap_s:.0f} s"
            if now - proc.started > timeout_s:
                return f"timed out at {timeout_s:.0f} s"
            if first is not None and now - last_change > _STALL_S:
                return f"stalled for {_STALL_S:.0f} s"


def _verify(scan: OutputScan, sample: list[Expected]) -> str:
    """Compare the last state change of each sampled instance with the expected one."""
    good = sum(1 for e in sample if scan.latest.get((e.tenant, e.instance)) == (e.seq, e.state))
    word = "ok" if good == len(sample) else "MISMATCH"
    return f"{good}/{len(sample)} sampled instances {word}"
