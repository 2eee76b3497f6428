"""Where a transactional changelog's data really ends.

Every committed transaction leaves a commit marker in each partition it wrote, so a
changelog written transactionally ends with a control record that no consumer ever
receives. Faust's recovery (outside its own exactly-once mode) waits to *receive* the
high-water offset and would wait forever; the end it should wait for is the offset of
the last committed data record, which this module finds by reading back from the end.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer import fetcher as aiokafka_fetcher

__all__ = ["ends_of", "held_open", "last_data_offsets", "restore"]

log = logging.getLogger(__name__)

_POLL_S = 0.05


def _as_read(raw: bytes | None) -> bytes | None:
    """The restore consumer's key deserializer, and its mark: that consumer's records
    are aiokafka's records as parsed (``offset``, ``key``, ``value``), not
    ``ConsumerRecord`` objects. Every other consumer's are built as before, after one
    identity check.

    A restore reads millions of records and needs three fields of each. Profiled
    (py-spy, a worker restoring 2.4M changelog records in 16.8 s), building each
    ``ConsumerRecord`` (a dataclass of 12 fields) took 31% of the restore, more than
    RocksDB's writes (28%)."""
    return raw


if not hasattr(aiokafka_fetcher.PartitionRecords, "_consumer_record"):
    raise RuntimeError("aiokafka's PartitionRecords._consumer_record is gone: see _as_read")
_consumer_record = aiokafka_fetcher.PartitionRecords._consumer_record  # noqa: SLF001


def _record_as_parsed(self: Any, tp: TopicPartition, record: Any) -> Any:
    if self._key_deserializer is _as_read:  # noqa: SLF001
        return record
    return _consumer_record(self, tp, record)


aiokafka_fetcher.PartitionRecords._consumer_record = _record_as_parsed  # noqa: SLF001


async def last_data_offsets(
    options: dict[str, Any], tps: Iterable[tuple[str, int]], *, window: int = 64
) -> dict[tuple[str, int], int]:
    """For each (topic, partition): the offset of its last committed data record, or -1."""
    wanted = [TopicPartition(t, p) for t, p in tps]
    if not wanted:
        return {}
    consumer = AIOKafkaConsumer(
        **options, enable_auto_commit=False, isolation_level="read_committed"
    )
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


async def ends_of(
    options: dict[str, Any], tps: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], tuple[int, int]]:
    """For each (topic, partition): (last stable offset, high watermark). They differ
    while a transaction that wrote to the partition is open: a read_committed reader
    stops at the first record of the oldest open one."""
    wanted = [TopicPartition(t, p) for t, p in tps]
    if not wanted:
        return {}

    async def ends(isolation: str) -> dict[TopicPartition, int]:
        consumer = AIOKafkaConsumer(**options, enable_auto_commit=False, isolation_level=isolation)
        await consumer.start()
        try:
            return cast(dict[TopicPartition, int], await consumer.end_offsets(wanted))
        finally:
            await consumer.stop()

    # Both at once: each is a consumer's bootstrap and a ListOffsets; measured on the
    # local broker, 0.11 s for both instead of 0.22 one after the other.
    stable, high = await asyncio.gather(ends("read_committed"), ends("read_uncommitted"))
    return {(tp.topic, tp.partition): (stable[tp], high[tp]) for tp in wanted}


async def held_open(
    options: dict[str, Any], tps: Iterable[tuple[str, int]], *, within: float | None = None
) -> set[tuple[str, int]]:
    """Wait until no transaction is open on any of ``tps`` (last stable offset = high
    watermark), for ``within`` seconds at most (None: as long as it takes); the ones
    still held when it stops waiting."""
    wanted = list(tps)
    loop = asyncio.get_running_loop()
    deadline = None if within is None else loop.time() + within
    waited = False
    while True:
        held = {
            key for key, (stable, high) in (await ends_of(options, wanted)).items() if stable < high
        }
        if not held or (deadline is not None and loop.time() > deadline):
            if waited and not held:
                log.info("the open transactions on %s have ended", sorted(wanted))
            return held
        if not waited:
            log.info("waiting for the open transactions on %s to end", sorted(held))
            waited = True
        await asyncio.sleep(_POLL_S)


async def _last_in(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int, window: int) -> int:
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


Writer = Callable[[str, int, dict[bytes, bytes | None], int], None]


async def restore(
    options: dict[str, Any],
    ranges: Mapping[tuple[str, int], tuple[int, int]],
    write: Writer,
    *,
    chunk: int = 20_000,
) -> int:
    """Read each changelog partition's committed records from ``start`` to ``end``
    (inclusive) and hand them to ``write(topic, partition, writes, last_offset)`` in
    chunks: one write per chunk, the last value of each key, None for a tombstone.
    Returns how many records were read.

    This is the bulk path of recovery: a raw read_committed consumer and whole write
    batches, instead of one framework event per record. Measured restoring 1.2M
    records of 4 partitions into RocksDB (``python -m bench.restore_paths``, pinned to
    one CPU, two rounds): 5.07 and 4.33 us of CPU a record; 5.89 and 5.32 with
    ``ConsumerRecord`` objects, 5.98 and 5.03 with the collector on, 7.00 and 5.99 with both.
    """
    todo = {
        TopicPartition(t, p): (start, end)
        for (t, p), (start, end) in ranges.items()
        if end >= start
    }
    if not todo:
        return 0
    consumer = AIOKafkaConsumer(
        **options,
        enable_auto_commit=False,
        isolation_level="read_committed",
        key_deserializer=_as_read,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    await consumer.start()
    read = 0
    collecting = gc.isenabled()
    # Every record read is an object the cyclic collector tracks, and up to ``chunk``
    # of them are alive at once: profiled (py-spy --native) restoring 2.4M records,
    # its collections took a fifth of the worker's time. Nothing here makes cycles.
    gc.disable()
    try:
        consumer.assign(list(todo))
        for tp, (start, _) in todo.items():
            consumer.seek(tp, start)
        pending: dict[TopicPartition, dict[bytes, bytes | None]] = {tp: {} for tp in todo}
        last: dict[TopicPartition, int] = {}
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000, max_records=chunk)
            for tp, records in batch.items():
                end = todo[tp][1]
                writes = pending[tp]
                for rec in records:
                    if rec.offset > end:
                        break
                    writes[rec.key] = rec.value
                    last[tp] = rec.offset
                    read += 1
            for tp in list(todo):
                end = todo[tp][1]
                done = last.get(tp, -1) >= end or await consumer.position(tp) > end
                if pending[tp] and (done or len(pending[tp]) >= chunk):
                    write(tp.topic, tp.partition, pending[tp], last[tp])
                    pending[tp] = {}
                if done:
                    del todo[tp]
                    consumer.pause(tp)
        return read
    finally:
        if collecting:
            gc.enable()
        await consumer.stop()
