"""What one lane produces in one transaction, written as whole record batches.

A lane's output all goes to the lane's partition: state changes and emitted events are
keyed by the tenant (whose events live in that partition), changelog records belong to
it. So instead of one ``producer.send`` per record (a future, a partitioner call and
accumulator bookkeeping each: measured as most of a worker's CPU beyond the pure core),
records are appended to one batch builder per topic and shipped whole. A topic whose
partition count differs from the events topic's falls back to hashing the key, as the
default partitioner would.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

__all__ = ["Outbox"]

Headers = list[tuple[str, bytes]]


class Outbox:
    """Batch builders per (topic, partition) for one transaction of one lane."""

    def __init__(self, producer: AIOKafkaProducer, partition: int,
                 partition_counts: dict[str, int]) -> None:
        self._producer = producer
        self._partition = partition
        self._counts = partition_counts
        self._local = partition_counts.get("", 0)  # the events topic's count
        self._builders: dict[tuple[str, int], Any] = {}
        self._shipped: list[tuple[str, int, int, asyncio.Future[Any]]] = []

    def partition_for(self, topic: str, key: bytes | None) -> int:
        """The lane's partition when ``topic`` is laid out like the events topic."""
        count = self._counts.get(topic, self._local)
        if count == self._local or key is None:
            return self._partition
        return (murmur2(key) & 0x7FFFFFFF) % count

    async def add(self, topic: str, key: bytes | None, value: bytes | None,
                  headers: Headers | None = None, *, partition: int | None = None) -> None:
        """Queue one record; ships the topic's batch when it is full."""
        if partition is None:
            if topic not in self._counts:
                self._counts[topic] = len(await self._producer.partitions_for(topic))
            partition = self.partition_for(topic, key)
        where = (topic, partition)
        headers = headers or []  # the record builder takes a list, never a tuple
        builder = self._builders.get(where)
        if builder is None:
            builder = self._builders[where] = self._producer.create_batch()
        if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            await self._ship(where, builder)
            builder = self._builders[where] = self._producer.create_batch()
            if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
                raise ValueError(f"a record for {topic} is larger than the producer's "
                                 "batch size; raise max_batch_size")

    async def _ship(self, where: tuple[str, int], builder: Any) -> None:
        count = builder.record_count()
        if count:
            future = await self._producer.send_batch(builder, where[0], partition=where[1])
            self._shipped.append((where[0], where[1], count, future))

    async def flush(self) -> dict[tuple[str, int], int]:
        """Ship every batch, wait until delivered; the last offset written per
        (topic, partition)."""
        for where, builder in self._builders.items():
            await self._ship(where, builder)
        self._builders.clear()
        last: dict[tuple[str, int], int] = {}
        for topic, partition, count, future in self._shipped:
            meta = await future
            last[(topic, partition)] = max(last.get((topic, partition), -1),
                                           meta.offset + count - 1)
        self._shipped.clear()
        return last
