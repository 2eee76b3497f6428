"""``garrison replay APP``: the events topic applied again with APP's current machines, and
compared with what the pipeline published (the pure part is :mod:`pipeline.replay`).

Partition by partition (each has its own store in the worker, so each replays on a
fresh scratch store), the events and the state changes of that partition are streamed
side by side; nothing is loaded whole, and the scratch records live in memory or in a
temporary RocksDB (``scratch="disk"``). Before a partition's published changes are
read to their end, the replay waits until the app's consumer group has applied that
partition's events as far as the replay reads them, so "the pipeline did not apply
it" means it did not, not that it has not yet.

The dead-letter topic is read first (headers only) for the places of the events the
pipeline dead-lettered: a timer firing among them was not one garrison delivered
(see :mod:`pipeline.replay`).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from agents.changes import partition_records
from agents.kafka import kafka_options, partition_of
from pipeline.deadletter import DeadLetter
from pipeline.decision import Rules
from pipeline.errors import GarrisonError
from pipeline.registry import Registry
from pipeline.replay import AddressFilter, Comparer, MemoryScratch, Replayer, ReplayStats, Scratch
from pipeline.settings import Settings, Topics
from tables.changelog import last_data_offsets
from tables.keys import OFFSET_KEY
from tables.scratch import DiskScratch

__all__ = [
    "ReplayOptions",
    "ReplayResult",
    "dead_lettered",
    "progress_printer",
    "replay",
    "topic_partitions",
]


@dataclass(frozen=True)
class ReplayOptions:
    """What to replay: the instances (``only``), a start (``since_ms``, a record time, or
    ``from_offset``) and an end (``until_ms`` or ``to_offset``, exclusive) on the
    events topic; where the scratch records live; how long to wait for the worker."""

    only: AddressFilter = AddressFilter()
    since_ms: int | None = None
    until_ms: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None
    scratch: str = "memory"
    wait_s: float = 60.0
    max_reports: int = 1000

    @property
    def ranged(self) -> bool:
        """Whether the replay starts after the log's start."""
        return self.since_ms is not None or bool(self.from_offset)


@dataclass
class ReplayResult:
    """What a replay found."""

    comparer: Comparer
    partitions: list[int]
    seconds: float
    total: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def stats(self) -> ReplayStats:
        """The counts."""
        return self.comparer.stats

    @property
    def identical(self) -> bool:
        """Whether no instance parts from what the pipeline published."""
        return self.stats.diverged == 0


Progress = Callable[[int, ReplayStats], None]
"""Told how many events were read so far (of the result's ``total``)."""


async def dead_lettered(settings: Settings) -> dict[tuple[int, int], str]:
    """(partition, offset) of every events-topic record the pipeline dead-lettered, and
    why (``stage: reason``), from the dead-letter topic's headers."""
    topics = settings.topics
    options = kafka_options(settings.kafka)
    found: dict[tuple[int, int], str] = {}
    for p in await topic_partitions(options, topics.dlq):
        async with aclosing(partition_records(options, topics.dlq, p)) as chunks:
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


async def _bounds(
    options: dict[str, Any], topic: str, partitions: list[int], opts: ReplayOptions
) -> dict[int, tuple[int, int, int]]:
    """Per partition: the first offset, the end offset (exclusive) and the record time
    the replay starts at (for the state-change topic's start)."""
    consumer = AIOKafkaConsumer(**options, isolation_level="read_committed")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        since = (
            await consumer.offsets_for_times({tp: opts.since_ms for tp in tps})
            if opts.since_ms is not None
            else {}
        )
        until = (
            await consumer.offsets_for_times({tp: opts.until_ms + 1 for tp in tps})
            if opts.until_ms is not None
            else {}
        )
        out = {}
        for tp in tps:
            first, end = starts[tp], ends[tp]
            if opts.from_offset is not None:
                first = max(first, opts.from_offset)
            if tp in since:
                first = max(first, end if since[tp] is None else since[tp].offset)
            if opts.to_offset is not None:
                end = min(end, opts.to_offset)
            if tp in until and until[tp] is not None:
                end = min(end, until[tp].offset)
            out[tp.partition] = (first, max(first, end), await _time_at(consumer, tp, first, end))
        return out
    finally:
        await consumer.stop()


async def _time_at(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int, end: int) -> int:
    """The timestamp of the record at ``offset`` (0 if there is none before ``end``)."""
    if offset >= end or offset == 0:
        return 0
    consumer.assign([tp])
    consumer.seek(tp, offset)
    batch = await consumer.getmany(tp, timeout_ms=5000, max_records=1)
    records = batch.get(tp, [])
    return int(records[0].timestamp) if records else 0


async def _applied_offset(options: dict[str, Any], changelog: str, partition: int) -> int:
    """The events offset the worker has applied ``partition`` up to: the last record a
    lane's transaction writes to the state changelog is that offset (``OFFSET_KEY``),
    committed with the batch's changes; -1 before any."""
    last = (await last_data_offsets(options, [(changelog, partition)]))[(changelog, partition)]
    if last < 0:
        return -1
    tp = TopicPartition(changelog, partition)
    consumer = AIOKafkaConsumer(
        **options, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, max(0, last - 256))
        found = -1
        while await consumer.position(tp) <= last:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for rec in batch.get(tp, []):
                if rec.key == OFFSET_KEY and rec.offset <= last and rec.value is not None:
                    found = int(rec.value)
        return found
    finally:
        await consumer.stop()


async def _wait_applied(settings: Settings, partition: int, end: int, wait_s: float) -> None:
    """Wait until the worker has applied ``partition`` of the events topic up to its
    last data record before ``end`` (transaction markers hold offsets too)."""
    options = kafka_options(settings.kafka)
    topic = settings.topics.events
    last = (await last_data_offsets(options, [(topic, partition)]))[(topic, partition)]
    need = min(end, last + 1)
    if need <= 0:
        return
    # Faust names the state table's changelog <app>-state-changelog (tables.store).
    changelog = f"{settings.app}-state-changelog"
    deadline = time.monotonic() + wait_s
    while True:
        done = await _applied_offset(options, changelog, partition)
        if done >= need:
            return
        if time.monotonic() > deadline:
            raise GarrisonError(
                f"the worker has applied partition {partition} of {topic} up to offset "
                f"{done}, the replay reads to {need}: run it when the worker has caught up, "
                "or bound it with --until/--to-offset"
            )
        await asyncio.sleep(0.5)


async def replay(
    settings: Settings,
    registry: Registry,
    opts: ReplayOptions = ReplayOptions(),
    *,
    progress: Progress | None = None,
    on_total: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Replay ``settings.app``'s events with ``registry``'s machines and compare."""
    started = time.monotonic()
    topics = Topics.of(settings.app)  # no latest-state output: the replay produces nothing
    options = kafka_options(settings.kafka)
    rules = Rules(
        registry,
        topics,
        keep_ids=settings.dedupe_ids,
        tombstone_ms=int(settings.tombstone_retention_s * 1000),
    )
    all_parts = await topic_partitions(options, topics.events)
    if not all_parts:
        raise GarrisonError(f"no topic {topics.events}: is {settings.app!r} the app's name?")
    parts = (
        [partition_of(opts.only.tenant.encode(), len(all_parts))]
        if opts.only.tenant is not None
        else all_parts
    )
    bounds = await _bounds(options, topics.events, parts, opts)
    total = sum(end - first for first, end, _ in bounds.values())
    if on_total is not None:
        on_total(total)
    dead = await dead_lettered(settings)
    comparer = Comparer(ranged=opts.ranged, max_reports=opts.max_reports)
    scratch: Scratch = DiskScratch() if opts.scratch == "disk" else MemoryScratch()
    replayer = Replayer(rules, scratch, comparer, dead_lettered=dead, only=opts.only)
    result = ReplayResult(comparer, parts, 0.0, total)
    read = 0
    try:
        for p in parts:
            first, end, start_ms = bounds[p]
            if end <= first:
                continue
            await _wait_applied(settings, p, end, opts.wait_s)
            events = partition_records(
                options, topics.events, p, start_offset=first, end_offset=end
            )
            live_start = None if not opts.ranged else start_ms - settings.history.clock_skew_ms
            live = partition_records(
                options,
                topics.state_changes,
                p,
                start_ms=live_start if live_start is not None and live_start > 0 else None,
            )
            async with aclosing(events) as ev_chunks, aclosing(live) as live_chunks:
                read = await _lockstep(replayer, ev_chunks, live_chunks, read, progress)
            comparer.finish()
            scratch.clear()
    finally:
        if isinstance(scratch, DiskScratch):
            scratch.close()
    result.seconds = time.monotonic() - started
    return result


async def _lockstep(
    replayer: Replayer,
    events: AsyncGenerator[list[Any], None],
    live: AsyncGenerator[list[Any], None],
    read: int,
    progress: Progress | None,
) -> int:
    """Read both streams of a partition side by side, so that neither side's unmatched
    changes pile up: the one behind is read next."""
    comparer, only = replayer.comparer, replayer.only
    ev_done = live_done = False
    while not (ev_done and live_done):
        if not ev_done and (live_done or comparer.waiting_replayed <= comparer.waiting_live):
            chunk = await anext(events, None)
            if chunk is None:
                ev_done = True
                continue
            for rec in chunk:
                replayer.event(rec)
            read += len(chunk)
            if progress is not None:
                progress(read, comparer.stats)
        else:
            chunk = await anext(live, None)
            if chunk is None:
                live_done = True
                continue
            for rec in chunk:
                if rec.value is not None and only.admits_change(rec.value):
                    comparer.live(rec.value)
    return read


def progress_printer(
    stream: Any = None,
) -> tuple[Callable[[int], None], Progress, Callable[[], None]]:
    """A progress display: a tqdm bar on a terminal, a line every 5 s otherwise.
    Returns (set the total, report progress, close)."""
    out = stream or sys.stderr
    if out.isatty():
        from tqdm import tqdm

        bar = tqdm(total=0, unit="ev", unit_scale=True, file=out, desc="replay")

        def total_bar(n: int) -> None:
            bar.total = n
            bar.refresh()

        def step_bar(done: int, stats: ReplayStats) -> None:
            bar.update(done - bar.n)
            bar.set_postfix(differ=stats.diverged, refresh=False)

        return total_bar, step_bar, bar.close

    state = {"total": 0, "last": time.monotonic(), "t0": time.monotonic()}

    def total_lines(n: int) -> None:
        state["total"] = n

    def step_lines(done: int, stats: ReplayStats) -> None:
        now = time.monotonic()
        if now - state["last"] < 5:
            return
        state["last"] = now
        rate = done / max(now - state["t0"], 1e-9)
        share = f" ({done / state['total']:.0%})" if state["total"] else ""
        print(
            f"replay: {done:,}/{int(state['total']):,} events{share}, {rate:,.0f} events/s, "
            f"{stats.diverged} instances differ",
            file=out,
            flush=True,
        )

    return total_lines, step_lines, lambda: None
