"""Replay speed against the worker's dispatch rate, what history costs, and history reads.

Part ``replay`` (``bench/run --only replay``): the workload is produced to an app of its
own and a garrison worker (default settings: the last 10 changes kept per instance)
applies it; its rate is read as in the throughput run (state changes over their
broker-stamped span). Then ``garrison replay`` runs in this process over the same
events, comparing every change with the published one, timed from its call to its
answer (start-up, the dead-letter read, the wait for the worker, everything), with one
process per CPU it may use (at most one per partition), as ``garrison replay --jobs 0``
does: pinned like the worker, that is one CPU and one process (``bench/run --quick
--only replay``, twice, 20 minutes apart on a machine busy with other runs: two
processes taking turns on the one CPU replayed 11,238 events/s, one process 20,288):

- ``replay_events_per_s``, ``dispatch_events_per_s`` and ``ratios.replay_vs_dispatch``
  (the target: 2x, a replay needs no transactions and writes nothing);
- the same workload through a second worker with ``GARRISON_HISTORY_KEEP=0``:
  ``dispatch_no_history_events_per_s`` and ``ratios.history_vs_no_history``, what
  keeping the history slots costs the hot path;
- ``history_p99_ms`` (and p50): history reads of sampled instances answered from the
  worker's store, one after another over HTTP; ``history_topic_p99_ms``: reads that
  need the state-change topic (an instance given more changes than are kept, read
  from seq 1: a scan of its tenant's partition).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

from bench.parts import PARTS, PartContext
from bench.system import Run, System, free_port, garrison_env
from bench.throughput import Measured, run_throughput
from bench.topic import create_topics, produce
from bench.workload import BASE_TIME_MS, EVENT_TYPE, MACHINE, SOURCE, Expected, Workload
from pipeline.envelope import Event, encode_event

__all__ = ["measure_replay"]

_READS = 400
_TOPIC_READS = 20


def _worker(keep: int) -> System:
    def command(
        run: Run, output: str, group: str, state_dir: Path
    ) -> tuple[list[str], dict[str, str]]:
        env = garrison_env(run, state_dir, free_port())
        env["GARRISON_HISTORY_KEEP"] = str(keep)
        return [sys.executable, "-m", "garrison", "worker", "bench.app"], env

    return System("garrison", command)


async def _dispatch(ctx: PartContext, tag: str, keep: int, *, stay: bool) -> tuple[Run, Measured]:
    base = ctx.run
    work = base.work_dir / tag  # a data dir of its own: the app is a different one
    run = base.derived(f"{base.app}-{tag}")  # pinned like every system; same processes
    run.work_dir = work
    await create_topics(run.bootstrap, [run.input], run.partitions)
    await produce(run.bootstrap, run.input, run.partitions, ctx.workload.records())
    measured = await run_throughput(
        run,
        _worker(keep),
        ctx.workload.events,
        ctx.workload.sample(20),
        cap_s=None,
        timeout_s=ctx.settings["timeout_s"],
        keep=stay,
    )
    return run, measured


def _get_ms(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 - the local worker
        body = json.loads(resp.read())
    if "changes" not in body:
        raise RuntimeError(f"history read failed: {body}")
    return (time.perf_counter() - started) * 1000


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _history_reads(port: str, sample: list[Expected]) -> list[float]:
    urls = [
        f"http://127.0.0.1:{port}/state/{e.tenant}/{MACHINE}/{e.instance}/history?limit=10"
        for e in sample
    ]
    for url in urls[:20]:  # unmeasured: connections and code paths warm
        await asyncio.to_thread(_get_ms, url)
    return [await asyncio.to_thread(_get_ms, urls[i % len(urls)]) for i in range(_READS)]


async def _topic_reads(run: Run, port: str, workload: Workload) -> list[float]:
    """Reads from seq 1 of an instance with more changes than the worker keeps."""
    tenant, instance = workload.address(0)
    extra = []
    for n in range(30):
        ev = Event(
            f"deep{n}",
            EVENT_TYPE,
            SOURCE,
            tenant,
            MACHINE,
            instance,
            BASE_TIME_MS + n,
            {"amount": 1},
        )
        extra.append((tenant.encode(), encode_event(ev)))
    await produce(run.bootstrap, run.input, run.partitions, extra)
    url = f"http://127.0.0.1:{port}/state/{tenant}/{MACHINE}/{instance}/history?limit=1000"
    deadline = time.monotonic() + 60
    while True:
        with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310
            body = json.loads(resp.read())
        if any(c["event_id"] == "deep29" for c in body["changes"]):
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the extra changes were not applied within 60 s")
        await asyncio.sleep(0.5)
    if body["read"]["topic"] == 0:
        raise RuntimeError(f"the deep read did not need the topic: {body['read']}")
    return [await asyncio.to_thread(_get_ms, url) for _ in range(_TOPIC_READS)]


async def measure_replay(ctx: PartContext) -> None:
    """The part: see the module doc."""
    from bench.app import registry
    from garrison.replay import ReplayOptions, replay, usable_cpus
    from pipeline.settings import KafkaSettings, Settings

    report = ctx.report
    run, live = await _dispatch(ctx, "replay", 10, stay=True)
    worker = live.process
    if live.rate is None or not live.complete or worker is None:
        report.skipped["replay"] = f"the worker's run did not complete ({live.ended})"
        return
    try:
        port = worker.env["GARRISON_WEB_PORT"]
        reads = await _history_reads(port, ctx.workload.sample(50))
        deep = await _topic_reads(run, port, ctx.workload)
        settings = Settings(
            app=run.app, kafka=KafkaSettings(bootstrap=run.bootstrap, partitions=run.partitions)
        )
        started = time.monotonic()
        with run.affinity.on_system_cpu():  # replay is the system here: its CPU, pinned
            jobs = min(usable_cpus(), run.partitions)  # what --jobs 0 makes of it
            result = await replay(
                settings, registry, ReplayOptions(wait_s=120, jobs=0, spec="bench.app")
            )
        seconds = time.monotonic() - started
    finally:
        await asyncio.to_thread(worker.stop)
    _, bare = await _dispatch(ctx, "nohist", 0, stay=False)
    s = result.stats
    replay_rate = s.events / seconds
    f, r = report.extra_figures, report.extra_ratios
    f["replay_events_per_s"] = replay_rate
    f["dispatch_events_per_s"] = live.rate
    f["history_p50_ms"] = statistics.median(reads)
    f["history_p99_ms"] = _p(reads, 0.99)
    f["history_topic_p50_ms"] = statistics.median(deep)
    f["history_topic_p99_ms"] = _p(deep, 0.99)
    r["replay_vs_dispatch"] = replay_rate / live.rate
    if bare.rate is not None:
        f["dispatch_no_history_events_per_s"] = bare.rate
        r["history_vs_no_history"] = live.rate / bare.rate
    verdict = "identical" if result.identical else f"{s.diverged} instances DIFFER"
    report.extra_lines += [
        f"replay: {s.events:,} events in {seconds:.1f} s ({result.setup_s:.1f} s of it finding "
        f"where to read), {replay_rate:,.0f} events/s with {jobs} process(es) "
        f"({s.compared:,} changes compared: {verdict}); the worker dispatched the same "
        f"events at {live.rate:,.0f} events/s (x{replay_rate / live.rate:.2f})",
        f"history: the worker keeping 10 changes per instance {live.rate:,.0f} events/s, "
        f"keeping none {'-' if bare.rate is None else f'{bare.rate:,.0f}'} events/s; reads "
        f"from the store p50 {statistics.median(reads):.1f} ms, p99 {_p(reads, 0.99):.1f} ms "
        f"({len(reads)} reads); from the topic (from seq 1, a scan of the partition) p50 "
        f"{statistics.median(deep):.0f} ms, p99 {_p(deep, 0.99):.0f} ms ({len(deep)} reads)",
    ]
    if not result.identical:
        report.notes.append(f"replay: {s.diverged} instances differ from the published changes")


PARTS["replay"] = measure_replay
