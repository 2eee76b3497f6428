"""A latency session: a fresh process of a system on topics of its own, paced phases.

Every system measured this way gets the same treatment: a new process (pinned like in
its throughput run) in a consumer group of its own, on an empty input topic
``<bench-app>-lat-<name>.events`` with the partitions asked for and an output topic of
its own. Once it processes and commits on every partition (:func:`bench.latency.
wait_ready`), the harness sends the phases (:func:`bench.latency.measure_phases`)
with the same paced producer and read_committed consumer, reading the CPU time of the
system's processes and of the broker over each phase's measured part; then the
process is stopped. Instances are created by the first events that reach them, the
same way in every system.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.affinity import cpus_allowed
from bench.latency import Latency, Phase, Target, measure_phases, wait_ready
from bench.system import Run, System, cpu_seconds
from bench.topic import OUTPUT_CONFIG, create_topics
from bench.workload import Workload

__all__ = ["Session", "latency_session"]


@dataclass
class Session:
    """What one latency session measured (``error`` set when it could not finish)."""

    name: str
    system: str
    partitions: int
    env: dict[str, str]
    commits: str
    ready_s: float | None = None
    cpus: str | None = None
    latencies: list[Latency] = field(default_factory=list)
    error: str | None = None
    phases: list[Phase] = field(default_factory=list)  # what was asked

    def at(self, label: str) -> Latency | None:
        """The phase labelled ``label``."""
        return next((lat for lat in self.latencies if lat.label == label), None)

    def summary(self) -> dict[str, Any]:
        """For the results file."""
        return {
            "system": self.system,
            "partitions": self.partitions,
            "env": self.env,
            "commits": self.commits,
            "ready_s": None if self.ready_s is None else round(self.ready_s, 1),
            "cpus": self.cpus,
            "error": self.error,
            "phases": [
                {
                    **{k: v for k, v in vars(lat).items() if k != "cpu_s"},
                    "sent_rate": _round(lat.sent_rate, 1),
                    "system_cpu_share": _round(lat.share("system"), 3),
                    "system_cpu_us_per_event": _round(lat.us_per_event("system"), 1),
                    "broker_cpu_share": _round(lat.share("broker"), 3),
                    "broker_cpu_us_per_event": _round(lat.us_per_event("broker"), 1),
                }
                for lat in self.latencies
            ],
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


async def latency_session(
    run: Run,
    system: System,
    workload: Workload,
    phases: Sequence[Phase],
    *,
    name: str,
    partitions: int,
    env: dict[str, str] | None = None,
    ready_timeout_s: float = 90.0,
) -> Session:
    """Start ``system`` afresh as ``name`` (extra ``env``) on ``partitions``
    partitions, wait until it is ready, send ``phases``, stop it."""
    extra = dict(env or {})
    session = Session(name, system.name, partitions, extra, system.commits(), phases=list(phases))
    sub = run.derived(f"{run.app}-lat-{name}", partitions)
    output = system.output(sub)
    await create_topics(run.bootstrap, [sub.input], partitions)
    await create_topics(run.bootstrap, [output], partitions, OUTPUT_CONFIG)
    proc = system.process(sub, tag=f"-lat-{name}")
    proc.env.update(extra)
    proc.start()
    counters: dict[str, Callable[[], float | None]] = {"system": proc.cpu_seconds}
    if run.broker_pid is not None:
        pid = run.broker_pid
        counters["broker"] = lambda: cpu_seconds(pid)
    target = Target(sub.input, output, partitions)
    try:
        session.ready_s = await wait_ready(
            run.bootstrap, target, workload, timeout_s=ready_timeout_s
        )
        session.cpus = cpus_allowed(proc.proc.pid) if proc.proc is not None else None
        session.latencies = await measure_phases(
            run.bootstrap, target, workload, phases, cpu=counters
        )
        if not proc.alive():
            session.error = f"the process ended during the run; see {proc.log_path}"
    except (TimeoutError, RuntimeError) as exc:
        session.error = f"{exc}; see {proc.log_path}"
    finally:
        # Its topics and state are never used again: no need to wait for a clean exit.
        await asyncio.to_thread(proc.stop, 3.0)
    return session
