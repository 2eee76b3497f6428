"""Reading garrison's topics back: one partition, streamed, from an offset or a time.

History reads (``agents.history_api``) and replays (``garrison.replay``) read the
state-change topic of one partition as a stream of committed records, from its start
or from the first record stamped at or after a time (Kafka's offsets-for-times
lookup), up to its end as it was when the read began. Nothing is held beyond a fetch.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

__all__ = ["partition_records", "topic_records"]


async def partition_records(
    options: dict[str, Any],
    topic: str,
    partition: int,
    *,
    start_ms: int | None = None,
    start_offset: int | None = None,
    end_offset: int | None = None,
    chunk: int = 5000,
) -> AsyncGenerator[list[Any], None]:
    """Chunks of the committed records of ``topic``/``partition`` (aiokafka
    ``ConsumerRecord``\\ s), from ``start_offset``, or the first record stamped at or
    after ``start_ms``, or the start; up to ``end_offset`` (exclusive) or the end when
    the read began. Closing the iterator early stops the consumer."""
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(
        **options,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]  # the last stable offset
        if end_offset is not None:
            end = min(end, end_offset)
        if start_offset is not None:
            consumer.seek(tp, start_offset)
        elif start_ms is not None:
            found = (await consumer.offsets_for_times({tp: max(start_ms, 0)}))[tp]
            consumer.seek(tp, end if found is None else found.offset)
        else:
            await consumer.seek_to_beginning(tp)
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=chunk)
            records = [r for r in batch.get(tp, []) if r.offset < end]
            if records:
                yield records
            await asyncio.sleep(0)  # a long scan in a worker must not starve its lanes
    finally:
        await consumer.stop()


async def topic_records(
    options: dict[str, Any], topic: str, partitions: list[int], *, chunk: int = 5000
) -> AsyncGenerator[list[Any], None]:
    """Chunks of every committed record of ``partitions`` of ``topic``, up to their ends
    when the read began, with one consumer (in no order across partitions)."""
    if not partitions:
        return
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer = AIOKafkaConsumer(
        **options,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        todo = {tp for tp in tps if ends[tp] > 0}
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=500, max_records=chunk)
            for tp, records in batch.items():
                records = [r for r in records if r.offset < ends[tp]]
                if records:
                    yield records
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
