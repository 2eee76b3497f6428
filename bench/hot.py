"""A hot tenant: the other tenants' latency with it, and with it keyed by instance.

Part ``hot`` (``bench/run --only hot``). A tenant's events share one partition, and a
partition is one lane applying and committing in order, one transaction in flight at a
time: what one lane commits is the bound a tenant sending half of all events hits, and
every other tenant in that partition waits behind it. That bound grows with the batch
size (2,000 events by default: tens of thousands of events/s, more than this 2-core
machine can produce, apply and consume at once), so the part runs the worker with
``GARRISON_BATCH_SIZE=20`` (fetching 2,000 records at a time as usual,
``GARRISON_FETCH_MAX_RECORDS``) and 8 partitions, measures the bound (1,000 events of one
tenant sent at once, timed from the first state change to the last) and sends at rates
relative to it, once two probes in a row agree (a fresh broker's first transactions
are slow). The load in all is capped at half of what the worker commits with every lane
busy at once (8,000 events of 64 tenants, timed alike): the lanes share one CPU and one
broker, and all of them together commit only about three times what one does. The
worker runs on the system CPU like every system (it used to inherit the harness's CPU
and share it with the broker, and was saturated at any of these rates: bench/README).
Its lanes linger ``GARRISON_BATCH_WAIT_MS=50`` for company (the default is 5): a lane
with a trickle of events otherwise commits one small transaction after another, one
every 11 ms or so at a bound of 1,801 events/s, and a transaction has a fixed cost (the
``transactions`` part at ace932d: 1.50 ms of client CPU for 100 records in one, 0.64 ms
without). Lingering changes no bound: a lane with a backlog commits a full batch as soon
as the one before it is done.

Three runs of one worker each (a fresh app each), events carrying their production
time, a read_committed consumer timing each state change:

1. ``no_hot_tenant``: 60 tenants x 20 instances at 1.2x the bound in all (0.15 of it
   per lane), or less where the cap says so (the line printed gives the hot lane's
   share of its bound; the capped runs so far put it at 0.61 to 0.88);
2. ``hot_unkeyed``: the same, plus tenant ``hot`` (400 instances) sending as much again,
   half of all events, keyed by tenant (the default): its lane gets 1.35x its bound
   uncapped, and with every lane busy even less than that is more than it commits;
3. ``hot_keyed``: the same load with ``GARRISON_HOT_TENANTS=hot``: the hot tenant's
   instances spread, every lane at an eighth of the load.

Figures: ``no_hot_tenant_p99_ms``, ``hot_tenant_unkeyed_others_p99_ms``,
``hot_tenant_others_p99_ms`` (run 3), ``hot_tenant_hot_p99_ms``, and
``ratios.hot_vs_plain_others_p99`` (run 3 / run 1; the target is at most 2) with
``hot_unkeyed_vs_plain_others_p99``; ``hot_lane_bound_events_per_s``,
``hot_worker_capacity_events_per_s``.
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
PARTITIONS = 8
LINGER_MS = 50  # GARRISON_BATCH_WAIT_MS: see the module doc
# The others' rate in all, as a share of one lane's bound; the hot tenant sends as much.
# With 8 partitions: without a hot tenant each lane gets 0.15 of its bound; keyed by
# tenant, the hot tenant's lane gets 1.35 (its queue grows for the whole run); keyed by
# instance, every lane gets 0.3. The lanes share one worker's CPU and one broker: all
# of them together commit only a few times what one alone does (about 5x here when
# the machine is idle, far less when it is not), so the total stays at 2.4x one bound.
_SHARE = 1.2
# ... but the load in all (others and hot tenant) at most this share of what the worker
# commits over all its lanes at once (``_capacity``): a full run at ace932d, sized by
# the lane's bound alone, had the worker saturated without any hot tenant (the others'
# p99 853 ms), and so did a quick run at a higher bound (1,600 events/s: 691 ms).
_LOAD = 0.5
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
    run = base.derived(f"{base.app}-{tag}", PARTITIONS)  # pinned like every system
    run.work_dir = base.work_dir / tag
    run.work_dir.mkdir(parents=True, exist_ok=True)
    env = garrison_env(run, run.work_dir / "state", free_port())
    env["GARRISON_BATCH_SIZE"] = str(BATCH)
    env["GARRISON_BATCH_WAIT_MS"] = str(LINGER_MS)
    # Fetch as usual: a fetch of 20 records for all partitions would be one bound for
    # the whole worker, not one per partition.
    env["GARRISON_FETCH_MAX_RECORDS"] = "2000"
    if hot_keyed:
        env["GARRISON_HOT_TENANTS"] = "hot"
    proc = Process(
        f"garrison-{tag}",
        [sys.executable, "-m", "garrison", "worker", "bench.app"],
        env,
        run.log_dir / f"hot-{tag}.log",
        run.affinity,  # a system: its CPU
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


async def _changes_from_now(settings: Settings) -> AIOKafkaConsumer:
    """A started read_committed consumer of every state-change partition, positioned at
    their ends (what is committed after this call)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        fetch_max_wait_ms=5,
    )
    await consumer.start()
    topic = settings.topics.state_changes
    tps = [TopicPartition(topic, p) for p in range(settings.kafka.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    return consumer


async def _pace(
    settings: Settings, others_rate: float, hot_rate: float, seconds: float, warmup_s: float
) -> Split:
    """Send at the given rates for ``seconds`` with the real client (so keys are what
    the settings say) and time every state change."""
    consumer = await _changes_from_now(settings)
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


async def _drain_rate(settings: Settings, tag: str, events: int, tenants: int) -> float:
    """``events`` over ``tenants`` tenants sent at once, timed from the first state change
    to the last: what the lanes they land in commit a second (``tag`` keeps each probe's
    ids new). One tenant: one lane's bound; tenants on every partition: the worker's."""
    consumer = await _changes_from_now(settings)
    mark = f'"event_id":"probe{tag}-'.encode()
    try:
        async with Client(settings, source="bench.hot", connect_timeout_s=30) as client:
            now_ms = int(time.time() * 1000)
            for n in range(events):
                ev = Event(
                    f"probe{tag}-{n}",
                    "counter.added",
                    "bench",
                    "probe" if tenants == 1 else f"probe{n % tenants}",
                    "counter",
                    f"i{n % 50}",
                    now_ms,
                    {"amount": 1},
                )
                await client.send_event(ev, wait=False)
            await client.flush()
        first = last = None
        seen = 0
        deadline = time.monotonic() + 120
        while seen < events and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.monotonic()
            for records in batch.values():
                for rec in records:
                    if mark in rec.value:
                        seen += 1
                        first = now if first is None else first
                        last = now
    finally:
        await consumer.stop()
    if first is None or last is None or last <= first:
        return 0.0
    return (seen - 1) / (last - first)


async def _bound(settings: Settings, tag: str) -> float:
    """What one lane commits a second: 1,000 events of one tenant."""
    return await _drain_rate(settings, tag, 1_000, 1)


async def _capacity(settings: Settings) -> float:
    """What the worker commits a second over all its lanes: 8,000 events of 64 tenants
    (every partition's lane busy at once)."""
    return await _drain_rate(settings, "cap", 8_000, 64)


async def _settled_bound(settings: Settings, most: int = 6) -> list[float]:
    """Probe the bound until two probes in a row agree within 15%, at most ``most``
    times: a freshly started broker's first transactions take several times as long as
    its later ones (one probe measured 348 events/s on a new broker, 1,801 at the end of
    a full run), and the rates follow the bound."""
    seen: list[float] = []
    for n in range(most):
        seen.append(await _bound(settings, str(n)))
        if len(seen) >= 2 and seen[-2] > 0 and abs(seen[-1] - seen[-2]) <= 0.15 * seen[-2]:
            break
    return seen


async def measure_hot(ctx: PartContext) -> None:
    """The part: see the module doc."""
    seconds, warmup = (10.0, 2.0) if ctx.quick else (20.0, 3.0)
    report = ctx.report
    # Run 1, which first measures the lane's bound.
    run, proc, settings = await _worker(ctx, "plain", hot_keyed=False)
    try:
        probes = await _settled_bound(settings)
        bound = probes[-1]
        capacity = await _capacity(settings)
        if bound <= 0 or capacity <= 0:
            report.skipped["hot"] = "a probe of the lanes' bounds committed nothing"
            return
        # The others in all; the hot tenant as much again. Sized by one lane's bound
        # (the hot tenant's lane gets more than it commits), and capped by the worker's:
        # all of it at most _LOAD of what all lanes commit, or every run queues.
        rate = min(_SHARE * bound, _LOAD * capacity / 2)
        plain = await _pace(settings, rate, 0, seconds, warmup)
    finally:
        await asyncio.to_thread(proc.stop)
    results: dict[str, Split] = {}
    for tag, by_instance in (("unkeyed", False), ("keyed", True)):
        run, proc, settings = await _worker(ctx, tag, hot_keyed=by_instance)
        try:
            results[tag] = await _pace(settings, rate, rate, seconds, warmup)
        finally:
            await asyncio.to_thread(proc.stop)
    unkeyed, keyed = results["unkeyed"], results["keyed"]
    f, r = report.extra_figures, report.extra_ratios
    f["hot_lane_bound_events_per_s"] = bound
    f["hot_worker_capacity_events_per_s"] = capacity
    f["hot_lane_bound_probes"] = len(probes)
    f["hot_others_events_per_s"] = rate
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

    probed = ", ".join(f"{b:,.0f}" for b in probes)
    report.extra_lines.append(
        f"hot tenant ({PARTITIONS} partitions, batch {BATCH}, linger {LINGER_MS} ms: a lane "
        f"commits about {bound:,.0f} events/s, probes {probed}, all lanes at once "
        f"{capacity:,.0f}; the others at {rate:,.0f}/s in all, the hot tenant as much again, "
        f"its lane at x{(rate + rate / PARTITIONS) / bound:.2f} its bound): the others' p99 "
        f"{ms(plain.others_p99)} "
        f"without it, "
        f"{ms(unkeyed.others_p99)} with it keyed by tenant, {ms(keyed.others_p99)} with "
        f"GARRISON_HOT_TENANTS=hot (its own p99 {ms(keyed.hot_p99)}); received "
        f"{plain.received}/{plain.sent}, {unkeyed.received}/{unkeyed.sent}, "
        f"{keyed.received}/{keyed.sent}"
    )


PARTS["hot"] = measure_hot
