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
from aiokafka.errors import KafkaTimeoutError, RecordTooLargeError

from agents.kafka import MAX_BATCH_BYTES, UnroutableTopic, partition_of
from pipeline.envelope import Headers

__all__ = ["Outbox"]


class Outbox:
    """Batch builders per (topic, partition) for one transaction of one lane.

    :meth:`add` is synchronous and sends nothing (it runs once per record, where a
    coroutine per call is a measurable cost, and a lane prepares its next batch while
    the previous one's transaction is still open). A record for a topic whose partition
    count is not known yet waits in :attr:`unrouted` for :meth:`route`; :meth:`flush`,
    inside the batch's transaction, sends everything.
    """

    def __init__(
        self, producer: AIOKafkaProducer, partition: int, partition_counts: dict[str, int]
    ) -> None:
        self._producer = producer
        self._partition = partition
        self._counts = partition_counts
        self._local = partition_counts.get("", 0)  # the events topic's count
        self._builders: dict[tuple[str, int], Any] = {}
        self._full: list[tuple[tuple[str, int], Any]] = []
        self.unrouted: list[tuple[str, bytes | None, bytes | None, Headers | None]] = []
        self._waiting: set[str] = set()

    @property
    def producer(self) -> AIOKafkaProducer:
        """The producer whose batches these are (and whose transaction sends them)."""
        return self._producer

    def partition_for(self, topic: str, key: bytes | None) -> int:
        """The lane's partition when ``topic`` is laid out like the events topic."""
        count = self._counts.get(topic, self._local)
        if count == self._local or key is None:
            return self._partition
        return partition_of(key, count)

    def add(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        *,
        partition: int | None = None,
    ) -> None:
        """Queue one record (to ``partition``, or routed by key like the producer)."""
        if partition is None:
            if topic not in self._counts or topic in self._waiting:
                # Until route() runs, every record of the topic waits, even once another
                # batch has learnt the count: records of one topic keep their order.
                self._waiting.add(topic)
                self.unrouted.append((topic, key, value, headers))
                return
            partition = self.partition_for(topic, key)
        where = (topic, partition)
        headers = list(headers) if headers else []  # the builder takes a list, not a tuple
        builder = self._builders.get(where)
        if builder is None:
            builder = self._builders[where] = self._producer.create_batch()
        if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            self._full.append((where, builder))
            builder = self._builders[where] = self._producer.create_batch()
            if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
                raise RecordTooLargeError(
                    f"a record for {topic} is larger than a record batch "
                    f"({MAX_BATCH_BYTES:,} bytes)"
                )

    async def route(self) -> None:
        """Look up the partition counts the unrouted records wait for, and queue them."""
        unrouted, self.unrouted = self.unrouted, []
        self._waiting.clear()
        for topic, key, value, headers in unrouted:
            if topic not in self._counts:
                self._counts[topic] = await self._count(topic)
            self.add(topic, key, value, headers)

    async def _count(self, topic: str) -> int:
        try:
            return len(await asyncio.wait_for(self._producer.partitions_for(topic), 15.0))
        except (TimeoutError, KafkaTimeoutError):
            cluster = self._producer.client.cluster
            if cluster.brokers() and topic not in cluster.topics():
                # The cluster answers but has no such topic (deleted since the worker
                # created it): the records for it are refused, not delayed.
                raise UnroutableTopic(f"topic {topic!r} does not exist") from None
            raise

    async def flush(self, producer: AIOKafkaProducer) -> dict[tuple[str, int], int]:
        """Send every batch with ``producer`` (the worker's, which may have been replaced
        since this outbox was made: a record batch is no producer's own) inside its
        transaction, and wait until delivered; the last offset written per (topic,
        partition)."""
        self._producer = producer
        await self.route()
        batches = [*self._full, *self._builders.items()]
        self._full, self._builders = [], {}
        shipped = []
        for (topic, partition), builder in batches:
            count = builder.record_count()
            if count:
                future = await self._producer.send_batch(builder, topic, partition=partition)
                shipped.append((topic, partition, count, future))
        last: dict[tuple[str, int], int] = {}
        for topic, partition, count, future in shipped:
            meta = await future
            last[(topic, partition)] = max(
                last.get((topic, partition), -1), meta.offset + count - 1
            )
        return last
