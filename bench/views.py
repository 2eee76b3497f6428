"""What a view costs a reducer, and how fast a query answers over HTTP.

Part ``views`` (``bench/run --only views``):

- ``view_vs_plain_events_per_s`` (ratio; the target: >= 0.66, a view of one sibling
  costing at most 1.5x): the workload's events through the per-record decision in this
  process, ``apply_record`` over a ``StateBatch`` on a real RocksDB store (a Faust table
  of an app that is built, not started), 2,000 records a batch written to RocksDB as
  the lane writes them, once with the bench's counter machine (``plain_events_per_s``)
  and once with the same reducer and a view of one sibling
  (``view_events_per_s``: the tenant's next instance, mostly in RocksDB rather than in
  the batch, and used by the reducer). Measured in process, not through two worker
  runs: the view's cost is in the decision, and a worker's rate adds Kafka's
  transactions and produce to both sides, which would shrink the difference, while two
  runs one after another on a shared machine differ by more than it. The rates are per
  CPU second of this process (RocksDB's own threads included), so what else runs on
  the machine counts less; passes alternate (plain, view, five of each) on fresh
  stores, and the ratio is the median of each pair's (the two passes of a pair run
  one after the other, under the same load); the rates are the medians.
- ``query_p99_ms`` (and p50; the target: p99 under 5 ms): a worker (``bench.views_app``)
  applies the workload, then a query with parameters of sampled instances is asked over
  HTTP on the owning worker, one after another on one keep-alive connection, the worker
  otherwise idle; each is followed by a plain read of the same instance
  (``GET /state/...``, ``state_read_p99_ms``), so the two see the same machine. Its
  dispatch rate is ``views_app_events_per_s``.
"""

from __future__ import annotations

import asyncio
import gc
import http.client
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from bench.app import Added, Counter
from bench.parts import PARTS, PartContext
from bench.system import Run, System, free_port, garrison_env
from bench.throughput import run_throughput
from bench.topic import create_topics, produce
from bench.workload import EVENT_TYPE, MACHINE, Workload
from pipeline import Incoming, Machine, Registry, View
from pipeline.view import Reads

__all__ = ["measure_views", "viewing_registry"]

_BATCH = 2000
_READS = 1000


class _Record(NamedTuple):
    """A consumed record, as the lane hands ``apply_record`` one."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def viewing_registry(instances: int) -> Registry:
    """The bench's counter, its reducer also reading the tenant's next instance."""
    counter: Machine[Counter] = Machine(MACHINE, state=Counter)

    def peer(event: Incoming[Added]) -> str:
        return f"i{(int(event.instance[1:]) + 1) % instances}"

    @counter.on(EVENT_TYPE, payload=Added, views=[View("peer", machine=MACHINE, instance=peer)])
    def added(config: Any, state: Counter, event: Any) -> Counter:
        seen = event.views["peer"]
        last = event.id if seen is None else f"{event.id}/{seen['count']}"
        return Counter(count=state.count + 1, total=state.total + event.data.amount, last=last)

    return Registry([counter])


def _records(workload: Workload) -> list[_Record]:
    return [
        _Record("bench.events", 0, n, 0, key, value)
        for n, (key, value) in enumerate(workload.records())
    ]


def _pass(registry: Registry, records: list[_Record]) -> float:
    """Events per CPU second of one pass of the decision over ``records`` on a fresh
    store (CPU time: other processes on a shared machine do not count in it)."""
    from agents.app import create_app
    from pipeline.decision import Rules, apply_record
    from pipeline.settings import Settings, WebSettings
    from tables.batch import StateBatch

    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(app="benchviews", data_dir=Path(folder), web=WebSettings(enabled=False))
        app = create_app(settings, Registry())
        state, timers = app.state_store, app.timer_store
        rules = Rules(registry, settings.topics)
        gc.collect()
        started = time.process_time()
        for start in range(0, len(records), _BATCH):
            batch = StateBatch(state, timers, 0, keep_history=settings.history.keep)
            load, store = batch.load, batch.store
            views = Reads(batch.scan, batch.state)  # as the lane does
            for rec in records[start : start + _BATCH]:
                applied = apply_record(rules, load, rec, views)
                if applied.outcome is not None:
                    assert applied.address is not None
                    store(applied.address, applied.outcome, applied.stored, applied.change)
            batch.apply_locally()
        seconds = time.process_time() - started
        if applied.verdict != "applied":
            raise RuntimeError(f"the last event was not applied: {applied.reason}")
    return len(records) / seconds


def _worker() -> System:
    def command(
        run: Run, output: str, group: str, state_dir: Path
    ) -> tuple[list[str], dict[str, str]]:
        env = garrison_env(run, state_dir, free_port())
        return [sys.executable, "-m", "garrison", "worker", "bench.views_app"], env

    return System("garrison", command)


def _reads(port: str, paths: list[str]) -> Iterator[float]:
    """The milliseconds of each GET, one after another on one connection."""
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
    try:
        for path in paths:
            started = time.perf_counter()
            conn.request("GET", path)
            resp = conn.getresponse()
            body = json.loads(resp.read())
            elapsed = (time.perf_counter() - started) * 1000
            if resp.status != 200 or "seq" not in body:
                raise RuntimeError(f"GET {path} failed: {resp.status} {body}")
            yield elapsed
    finally:
        conn.close()


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _queries(ctx: PartContext) -> tuple[float | None, list[float], list[float]]:
    base = ctx.run
    work = base.work_dir / "views"
    run = Run(base.bootstrap, f"{base.app}-views", base.partitions, work, base.log_dir)
    run.processes = base.processes  # stopped at the end, whatever happens
    await create_topics(run.bootstrap, [run.input], run.partitions)
    await produce(run.bootstrap, run.input, run.partitions, ctx.workload.records())
    live = await run_throughput(
        run,
        _worker(),
        ctx.workload.events,
        ctx.workload.sample(20),
        cap_s=None,
        timeout_s=ctx.settings["timeout_s"],
        keep=True,
    )
    worker = live.process
    if not live.complete or worker is None:
        raise RuntimeError(f"the worker's run did not complete ({live.ended})")
    try:
        paths = []
        for n, e in enumerate(ctx.workload.sample(50)):
            base_path = f"/state/{e.tenant}/{MACHINE}/{e.instance}"
            paths += [f"{base_path}/query/summary?scale={n % 5 + 1}", base_path]
        port = worker.env["GARRISON_WEB_PORT"]
        list(_reads(port, paths[:40]))  # unmeasured: the connection and code paths warm
        asked = [paths[i % len(paths)] for i in range(2 * _READS)]
        both = await asyncio.to_thread(lambda: list(_reads(port, asked)))
        return live.rate, both[0::2], both[1::2]
    finally:
        await asyncio.to_thread(worker.stop)


async def measure_views(ctx: PartContext) -> None:
    """The part: see the module doc."""
    from bench.app import registry as plain

    records = _records(ctx.workload)
    viewing = viewing_registry(ctx.workload.instances)
    plain_rates, view_rates = [], []
    for _ in range(5):
        plain_rates.append(await asyncio.to_thread(_pass, plain, records))
        view_rates.append(await asyncio.to_thread(_pass, viewing, records))
    ratio = statistics.median(v / p for p, v in zip(plain_rates, view_rates, strict=True))
    plain_rate, view_rate = statistics.median(plain_rates), statistics.median(view_rates)
    f, r = ctx.report.extra_figures, ctx.report.extra_ratios
    f["plain_events_per_s"] = plain_rate
    f["view_events_per_s"] = view_rate
    r["view_vs_plain_events_per_s"] = ratio
    pairs = ", ".join(f"{p:,.0f}/{v:,.0f}" for p, v in zip(plain_rates, view_rates, strict=True))
    lines = [
        f"views: the decision in process over {len(records):,} events (apply_record, "
        f"StateBatch on RocksDB), per CPU second: plain {plain_rate:,.0f} events/s, with a "
        f"view of one sibling {view_rate:,.0f} events/s (medians; x{ratio:.2f}, the median "
        f"of the pairs plain/view: {pairs})"
    ]
    try:
        rate, reads, plain_reads = await _queries(ctx)
    except RuntimeError as exc:
        ctx.report.skipped["views.query"] = str(exc)
        ctx.report.extra_lines += lines
        return
    f["query_p50_ms"] = statistics.median(reads)
    f["query_p99_ms"] = _p(reads, 0.99)
    f["state_read_p50_ms"] = statistics.median(plain_reads)
    f["state_read_p99_ms"] = _p(plain_reads, 0.99)
    if rate is not None:
        f["views_app_events_per_s"] = rate
    lines.append(
        f"queries: {len(reads)} over HTTP on the owning worker, one keep-alive connection, "
        f"the worker idle: p50 {statistics.median(reads):.2f} ms, p99 {_p(reads, 0.99):.2f} ms"
        f", max {max(reads):.2f} ms; plain reads of the same instances between them: p50 "
        f"{statistics.median(plain_reads):.2f} ms, p99 {_p(plain_reads, 0.99):.2f} ms"
    )
    ctx.report.extra_lines += lines


PARTS["views"] = measure_views
