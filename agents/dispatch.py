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

A lane keeps two batches in flight: while one commits, the next is applied and
serialised (reading through the committing batch's writes), and is sent only once the
first has committed. The CPU work and the broker's round trips overlap; the
transactions stay strictly one after the other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition

from agents.outbox import Outbox
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

_YIELD_EVERY = 128  # records applied between yields to the event loop


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
        self.last: StateBatch | None = None  # the batch committing, if any

    async def start(self) -> None:
        s = self.d.settings
        self.producer = AIOKafkaProducer(
            **kafka_options(s.kafka), transactional_id=f"{s.app}.dispatch.{self.partition}",
            enable_idempotence=True, acks="all", linger_ms=2,
            # A new transaction's first request can meet the previous one's markers
            # still being written (CONCURRENT_TRANSACTIONS); retry soon, not in 100 ms.
            retry_backoff_ms=20,
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
        # Two batches in flight: while batch N's transaction commits (round trips to
        # the broker), batch N+1 is decoded, applied and serialised. N+1 reads through
        # N's writes, and is produced only after N committed, in its own transaction.
        committing: asyncio.Task[bool] | None = None
        try:
            while True:
                records = await self._gather()
                parent = None if committing is None or committing.done() else self.last
                prepared = await self._prepare(records, parent)
                if committing is not None and not await committing:
                    return  # it failed: the worker is stopping
                prepared.batch.parent = None  # the parent is in RocksDB now
                if self.closed:
                    return
                self.last = prepared.batch
                committing = asyncio.create_task(self._commit(prepared))
        except asyncio.CancelledError:
            if committing is not None:
                committing.cancel()
                await asyncio.gather(committing, return_exceptions=True)
            raise
        except Exception:
            # A bug, not bad input (that goes to the dead-letter topic): nothing of this
            # batch was produced. Stop the worker; its restart consumes the batch again
            # from the committed offsets.
            log.exception("dispatch of partition %d failed; stopping", self.partition)
            self.d.fail()

    async def _gather(self) -> list[Any]:
        """What has arrived, waiting up to batch_wait_ms for up to batch_size records: a
        transaction costs several round trips, so a trickle of single-record
        transactions would cost more than it waits. Only an Event is awaited with a
        timeout; chunks move with get_nowait, so a timeout can never lose one."""
        settings = self.d.settings
        loop = asyncio.get_running_loop()
        records = list(await self._take())
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
        return records

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

    async def _prepare(self, records: list[Any], parent: StateBatch | None) -> _Prepared:
        """Apply ``records`` to the state (as of ``parent``'s writes, if it is still
        committing) and build every output record; sends nothing."""
        d, s, producer = self.d, self.d.settings, self.producer
        assert producer is not None
        topics = s.topics
        state_changes, dlq, events = topics.state_changes, topics.dlq, topics.events
        if not self.counts:
            self.counts[""] = len(await producer.partitions_for(events))
        batch = StateBatch(d.state, d.timers, self.partition, parent)
        out = Outbox(producer, self.partition, self.counts)
        stats, registry, keep_ids, load = d.stats, d.registry, s.dedupe_ids, batch.load
        for i, rec in enumerate(records):
            if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                # Let the other lanes' broker responses in: a long stretch of pure CPU
                # here would delay every commit waiting on the loop.
                await asyncio.sleep(0)
            try:
                event = decode_event(rec.value, fallback_time_ms=rec.timestamp)
                key = encode_key(event.tenant, event.machine, event.instance)
                outcome = step(registry, load(key), event, keep_ids=keep_ids)
            except Rejected as exc:
                letter = DeadLetter(rec.key, rec.value, exc.stage, exc.reason,
                                    rec.topic, rec.partition, rec.offset)
                out.add(dlq, letter.key, letter.value, letter.headers())
                stats.dead_letters += 1
            else:
                status = outcome.status
                if status == "duplicate":
                    stats.duplicates += 1
                    continue
                if status == "stale":
                    stats.stale += 1
                    continue
                batch.store(key, outcome)
                tenant_key = event.tenant.encode()
                if outcome.change is not None:
                    out.add(state_changes, tenant_key, outcome.change.to_json())
                    if status == "expired":
                        stats.expired += 1
                    else:
                        stats.applied += 1
                for sent in outcome.emitted:
                    out.add(sent.topic or events, tenant_key, encode_event(sent.event))
            if out.unrouted:
                await out.route()
        for key, value in batch.state_writes.items():
            out.add(d.state.changelog_topic, key, value, partition=self.partition)
        for key, value in batch.timer_writes.items():
            out.add(d.timers.changelog_topic, key, value, partition=self.partition)
        return _Prepared(batch, out, records[-1].offset + 1)

    async def _commit(self, prepared: _Prepared) -> bool:
        """Produce a prepared batch and its offsets in one transaction, then write the
        local store. False if that failed (the worker is told to stop)."""
        d, producer = self.d, self.producer
        assert producer is not None
        try:
            async with producer.transaction():
                # The offsets' two round trips (AddOffsetsToTxn, TxnOffsetCommit) run
                # alongside the produce requests; the commit waits for both.
                offsets = asyncio.ensure_future(producer.send_offsets_to_transaction(
                    {self.tp: prepared.next_offset}, d.group_id))
                try:
                    written = await prepared.out.flush()
                finally:
                    await asyncio.gather(offsets, return_exceptions=True)
                offsets.result()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Kafka, not bad input: the transaction was aborted, so nothing of this
            # batch is visible. Stop the worker; its restart consumes the batch again
            # from the committed offsets.
            log.exception("commit of partition %d failed; stopping", self.partition)
            d.fail()
            return False
        prepared.batch.apply_locally()
        # Tell Faust's recovery how far the local store has the changelog, so a restart
        # replays only what came after.
        for store in (d.state, d.timers):
            last = written.get((store.changelog_topic, self.partition))
            if last is not None:
                store.set_changelog_offset(self.partition, last)
        d.stats.batches += 1
        return True


@dataclass(slots=True)
class _Prepared:
    """A batch applied and serialised, waiting for its transaction."""

    batch: StateBatch
    out: Outbox
    next_offset: int  # the events offset to commit


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
