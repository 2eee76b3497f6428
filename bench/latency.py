"""End-to-end latency of a running garrison worker at a steady, paced rate.

Events go to existing instances at ``rate`` events/s, each carrying the moment it was
produced as its CloudEvent ``time``; garrison copies the event time into the state
change (``time_ms``), so a read_committed consumer of ``<app>.state-changes`` gets the
latency of each event as (now - time_ms): producer, broker, worker, transaction commit,
consumer. The first ``warmup_s`` seconds of events are left out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2

from bench.workload import EVENT_TYPE, MACHINE, SOURCE, Workload
from pipeline.envelope import Event, encode_event

__all__ = ["Latency", "measure_latency"]

_TICK_S = 0.005


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


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


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
    state change on ``<app>.state-changes``. With ``cpu_seconds`` (the worker's CPU
    time so far), also the worker's CPU share while the measured events went out."""
    topic = f"{app}.state-changes"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        fetch_max_wait_ms=5,
    )
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)  # resolve "end" now, before anything is sent
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, acks=1)
    await producer.start()
    latencies: list[float] = []
    received = 0
    start_ms = time.time() * 1000
    measure_from_ms = start_ms + warmup_s * 1000
    tag = f"lat{int(start_ms)}-"  # event ids are idempotency keys: new ones for every run
    mark = f'"event_id":"{tag}'.encode()
    sending = True

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
                    sent_ms = orjson.loads(rec.value)["time_ms"]
                    if sent_ms >= measure_from_ms:
                        latencies.append(now_ms - sent_ms)

    sent = 0
    reader = asyncio.create_task(collect())
    events_topic = f"{app}.events"
    where: dict[bytes, int] = {}
    cpu_from: tuple[float, float] | None = None  # (monotonic, the worker's CPU seconds)
    worker_cpu = None
    try:
        began = time.monotonic()
        slots = workload.slots
        while (elapsed := time.monotonic() - began) < seconds:
            if cpu_seconds is not None and cpu_from is None and elapsed >= warmup_s:
                used = cpu_seconds()
                cpu_from = None if used is None else (time.monotonic(), used)
            due = int(rate * elapsed)
            now_ms = int(time.time() * 1000)
            # What is due goes out as one batch per partition: a send() per record would
            # cost the harness more CPU than the worker it measures can spare.
            batches: dict[int, Any] = {}
            while sent < due:
                tenant, instance = workload.address((sent * 7919) % slots)
                data = {"amount": 1, "note": "latency"}
                event = Event(
                    f"{tag}{sent}", EVENT_TYPE, SOURCE, tenant, MACHINE, instance, now_ms, data
                )
                key = tenant.encode()
                partition = where.get(key)
                if partition is None:
                    partition = where[key] = (murmur2(key) & 0x7FFFFFFF) % partitions
                batch = batches.get(partition)
                if batch is None:
                    batch = batches[partition] = producer.create_batch()
                if batch.append(key=key, value=encode_event(event), timestamp=None) is None:
                    break  # a full batch: the rest goes next tick
                sent += 1
            for partition, batch in batches.items():
                await producer.send_batch(batch, events_topic, partition=partition)
            await asyncio.sleep(_TICK_S)
        if cpu_seconds is not None and cpu_from is not None and (used := cpu_seconds()) is not None:
            worker_cpu = (used - cpu_from[1]) / (time.monotonic() - cpu_from[0])
        await producer.flush()
        sending = False
        try:
            await asyncio.wait_for(reader, timeout=30)
        except TimeoutError:
            pass
    finally:
        sending = False
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await producer.stop()
        await consumer.stop()
    latencies.sort()
    return Latency(
        rate,
        seconds,
        warmup_s,
        sent,
        received,
        _percentile(latencies, 0.50),
        _percentile(latencies, 0.99),
        latencies[-1] if latencies else None,
        worker_cpu,
    )
