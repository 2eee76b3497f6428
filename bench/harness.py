"""``bench/run``: garrison against its baselines on one workload, in one run.

    bench/run [--quick] [--events N] [--tenants T] [--instances I] [--partitions P]
              [--only garrison,aiokafka_loop,...] [--unpinned]

Starts a local Kafka (unless ``GARRISON_KAFKA_BOOTSTRAP`` is set), produces the workload
once, runs each system over it one at a time, each pinned to a CPU of its own with the
broker and the harness on the other (unless ``--unpinned``), with its CPU time and the
broker's per event; measures garrison's latency at half its rate (and, in the full
run, its restore time and memory with all instances), the statechart interpreter and
the feature parts (among them every exactly-once peer's latency at the same rates and
one worker's 32 partitions against 4), prints a table and writes
``bench/results/latest.json``. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.affinity import Affinity, cpus_allowed, plan_affinity
from bench.parts import PartContext, registered
from bench.report import Report, machine_info, source_info
from bench.system import ROOT, SYSTEMS, Run
from bench.throughput import run_throughput
from bench.topic import create_topics, delete_topics, produce
from bench.workload import Workload

__all__ = ["main", "parse_args"]

RESULTS = ROOT / "bench" / "results"
PARTS = (
    "garrison",
    "latency",
    "restore",
    "aiokafka_loop",
    "faust_naive",
    "quixstreams",
    "kafka_streams",
    "statechart",
    "transactions",
    *registered(),
)
QUICK = {
    "tenants": 200,
    "instances": 50,
    "events": 100_000,
    "cap_s": 10.0,
    "latency_s": 10.0,
    "timeout_s": 60.0,
    "statechart_s": 1.5,
    "transactions_s": 3.0,
    # Latency sessions (bench/session.py): the unmeasured warm-up, the seconds per
    # rate and the seconds of each rate left out.
    "peer_warm_s": 2.0,
    "peer_s": 5.0,
    "peer_left_out_s": 1.0,
}
FULL = {
    "tenants": 1000,
    "instances": 1000,
    "events": 1_200_000,
    "cap_s": 30.0,
    "latency_s": 20.0,
    "timeout_s": 120.0,
    "statechart_s": 3.0,
    "transactions_s": 5.0,
    "peer_warm_s": 5.0,
    "peer_s": 20.0,
    "peer_left_out_s": 2.0,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="200 tenants x 50 instances, 100k events; no restore, and feature parts only"
        " when --only names them (< 3 min)",
    )
    p.add_argument("--events", type=int, help="events to produce")
    p.add_argument("--tenants", type=int)
    p.add_argument("--instances", type=int, help="instances per tenant")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--only", help=f"comma-separated subset of: {', '.join(PARTS)}")
    p.add_argument(
        "--faust-cap",
        type=float,
        help="seconds faust_naive runs after its first output (default 10 quick, 30 full)",
    )
    p.add_argument(
        "--unpinned",
        action="store_true",
        help="leave CPU placement to the scheduler (default: each system on one CPU, the "
        "broker and the harness on another)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="results file (default bench/results/latest.json;"
        " bench/results/partial.json with --only)",
    )
    args = p.parse_args(argv)
    chosen = set(PARTS) if not args.only else {x.strip() for x in args.only.split(",") if x}
    unknown = chosen - set(PARTS)
    if unknown:
        p.error(f"--only: unknown {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    if chosen & {"latency", "restore"}:
        chosen.add("garrison")  # both measure the worker of garrison's run
    if "peer_latency" in chosen:
        chosen.add("garrison")  # one of its rates is half of garrison's
    if args.quick:
        chosen.discard("restore")
        if not args.only:
            # Each feature part starts workers of its own and takes a minute or more
            # (failover alone three); --quick keeps the throughput comparison, latency,
            # statecharts and transactions under 3 minutes, and runs a feature part
            # only when --only names it.
            chosen -= set(registered())
    args.parts = chosen
    return args


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    base = dict(QUICK if args.quick else FULL)
    for name in ("events", "tenants", "instances"):
        if getattr(args, name) is not None:
            base[name] = getattr(args, name)
    if args.faust_cap is not None:
        base["cap_s"] = args.faust_cap
    # A system gets its start-up plus 1 ms per event (1,000 events/s) before it is stopped.
    base["timeout_s"] += base["events"] / 1000
    return base


_PEERS = {"quixstreams", "kafka_streams"}  # checked (and built) for peer_latency too


def _pinning(affinity: Affinity, broker_pid: int | None) -> dict[str, Any]:
    """The plan, and the CPUs the broker and this process are actually allowed."""
    out = affinity.params()
    out["harness_cpus_allowed"] = cpus_allowed(os.getpid())
    out["broker_cpus_allowed"] = None if broker_pid is None else cpus_allowed(broker_pid)
    if broker_pid is None:
        out["description"] += (
            "; the broker is external (GARRISON_KAFKA_BOOTSTRAP): not pinned, its CPU not measured"
        )
    return out


def _start_broker(work: Path) -> tuple[str, Any]:
    existing = os.environ.get("GARRISON_KAFKA_BOOTSTRAP")
    if existing:
        return existing, None
    from garrison.local_kafka import LocalKafka

    kafka = LocalKafka(work / "kafka", port=0, heap_mb=1024)
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # "Unable connect" while the broker boots
    try:
        return kafka.up(), kafka
    finally:
        quiet.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every selected part ran, 1 when one failed."""
    args = parse_args(argv)
    s = _settings(args)
    began = time.monotonic()
    # Before any thread or child exists: they inherit it (the broker among them).
    affinity = plan_affinity(args.unpinned)
    affinity.pin_harness()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up below
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for old in RESULTS.glob("*.log"):
        old.unlink()
    work = Path(tempfile.mkdtemp(prefix="garrison-bench-"))
    run: Run | None = None
    kafka = None
    try:
        t = time.monotonic()
        with ThreadPoolExecutor(max_workers=2) as pool:  # check (and build) meanwhile
            needed = args.parts | (_PEERS if "peer_latency" in args.parts else set())
            checks = {n: pool.submit(SYSTEMS[n].check) for n in SYSTEMS if n in needed}
            bootstrap, kafka = _start_broker(work)
            unable = {n: r for n, f in checks.items() if (r := f.result()) is not None}
        where = "local Kafka" if kafka is not None else "GARRISON_KAFKA_BOOTSTRAP"
        print(f"broker: {where} at {bootstrap} ({time.monotonic() - t:.1f} s)", flush=True)
        app = f"bench-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:4]}"
        broker_pid = kafka.status().pid if kafka is not None else None
        run = Run(bootstrap, app, args.partitions, work, RESULTS, [], affinity, broker_pid)
        report = asyncio.run(_bench(args, s, run, unable, broker_pid))
    finally:
        for proc in run.processes if run is not None else []:
            proc.stop()
        if kafka is not None:
            kafka.down()  # its state dir is in ``work``, removed below; keep its log
            with contextlib.suppress(OSError):
                shutil.copyfile(kafka.state_dir / "broker.log", RESULTS / "kafka.log")
        elif run is not None:
            gone = asyncio.run(delete_topics(run.bootstrap, run.app))
            print(f"deleted {len(gone)} topics of {run.app}")
        shutil.rmtree(work, ignore_errors=True)
    out = args.out or RESULTS / ("partial.json" if args.only else "latest.json")
    out.write_bytes(report.to_json())
    print(
        f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} "
        f"({time.monotonic() - began:.0f} s in all)"
    )
    failed = [
        m.system
        for m in report.measured.values()
        if m.ended.startswith(("exited", "timed out", "stalled")) or "MISMATCH" in m.verified
    ]
    if failed:
        print(f"FAILED: {', '.join(failed)} (logs in bench/results/)")
    return 1 if failed else 0


async def _bench(
    args: argparse.Namespace,
    s: dict[str, Any],
    run: Run,
    unable: dict[str, str],
    broker_pid: int | None,
) -> Report:
    workload = Workload(s["tenants"], s["instances"], s["events"])
    params = {
        "quick": args.quick,
        "tenants": workload.tenants,
        "instances_per_tenant": workload.instances,
        "instances_total": workload.slots,
        "events": workload.events,
        "partitions": run.partitions,
        "app": run.app,
        "faust_naive_cap_s": s["cap_s"],
        "latency_s": s["latency_s"],
        "system_timeout_s": s["timeout_s"],
        "bootstrap_external": bool(os.environ.get("GARRISON_KAFKA_BOOTSTRAP")),
        "parts": sorted(args.parts),
        "pinning": _pinning(run.affinity, broker_pid),
        "commits": {name: system.commits() for name, system in SYSTEMS.items()},
        **source_info(ROOT),
    }
    report = Report(params, machine_info(), skipped=dict(unable))
    print(
        f"machine: {report.machine['cpu_count']} cpus ({report.machine['cpu_model']}), "
        f"load {report.machine['loadavg_start']}; python {report.machine['python']}; "
        f"{report.machine['java']}",
        flush=True,
    )
    print(params["pinning"]["description"], flush=True)
    if args.quick and not args.only:
        report.notes.append(
            "quick: no feature parts (" + ", ".join(registered()) + "); --only runs one"
        )
    if run.affinity.pinned and set(registered()) & args.parts:
        report.notes.append(
            "pinned: the feature parts' systems are pinned like the others (replay's jobs, "
            "started by the harness, on the system CPU too)"
        )
    # garrison last: its latency run adds events to the input topic, and its worker stays
    # up for it (and for the restore), so nothing else may run after it on that topic.
    systems = [n for n in SYSTEMS if n in args.parts and n != "garrison"]
    systems += ["garrison"] if "garrison" in args.parts else []
    if systems:
        t = time.monotonic()
        await create_topics(run.bootstrap, [run.input], run.partitions)
        n = await produce(run.bootstrap, run.input, run.partitions, workload.records())
        print(
            f"workload: {n:,} events, {workload.tenants:,} tenants x {workload.instances:,} "
            f"instances, {run.partitions} partitions -> {run.input} "
            f"({time.monotonic() - t:.1f} s)",
            flush=True,
        )
        print(
            "throughput = outputs / (last - first output append time), broker-stamped "
            "(LogAppendTime): start-up is outside the window",
            flush=True,
        )
    sample = workload.sample(20)
    for name in systems:
        system = SYSTEMS[name]
        if name in unable:
            print(f"{name}: skipped: {unable[name]}", flush=True)
            continue
        cap = s["cap_s"] if system.capped else None
        keep = name == "garrison" and bool(args.parts & {"latency", "restore"})
        t = time.monotonic()
        m = await run_throughput(
            run, system, workload.events, sample, cap_s=cap, timeout_s=s["timeout_s"], keep=keep
        )
        report.measured[name] = m
        rate = "-" if m.rate is None else f"{m.rate:,.0f}"
        print(
            f"{name}: {rate} events/s ({m.outputs:,} outputs in {m.span_s:.1f} s; "
            f"{m.ended}; {m.verified})",
            flush=True,
        )
        if name == "garrison" and m.process is not None:
            await _garrison_extras(args, s, run, workload, report, m.process)
        report.timings[name] = time.monotonic() - t  # garrison's with latency and restore
    t = time.monotonic()
    if "statechart" in args.parts:
        from bench.statechart import measure

        report.statechart = await asyncio.to_thread(measure, s["statechart_s"])
    if "transactions" in args.parts:
        from bench.transactions import measure_transactions

        print(f"transactions: {s['transactions_s']:.0f} s each way ...", flush=True)
        report.transactions = await measure_transactions(
            run.bootstrap,
            run.app,
            lanes=run.partitions,
            records=50,
            seconds=s["transactions_s"],
            broker_pid=broker_pid,
        )
    report.timings["statechart_and_transactions"] = time.monotonic() - t
    for name, part in registered().items():
        if name in args.parts:
            print(f"{name} ...", flush=True)
            t = time.monotonic()
            await part(PartContext(run, report, s, args.quick, workload, broker_pid))
            report.timings[name] = time.monotonic() - t
            print(f"{name}: {report.timings[name]:.0f} s", flush=True)
    if "quixstreams" in report.skipped or "kafka_streams" in report.skipped:
        report.notes.append("skipped systems have no figure in the results file")
    print()
    for line in report.lines():
        print(line)
    return report


async def _garrison_extras(
    args: argparse.Namespace,
    s: dict[str, Any],
    run: Run,
    workload: Workload,
    report: Report,
    worker: Any,
) -> None:
    from bench.latency import measure_latency
    from bench.restore import measure_restore

    m = report.measured["garrison"]
    if m.rate is None or not m.complete:
        for part in ("latency", "restore"):
            if part in args.parts:
                report.skipped[part] = f"garrison's run did not complete ({m.ended})"
        await asyncio.to_thread(worker.stop)
        return
    if "latency" in args.parts:
        # At a quarter of garrison's rate, then at half (the figure), to show the knee.
        # Low first: after a saturated run, latency stayed high for a while in trials.
        for share, label in ((4, "a quarter"), (2, "half")):
            rate = m.rate / share
            print(
                f"latency: {rate:,.0f} events/s ({label} of garrison's rate) for "
                f"{s['latency_s']:.0f} s ...",
                flush=True,
            )
            report.latencies[share] = await measure_latency(
                run.bootstrap,
                run.app,
                workload,
                run.partitions,
                rate=rate,
                seconds=s["latency_s"],
                cpu_seconds=worker.cpu_seconds,
            )
    if "restore" in args.parts:
        print(
            f"restore: wiping the worker's RocksDB and restoring {workload.slots:,} "
            "instances from the changelog ...",
            flush=True,
        )
        report.restore = await measure_restore(
            run, worker, workload.sample(20), timeout_s=s["timeout_s"]
        )
    await asyncio.to_thread(worker.stop)


if __name__ == "__main__":
    raise SystemExit(main())
