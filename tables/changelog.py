"""Where a transactional changelog's data really ends.

Every committed transaction leaves a commit marker in each partition it wrote, so a
changelog written transactionally ends with a control record that no consumer ever
receives. Faust's recovery (outside its own exactly-once mode) waits to *receive* the
high-water offset and would wait forever; the end it should wait for is the offset of
the last committed data record, which this module finds by reading back from the end.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

__all__ = ["last_data_offsets"]


async def last_data_offsets(options: dict[str, Any], tps: Iterable[tuple[str, int]],
                            *, window: int = 64) -> dict[tuple[str, int], int]:
    """For each (topic, partition): the offset of its last committed data record, or -1."""
    wanted = [TopicPartition(t, p) for t, p in tps]
    if not wanted:
        return {}
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        consumer.assign(wanted)
        ends = await consumer.end_offsets(wanted)  # the last stable offset
        found: dict[tuple[str, int], int] = {}
        for tp in wanted:
            found[(tp.topic, tp.partition)] = await _last_in(consumer, tp, ends[tp], window)
        return found
    finally:
        await consumer.stop()


async def _last_in(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int,
                   window: int) -> int:
    start = end
    while start > 0:
        start = max(0, start - window)
        consumer.seek(tp, start)
        last = -1
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            records = batch.get(tp, [])
            if records:
                last = records[-1].offset
            elif await consumer.position(tp) < end:
                continue
        if last >= 0:
            return last
        window *= 8  # only markers and aborted data in this window: look further back
    return -1
