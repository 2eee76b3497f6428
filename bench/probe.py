"""Probes of a garrison app: is each partition serving, and since when.

A :class:`Probe` sends one event per partition every :data:`PROBE_INTERVAL_S` to
``<app>.events`` (machine ``counter``, instance ``probe`` of a tenant of its own per
partition, found with the producers' murmur2 partitioner) and follows
``<app>.state-changes`` from its start with a read_committed consumer. For each probe
applied it keeps when it was sent (the harness's wall clock just before the send) and
the timestamp of its state change (the worker's wall clock when it produced it), so
``first_after(t)`` says when each partition first applied an event sent after ``t``.
The follower also counts the other state changes (the workload's).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import defaultdict
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.kafka import partition_of
from bench.workload import EVENT_TYPE, MACHINE
from pipeline.envelope import Event, encode_event

__all__ = ["PROBE_INTERVAL_S", "Probe", "Unmeasured", "probe_tenants"]

PROBE_INTERVAL_S = 0.05


class Unmeasured(Exception):
    """What was to be measured could not be; the message says why."""


def probe_tenants(partitions: int) -> dict[int, str]:
    """A probe tenant for each partition: partition -> tenant id (``probe<n>``)."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < partitions:
        tenant = f"probe{n}"
        found.setdefault(partition_of(tenant.encode(), partitions), tenant)
        n += 1
    return found


class Probe:
    """Probe events into ``<app>.events`` and a follower of ``<app>.state-changes``.

    The follower reads from the topic's start: it counts the workload's state changes
    (any key not a probe tenant) and keeps, per partition, (sent, stamped) wall-clock
    seconds of every probe applied.
    """

    def __init__(self, bootstrap: str, app: str, partitions: int) -> None:
        self.bootstrap, self.app = bootstrap, app
        self.tenants = probe_tenants(partitions)
        self._partition = {t.encode(): p for p, t in self.tenants.items()}
        self.sent: dict[str, float] = {}  # probe event id -> wall time before its send
        self.seen: dict[int, list[tuple[float, float]]] = defaultdict(list)
        self.workload_changes = 0
        self.send_errors = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def follow(self) -> None:
        """Start following the state-change topic from its start."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            max_partition_fetch_bytes=8 << 20,
            fetch_max_bytes=32 << 20,
        )
        await consumer.start()
        topic = f"{self.app}.state-changes"
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()  # noqa: SLF001
            parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer.stop()
            raise Unmeasured(f"{topic} does not exist although the workers serve")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        self._tasks.append(asyncio.create_task(self._read(consumer)))

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=100, max_records=20_000)
                for records in batch.values():
                    for rec in records:
                        p = self._partition.get(rec.key or b"")
                        if p is None:
                            self.workload_changes += 1
                            continue
                        sent = self.sent.get(orjson.loads(rec.value or b"{}").get("event_id"))
                        if sent is not None:
                            self.seen[p].append((sent, rec.timestamp / 1000))
        finally:
            await consumer.stop()

    def start_sending(self) -> None:
        """Send one probe per partition every :data:`PROBE_INTERVAL_S` until stopped."""
        self._tasks.append(asyncio.create_task(self._send()))

    async def _send(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=0)
        await producer.start()
        topic = f"{self.app}.events"
        try:
            started, k = time.monotonic(), 0
            while True:
                for p, tenant in self.tenants.items():
                    now = time.time()
                    ev = Event(
                        f"probe-{k}-{p}",
                        EVENT_TYPE,
                        "failover",
                        tenant,
                        MACHINE,
                        "probe",
                        int(now * 1000),
                        {"amount": 1},
                    )
                    self.sent[ev.id] = now
                    sending = await producer.send(
                        topic, encode_event(ev), key=tenant.encode(), partition=p
                    )
                    sending.add_done_callback(self._delivered)
                k += 1
                await asyncio.sleep(max(0.0, started + k * PROBE_INTERVAL_S - time.monotonic()))
        finally:
            await producer.stop()

    def _delivered(self, sending: asyncio.Future[Any]) -> None:
        if not sending.cancelled() and sending.exception() is not None:
            self.send_errors += 1

    def first_after(self, since: float) -> dict[int, float]:
        """Per partition: seconds from ``since`` (wall clock) to the first state change
        of a probe sent after it."""
        out = {}
        for p, applied in self.seen.items():
            stamps = [stamped for sent, stamped in applied if sent > since]
            if stamps:
                out[p] = min(stamps) - since
        return out

    def latency_ms(self, start: float, end: float) -> float | None:
        """The median probe latency (sent to stamped) of probes sent in [start, end)."""
        lags = [
            (stamped - sent) * 1000
            for applied in self.seen.values()
            for sent, stamped in applied
            if start <= sent < end
        ]
        return statistics.median(lags) if lags else None

    async def stop(self) -> None:
        """Stop sending and following."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
