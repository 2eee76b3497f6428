"""Answered writes and key-value state: the ``kv`` part of ``bench/run``.

In one run, on the local broker:

- **echo**, the floor of any answered write: a request produced to a topic, consumed
  and produced again by an echo loop (plain aiokafka, no transaction, no state:
  ``bench/echo.py``), and consumed by the requester; the same producer and consumer
  settings as the client's. The echo loop is a process of its own, started like the
  worker (on the system CPU when the run is pinned, as every worker of this part), so
  both cross the same processes and CPUs;
- **update**: ``client.update`` on the bench's counter machine at the same fixed rate,
  timed from the call to its answer (send, the worker's transaction, the answer read
  back by the client's one correlating consumer). Echo and update take turns, in
  rounds (4 quick, 5 full) that share the time measured, so a pause of the broker or
  of the machine falls on both alike; each round's first half second is not timed, nor
  the first round's first 30 s: a broker started for this part is slower at
  transactions for about that long (see bench/README.md);
- **kv set**: ``client.state.set(..., wait=False)`` of ``events`` keys, produced
  before a worker starts, so what is timed is the worker applying them: the span of
  their state changes' broker append times (as the throughput table's); measured
  against the dispatch of as many counter events sent by ``client.send`` the same way,
  to a worker of its own;
- **kv get**: ``client.state.get`` (HTTP, keep-alive) of existing keys, one at a time.

Figures: ``update_p50_ms``, ``update_p99_ms``, ``echo_p50_ms``, ``echo_p99_ms``,
``kv_set_per_s``, ``kv_dispatch_per_s``, ``kv_get_p50_ms``, ``kv_get_p99_ms``; ratios:
``update_p99_vs_echo_p99``, ``kv_set_vs_dispatch`` (and ``kv_set_vs_garrison`` against
the throughput table's garrison run, when it ran).
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agents.topics import ensure_topics
from bench.echo import ECHO_CONSUMER, ECHO_PRODUCER
from bench.kv_app import SCOPE
from bench.parts import PARTS, PartContext
from bench.system import Process, Run, free_port, garrison_env
from bench.topic import OUTPUT_CONFIG, Watcher, create_topics, scan_output
from bench.workload import EVENT_TYPE, MACHINE
from garrison.client import Client
from pipeline.settings import Settings

__all__ = ["measure_kv"]

_TICK_S = 0.005
_WARMUP_S = 30.0  # the first round's untimed start (see measure_kv)


@dataclass
class _App:
    """One garrison app of this part: its settings, environment and worker."""

    settings: Settings
    env: dict[str, str]
    worker: Process


def _app(run: Run, suffix: str) -> _App:
    name = f"{run.app}-{suffix}"
    port = free_port()
    env = {**garrison_env(run, run.work_dir / name, port), "GARRISON_APP": name}
    argv = [sys.executable, "-m", "garrison", "worker", "bench.kv_app"]
    log = run.log_dir / f"kv-{suffix}.log"
    worker = Process(f"kv-{suffix}", argv, env, log, run.affinity)  # a system: its CPU
    run.processes.append(worker)
    settings = Settings.model_validate(
        {
            "app": name,
            "kafka": {"bootstrap": run.bootstrap, "partitions": run.partitions},
            "web": {"port": port},
        }
    )
    return _App(settings, env, worker)


def _percentile(ordered: list[float], q: float) -> float | None:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


async def _paced(rate: float, seconds: float, warmup_s: float, call: Callable[[int], Awaitable[Any]]
                 ) -> list[float]:  # fmt: skip
    """Start ``call(i)`` at ``rate`` per second for ``seconds``; the latencies (ms) of the
    calls started after ``warmup_s``, sorted."""
    out: list[float] = []
    tasks: list[asyncio.Task[None]] = []

    async def timed(i: int, keep: bool) -> None:
        began = time.perf_counter()
        await call(i)
        if keep:
            out.append((time.perf_counter() - began) * 1000)

    started = time.monotonic()
    n = 0
    while (elapsed := time.monotonic() - started) < seconds:
        while n < int(rate * elapsed):
            tasks.append(asyncio.create_task(timed(n, elapsed >= warmup_s)))
            n += 1
        await asyncio.sleep(_TICK_S)
    await asyncio.gather(*tasks)
    return sorted(out)


async def _echo_topics(bootstrap: str, prefix: str, partitions: int) -> tuple[str, str]:
    names = (f"{prefix}.echo-requests", f"{prefix}.echo-replies")
    await create_topics(bootstrap, names, partitions)
    return names


class _Echo:
    """The echo floor (see the module doc): the requester here, the echo loop a process
    of its own where the worker would be. :meth:`start`, then :meth:`measure` as often
    as wanted (the rounds interleave with ``client.update``'s), then :meth:`stop`."""

    def __init__(self, run: Run, topics: tuple[str, str]) -> None:
        self._requests, replies = topics
        argv = [sys.executable, "-m", "bench.echo", "--bootstrap", run.bootstrap]
        argv += ["--requests", self._requests, "--replies", replies]
        self._echoer = Process("kv-echo", argv, {}, run.log_dir / "kv-echo.log", run.affinity)
        run.processes.append(self._echoer)
        self._client = AIOKafkaProducer(bootstrap_servers=run.bootstrap, **ECHO_PRODUCER)
        self._answers = AIOKafkaConsumer(
            replies, bootstrap_servers=run.bootstrap, auto_offset_reset="latest", **ECHO_CONSUMER
        )
        self._waiting: dict[bytes, asyncio.Future[None]] = {}
        self._collecting: asyncio.Task[None] | None = None
        self._tokens = itertools.count()  # unique across rounds

    async def start(self) -> None:
        for c in (self._client, self._answers):
            await c.start()
        self._collecting = asyncio.create_task(self._collect())
        while not self._answers.assignment():  # resolve "latest" before anything is sent
            await asyncio.sleep(0.05)
        for tp in self._answers.assignment():
            await self._answers.position(tp)
        self._echoer.start()
        await _echoing(self._echoer, self._client, self._requests, self._waiting)

    async def _collect(self) -> None:
        while True:
            batch = await self._answers.getmany(timeout_ms=1000)
            for records in batch.values():
                for rec in records:
                    future = self._waiting.pop(rec.value, None)
                    if future is not None and not future.done():
                        future.set_result(None)

    async def measure(self, rate: float, seconds: float, warmup_s: float) -> list[float]:
        """Latencies (ms) of requests echoed at ``rate`` (see :func:`_paced`)."""

        async def call(i: int) -> None:
            token = b"r%d" % next(self._tokens)
            future = self._waiting[token] = asyncio.get_running_loop().create_future()
            await self._client.send(self._requests, token, key=b"t%d" % (i % 200))
            await asyncio.wait_for(future, 30)

        return await _paced(rate, seconds, warmup_s, call)

    async def stop(self) -> None:
        if self._collecting is not None:
            self._collecting.cancel()
            await asyncio.gather(self._collecting, return_exceptions=True)
        for c in (self._client, self._answers):
            await c.stop()
        await asyncio.to_thread(self._echoer.stop)


async def _echoing(echoer: Process, client: AIOKafkaProducer, requests: str,
                   waiting: dict[bytes, asyncio.Future[None]]) -> None:  # fmt: skip
    """Ping until the echo loop answers (what it reads starts at the topic's end once its
    consumer is up: pings before that are lost)."""
    deadline = time.monotonic() + 60
    for n in itertools.count():
        if not echoer.alive():
            raise RuntimeError(f"the echo loop exited; see {echoer.log_path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the echo loop never answered; see {echoer.log_path}")
        token = b"ping%d" % n
        future = waiting[token] = asyncio.get_running_loop().create_future()
        await client.send(requests, token, key=token)
        try:
            await asyncio.wait_for(future, 0.5)
            return
        except TimeoutError:
            waiting.pop(token, None)


async def _applied_rate(app: _App, count: int, timeout_s: float) -> tuple[float | None, str]:
    """Start the app's worker on what is queued; its state changes per second (broker
    append times) once their topic has stopped growing with all of them on it."""
    settings = app.settings
    app.worker.start()
    deadline = time.monotonic() + timeout_s
    last, stable = -1, 0
    async with Watcher(settings.kafka.bootstrap) as watch:
        # Records and transaction markers: at least ``count`` once all are there.
        while stable < 4:
            await asyncio.sleep(0.5)
            if not app.worker.alive():
                return None, f"worker exited; see {app.worker.log_path}"
            if time.monotonic() > deadline:
                return None, f"not done within {timeout_s:.0f} s"
            hw = await watch.high_water(settings.topics.state_changes)
            stable = stable + 1 if hw == last and hw >= count else 0
            last = hw
    scan = await scan_output(settings.kafka.bootstrap, settings.topics.state_changes, [])
    if scan.count < count:
        return None, f"{scan.count:,} of {count:,} state changes"
    return scan.rate, "ok"


async def _prepare(app: _App) -> None:
    await create_topics(
        app.settings.kafka.bootstrap,
        [app.settings.topics.state_changes],
        app.settings.kafka.partitions,
        OUTPUT_CONFIG,
    )
    await ensure_topics(app.settings)


async def _queue(app: _App, count: int, write: Callable[[Client, int], Awaitable[Any]]) -> float:
    """Send ``count`` writes through a client (nothing consumes them yet); sends/s."""
    async with Client(app.settings, source="bench") as client:
        began = time.monotonic()
        for i in range(count):
            await write(client, i)
        await client.flush()
        return count / (time.monotonic() - began)


async def measure_kv(ctx: PartContext) -> None:
    """The part: figures and ratios into ``ctx.report`` (see the module doc)."""
    run, report = ctx.run, ctx.report
    count = 20_000 if ctx.quick else 100_000
    rate, seconds = 200.0, 10.0 if ctx.quick else 20.0
    tenants, keys = 200, 50
    timeout_s = 120.0 + count / 1000
    figures, ratios = report.extra_figures, report.extra_ratios

    def address(i: int) -> tuple[str, str]:
        slot = (i * 7919) % (tenants * keys)
        return f"t{slot % tenants}", f"k{slot // tenants}"

    async def counter_event(client: Client, i: int) -> None:
        tenant, instance = address(i)
        data = {"amount": 1, "note": "kv-bench"}
        await client.send(tenant, MACHINE, instance, EVENT_TYPE, data, wait=False)

    async def kv_set(client: Client, i: int) -> None:
        tenant, key = address(i)
        await client.state.set(tenant, SCOPE, key, {"n": i, "note": "kv-bench"}, wait=False)

    print(f"  kv: {count:,} counter events and {count:,} kv sets through the client ...")
    apps = {"dispatch": _app(run, "kvd"), "set": _app(run, "kvs")}
    echo_topics = await _echo_topics(run.bootstrap, apps["set"].settings.app, run.partitions)
    for app in apps.values():  # all topics first: their leaders are up when used
        await _prepare(app)
    results: dict[str, float | None] = {}
    for name, write in (("dispatch", counter_event), ("set", kv_set)):
        app = apps[name]
        sends = await _queue(app, count, write)
        applied, verdict = await _applied_rate(app, count, timeout_s)
        results[name] = applied
        figures[f"kv_{name}_client_sends_per_s"] = sends
        if applied is None:
            report.extra_lines.append(f"kv: the {name} run failed: {verdict}")
        if name == "dispatch":
            await asyncio.to_thread(app.worker.stop)
    kv_app = apps["set"]  # its worker stays up for the latencies

    rounds = 4 if ctx.quick else 5
    print(
        f"  kv: echo and client.update at {rate:.0f}/s, {seconds:.0f} s each in {rounds} "
        "interleaved rounds ..."
    )
    echoes = _Echo(run, echo_topics)
    await echoes.start()
    echo: list[float] = []
    updates: list[float] = []
    async with Client(kv_app.settings, source="bench") as client:

        async def update(i: int) -> None:
            tenant, instance = address(i)
            answer = await client.update(
                tenant, MACHINE, instance, EVENT_TYPE, {"amount": 1}, timeout=30
            )
            assert answer.status == "applied", answer

        await client.update("t0", MACHINE, "warm", EVENT_TYPE, {"amount": 1}, timeout=60)
        try:
            # Interleaved, in turn first: what the machine does meanwhile (the broker's
            # collections, other processes) falls on both alike. Each round's first half
            # second is not timed, nor the first round's first 30 s: a broker started
            # for this part is slow at transactions for about that long (60 s of updates
            # at the rate on a new one printed p99 125, 71, 59, 59, 64 ms in the first
            # five 5-second windows, then 33-53 ms; the echo 41 ms, then 19-26).
            for r in range(rounds):
                warmup, each = (_WARMUP_S if r == 0 else 0.5), seconds / rounds
                for kind in ("echo", "update") if r % 2 == 0 else ("update", "echo"):
                    if kind == "echo":
                        echo += await echoes.measure(rate, each + warmup, warmup)
                    else:
                        updates += await _paced(rate, each + warmup, warmup, update)
        finally:
            await echoes.stop()
        echo.sort()
        updates.sort()
        gets: list[float] = []
        for i in range(2_000 if ctx.quick else 10_000):
            tenant, key = address(i % count)
            began = time.perf_counter()
            entry = await client.state.get(tenant, SCOPE, key)
            gets.append((time.perf_counter() - began) * 1000)
            assert entry is not None, (tenant, key)
        gets.sort()
    await asyncio.to_thread(kv_app.worker.stop)

    for name, values in (("update", updates), ("echo", echo), ("kv_get", gets)):
        p50, p99 = _percentile(values, 0.5), _percentile(values, 0.99)
        if p50 is not None and p99 is not None:
            figures[f"{name}_p50_ms"], figures[f"{name}_p99_ms"] = p50, p99
            figures[f"{name}_p90_ms"] = _percentile(values, 0.9) or 0.0
            figures[f"{name}_max_ms"] = values[-1]
    if results["set"] is not None:
        figures["kv_set_per_s"] = results["set"]
    if results["dispatch"] is not None:
        figures["kv_dispatch_per_s"] = results["dispatch"]
        if results["set"] is not None:
            ratios["kv_set_vs_dispatch"] = results["set"] / results["dispatch"]
    garrison = report.rate("garrison")
    if garrison and results["set"] is not None:
        ratios["kv_set_vs_garrison"] = results["set"] / garrison
    if "update_p99_ms" in figures and "echo_p99_ms" in figures:
        ratios["update_p99_vs_echo_p99"] = figures["update_p99_ms"] / figures["echo_p99_ms"]
    report.extra_lines.append(_line(figures, ratios, rate, seconds, len(updates), len(gets)))


def _line(
    f: dict[str, float], r: dict[str, float], rate: float, seconds: float, n: int, gets: int
) -> str:
    def ms(name: str) -> str:
        value = f.get(name)
        return "-" if value is None else f"{value:.1f} ms"

    def met(ok: bool | None) -> str:
        return "?" if ok is None else "met" if ok else "NOT met"

    vs_echo = r.get("update_p99_vs_echo_p99")
    vs_dispatch = r.get("kv_set_vs_dispatch")
    get_p99 = f.get("kv_get_p99_ms")
    return (
        f"kv: client.update at {rate:.0f}/s for {seconds:.0f} s ({n:,} timed): p50 "
        f"{ms('update_p50_ms')}, p99 {ms('update_p99_ms')}; raw echo p50 {ms('echo_p50_ms')}, "
        f"p99 {ms('echo_p99_ms')}; p99 x{vs_echo or 0:.2f} the echo's (target <= 3x: "
        f"{met(None if vs_echo is None else vs_echo <= 3)}). kv sets applied "
        f"{f.get('kv_set_per_s', 0):,.0f}/s vs {f.get('kv_dispatch_per_s', 0):,.0f}/s for "
        f"counter events, both sent by the client, each to a worker of its own "
        f"(x{vs_dispatch or 0:.2f}; target >= 0.8: "
        f"{met(None if vs_dispatch is None else vs_dispatch >= 0.8)}). HTTP get "
        f"({gets:,} one at a time) p50 {ms('kv_get_p50_ms')}, p99 {ms('kv_get_p99_ms')} "
        f"(target < 5 ms: {met(None if get_p99 is None else get_p99 < 5)})"
    )


PARTS["kv"] = measure_kv
