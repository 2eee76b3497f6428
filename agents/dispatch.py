"""The dispatcher: events in, reducers applied, state, changes and dead letters out.

Records of ``<app>.events`` arrive in bulk from the worker's Faust consumer (see
``agents.app``), never through Faust's per-event stream. Each assigned partition has a
lane: a task with its own transactional producer (``transactional.id`` =
``<app>.dispatch.<partition>``, so a restarted or new owner fences the old one at once).
A lane applies a batch of records, up to ``batch_size``, and in ONE transaction
produces: the state changes, the emitted events, the dead letters, one changelog
record per touched key, and the offset the partition is applied up to (a changelog
record too). Only after the commit does it write the local RocksDB store. So an event
is applied exactly once: either the whole batch is visible (read_committed) with that
offset, or none of it is and it is consumed again. The consumer group's offsets go in
a transaction at most every ``offset_commit_interval_ms``; records a new owner reads
again below the stored offset are skipped unopened.

Batches are group commits: while a lane's transaction is in flight, what arrives is
applied and serialised into the next batch (reading through the committing batch's
writes), which is sent the moment that transaction is done. The CPU work and the
broker's round trips overlap, batches grow with the load, and the transactions stay
strictly one after the other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition

from agents.kafka import kafka_options
from agents.outbox import Outbox
from pipeline.decision import Rules, Verdict, apply_record
from pipeline.registry import Registry
from pipeline.settings import Settings
from tables.batch import StateBatch
from tables.keys import OFFSET_KEY
from tables.store import PartitionStore

__all__ = ["Dispatcher", "DispatchStats"]

log = logging.getLogger(__name__)

_YIELD_EVERY = 128  # records applied between yields to the event loop


@dataclass
class DispatchStats:
    """Counters since the worker started."""

    applied: int = 0
    duplicates: int = 0
    replayed: int = 0  # records consumed again below the applied offset, skipped
    stale: int = 0
    rearmed: int = 0
    expired: int = 0
    purged: int = 0
    dead_letters: int = 0
    batches: int = 0

    def count(self, verdict: Verdict) -> None:
        """Count one record's verdict."""
        name = _COUNTER[verdict]
        setattr(self, name, getattr(self, name) + 1)


_COUNTER: dict[Verdict, str] = {
    "applied": "applied",
    "duplicate": "duplicates",
    "stale": "stale",
    "rearmed": "rearmed",
    "expired": "expired",
    "purged": "purged",
    "rejected": "dead_letters",
}


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
        self.spill: Sequence[Any] = ()  # the rest of a chunk that overfilled a batch
        self.room = asyncio.Event()
        self.room.set()
        self.producer: AIOKafkaProducer | None = None
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.counts: dict[str, int] = {}  # partitions per topic; "" = the events topic
        self.resume = -1  # records before this offset are applied already
        self.offsets_at = float("-inf")  # loop time the group's offsets were last sent

    async def start(self) -> None:
        s = self.d.settings
        self.producer = AIOKafkaProducer(
            **kafka_options(s.kafka),
            transactional_id=f"{s.app}.dispatch.{self.partition}",
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
            # The offsets of a new transaction can meet the previous one's still being
            # completed (CONCURRENT_TRANSACTIONS); retry soon, not in 100 ms.
            retry_backoff_ms=10,
            max_batch_size=512 * 1024,
            max_request_size=4 * 1024 * 1024,
        )
        await self.producer.start()  # init_transactions: fences a previous owner
        # After init_transactions no older owner can commit: the stored offset is final.
        stored = self.d.state.get(self.partition, OFFSET_KEY)
        self.resume = -1 if stored is None else int(stored)
        self.task = asyncio.create_task(self._run(), name=f"dispatch:{self.partition}")

    async def stop(self) -> None:
        self.closed = True
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.producer is not None:
            await self.producer.stop()

    async def _run(self) -> None:
        # Group commit. While the lane's transaction is in flight (its round trips to
        # the broker), what arrives meanwhile is decoded, applied and serialised into
        # the next batch, reading through the committing batch's writes; the moment
        # the transaction is done, that batch goes in the next one. So batches grow
        # with load, and at a low rate an event waits for about one transaction.
        s = self.d.settings
        size, linger = s.batch_size, s.batch_wait_ms / 1000
        loop = asyncio.get_running_loop()
        committing: asyncio.Task[bool] | None = None  # the transaction in flight
        parent: StateBatch | None = None  # its batch
        current: _Prepared | None = None  # the batch being applied
        try:
            while True:
                in_flight = None if committing is None or committing.done() else committing
                if current is None:
                    chunk = await self._next()
                    current = await self._open(None if in_flight is None else parent, loop.time())
                elif in_flight is not None:
                    if current.count >= size:  # full: no more until it is sent
                        await asyncio.wait({in_flight})
                        continue
                    chunk = await self._next(until=in_flight)
                elif current.count < size and (left := current.opened + linger - loop.time()) > 0:
                    chunk = await self._next(timeout=left)
                else:
                    if committing is not None and not committing.result():
                        return  # it failed: the worker is stopping
                    if self.closed:
                        return
                    current.batch.parent = None  # the parent is in RocksDB now
                    parent = current.batch
                    committing = asyncio.create_task(self._commit(current))
                    current = None
                    continue
                if chunk is not None:  # None: the transaction finished or the linger passed
                    room = size - current.count
                    if len(chunk) > room:
                        chunk, self.spill = chunk[:room], chunk[room:]
                    await self._prepare(current, chunk)
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

    async def _next(
        self, *, until: asyncio.Task[bool] | None = None, timeout: float | None = None
    ) -> Sequence[Any] | None:
        """The next fetched chunk; None if ``until`` finishes or ``timeout`` passes first.
        (A cancelled ``Queue.get`` leaves its item in the queue: nothing is lost.)"""
        if self.spill:
            chunk, self.spill = self.spill, ()
            return chunk
        if not self.inbox.empty():
            return self._took(self.inbox.get_nowait())
        if until is None and timeout is None:
            return self._took(await self.inbox.get())
        getter = asyncio.ensure_future(self.inbox.get())
        try:
            waits: set[asyncio.Future[Any]] = {getter} if until is None else {getter, until}
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            return self._took(getter.result()) if getter.done() else None
        finally:
            if not getter.done():
                getter.cancel()

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

    async def _open(self, parent: StateBatch | None, now: float) -> _Prepared:
        """A new, empty batch reading through ``parent`` (the batch still committing)."""
        d, producer = self.d, self.producer
        assert producer is not None
        if not self.counts:
            self.counts[""] = len(await producer.partitions_for(d.settings.topics.events))
        return _Prepared(
            StateBatch(
                d.state, d.timers, self.partition, parent, keep_history=d.settings.history.keep
            ),
            Outbox(producer, self.partition, self.counts),
            opened=now,
        )

    async def _prepare(self, prepared: _Prepared, records: Sequence[Any]) -> None:
        """Apply ``records`` to the batch's state and queue every output record (the
        decisions are ``pipeline.decision``'s); sends nothing."""
        d = self.d
        batch, out, stats, rules = prepared.batch, prepared.out, d.stats, d.rules
        load, store, add = batch.load, batch.store, out.add
        resume = self.resume
        for i, rec in enumerate(records):
            if rec.offset < resume:
                stats.replayed += 1  # applied already (committed, or in a batch in flight)
                continue
            if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                # Let the other lanes' broker responses in: a long stretch of pure CPU
                # here would delay every commit waiting on the loop.
                await asyncio.sleep(0)
            applied = apply_record(rules, load, rec)
            stats.count(applied.verdict)
            if applied.outcome is not None:
                assert applied.address is not None
                store(applied.address, applied.outcome, applied.stored, applied.change)
            for o in applied.outputs:
                add(o.topic, o.key, o.value, o.headers, partition=o.partition)
            if out.unrouted:
                await out.route()
        prepared.count += len(records)
        prepared.next_offset = records[-1].offset + 1
        # The consumer can hand over records again within one assignment (its position
        # reset to the group's offset, after recovery): never apply an offset twice.
        self.resume = max(resume, prepared.next_offset)

    async def _commit(self, prepared: _Prepared) -> bool:
        """Produce a prepared batch and its offsets in one transaction, then write the
        local store. False if that failed (the worker is told to stop)."""
        d, producer, out = self.d, self.producer, prepared.out
        assert producer is not None
        prepared.batch.applied_up_to(prepared.next_offset)
        for key, value in prepared.batch.state_writes.items():
            out.add(d.state.changelog_topic, key, value, partition=self.partition)
        for key, value in prepared.batch.timer_writes.items():
            out.add(d.timers.changelog_topic, key, value, partition=self.partition)
        try:
            async with producer.transaction():
                # The offset applied up to is in the state changelog (applied_up_to), in
                # this transaction. The consumer group's offset, two more round trips
                # per transaction, follows at most every offset_commit_interval_ms: it
                # bounds what a new owner reads again (and skips), and is what lag
                # monitors see. Its round trips run alongside the produce requests.
                offsets = None
                now = asyncio.get_running_loop().time()
                if now - self.offsets_at >= d.settings.offset_commit_interval_ms / 1000:
                    self.offsets_at = now
                    offsets = asyncio.ensure_future(
                        producer.send_offsets_to_transaction(
                            {self.tp: prepared.next_offset}, d.group_id
                        )
                    )
                try:
                    written = await out.flush()
                finally:
                    if offsets is not None:
                        await asyncio.gather(offsets, return_exceptions=True)
                if offsets is not None:
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
    """A batch being applied and serialised, then waiting for its transaction."""

    batch: StateBatch
    out: Outbox
    opened: float  # loop time of its first record
    count: int = 0  # records taken
    next_offset: int = -1  # the events offset to commit


class Dispatcher:
    """Owns the lanes of the partitions this worker is assigned."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        state: PartitionStore,
        timers: PartitionStore,
        group_id: str,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.state = state
        self.timers = timers
        self.group_id = group_id
        self.rules = Rules(
            registry,
            settings.topics,
            keep_ids=settings.dedupe_ids,
            tombstone_ms=int(settings.tombstone_retention_s * 1000),
        )
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
