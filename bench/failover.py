"""Failover: from a worker's SIGKILL to its partitions serving again, three ways.

Part ``failover`` (``bench/run --only failover``). Each scenario has an app (topic
prefix) and data folders of its own. Its workers start first; when they serve (``/ready``,
and with two workers, each holding half the events partitions), the workload is
produced to the app's events topic and applied, checked by counting its state changes;
then the harness waits until every worker is idle (its CPU under 15% of a core for two
seconds: with standbys, the warm copies are caught up), so the killed worker holds its
instances (all of them with one worker, half with two) and nothing is in flight:

- ``restart``: one worker serving every partition is SIGKILLed and started again at
  once with the same data folder and worker id (static membership: it takes its
  partitions back without waiting for a rebalance). Target under 5 s.
- ``standby``: two workers with ``GARRISON_STANDBY_REPLICAS=1``; one is SIGKILLed for
  good. The survivor takes its partitions when the group gives up on the dead one (the
  session timeout) and restores only what its warm copy lacked. Target under 10 s.
- ``cold``: the same without standbys: the survivor restores the dead worker's
  partitions from the changelog. Target under 30 s.

"Serving again" is measured the same way in every scenario, by :class:`bench.probe.Probe`:
one event per partition every 50 ms, followed on ``<app>.state-changes`` with a
read_committed consumer. A partition serves again at the first state change of a probe
*sent after* the kill; the time is that record's timestamp (the worker's wall clock
when it produced it) minus the kill's wall-clock time, both on this machine. The figure
is the last of the killed worker's partitions (from the group's assignment just before
the kill; with two workers, ``w1`` is killed); it includes up to one probe interval and
the usual apply latency (the probes' p50 before the kill is printed with it). Where the
seconds went is read from the new owner's log (the workers log at info): process start,
the survivor noticing the rebalance, group join, records restored, lanes serving.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from bench.parts import PARTS, PartContext
from bench.probe import PROBE_INTERVAL_S, Probe, Unmeasured
from bench.system import Process, Run, free_port, garrison_env
from bench.topic import create_topics, produce
from pipeline.settings import Settings

__all__ = [
    "SCENARIOS",
    "TARGETS_S",
    "Failover",
    "Timeline",
    "log_steps",
    "measure_failover",
    "run_scenario",
]

SCENARIOS = ("restart", "standby", "cold")
TARGETS_S = {"restart": 5.0, "standby": 10.0, "cold": 30.0}
_IDLE_CPU = 0.15  # share of a core; idle workers measured 0-2% (timers, heartbeats)
_SERVE_TIMEOUT_S = 180.0


@dataclass
class Timeline:
    """What the new owner's log says of the time between the kill and serving again,
    in seconds after the kill."""

    steps: dict[str, float] = field(default_factory=dict)
    joins: int = 0  # group joins: more than one when a rebalance followed the first
    restored: int = 0  # changelog records restored
    restore_s: float = 0.0  # what the restores took, by their own account


@dataclass
class Failover:
    """One scenario's outcome; times in seconds after the kill."""

    scenario: str
    seconds: float | None  # the last of the killed worker's partitions serving again
    killed_partitions: list[int]
    per_partition: dict[int, float]  # every partition
    probe_p50_ms: float | None  # before the kill
    timeline: Timeline = field(default_factory=Timeline)  # the new owner's log
    loaded_s: float = 0.0  # producing and applying the workload
    note: str = "ok"


async def _get_status(port: str, path: str) -> int:
    def get() -> int:
        try:
            with urllib.request.urlopen(  # noqa: S310 - the local worker
                f"http://127.0.0.1:{port}{path}", timeout=2
            ) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return 0

    return await asyncio.to_thread(get)


def _wid(worker: Process) -> str:
    return worker.env["GARRISON_WORKER_ID"]


async def _assignment(bootstrap: str, app: str, ids: list[str]) -> dict[str, list[int]]:
    """Worker id -> the events partitions the group assigned it (static members' ids
    are ``<group instance id>-<uuid>``; garrison's instance id is ``<app>.<worker id>``)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([app])
    finally:
        await admin.close()
    out: dict[str, list[int]] = {}
    for group in responses[0].groups:
        for member_id, _client, _host, _meta, raw in group[5]:
            wid = next((i for i in ids if member_id.startswith(f"{app}.{i}-")), None)
            if wid is None or not raw:
                continue
            decoded = ConsumerProtocolMemberAssignment.decode(raw)
            out[wid] = sorted(
                p for topic, ps in decoded.assignment if topic == f"{app}.events" for p in ps
            )
    return out


async def _until_ready(run: Run, workers: list[Process], timeout_s: float) -> None:
    """Every worker answers /ready and holds events partitions, all of them between them."""
    deadline = time.monotonic() + timeout_s
    ids = [_wid(w) for w in workers]
    while time.monotonic() < deadline:
        for w in workers:
            if not w.alive():
                raise Unmeasured(f"worker {_wid(w)} exited; see {w.log_path}")
        ready = [await _get_status(w.env["GARRISON_WEB_PORT"], "/ready") for w in workers]
        if all(code == 200 for code in ready):
            held = await _assignment(run.bootstrap, run.app, ids)
            mine = [p for i in ids for p in held.get(i, [])]
            if all(held.get(i) for i in ids) and sorted(mine) == list(range(run.partitions)):
                return
        await asyncio.sleep(0.5)
    raise Unmeasured(f"the workers did not all serve within {timeout_s:.0f} s")


async def _until_applied(
    probe: Probe, workers: list[Process], events: int, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while probe.workload_changes < events:
        if time.monotonic() > deadline:
            raise Unmeasured(
                f"{probe.workload_changes:,} of {events:,} events applied in {timeout_s:.0f} s"
            )
        for w in workers:
            if not w.alive():
                raise Unmeasured(f"worker {_wid(w)} exited; see {w.log_path}")
        await asyncio.sleep(0.5)


async def _settle(workers: list[Process], timeout_s: float) -> bool:
    """Wait until every worker used under :data:`_IDLE_CPU` of a core for 2 s running."""
    deadline = time.monotonic() + timeout_s
    last = [w.cpu_seconds() or 0.0 for w in workers]
    quiet = 0
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        now = [w.cpu_seconds() or 0.0 for w in workers]
        quiet = quiet + 1 if max(n - b for n, b in zip(now, last, strict=True)) < _IDLE_CPU else 0
        if quiet >= 2:
            return True
        last = now
    return False


async def _until_served(
    probe: Probe, partitions: set[int], since: float, workers: list[Process], timeout_s: float
) -> dict[int, float]:
    deadline = time.monotonic() + timeout_s
    while True:
        served = probe.first_after(since)
        if partitions <= served.keys():
            return served
        if time.monotonic() > deadline:
            missing = sorted(partitions - served.keys())
            raise Unmeasured(f"partitions {missing} did not serve again within {timeout_s:.0f} s")
        if not any(w.alive() for w in workers):
            raise Unmeasured("no worker left running")
        await asyncio.sleep(0.05)


_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] \[\d+\] \[\w+\] (.*)")
_RESTORED = re.compile(r"restored (\d+) changelog records in ([\d.]+) s")


def log_steps(text: str, since: float, until: float) -> Timeline:
    """Read a worker's log (at info) from ``since`` to ``until`` seconds after it (wall
    clock): its first start-up and rebalance lines, its last join and serving lines, and
    the restores between."""
    out = Timeline()
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        logged = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f")  # noqa: DTZ007 - local time
        at = logged.timestamp() - since
        if not 0 <= at <= until:
            continue
        message = m[2]
        if message.startswith("[^_Worker]: Starting"):
            out.steps.setdefault("process up", at)
        elif message.startswith("Heartbeat failed"):
            out.steps.setdefault("rebalance noticed", at)
        elif message.startswith("Joined group"):
            out.steps["joined"] = at
            out.joins += 1
        elif message.startswith("serving partitions") and "none" not in message:
            out.steps["serving"] = at
        elif (r := _RESTORED.search(message)) is not None:
            out.restored += int(r[1])
            out.restore_s += float(r[2])
    return out


def _worker(ctx: PartContext, run: Run, scenario: str, n: int) -> Process:
    data = run.work_dir / f"data-{n}"
    env = garrison_env(run, data, free_port())
    env.update(GARRISON_WORKER_ID=f"w{n}", GARRISON_LOG_LEVEL="info")
    if scenario == "standby":
        env["GARRISON_STANDBY_REPLICAS"] = "1"
    proc = Process(
        f"failover-{scenario}-w{n}",
        [sys.executable, "-m", "garrison", "worker", "bench.app"],
        env,
        run.log_dir / f"failover-{scenario}-w{n}.log",
        run.affinity,  # the workers are the system: its CPU
    )
    ctx.run.processes.append(proc)  # stopped at the end, whatever happens
    return proc


async def run_scenario(ctx: PartContext, scenario: str) -> Failover:
    """Load, kill, time: see the module doc."""
    base = ctx.run
    work = base.work_dir / f"failover-{scenario}"
    run = base.derived(f"{base.app}-fo-{scenario}")  # pinned like every system
    run.work_dir = work
    work.mkdir(parents=True, exist_ok=True)
    workers = [_worker(ctx, run, scenario, n) for n in range(1 if scenario == "restart" else 2)]
    doomed = workers[-1]
    out = Failover(scenario, None, [], {}, None)
    probe = Probe(run.bootstrap, run.app, run.partitions)
    await create_topics(run.bootstrap, [run.input], run.partitions)
    try:
        for w in workers:
            w.start()
        await _until_ready(run, workers, 120)
        await probe.follow()
        t = time.monotonic()
        await produce(run.bootstrap, run.input, run.partitions, ctx.workload.records())
        await _until_applied(probe, workers, ctx.workload.events, ctx.settings["timeout_s"])
        out.loaded_s = time.monotonic() - t
        if not await _settle(workers, 120):
            out.note = "the workers were still busy 120 s after applying the workload"
        probe.start_sending()
        warm = time.time()
        await _until_served(probe, set(probe.tenants), warm, workers, 60)
        await asyncio.sleep(2)
        held = await _assignment(run.bootstrap, run.app, [_wid(w) for w in workers])
        out.killed_partitions = held.get(_wid(doomed), [])
        if not out.killed_partitions:
            raise Unmeasured(f"worker {_wid(doomed)} held no partition before the kill")
        killed = time.time()
        doomed.kill()
        if scenario == "restart":
            doomed.start()  # at once, the same data folder and worker id
        out.probe_p50_ms = probe.latency_ms(warm + 1, killed)
        out.per_partition = await _until_served(
            probe, set(probe.tenants), killed, workers, _SERVE_TIMEOUT_S
        )
        out.seconds = max(out.per_partition[p] for p in out.killed_partitions)
        owner = doomed if scenario == "restart" else workers[0]
        text = owner.log_path.read_text(errors="replace")
        out.timeline = log_steps(text, killed, out.seconds)
        if probe.send_errors:
            out.note = f"{probe.send_errors} probes failed to send"
    except Unmeasured as failed:
        out.note = str(failed)
    finally:
        await probe.stop()
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in workers))
        shutil.rmtree(work, ignore_errors=True)
    return out


def _line(f: Failover, partitions: int) -> list[str]:
    target = TARGETS_S[f.scenario]
    if f.seconds is None:
        return [f"failover {f.scenario}: not measured: {f.note} (target < {target:.0f} s)"]
    verdict = "met" if f.seconds < target else "NOT met"
    t = f.timeline
    steps = ", ".join(f"{n} {at:.1f} s" for n, at in sorted(t.steps.items(), key=lambda x: x[1]))
    if t.joins > 1:
        steps += f" (joined {t.joins} times)"
    p50 = "-" if f.probe_p50_ms is None else f"{f.probe_p50_ms:.0f} ms"
    lines = [
        f"failover {f.scenario}: {f.seconds:.2f} s from SIGKILL to the killed worker's "
        f"partitions {f.killed_partitions} serving again (target < {target:.0f} s: {verdict}); "
        f"all {partitions} partitions {max(f.per_partition.values()):.2f} s",
        f"  {f.scenario}: the new owner's log after the kill: {steps or '-'}; restored "
        f"{t.restored:,} changelog records in {t.restore_s:.1f} s; probe p50 before the "
        f"kill {p50}; workload loaded and applied in {f.loaded_s:.0f} s",
    ]
    if f.note != "ok":
        lines.append(f"  {f.scenario}: {f.note}")
    return lines


async def measure_failover(ctx: PartContext) -> None:
    """The part: each scenario in turn, on apps of its own."""
    report = ctx.report
    w = ctx.workload
    session_s = Settings().session_timeout_s  # the workers read the same environment
    report.extra_lines.append(
        f"failover: each scenario loads {w.events:,} events over {w.slots:,} instances into "
        f"an app of its own; probes every {PROBE_INTERVAL_S * 1000:.0f} ms per partition; "
        "times are from the SIGKILL to the first state change of a probe sent after it; "
        f"session timeout {session_s:g} s"
    )
    for scenario in SCENARIOS:
        print(f"failover: {scenario} ...", flush=True)
        f = await run_scenario(ctx, scenario)
        if f.seconds is not None:
            report.extra_figures[f"failover_{scenario}_s"] = f.seconds
        else:
            report.notes.append(f"failover {scenario}: {f.note}")
        lines = _line(f, ctx.run.partitions)
        for line in lines:
            print(line, flush=True)
        report.extra_lines += lines


PARTS["failover"] = measure_failover
