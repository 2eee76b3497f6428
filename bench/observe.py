"""What metrics and tracing cost the worker: its throughput with them on and off.

Part ``observe`` (``bench/run --only observe``). The workload goes through a fresh
worker (an app of its own each time), measured as the main run measures garrison
(state changes over their broker-stamped span), in rounds of five runs, interleaved,
the best of each kind kept (3 times in a quick run, once in a full one: this machine is
shared, and one run can lose a tenth or more to a neighbour):

- ``metrics-off`` (``GARRISON_METRICS_ENABLED=false``) and ``metrics-on`` (the
  default): ``ratios.metrics_on_vs_off`` (target at least 0.95);
- ``context-only``: tracing off, but every event carrying a ``traceparent`` that the
  worker passes on as data (state-change headers): ``ratios.trace_context_carried_vs_off``;
- ``tracing-all``: ``GARRISON_TRACING_ENABLED=true``, every event with a sampled
  ``traceparent`` (a producer tracing everything), spans exported to a JSON-lines file
  (``agents.tracing.FileSpanExporter``, in the SDK's background thread), metrics on:
  ``ratios.tracing_on_vs_off`` against ``metrics-on`` (target at least 0.85);
- ``tracing-10pct``: the same with 1 event in 10 sampled (a producer sampling 10%; the
  others carry an unsampled context, passed on without a span):
  ``ratios.tracing_sampled_10pct_vs_off``.

The file's span count of the last ``tracing-all`` run is checked against the events
(the SDK drops spans when its queue is full): ``figures.tracing_spans_exported``.

Each kind's worker CPU per event over the same window is ``figures.<kind>_cpu_us_per_event``
(the least of its runs: the least disturbed), and ``ratios.metrics_cpu_off_vs_on`` is
metrics-off's over metrics-on's. A rate also counts the time a neighbour holds the
worker's CPU; CPU time counts only what a neighbour's share of the caches costs, and
that is not nothing. Both swing more than metrics cost (about 0.02 us of the worker's 55
to 64 us per event, ``agents.metrics``): in the full run at ace932d, ``context-only``
(metrics on, and a context on every event to pass on) caught up 14% faster than
``metrics-on`` and 4% faster than ``metrics-off``; in a quick run at 612e5bc (load
average 4 to 6), metrics-on caught up at x1.228 the rate of metrics-off, with x1.181 its
CPU per event (45.9 us against 54.2). Odd rounds run the kinds in reverse order, so
that no kind always runs just after the same one.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson

from bench.parts import PARTS, PartContext
from bench.system import Run, System, free_port, garrison_env
from bench.throughput import Measured, run_throughput
from bench.topic import create_topics, produce

__all__ = ["measure_observe"]

_ROUNDS = 3  # quick runs: every kind 3 times, interleaved (a full run: once, 12x the events)


def _system(extra: dict[str, str]) -> System:
    def command(
        run: Run, output: str, group: str, state_dir: Path
    ) -> tuple[list[str], dict[str, str]]:
        env = garrison_env(run, state_dir, free_port())
        env.update(extra)
        return [sys.executable, "-m", "garrison", "worker", "bench.app"], env

    return System("garrison", command)


def _traced(records: Iterator[tuple[bytes, bytes]], every: int) -> Iterator[tuple[bytes, bytes]]:
    """The workload with a W3C ``traceparent`` on each event, 1 in ``every`` sampled."""
    rng = random.Random(16)
    for i, (key, value) in enumerate(records):
        event = orjson.loads(value)
        flags = "01" if i % every == 0 else "00"
        event["traceparent"] = f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-{flags}"
        yield key, orjson.dumps(event)


async def _run(
    ctx: PartContext, tag: str, extra: dict[str, str], records: Iterator[tuple[bytes, bytes]]
) -> Measured:
    base = ctx.run
    run = Run(
        base.bootstrap, f"{base.app}-{tag}", base.partitions, base.work_dir / tag, base.log_dir
    )
    run.processes = base.processes  # stopped at the end, whatever happens
    await create_topics(run.bootstrap, [run.input], run.partitions)
    await produce(run.bootstrap, run.input, run.partitions, records)
    return await run_throughput(
        run,
        _system(extra),
        ctx.workload.events,
        ctx.workload.sample(20),
        cap_s=None,
        timeout_s=ctx.settings["timeout_s"],
    )


def _best(runs: list[Measured]) -> float | None:
    rates = [m.rate for m in runs if m.complete and m.rate is not None]
    return max(rates) if rates else None


def _least_cpu(runs: list[Measured]) -> float | None:
    cpu = [m.cpu_us_per_event for m in runs if m.complete and m.cpu_us_per_event is not None]
    return min(cpu) if cpu else None


async def measure_observe(ctx: PartContext) -> None:
    """The part: see the module doc."""
    report, workload = ctx.report, ctx.workload
    spans_dir = ctx.run.work_dir / "observe-spans"
    spans_dir.mkdir(parents=True, exist_ok=True)

    def tracing(name: str) -> dict[str, str]:
        return {
            "GARRISON_TRACING_ENABLED": "true",
            "GARRISON_TRACING_EXPORTER": "file",
            "GARRISON_TRACING_FILE": str(spans_dir / f"{name}.jsonl"),
        }

    kinds: dict[str, tuple[dict[str, str], int | None]] = {
        "metrics-off": ({"GARRISON_METRICS_ENABLED": "false"}, None),
        "metrics-on": ({}, None),
        "context-only": ({}, 1),  # tracing off, every event carrying a context as data
        "tracing-all": (tracing("all"), 1),
        "tracing-10pct": (tracing("10pct"), 10),
    }
    runs: dict[str, list[Measured]] = {kind: [] for kind in kinds}
    # Interleaved rounds, the best of each kind kept: a neighbour's load on this shared
    # machine then weighs on every kind alike.
    for n in range(_ROUNDS if ctx.quick else 1):
        for kind, (extra, every) in reversed(kinds.items()) if n % 2 else kinds.items():
            if kind.startswith("tracing-"):
                (spans_dir / f"{kind.removeprefix('tracing-')}.jsonl").unlink(missing_ok=True)
            records = workload.records() if every is None else _traced(workload.records(), every)
            runs[kind].append(await _run(ctx, f"{kind}{n}", extra, records))
    exported = _lines(spans_dir / "all.jsonl")
    best = {kind: _best(ms) for kind, ms in runs.items()}
    f, r = report.extra_figures, report.extra_ratios
    for kind, rate in best.items():
        if rate is not None:
            f[f"{kind.replace('-', '_')}_events_per_s"] = rate
    cpu = {kind: _least_cpu(ms) for kind, ms in runs.items()}
    for kind, us in cpu.items():
        if us is not None:
            f[f"{kind.replace('-', '_')}_cpu_us_per_event"] = us
    f["tracing_spans_exported"] = exported
    off, on = best["metrics-off"], best["metrics-on"]
    if off and on:
        r["metrics_on_vs_off"] = on / off
    if cpu["metrics-off"] and cpu["metrics-on"]:
        r["metrics_cpu_off_vs_on"] = cpu["metrics-off"] / cpu["metrics-on"]
    if on and best["tracing-all"]:
        r["tracing_on_vs_off"] = best["tracing-all"] / on
    if on and best["tracing-10pct"]:
        r["tracing_sampled_10pct_vs_off"] = best["tracing-10pct"] / on
    if on and best["context-only"]:
        r["trace_context_carried_vs_off"] = best["context-only"] / on

    def show(ms: list[Measured]) -> str:
        return " / ".join(f"{m.rate:,.0f}" if m.complete and m.rate else m.ended for m in ms)

    def show_cpu(kind: str) -> str:
        us = cpu[kind]
        return "-" if us is None else f"{us:.1f}"

    def ratio(name: str) -> str:
        return "-" if name not in r else f"x{r[name]:.3f}"

    report.extra_lines.append(
        f"observe: events/s, metrics off {show(runs['metrics-off'])}, on "
        f"{show(runs['metrics-on'])} ({ratio('metrics_on_vs_off')}); tracing off with a "
        f"context on every event {show(runs['context-only'])} "
        f"({ratio('trace_context_carried_vs_off')}); tracing every event "
        f"{show(runs['tracing-all'])} ({ratio('tracing_on_vs_off')}; {exported:,} spans "
        f"exported of {workload.events:,} events in the last run), 1 in 10 sampled "
        f"{show(runs['tracing-10pct'])} ({ratio('tracing_sampled_10pct_vs_off')}); worker CPU "
        f"us/event, metrics off {show_cpu('metrics-off')}, on {show_cpu('metrics-on')} "
        f"({ratio('metrics_cpu_off_vs_on')}), context {show_cpu('context-only')}, tracing "
        f"every event {show_cpu('tracing-all')}, 1 in 10 {show_cpu('tracing-10pct')}; outputs: "
        + "; ".join(sorted({m.verified for ms in runs.values() for m in ms}))
    )
    for ms in runs.values():
        for m in ms:
            if m.complete and "MISMATCH" in m.verified:
                report.notes.append(f"observe: a run's output did not match: {m.verified}")


def _lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as lines:
        return sum(1 for _ in lines)


PARTS["observe"] = measure_observe
