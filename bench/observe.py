"""What metrics and tracing cost the worker: its throughput with them on and off.

Part ``observe`` (``bench/run --only observe``). The workload goes through a fresh
worker (an app of its own each time) in six throughput runs, measured as the main run
measures garrison (state changes over their broker-stamped span):

- metrics off (``GARRISON_METRICS_ENABLED=false``) and on (the default), twice each,
  alternating, the better of each pair kept (this machine is shared: one run can lose
  a tenth to a neighbour): ``ratios.metrics_on_vs_off`` (target at least 0.95);
- tracing on (``GARRISON_TRACING_ENABLED=true``, spans exported to a JSON-lines file
  by ``agents.tracing.FileSpanExporter`` in a background thread) with metrics on,
  against the better metrics-on run: every event carries a sampled ``traceparent``
  (a producer tracing everything), ``ratios.tracing_on_vs_off`` (target at least
  0.85); and 1 event in 10 sampled (a producer sampling 10%, the rest carrying an
  unsampled context that garrison passes on as data), ``ratios.tracing_sampled_10pct_vs_off``.

The file's span count is checked against the events (the SDK drops spans when its
queue is full): ``figures.tracing_spans_exported``.
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


async def measure_observe(ctx: PartContext) -> None:
    """The part: see the module doc."""
    report, workload = ctx.report, ctx.workload
    off_env = {"GARRISON_METRICS_ENABLED": "false"}
    off, on = [], []
    for n in range(2):
        off.append(await _run(ctx, f"metrics-off{n}", off_env, workload.records()))
        on.append(await _run(ctx, f"metrics-on{n}", {}, workload.records()))
    spans_file = ctx.run.work_dir / "observe-spans.jsonl"
    tracing_env = {
        "GARRISON_TRACING_ENABLED": "true",
        "GARRISON_TRACING_EXPORTER": "file",
        "GARRISON_TRACING_FILE": str(spans_file),
    }
    traced = await _run(ctx, "tracing-all", tracing_env, _traced(workload.records(), 1))
    exported = sum(1 for _ in spans_file.open("rb")) if spans_file.exists() else 0
    sampled_file = ctx.run.work_dir / "observe-spans-10pct.jsonl"
    tenth = await _run(
        ctx,
        "tracing-10pct",
        {**tracing_env, "GARRISON_TRACING_FILE": str(sampled_file)},
        _traced(workload.records(), 10),
    )
    f, r = report.extra_figures, report.extra_ratios
    rate_off, rate_on = _best(off), _best(on)
    figures = {
        "metrics_off_events_per_s": rate_off,
        "metrics_on_events_per_s": rate_on,
        "tracing_on_events_per_s": traced.rate if traced.complete else None,
        "tracing_sampled_10pct_events_per_s": tenth.rate if tenth.complete else None,
    }
    for name, value in figures.items():
        if value is not None:
            f[name] = value
    f["tracing_spans_exported"] = exported
    if rate_off and rate_on:
        r["metrics_on_vs_off"] = rate_on / rate_off
    if rate_on and figures["tracing_on_events_per_s"]:
        r["tracing_on_vs_off"] = figures["tracing_on_events_per_s"] / rate_on
    if rate_on and figures["tracing_sampled_10pct_events_per_s"]:
        r["tracing_sampled_10pct_vs_off"] = figures["tracing_sampled_10pct_events_per_s"] / rate_on

    def show(m: Measured) -> str:
        return f"{m.rate:,.0f}" if m.complete and m.rate else m.ended

    report.extra_lines.append(
        "observe: metrics off "
        + " / ".join(show(m) for m in off)
        + " events/s, on "
        + " / ".join(show(m) for m in on)
        + f" (best: x{r.get('metrics_on_vs_off', float('nan')):.3f}); tracing every event "
        f"{show(traced)} events/s (x{r.get('tracing_on_vs_off', float('nan')):.3f}, "
        f"{exported:,} spans exported for {workload.events:,} events), 1 in 10 sampled "
        f"{show(tenth)} (x{r.get('tracing_sampled_10pct_vs_off', float('nan')):.3f}); "
        + "outputs: "
        + "; ".join(sorted({m.verified for m in [*off, *on, traced, tenth]}))
    )
    for m in [*off, *on, traced, tenth]:
        if m.complete and "MISMATCH" in m.verified:
            report.notes.append(f"observe: a run's output did not match: {m.verified}")


PARTS["observe"] = measure_observe
