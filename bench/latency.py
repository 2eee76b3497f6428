"""End-to-end latency of a running system at steady, paced rates.

Events go to existing instances at a fixed rate, each carrying the moment it was
produced as its CloudEvent ``time``. Every system under test copies the event time
into its state change (``time_ms``: garrison, and the quixstreams and Kafka Streams
baselines), so a read_committed consumer of the system's output topic gets the
latency of each event as (now - time_ms): producer, broker, system, transaction
commit, consumer. The same paced producer and the same consumer serve every system;
they run in the harness.

A run is a sequence of :class:`Phase` s, sent back to back without a pause (one
producer, one consumer): each phase's events carry its number in their ids, and the
first ``warmup_s`` seconds of each phase are left out of its figures. The producer
sends what is due each 5 ms tick, but never more than 20 ms of events at once: after
a stall of the harness it skips the sends it missed instead of bursting them at the
system (the phase's sent rate then falls short, and the tables say so). While a phase's
measured events go out, the CPU time of the counters given (the system's processes,
the broker) is read at both ends. The consumer also counts the transaction markers
among the state changes of the measured events: read_committed, the offsets it skips
between two records of a partition are markers (or aborted records), one per
partition a transaction wrote to, so markers per second tell how many transactions
commit on the output topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from bench.workload import EVENT_TYPE, MACHINE, SOURCE, Workload
from pipeline.envelope import Event, encode_event

__all__ = ["Latency", "Phase", "Target", "measure_latency", "measure_phases", "wait_ready"]

_TICK_S = 0.005
_MAX_BEHIND_S = 0.02  # at most this much of a rate's events go out at once


@dataclass(frozen=True)
class Target:
    """Where a running system reads its events and writes its state changes."""

    input: str
    output: str
    partitions: int  # of the input topic


@dataclass(frozen=True)
class Phase:
    """``seconds`` at ``rate`` events/s; the first ``warmup_s`` left out of its figures."""

    label: str
    rate: float
    seconds: float
    warmup_s: float


@dataclass
class Latency:
    """Latency percentiles in milliseconds, and what they were measured over."""

    rate: float
    seconds: float
    warmup_s: float
    sent: int
    received: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    # CPU time of the worker process over the measured sending (after the warm-up), as
    # a share of one core; None when not asked for.
    worker_cpu: float | None = None
    label: str = ""
    measured_events: int = 0  # sent after the warm-up
    # Per counter (``system``, ``broker``): CPU seconds over the measured sending.
    cpu_s: dict[str, float] = field(default_factory=dict)
    window_s: float = 0.0  # how long the measured sending took
    markers_per_s: float | None = None  # transaction markers among the measured events
    # Events after the warm-up whose state change was not seen by the end of the drain
    # (30 s after the last send): the system was behind; they count in the percentiles
    # as later than any seen, which may leave p99 (and p50) unknown.
    unseen: int = 0

    def share(self, counter: str) -> float | None:
        """A counter's CPU time over the measured sending, as a share of one core."""
        cpu = self.cpu_s.get(counter)
        return None if cpu is None or self.window_s <= 0 else cpu / self.window_s

    @property
    def sent_rate(self) -> float | None:
        """Events/s actually sent over the measured part (the harness may fall short)."""
        return None if self.window_s <= 0 else self.measured_events / self.window_s

    def us_per_event(self, counter: str) -> float | None:
        """A counter's CPU microseconds per event sent in the measured part."""
        cpu = self.cpu_s.get(counter)
        return None if cpu is None or not self.measured_events else cpu * 1e6 / self.measured_events


def _percentile(ordered: list[float], q: float, total: int) -> float | None:
    """The ``q`` quantile of ``total`` latencies of which ``ordered`` were seen: the
    unseen ones count as later than any, so a quantile among them is unknown (None),
    not the largest seen."""
    if not ordered or total <= 0:
        return None
    i = min(total - 1, int(q * total))
    return ordered[i] if i < len(ordered) else None


def _partitioner(partitions: int) -> Callable[[bytes], int]:
    where: dict[bytes, int] = {}

    def partition(key: bytes) -> int:
        p = where.get(key)
        if p is None:
            p = where[key] = (murmur2(key) & 0x7FFFFFFF) % partitions
        return p

    return partition


async def _assigned(bootstrap: str, topic: str) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    """A read_committed consumer assigned every partition of ``topic``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        fetch_max_wait_ms=5,
    )
    await consumer.start()
    # A topic created moments ago may take a while to reach the metadata.
    deadline = time.monotonic() + 15
    while not (parts := consumer.partitions_for_topic(topic)):
        if time.monotonic() > deadline:
            await consumer.stop()
            raise RuntimeError(f"topic {topic} does not exist")
        await consumer._client.force_metadata_update()  # noqa: SLF001
        if not consumer.partitions_for_topic(topic):
            await asyncio.sleep(0.2)
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    cluster = consumer._client.cluster  # noqa: SLF001
    # ... and longer to have a leader for every partition (a busy broker, 32 partitions):
    # asked before, offset requests fail and are retried, with an error logged each.
    while any(cluster.leader_for_partition(tp) in (None, -1) for tp in tps):
        if time.monotonic() > deadline:
            break  # let the requests retry
        await asyncio.sleep(0.2)
        await consumer._client.force_metadata_update()  # noqa: SLF001
    # Even with a leader a new partition may refuse offset requests for a moment; the
    # client retries them, logging an error each time: wait for an answer quietly.
    fetcher = logging.getLogger("aiokafka.consumer.fetcher")
    level = fetcher.level
    fetcher.setLevel(logging.CRITICAL)
    try:
        await consumer.end_offsets(tps)
    except KafkaError:
        pass  # the requests that follow retry (and log) on their own
    finally:
        fetcher.setLevel(level)
    consumer.assign(tps)
    return consumer, tps


def _event(event_id: str, tenant: str, instance: str, now_ms: int) -> bytes:
    data = {"amount": 1, "note": "latency"}
    event = Event(event_id, EVENT_TYPE, SOURCE, tenant, MACHINE, instance, now_ms, data)
    return encode_event(event)


async def wait_ready(
    bootstrap: str, target: Target, workload: Workload, *, timeout_s: float
) -> float:
    """Wait until a just-started system processes and commits on every input partition
    that the workload's tenants map to: one probe event per such partition, re-sent
    every 3 s, until each one's state change is readable (read_committed). Returns the
    seconds it took; raises TimeoutError after ``timeout_s``."""
    partition_of = _partitioner(target.partitions)
    probes: dict[int, str] = {}  # partition -> a tenant on it
    for t in range(workload.tenants):
        probes.setdefault(partition_of(f"t{t}".encode()), f"t{t}")
    consumer, tps = await _assigned(bootstrap, target.output)
    await consumer.seek_to_beginning(*tps)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1)
    await producer.start()
    tag = f"probe{int(time.time() * 1000)}-"
    began = time.monotonic()
    waiting = dict(probes)
    try:
        attempt = 0
        while waiting:
            for p, tenant in waiting.items():
                value = _event(f"{tag}{p}-{attempt}", tenant, "probe", int(time.time() * 1000))
                await producer.send(target.input, value, key=tenant.encode(), partition=p)
            await producer.flush()
            attempt += 1
            resend = time.monotonic() + 3
            while waiting and time.monotonic() < resend:
                if time.monotonic() - began > timeout_s:
                    raise TimeoutError(
                        f"no state change on {target.output} for {len(waiting)} of "
                        f"{len(probes)} probed partitions within {timeout_s:.0f} s"
                    )
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for rec in records:
                        event_id = _event_id(rec.value)
                        if event_id is not None and event_id.startswith(tag):
                            waiting.pop(int(event_id[len(tag) :].split("-")[0]), None)
    finally:
        await producer.stop()
        await consumer.stop()
    return time.monotonic() - began


def _event_id(value: bytes | None) -> str | None:
    if not value:
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    event_id = doc.get("event_id") if isinstance(doc, dict) else None
    return event_id if isinstance(event_id, str) else None


async def measure_phases(
    bootstrap: str,
    target: Target,
    workload: Workload,
    phases: Sequence[Phase],
    *,
    cpu: dict[str, Callable[[], float | None]] | None = None,
    drain_s: float = 30.0,
) -> list[Latency]:
    """Send ``phases`` one after another to ``target.input`` and time each event's
    state change on ``target.output``; one :class:`Latency` per phase. ``cpu``: named
    CPU counters (seconds so far) read over each phase's measured part."""
    consumer, tps = await _assigned(bootstrap, target.output)
    await consumer.seek_to_end(*tps)
    expected = {}  # partition -> the offset its next record has, without markers
    for tp in tps:
        expected[tp.partition] = await consumer.position(tp)  # "end", before anything is sent
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, acks=1)
    await producer.start()
    n = len(phases)
    latencies: list[list[float]] = [[] for _ in range(n)]
    received = [0] * n
    timed = [0] * n  # sent after the phase's warm-up: the ones its figures are of
    markers = [0] * n
    sent = [0] * n
    measure_from_ms = [float("inf")] * n
    tag = f"lat{int(time.time() * 1000)}-"  # event ids are idempotency keys: new ones every run
    sending = True

    async def collect() -> None:
        while sending or sum(received) < sum(sent):
            batch = await consumer.getmany(timeout_ms=100)
            now_ms = time.time() * 1000
            for tp, records in batch.items():
                for rec in records:
                    skipped = rec.offset - expected[tp.partition]
                    expected[tp.partition] = rec.offset + 1
                    doc = orjson.loads(rec.value)
                    event_id = doc.get("event_id")
                    if not isinstance(event_id, str) or not event_id.startswith(tag):
                        continue
                    k = int(event_id[len(tag) :].split("-", 1)[0])
                    received[k] += 1
                    sent_ms = doc.get("time_ms")
                    if isinstance(sent_ms, int) and sent_ms >= measure_from_ms[k]:
                        latencies[k].append(now_ms - sent_ms)
                        markers[k] += skipped

    counters = cpu or {}
    windows: list[tuple[float, dict[str, float], int]] = []
    reader = asyncio.create_task(collect())
    partition_of = _partitioner(target.partitions)
    slots = workload.slots
    total = 0
    try:
        for k, phase in enumerate(phases):
            began = time.monotonic()
            dropped = 0  # sends skipped after a stall of the harness
            most = max(1, int(phase.rate * _MAX_BEHIND_S))
            measure_from_ms[k] = time.time() * 1000 + phase.warmup_s * 1000
            start: tuple[float, dict[str, float | None], int] | None = None
            while (elapsed := time.monotonic() - began) < phase.seconds:
                if start is None and elapsed >= phase.warmup_s:
                    cpu0 = {name: read() for name, read in counters.items()}
                    start = (time.monotonic(), cpu0, sent[k])
                due = int(phase.rate * elapsed) - dropped
                if due - sent[k] > most:
                    # The harness fell behind (its CPU is busy): skip what it missed
                    # rather than burst it at the system; the phase's sent rate shows it.
                    dropped += due - sent[k] - most
                    due = sent[k] + most
                now_ms = int(time.time() * 1000)
                # What is due goes out as one batch per partition: a send() per record
                # would cost the harness more CPU than the system it measures can spare.
                batches: dict[int, Any] = {}
                while sent[k] < due:
                    tenant, instance = workload.address((total * 7919) % slots)
                    key = tenant.encode()
                    partition = partition_of(key)
                    batch = batches.get(partition)
                    if batch is None:
                        batch = batches[partition] = producer.create_batch()
                    value = _event(f"{tag}{k}-{sent[k]}", tenant, instance, now_ms)
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        break  # a full batch: the rest goes next tick
                    sent[k] += 1
                    timed[k] += now_ms >= measure_from_ms[k]
                    total += 1
                for partition, batch in batches.items():
                    await producer.send_batch(batch, target.input, partition=partition)
                await asyncio.sleep(_TICK_S)
            windows.append(_window(start, sent[k], counters))
        await producer.flush()
        sending = False
        try:
            await asyncio.wait_for(reader, timeout=drain_s)
        except TimeoutError:
            pass
    finally:
        sending = False
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await producer.stop()
        await consumer.stop()
    out = []
    for k, phase in enumerate(phases):
        ordered = sorted(latencies[k])
        window_s, cpu_s, measured = windows[k]
        measured_s = phase.seconds - phase.warmup_s
        lat = Latency(
            phase.rate,
            phase.seconds,
            phase.warmup_s,
            sent[k],
            received[k],
            _percentile(ordered, 0.50, timed[k]),
            _percentile(ordered, 0.99, timed[k]),
            ordered[-1] if ordered else None,
            label=phase.label,
            measured_events=measured,
            cpu_s=cpu_s,
            window_s=window_s,
            markers_per_s=markers[k] / measured_s if measured_s > 0 and latencies[k] else None,
            unseen=max(0, timed[k] - len(ordered)),
        )
        lat.worker_cpu = lat.share("system")
        out.append(lat)
    return out


def _window(
    start: tuple[float, dict[str, float | None], int] | None,
    sent: int,
    counters: dict[str, Callable[[], float | None]],
) -> tuple[float, dict[str, float], int]:
    """(seconds, CPU seconds per counter, events sent) of a phase's measured part."""
    if start is None:
        return 0.0, {}, 0
    t0, cpu0, sent0 = start
    cpu: dict[str, float] = {}
    for name, read in counters.items():
        now, then = read(), cpu0.get(name)
        if now is not None and then is not None:
            cpu[name] = now - then
    return time.monotonic() - t0, cpu, sent - sent0


async def measure_latency(
    bootstrap: str,
    app: str,
    workload: Workload,
    partitions: int,
    *,
    rate: float,
    seconds: float,
    warmup_s: float = 2.0,
    cpu_seconds: Callable[[], float | None] | None = None,
) -> Latency:
    """Produce ``rate`` events/s for ``seconds`` to ``<app>.events`` and time each one's
    state change on ``<app>.state-changes`` (a running garrison worker). With
    ``cpu_seconds`` (the worker's CPU time so far), also the worker's CPU share while
    the measured events went out."""
    target = Target(f"{app}.events", f"{app}.state-changes", partitions)
    counters = {} if cpu_seconds is None else {"system": cpu_seconds}
    phase = Phase("", rate, seconds, warmup_s)
    (lat,) = await measure_phases(bootstrap, target, workload, [phase], cpu=counters)
    return lat
