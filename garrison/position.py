"""Positions in an app's log, for replays and re-drives: a topic's partitions, where a
replay starts and ends, how far the worker has applied, and where the pipeline
dead-lettered (every lookup batched over the partitions, one client each)."""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from agents.changes import topic_records
from agents.kafka import kafka_options
from pipeline.deadletter import DeadLetter
from pipeline.errors import GarrisonError
from pipeline.settings import Settings
from tables.changelog import last_data_offsets
from tables.keys import OFFSET_KEY

__all__ = ["Bounds", "bounds", "dead_lettered", "topic_partitions", "wait_applied"]

Bounds = tuple[int, int, int]
"""A partition's first offset, its end offset (exclusive) and the first record's time."""


async def topic_partitions(options: dict[str, Any], topic: str) -> list[int]:
    """The partition numbers of ``topic`` (none if it does not exist)."""
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        for found in await admin.describe_topics([topic]):
            if found["topic"] == topic and found["error_code"] == 0:
                return sorted(p["partition"] for p in found["partitions"])
        return []
    finally:
        await admin.close()


async def dead_lettered(settings: Settings) -> dict[tuple[int, int], str]:
    """(partition, offset) of every events-topic record the pipeline dead-lettered, and
    why (``stage: reason``), from the dead-letter topic's headers."""
    topics = settings.topics
    options = kafka_options(settings.kafka)
    found: dict[tuple[int, int], str] = {}
    parts = await topic_partitions(options, topics.dlq)
    async with aclosing(topic_records(options, topics.dlq, parts)) as chunks:
        async for chunk in chunks:
            for rec in chunk:
                ours = DeadLetter.read_headers(rec.headers or ())
                if ours.get("garrison.topic") != topics.events:
                    continue
                if ours.get("garrison.stage") == "listener":
                    continue
                where = (int(ours.get("garrison.partition", -1)), int(ours["garrison.offset"]))
                reason = ours.get("garrison.reason", "")
                found[where] = f"{ours.get('garrison.stage')}: {reason[:160]}"
    return found


async def bounds(
    options: dict[str, Any],
    topic: str,
    partitions: list[int],
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    from_offset: int | None = None,
    to_offset: int | None = None,
) -> dict[int, Bounds]:
    """Where a replay of each partition starts and ends, by offset or record time."""
    consumer = AIOKafkaConsumer(**options, isolation_level="read_committed")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        since = (
            {}
            if since_ms is None
            else await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
        )
        until = (
            {}
            if until_ms is None
            else await consumer.offsets_for_times(dict.fromkeys(tps, until_ms + 1))
        )
        out = {}
        for tp in tps:
            first, end = starts[tp], ends[tp]
            if from_offset is not None:
                first = max(first, from_offset)
            if tp in since:
                first = max(first, end if since[tp] is None else since[tp].offset)
            if to_offset is not None:
                end = min(end, to_offset)
            if tp in until and until[tp] is not None:
                end = min(end, until[tp].offset)
            out[tp.partition] = (first, max(first, end), await _time_at(consumer, tp, first, end))
        return out
    finally:
        await consumer.stop()


async def _time_at(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int, end: int) -> int:
    """The timestamp of the record at ``offset`` (0 at the start, or if none is there)."""
    if offset >= end or offset == 0:
        return 0
    consumer.assign([tp])
    consumer.seek(tp, offset)
    batch = await consumer.getmany(tp, timeout_ms=5000, max_records=1)
    records = batch.get(tp, [])
    return int(records[0].timestamp) if records else 0


async def _applied(
    options: dict[str, Any], changelog: str, partitions: list[int]
) -> dict[int, int]:
    """The events offset the worker has applied each partition up to: the last record a
    lane's transaction writes to the state changelog is that offset (``OFFSET_KEY``),
    committed with the batch's changes; -1 before any."""
    lasts = await last_data_offsets(options, [(changelog, p) for p in partitions])
    out = {p: -1 for p in partitions}
    todo = {TopicPartition(changelog, p): last for (_, p), last in lasts.items() if last >= 0}
    if not todo:
        return out
    consumer = AIOKafkaConsumer(
        **options, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        consumer.assign(list(todo))
        for tp, last in todo.items():
            consumer.seek(tp, max(0, last - 256))
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            for tp, records in batch.items():
                for rec in records:
                    if rec.key == OFFSET_KEY and rec.offset <= todo[tp] and rec.value is not None:
                        out[tp.partition] = int(rec.value)
            for tp in list(todo):
                if await consumer.position(tp) > todo[tp]:
                    del todo[tp]
        return out
    finally:
        await consumer.stop()


async def wait_applied(settings: Settings, ends: dict[int, int], wait_s: float) -> None:
    """Wait until the worker has applied each partition of the events topic up to its
    last data record before ``ends[partition]`` (transaction markers hold offsets too)."""
    options = kafka_options(settings.kafka)
    topic = settings.topics.events
    lasts = await last_data_offsets(options, [(topic, p) for p in ends])
    need = {p: min(end, lasts[(topic, p)] + 1) for p, end in ends.items()}
    need = {p: n for p, n in need.items() if n > 0}
    # Faust names the state table's changelog <app>-state-changelog (tables.store).
    changelog = f"{settings.app}-state-changelog"
    deadline = time.monotonic() + wait_s
    while need:
        done = await _applied(options, changelog, list(need))
        need = {p: n for p, n in need.items() if done[p] < n}
        if not need:
            return
        if time.monotonic() > deadline:
            p, n = next(iter(need.items()))
            raise GarrisonError(
                f"the worker has applied partition {p} of {topic} up to offset {done[p]}, the "
                f"replay reads to {n}: run it when the worker has caught up, or bound it "
                "with --until/--to-offset"
            )
        await asyncio.sleep(0.5)
