"""A hot tenant: the other tenants' latency with it, and with it keyed by instance.

Part ``hot`` (``bench/run --only hot``). A tenant's events share one partition, and a
partition is one lane applying and committing in order, one transaction in flight at a
time: what one partition can commit is the bound a tenant sending half of all events
hits, and every other tenant in that partition waits behind it. That bound grows with
the batch size (2,000 events by default, tens of thousands of events/s), beyond what
this 2-core machine can produce, apply and consume at once; so the part runs the
worker with ``GARRISON_BATCH_SIZE=20``, measures the lane's bound (20 events / the mean
transaction, from the worker's ``/metrics``) and sends at rates relative to it.

Three runs of one worker each (4 partitions, fresh app each), events carrying their
production time, a read_committed consumer timing each state change:

1. ``no_hot_tenant``: 60 tenants x 20 instances at ``cap`` events/s in all (a quarter
   of the bound per partition);
2. ``hot_unkeyed``: the same, plus tenant ``hot`` (400 instances) at ``cap`` events/s,
   half of all events, keyed by tenant (the default): its partition gets 1.25x its
   bound, so its queue grows for the whole run;
3. ``hot_keyed``: the same load with ``GARRISON_HOT_TENANTS=hot``: the hot tenant's
   instances spread, every partition at half its bound.

Figures: ``no_hot_tenant_p99_ms``, ``hot_tenant_unkeyed_others_p99_ms``,
``hot_tenant_others_p99_ms`` (run 3) and ``ratios.hot_vs_plain_others_p99`` (run 3 /
run 1; the target is at most 2), with ``hot_lane_bound_events_per_s``.
"""

from __future__ import annotations

import asyncio
import sys
import time
import urllib.request
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.parts import PARTS, PartContext
from bench.system import Process, Run, free_port, garrison_env
from garrison.client import Client
from pipeline.envelope import Event
from pipeline.settings import KafkaSettings, Settings

__all__ = ["measure_hot"]

BATCH = 20
TENANTS, INSTANCES, HOT_INSTANCES = 60, 20, 400
_TICK_S = 0.005


@dataclass
class Split:
    """Latency percentiles (ms) of the other tenants and of the hot one."""

    others_p50: float | None
    others_p99: float | None
    hot_p99: float | None
    sent: int
    received: int


def _p(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - the local worker
        return str(resp.read().decode())


async def _worker(ctx: PartContext, tag: str, hot_keyed: bool) -> tuple[Run, Process, Settings]:
    base = ctx.run
    run = Run(
        base.bootstrap, f"{base.app}-{tag}", base.partitions, base.work_dir / tag, base.log_dir
    )
    run.work_dir.mkdir(parents=True, exist_ok=True)
    env = garrison_env(run, run.work_dir / "state", free_port())
    env["GARRISON_BATCH_SIZE"] = str(BATCH)
    if hot_keyed:
        env["GARRISON_HOT_TENANTS"] = "hot"
    proc = Process(
        f"garrison-{tag}",
        [sys.executable, "-m", "garrison", "worker", "bench.app"],
        env,
        run.log_dir / f"hot-{tag}.log",
    )
    base.processes.append(proc)
    proc.start()
    url = f"http://127.0.0.1:{env['GARRISON_WEB_PORT']}/ready"
    deadline = time.monotonic() + 120
    while True:
        try:
            await asyncio.to_thread(_get, url)
            break
        except OSError:
            if not proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the {tag} worker did not get ready: {proc.log_tail()}"
                ) from None
            await asyncio.sleep(0.3)
    settings = Settings(
        app=run.app,
        kafka=KafkaSettings(bootstrap=run.bootstrap, partitions=run.partitions),
        hot={"tenants": ["hot"] if hot_keyed else []},
    )
    return run, proc, settings


async def _pace(
    settings: Settings, others_rate: float, hot_rate: float, seconds: float, warmup_s: float
) -> Split:
    """Send at the given rates for ``seconds`` with the real client (so keys are what
    the settings say) and time every state change."""
    topic = settings.topics.state_changes
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        fetch_max_wait_ms=5,
    )
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(settings.kafka.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    others: list[float] = []
    hot: list[float] = []
    received = 0
    start_ms = time.time() * 1000
    measure_from = start_ms + warmup_s * 1000
    tag = f"h{int(start_ms)}-"
    mark = f'"event_id":"{tag}'.encode()
    sending = True
    sent = 0

    async def collect() -> None:
        nonlocal received
        while sending or received < sent:
            batch = await consumer.getmany(timeout_ms=100)
            now_ms = time.time() * 1000
            for records in batch.values():
                for rec in records:
                    if mark not in rec.value:
                        continue
                    received += 1
                    change = orjson.loads(rec.value)
                    if change["time_ms"] >= measure_from:
                        (hot if change["tenant"] == "hot" else others).append(
                            now_ms - change["time_ms"]
                        )

    reader = asyncio.create_task(collect())
    try:
        async with Client(settings, source="bench.hot", connect_timeout_s=30) as client:
            began = time.monotonic()
            n_other = n_hot = 0
            while (elapsed := time.monotonic() - began) < seconds:
                now_ms = int(time.time() * 1000)
                while n_other < int(others_rate * elapsed):
                    slot = (n_other * 7919) % (TENANTS * INSTANCES)
                    tenant, instance = f"t{slot % TENANTS}", f"i{slot // TENANTS}"
                    ev = Event(
                        f"{tag}o{n_other}",
                        "counter.added",
                        "bench",
                        tenant,
                        "counter",
                        instance,
                        now_ms,
                        {"amount": 1},
                    )
                    await client.send_event(ev, wait=False)
                    n_other += 1
                    sent += 1
                while n_hot < int(hot_rate * elapsed):
                    instance = f"i{(n_hot * 7919) % HOT_INSTANCES}"
                    ev = Event(
                        f"{tag}h{n_hot}",
                        "counter.added",
                        "bench",
                        "hot",
                        "counter",
                        instance,
                        now_ms,
                        {"amount": 1},
                    )
                    await client.send_event(ev, wait=False)
                    n_hot += 1
                    sent += 1
                await asyncio.sleep(_TICK_S)
            await client.flush()
        sending = False
        try:
            await asyncio.wait_for(reader, timeout=60)  # the stalled queue drains too
        except TimeoutError:
            pass
    finally:
        sending = False
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await consumer.stop()
    return Split(_p(others, 0.5), _p(others, 0.99), _p(hot, 0.99), sent, received)


def _mean_commit_s(port: str) -> float:
    total = count = 0.0
    for line in _get(f"http://127.0.0.1:{port}/metrics").splitlines():
        if line.startswith("garrison_transaction_commit_seconds_sum"):
            total = float(line.split()[-1])
        elif line.startswith("garrison_transaction_commit_seconds_count"):
            count = float(line.split()[-1])
    return total / count if count else 0.0


async def measure_hot(ctx: PartContext) -> None:
    """The part: see the module doc."""
    seconds, warmup = (10.0, 2.0) if ctx.quick else (20.0, 3.0)
    report = ctx.report
    # Run 1, which also measures the lane's bound: a short probe at a low rate first.
    run, proc, settings = await _worker(ctx, "plain", hot_keyed=False)
    try:
        await _pace(settings, 200, 0, 3.0, 1.0)
        commit_s = _mean_commit_s(proc.env["GARRISON_WEB_PORT"])
        if commit_s <= 0:
            report.skipped["hot"] = "the probe committed nothing"
            return
        cap = BATCH / commit_s
        plain = await _pace(settings, cap, 0, seconds, warmup)
    finally:
        await asyncio.to_thread(proc.stop)
    results = {}
    for tag, keyed in (("unkeyed", False), ("keyed", True)):
        run, proc, settings = await _worker(ctx, tag, hot_keyed=keyed)
        try:
            results[tag] = await _pace(settings, cap, cap, seconds, warmup)
        finally:
            await asyncio.to_thread(proc.stop)
    unkeyed, keyed = results["unkeyed"], results["keyed"]
    f, r = report.extra_figures, report.extra_ratios
    f["hot_lane_bound_events_per_s"] = cap
    for name, value in (
        ("no_hot_tenant_p99_ms", plain.others_p99),
        ("hot_tenant_unkeyed_others_p99_ms", unkeyed.others_p99),
        ("hot_tenant_others_p99_ms", keyed.others_p99),
        ("hot_tenant_hot_p99_ms", keyed.hot_p99),
    ):
        if value is not None:
            f[name] = value
    if plain.others_p99 and keyed.others_p99:
        r["hot_vs_plain_others_p99"] = keyed.others_p99 / plain.others_p99
    if plain.others_p99 and unkeyed.others_p99:
        r["hot_unkeyed_vs_plain_others_p99"] = unkeyed.others_p99 / plain.others_p99

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:,.0f} ms"

    report.extra_lines.append(
        f"hot tenant (batch {BATCH}, a lane commits about {cap:,.0f} events/s; the others "
        f"at {cap:,.0f}/s in all, the hot tenant as much again): the others' p99 "
        f"{ms(plain.others_p99)} without it, {ms(unkeyed.others_p99)} with it keyed by "
        f"tenant, {ms(keyed.others_p99)} with GARRISON_HOT_TENANTS=hot (its own p99 "
        f"{ms(keyed.hot_p99)}); received {plain.received}/{plain.sent}, "
        f"{unkeyed.received}/{unkeyed.sent}, {keyed.received}/{keyed.sent}"
    )


PARTS["hot"] = measure_hot
