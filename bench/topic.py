"""Kafka chores of the harness: topics, producing the workload, watching and reading
output topics.

Output topics are created with ``message.timestamp.type=LogAppendTime``: the broker
stamps every record when it appends it, so a system's throughput is read from its
output topic the same way whatever its client does with record timestamps (Kafka
Streams and Quix Streams copy the input record's timestamp by default).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

__all__ = [
    "OUTPUT_CONFIG",
    "OutputScan",
    "Watcher",
    "create_topics",
    "delete_topics",
    "produce",
    "scan_output",
]

log = logging.getLogger(__name__)

OUTPUT_CONFIG = {"message.timestamp.type": "LogAppendTime"}


async def create_topics(
    bootstrap: str, names: Iterable[str], partitions: int, config: dict[str, str] | None = None
) -> None:
    """Create ``names`` with ``partitions`` partitions (existing ones are left alone)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(n, partitions, 1, topic_configs=dict(config or {}))
            for n in names
            if n not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, prefix: str) -> list[str]:
    """Delete every topic whose name starts with ``prefix``; return their names."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()


async def produce(
    bootstrap: str, topic: str, partitions: int, records: Iterable[tuple[bytes, bytes]]
) -> int:
    """Produce ``records`` (key, value) as fast as the client goes; return the count.

    Records are partitioned as the default partitioner does (murmur2 of the key) and
    sent in whole batches, which is several times faster than one ``send`` per record.
    """
    from aiokafka.partitioner import murmur2

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=5,
        max_batch_size=1 << 20,
        max_request_size=8 << 20,
    )
    await producer.start()
    where: dict[bytes, int] = {}
    open_batches: dict[int, Any] = {}
    in_flight: list[Any] = []
    n = 0

    async def ship(partition: int) -> None:
        batch = open_batches.pop(partition)
        in_flight.append(await producer.send_batch(batch, topic, partition=partition))
        if len(in_flight) > 8:
            await in_flight.pop(0)

    try:
        for key, value in records:
            partition = where.get(key)
            if partition is None:
                partition = where[key] = (murmur2(key) & 0x7FFFFFFF) % partitions
            batch = open_batches.get(partition)
            if batch is None:
                batch = open_batches[partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                await ship(partition)
                batch = open_batches[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
            n += 1
        for partition in list(open_batches):
            await ship(partition)
        for sent in in_flight:
            await sent
    finally:
        await producer.stop()
    return n


class Watcher:
    """Polls topic end offsets and group offsets (cheap requests, no records read)."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self._partitions: dict[str, list[TopicPartition]] = {}

    async def __aenter__(self) -> Watcher:
        await self._consumer.start()
        await self._admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def _tps(self, topic: str) -> list[TopicPartition]:
        tps = self._partitions.get(topic)
        if tps is None:
            parts = self._consumer.partitions_for_topic(topic)
            if not parts:
                await self._consumer._client.force_metadata_update()  # noqa: SLF001
                parts = self._consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            if tps:
                self._partitions[topic] = tps
        return tps

    async def high_water(self, topic: str) -> int:
        """The sum of the topic's end offsets (records plus transaction markers)."""
        tps = await self._tps(topic)
        if not tps:
            return 0
        ends = await self._consumer.end_offsets(tps)
        return sum(ends.values())

    async def caught_up(self, group: str, topic: str) -> bool:
        """Whether ``group`` has committed the end of every partition of ``topic``."""
        tps = await self._tps(topic)
        if not tps:
            return False
        ends = await self._consumer.end_offsets(tps)
        try:
            done = await self._admin.list_consumer_group_offsets(group, partitions=tps)
        except Exception:  # noqa: BLE001 - the group may not exist yet
            return False
        return all(tp in done and done[tp].offset >= ends[tp] for tp in tps)


@dataclass
class OutputScan:
    """What an output topic holds: records, their append-time span, sampled states."""

    count: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    latest: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)

    @property
    def span_s(self) -> float:
        """Seconds from the first to the last record."""
        if self.first_ms is None or self.last_ms is None:
            return 0.0
        return (self.last_ms - self.first_ms) / 1000

    @property
    def rate(self) -> float | None:
        """Records per second over the span (None with fewer than two records)."""
        span = self.span_s
        return self.count / span if span > 0 else None


async def scan_output(
    bootstrap: str, topic: str, sample: Iterable[tuple[str, str]], *, idle_s: float = 5.0
) -> OutputScan:
    """Read ``topic`` from the start to its end (read_committed): count the records,
    their first and last append time, and the highest-seq state change of each
    sampled (tenant, instance)."""
    wanted = set(sample)
    tenants = {t.encode() for t, _ in wanted}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=32 << 20,
    )
    await consumer.start()
    scan = OutputScan()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()  # noqa: SLF001
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > 0}
        quiet_since = time.monotonic()
        first, last, count = None, None, 0
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=500, max_records=20000)
            if batch:
                quiet_since = time.monotonic()
            for records in batch.values():
                count += len(records)
                lo, hi = records[0].timestamp, records[-1].timestamp
                first = lo if first is None or lo < first else first
                last = hi if last is None or hi > last else last
                for rec in records:
                    if rec.key in tenants:
                        _keep(scan, orjson.loads(rec.value), wanted)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
            if pending and time.monotonic() - quiet_since > idle_s:
                log.warning(
                    "%s: no records for %.0f s short of the end; counted %d", topic, idle_s, count
                )
                break
        scan.count, scan.first_ms, scan.last_ms = count, first, last
    finally:
        await consumer.stop()
    return scan


def _keep(scan: OutputScan, change: dict[str, Any], wanted: set[tuple[str, str]]) -> None:
    address = (str(change.get("tenant")), str(change.get("instance")))
    seq = change.get("seq")
    if address not in wanted or not isinstance(seq, int):
        return
    held = scan.latest.get(address)
    if held is None or seq > held[0]:
        scan.latest[address] = (seq, change.get("state"))
