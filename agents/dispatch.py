"""The dispatcher: events in, reducers applied, state, changes and dead letters out.

Records of ``<app>.events`` arrive in bulk from the worker's Faust consumer (see
``agents.app``), never through Faust's per-event stream. Each assigned partition has a
lane: a task with its own transactional producer (``transactional.id`` =
``<app>.dispatch.<partition>``, so a restarted or new owner fences the old one at once).
A lane takes what has arrived, up to ``batch_size`` records, and in ONE transaction
produces: the state changes, the emitted events, the dead letters, one changelog
record per touched key, and the consumed offsets. Only after the commit does it write
the local RocksDB store. So an event is applied exactly once: either the whole batch
is visible (read_committed) with its offsets, or none of it is and it is consumed again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition

from agents.outbox import Outbox
from pipeline.address import Address
from pipeline.client import kafka_options
from pipeline.deadletter import DeadLetter
from pipeline.envelope import decode_event, encode_event
from pipeline.errors import Rejected
from pipeline.registry import Registry
from pipeline.settings import Settings
from pipeline.step import step
from tables.batch import StateBatch
from tables.keys import encode_key
from tables.store import PartitionStore

__all__ = ["Dispatcher", "DispatchStats"]

log = logging.getLogger(__name__)


@dataclass
class DispatchStats:
    """Counters since the worker started."""

    applied: int = 0
    duplicates: int = 0
    stale: int = 0
    expired: int = 0
    dead_letters: int = 0
    batches: int = 0


class _Lane:
    def __init__(self, dispatcher: Dispatcher, partition: int) -> None:
        self.d = dispatcher
        self.partition = partition
        self.tp = TopicPartition(dispatcher.settings.topics.events, partition)
        # Unbounded queue, bounded by records queued (see Dispatcher.feed): at a paced
        # rate chunks are tiny, and a bound on chunks would stall the shared fetch loop
        # behind one lane that is committing.
        self.inbox: asyncio.Queue[Sequence[Any]] = asyncio.Queue()
        self.queued = 0
        self.room = asyncio.Event()
        self.room.set()
        self.arrived = asyncio.Event()
        self.producer: AIOKafkaProducer | None = None
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.counts: dict[str, int] = {}  # partitions per topic; "" = the events topic

    async def start(self) -> None:
        s = self.d.settings
        self.producer = AIOKafkaProducer(
            **kafka_options(s.kafka), transactional_id=f"{s.app}.dispatch.{self.partition}",
            enable_idempotence=True, acks="all", linger_ms=2,
            max_batch_size=512 * 1024, max_request_size=4 * 1024 * 1024)
        await self.producer.start()  # init_transactions: fences a previous owner
        self.task = asyncio.create_task(self._run(), name=f"dispatch:{self.partition}")

    async def stop(self) -> None:
        self.closed = True
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.producer is not None:
            await self.producer.stop()

    async def _run(self) -> None:
        settings = self.d.settings
        loop = asyncio.get_running_loop()
        while True:
            records = list(await self._take())
            # Gather for up to batch_wait_ms: a transaction costs several round trips,
            # so a trickle of single-record transactions would cost more than it waits.
            # Only an Event is awaited with a timeout; chunks move with get_nowait, so a
            # timeout can never lose one.
            deadline = loop.time() + settings.batch_wait_ms / 1000
            while len(records) < settings.batch_size:
                if not self.inbox.empty():
                    records.extend(self._took(self.inbox.get_nowait()))
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    break
                self.arrived.clear()
                try:
                    await asyncio.wait_for(self.arrived.wait(), left)
                except TimeoutError:
                    break
            try:
                await self._process(records)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Kafka or a bug, not bad input: the transaction was aborted, so
                # nothing of this batch is visible. Stop the worker; its restart
                # consumes the batch again from the committed offsets.
                log.exception("dispatch of partition %d failed; stopping", self.partition)
                self.d.fail()
                return

    async def _take(self) -> Sequence[Any]:
        return self._took(await self.inbox.get())

    def _took(self, chunk: Sequence[Any]) -> Sequence[Any]:
        self.queued -= len(chunk)
        if self.queued < 4 * self.d.settings.batch_size:
            self.room.set()
        return chunk

    async def put(self, chunk: Sequence[Any]) -> None:
        """Queue a fetched chunk; waits while 4 batches' worth are queued already."""
        await self.room.wait()
        self.queued += len(chunk)
        if self.queued >= 4 * self.d.settings.batch_size:
            self.room.clear()
        self.inbox.put_nowait(chunk)
        self.arrived.set()

    async def _process(self, records: list[Any]) -> None:
        d, s, producer = self.d, self.d.settings, self.producer
        assert producer is not None
        topics = s.topics
        batch = StateBatch(d.state, d.timers, self.partition)
        stats = d.stats
        if not self.counts:
            self.counts[""] = len(await producer.partitions_for(topics.events))
        out = Outbox(producer, self.partition, self.counts)
        async with producer.transaction():
            for rec in records:
                if self.closed:
                    raise asyncio.CancelledError
                try:
                    event = decode_event(rec.value, fallback_time_ms=rec.timestamp)
                    key = encode_key(event.tenant, event.machine, event.instance)
                    outcome = step(d.registry, batch.load(key), event, keep_ids=s.dedupe_ids)
                except Rejected as exc:
                    letter = DeadLetter(rec.key, rec.value, exc.stage, exc.reason,
                                        rec.topic, rec.partition, rec.offset)
                    await out.add(topics.dlq, letter.key, letter.value, letter.headers())
                    stats.dead_letters += 1
                    continue
                status = outcome.status
                if status == "duplicate":
                    stats.duplicates += 1
                    continue
                if status == "stale":
                    stats.stale += 1
                    continue
                batch.store(Address(event.tenant, event.machine, event.instance), key, outcome)
                tenant_key = event.tenant.encode()
                if outcome.change is not None:
                    await out.add(topics.state_changes, tenant_key, outcome.change.to_json())
                    if status == "expired":
                        stats.expired += 1
                    else:
                        stats.applied += 1
                for sent in outcome.emitted:
                    await out.add(sent.topic or topics.events, tenant_key,
                                  encode_event(sent.event))
            for key, value in batch.state_writes.items():
                await out.add(d.state.changelog_topic, key, value, partition=self.partition)
            for key, value in batch.timer_writes.items():
                await out.add(d.timers.changelog_topic, key, value, partition=self.partition)
            written = await out.flush()
            await producer.send_offsets_to_transaction(
                {self.tp: records[-1].offset + 1}, d.group_id)
        batch.apply_locally()
        # Tell Faust's recovery how far the local store has the changelog, so a restart
        # replays only what came after.
        for store in (d.state, d.timers):
            last = written.get((store.changelog_topic, self.partition))
            if last is not None:
                store.set_changelog_offset(self.partition, last)
        stats.batches += 1


class Dispatcher:
    """Owns the lanes of the partitions this worker is assigned."""

    def __init__(self, settings: Settings, registry: Registry, state: PartitionStore,
                 timers: PartitionStore, group_id: str) -> None:
        self.settings = settings
        self.registry = registry
        self.state = state
        self.timers = timers
        self.group_id = group_id
        self.stats = DispatchStats()
        self._lanes: dict[int, _Lane] = {}
        self.failed = asyncio.Event()
        self.on_failure: Callable[[], None] | None = None

    @property
    def partitions(self) -> set[int]:
        """Partitions with a running lane."""
        return set(self._lanes)

    async def feed(self, partition: int, records: Sequence[Any]) -> None:
        """Hand a fetched run of records to the partition's lane (waits when it is full:
        backpressure on the fetch loop)."""
        if not records:
            return
        lane = self._lanes.get(partition)
        if lane is None:
            lane = self._lanes[partition] = _Lane(self, partition)
            await lane.start()
        await lane.put(records)

    async def revoke(self, partitions: set[int]) -> None:
        """Stop the lanes of revoked partitions; their uncommitted work is aborted and
        will be consumed by the new owner from the committed offsets."""
        lanes = [self._lanes.pop(p) for p in partitions if p in self._lanes]
        await asyncio.gather(*(lane.stop() for lane in lanes), return_exceptions=True)

    async def stop(self) -> None:
        """Stop every lane."""
        await self.revoke(set(self._lanes))

    def fail(self) -> None:
        """A lane hit an unrecoverable error: tell the worker, which stops."""
        self.failed.set()
        if self.on_failure is not None:
            self.on_failure()
