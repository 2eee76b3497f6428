"""One partition's lane: apply records into batches, commit them in the worker's
transactions, and ride out whatever Kafka does meanwhile.

A lane owns one events partition while this worker is assigned it. Each batch goes in
ONE transaction of the worker's producer (``agents.transactions``, shared by every lane)
with the state changes, emitted events, dead letters, one changelog record per touched
key, the offset the partition is applied up to, and the partition's group offset,
fenced by the group generation the lane was started in (``agents.group_offsets``);
RocksDB is written only after the commit. Batches are group commits: while one is in
its transaction the next is applied on top of it, and handed over the moment the first
is done.

When a transaction fails, the worker's producer is replaced (its ``init_transactions``
settles what was left open: aborted, or committed if EndTxn got through while its answer
did not); then the lane puts every record it had not committed back at the front of its
input, catches the store up with the changelog, skips what that shows applied, and goes
on:

- Kafka itself failing (the broker down, a coordinator moving, a timeout): the producer
  is rebuilt with backoff until the broker answers again, saying so once; nothing is
  lost or applied twice, and the worker never exits for it.
- the group refusing the offsets (the partition has a new owner: this worker is a
  zombie): the transaction aborts, and the lane waits for the rebalance to stop it.
- Kafka refusing what one event produced (a record too large for the topic, a topic
  that is gone or may not be written): the lane replays the failed records one per
  transaction, and the one Kafka refuses becomes a dead letter of stage ``output`` with
  Kafka's reason; the partition goes on.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition

from agents.group_offsets import GroupMember, OffsetsRefused
from agents.inbox import Inbox
from agents.kafka import home_of, is_kafka_failure, is_record_refused
from agents.logs import dead_letter_log
from agents.metrics import Tally
from agents.outbox import Outbox
from agents.tracing import ApplySpans
from pipeline.decision import Rules, apply_record, dead_letter
from pipeline.errors import InvalidOutput
from pipeline.seal import SEAL_KEY_BYTES
from pipeline.view import Reads
from tables.batch import StateBatch, applied_offset
from tables.keys import SEAL_KEY, WRITER_KEY

if TYPE_CHECKING:
    from agents.dispatch import Dispatcher

__all__ = ["Lane"]

log = logging.getLogger(__name__)

_YIELD_EVERY = 128  # records applied between yields to the event loop


class _Failed(Exception):
    """A transaction failed; ``records`` are every record not committed, in order."""

    def __init__(self, cause: BaseException, records: list[Any]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.records = records


@dataclass(slots=True)
class _Prepared:
    """A batch being applied and serialised, then waiting for its transaction."""

    batch: StateBatch
    out: Outbox
    opened: float  # loop time of its first record
    count: int = 0  # records taken
    next_offset: int = -1  # the events offset to commit
    records: list[Any] = field(default_factory=list)  # what it took, for a redo
    tally: Tally = field(default_factory=dict)  # (verdict, machine, stage[, tenant]) -> n
    letters: list[tuple[Any, str, str]] = field(default_factory=list)  # (record, stage, why)


_VERB = {True: "pausing", False: "resuming"}


class Lane:
    """The lane of ``partition`` in one group generation: :meth:`begin`; :meth:`offer`
    fetched records; :meth:`stop`."""

    def __init__(self, dispatcher: Dispatcher, partition: int, generation: int) -> None:
        self.d = dispatcher
        self.partition = partition
        self.generation = generation  # the group generation it was started in
        self.serving = False  # its partition is sought and resumed: records may come
        self.tp = TopicPartition(dispatcher.settings.topics.events, partition)
        self.inbox = Inbox(4 * dispatcher.settings.batch_size, on_room=self._turn_valve)
        self._paused = False  # what the consumer was last told (the inbox full or not)
        self._valve: asyncio.Task[None] | None = None
        self.member: GroupMember | None = None  # who applies it (its offsets are fenced by)
        self._writer: bytes | None = None  # this worker's id, until stored with the state
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.counts: dict[str, int] = {}  # partitions per topic; "" = the events topic
        self.committed = -1  # the next offset after the last committed batch
        self.resume = -1  # records before this offset are applied already
        self.isolate_until = -1  # redo records up to here one per transaction
        self.seal_key: bytes | None = None
        self.rules: Rules = dispatcher.rules
        tracing = dispatcher.tracing
        self.spans = None if tracing is None else ApplySpans(tracing, partition)

    # -- life ---------------------------------------------------------------------------

    async def begin(self) -> bool:
        """After the previous owner's transactions have ended and the store has caught
        up with the changelog (``Dispatcher.activate``): load where the partition is
        applied up to, seek the consumer there and run. False if the partition moved
        meanwhile (the lane then does nothing until it is stopped)."""
        d = self.d
        self.member = await d.consumer().member(self.generation)
        if self.member is None:
            log.info("partition %d moved while its lane started", self.partition)
            return False
        self.committed = self.resume = applied_offset(d.state, self.partition)
        self.counts[""] = await d.transactions.partitions_for(d.settings.topics.events)
        writer = d.transactions.transactional_id.encode()
        self._writer = None if d.state.get(self.partition, WRITER_KEY) == writer else writer
        self.seal_key = d.state.get(self.partition, SEAL_KEY) or await self._new_seal()
        home = home_of(d.rules.partitioning, self.counts[""])
        trace = None if self.spans is None else self.spans.begin
        self.rules = replace(
            d.rules, partition=self.partition, home=home, seal_key=self.seal_key, trace=trace
        )
        self.task = asyncio.create_task(self._run(), name=f"dispatch:{self.partition}")
        self.serving = True
        if not await d.consumer().seek_and_resume(self.partition, self.committed, self.generation):
            self.serving = False
            log.info("partition %d moved while its lane started", self.partition)
            return False
        return True

    async def stop(self) -> None:
        """Stop: what is not committed is dropped (the next owner consumes it again). A
        batch already in a transaction commits or aborts with it; the next owner's wait
        for stable offsets covers it."""
        self.closed = True
        self.inbox.close()
        # Both cancelled before any await: a stop that is itself cancelled (a revoke cut
        # short by the next rebalance) must not leave the lane running. The valve's last
        # call does not matter: the next lane seeks and resumes the partition itself.
        tasks = [t for t in (self._valve, self.task) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def offer(self, chunk: Sequence[Any]) -> None:
        """Hand the lane fetched records. Never waits: at 4 batches' worth queued, the
        partition is paused in the consumer until the lane has taken half of it
        (:mod:`agents.inbox`), and the other partitions keep coming."""
        if self.inbox.add(chunk) != self._paused:
            self._turn_valve()

    def _turn_valve(self) -> None:
        if not self.closed and (self._valve is None or self._valve.done()):
            self._valve = asyncio.create_task(self._follow_held())

    async def _follow_held(self) -> None:
        """Tell the consumer to pause or resume the partition until what it was told is
        whether the inbox is full now: one call at a time, in order."""
        while self._paused != self.inbox.full and not self.closed:
            want = self.inbox.full
            try:
                await self.d.consumer().hold(self.partition, want, self.generation)
            except Exception as exc:  # the consumer stopping: the next toggle tries again
                log.warning("partition %d: %s it failed: %r", self.partition, _VERB[want], exc)
                return
            self._paused = want

    async def _new_seal(self) -> bytes:
        """A new seal key for the partition's timer firings, committed before any firing
        is sealed with it (so every later owner knows it)."""
        key = os.urandom(SEAL_KEY_BYTES)
        prepared = self._open(None, 0.0)
        prepared.batch.state_writes[SEAL_KEY] = key
        prepared.next_offset = self.committed
        await self._commit(prepared)
        return key

    # -- the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        failure: _Failed | None = None
        while not self.closed:
            try:
                # The recovery inside the try: an error of its own (a bug, or a cause
                # that is not Kafka's) ended this task silently, the lane still
                # registered, its inbox filling (seen after broker outages: one lane in
                # two workers had 101 records queued and no task, for minutes).
                if failure is not None:
                    await self._recover(failure)
                    failure = None
                await self._pump()
            except _Failed as failed:
                failure = failed
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug, not bad input (that goes to the dead-letter topic) and not Kafka
                # (that is retried): stop the worker; its restart consumes the uncommitted
                # records again.
                log.exception("dispatch of partition %d failed; stopping", self.partition)
                self.d.fail()
                return

    async def _recover(self, failure: _Failed) -> None:
        """Put back what was not committed, maybe isolate, learn what is applied (the
        worker's producer was replaced before the failure reached the lane)."""
        cause = failure.cause
        self.inbox.give_back(failure.records)
        self.resume = self.committed
        refused = is_record_refused(cause)
        if refused and failure.records:
            self.isolate_until = failure.records[-1].offset
            log.warning(
                "partition %d: Kafka refused a batch (%s); redoing it one event per "
                "transaction to dead-letter the event that causes it",
                self.partition,
                cause,
            )
        elif not is_kafka_failure(cause):
            raise cause  # neither Kafka nor a record: a bug, which _run reports
        elif isinstance(cause, OffsetsRefused):
            # The group refused the offsets: it has given the partition to another
            # member (this worker is a zombie, and the rebalance will stop this lane).
            wait = self.d.settings.session_timeout_s + 1
            log.warning(
                "partition %d: fenced by the group (%s); retrying in %.0f s unless the "
                "partition moves",
                self.partition,
                cause,
                wait,
            )
            await asyncio.sleep(wait)
        await self._resync()

    async def _resync(self) -> None:
        """After a failed transaction, learn from the changelog whether it committed.

        A commit can fail on this side and succeed on the broker's: the sender dies, or
        the timeout passes, after EndTxn was written. The new producer's
        init_transactions settles such a transaction (the broker completes or aborts it
        before answering), but the local store does not have its writes, and applying
        its records again would apply them twice. So the store catches up with the
        changelog, as when a lane starts, and the offset stored with the state says how
        far the partition is applied. The catch-up first waits for any transaction still
        open on the changelog (a dead or zombie worker's, until the broker aborts it),
        which would hide the failed transaction's records from it."""
        while True:
            try:
                await self.d.catch_up({self.partition}, settled=True)
                break
            except Exception as exc:
                if not is_kafka_failure(exc):
                    raise
                log.warning(
                    "partition %d: reading its changelog failed (%r); retrying",
                    self.partition,
                    exc,
                )
                await asyncio.sleep(1.0)
        applied = applied_offset(self.d.state, self.partition)
        if applied > self.committed:
            log.warning(
                "partition %d: the transaction reported as failed had committed (the "
                "partition is applied up to offset %d, not %d); its events are not "
                "applied again",
                self.partition,
                applied,
                self.committed,
            )
            self.committed = self.resume = applied

    async def _pump(self) -> None:
        # Group commit. While the lane's transaction is in flight (its round trips to
        # the broker), what arrives meanwhile is decoded, applied and serialised into
        # the next batch, reading through the committing batch's writes; the moment
        # the transaction is done, that batch goes in the next one. So batches grow
        # with load, and at a low rate an event waits for about one transaction.
        s = self.d.settings
        linger = s.batch_wait_ms / 1000
        loop = asyncio.get_running_loop()
        committing: asyncio.Task[None] | None = None  # the transaction in flight
        sent: _Prepared | None = None  # its batch
        current: _Prepared | None = None  # the batch being applied
        try:
            while not self.closed:
                if committing is not None and committing.done():
                    failed = committing.exception()
                    if failed is not None:
                        assert sent is not None
                        extra = [] if current is None else current.records
                        raise _Failed(failed, [*sent.records, *extra])
                    committing = sent = None
                    if current is not None:
                        current.batch.parent = None  # the parent is in RocksDB now
                size = 1 if self.isolate_until >= max(self.resume, 0) else s.batch_size
                if current is None:
                    # Nothing being applied: wait for records, or for the transaction in
                    # flight to end (a failure must be noticed without new input).
                    chunk = await self.inbox.next(until=committing)
                    if chunk is None:
                        continue
                    current = self._open(None if sent is None else sent.batch, loop.time())
                elif committing is not None:
                    if current.count >= size:  # full: no more until it is sent
                        await asyncio.wait({committing})
                        continue
                    chunk = await self.inbox.next(until=committing)
                elif current.count < size and (left := current.opened + linger - loop.time()) > 0:
                    chunk = await self.inbox.next(timeout=left)
                else:
                    sent, current = current, None
                    committing = asyncio.create_task(self._commit(sent))
                    if size == 1:  # isolating: one transaction at a time
                        await asyncio.wait({committing})
                    continue
                if chunk is not None:  # None: the transaction finished or the linger passed
                    room = size - current.count
                    if len(chunk) > room:
                        chunk, rest = chunk[:room], chunk[room:]
                        self.inbox.give_back(rest)
                    await self._prepare(current, chunk)
                    if current.count == 0:
                        current = None  # only records applied before: nothing to send
        finally:
            if committing is not None and not committing.done():
                committing.cancel()
                await asyncio.gather(committing, return_exceptions=True)

    def _open(self, parent: StateBatch | None, now: float) -> _Prepared:
        """A new, empty batch reading through ``parent`` (the batch still committing)."""
        d, producer = self.d, self.d.transactions.producer
        assert producer is not None
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
        batch, out, stats, rules = prepared.batch, prepared.out, d.stats, self.rules
        load, store, add = batch.load, batch.store, out.add
        views = Reads(batch.scan, batch.state)  # for machines that declare views
        resume = self.resume
        tally, spans = prepared.tally, self.spans
        by_tenant = d.metrics is not None and d.metrics.by_tenant
        taken = 0
        for i, rec in enumerate(records):
            if rec.offset < resume:
                stats.replayed += 1  # applied already (committed, or in a batch in flight)
                continue
            if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                # Let the other lanes' broker responses in: a long stretch of pure CPU
                # here would delay every commit waiting on the loop.
                await asyncio.sleep(0)
            applied = apply_record(rules, load, rec, views)
            # Counted per batch in a plain dict, added to the metrics once it commits.
            a, verdict = applied.address, applied.verdict
            key: tuple[str, ...] = (verdict, "" if a is None else a.machine, applied.stage)
            if by_tenant:
                key += ("" if a is None else a.tenant,)
            tally[key] = tally.get(key, 0) + 1
            if verdict == "rejected":
                prepared.letters.append((rec, applied.stage, applied.reason))
            if spans is not None:
                spans.end(applied, rec)
            if applied.outcome is not None:
                assert applied.address is not None
                store(applied.address, applied.outcome, applied.stored, applied.change)
            for o in applied.outputs:
                add(o.topic, o.key, o.value, o.headers, partition=o.partition)
            prepared.records.append(rec)
            taken += 1
        if not taken:
            return
        prepared.count += taken
        prepared.next_offset = prepared.records[-1].offset + 1
        # The consumer can hand over records again within one assignment (its position
        # reset to the group's offset, after recovery): never apply an offset twice.
        self.resume = max(resume, prepared.next_offset)

    async def _commit(self, prepared: _Prepared) -> None:
        """Produce a prepared batch (its applied offset goes with its state) in one
        transaction, then write the local store. Raises if Kafka did not commit it."""
        if len(prepared.records) == 1 and self.isolate_until >= prepared.records[0].offset:
            try:
                await self._transact(prepared, alone=True)
            except Exception as exc:  # noqa: BLE001 - classified just below
                if not is_record_refused(exc):
                    raise
                rec = prepared.records[0]
                log.warning(
                    "partition %d offset %d: Kafka refused its output: %s",
                    self.partition,
                    rec.offset,
                    exc,
                )
                await self._transact(self._refused(rec, exc), alone=True)
        else:
            await self._transact(prepared)

    def _refused(self, rec: Any, exc: BaseException) -> _Prepared:
        """A batch holding only the dead letter of ``rec``, whose output Kafka refused."""
        letter = dead_letter(
            self.rules,
            rec,
            InvalidOutput(
                f"Kafka refused what applying this event produces "
                f"({type(exc).__name__}: {exc}); the event is not applied"
            ),
        )
        prepared = self._open(None, 0.0)
        for o in letter.outputs:
            prepared.out.add(o.topic, o.key, o.value, o.headers, partition=o.partition)
        prepared.records.append(rec)
        prepared.count, prepared.next_offset = 1, rec.offset + 1
        prepared.tally[("rejected", "", letter.stage)] = 1
        prepared.letters.append((rec, letter.stage, letter.reason))
        return prepared

    async def _transact(self, prepared: _Prepared, *, alone: bool = False) -> None:
        d, out = self.d, prepared.out
        assert self.member is not None
        next_offset = max(prepared.next_offset, self.committed)
        prepared.batch.applied_up_to(next_offset)
        if self._writer is not None:
            prepared.batch.state_writes[WRITER_KEY] = self._writer
        for key, value in prepared.batch.state_writes.items():
            out.add(d.state.changelog_topic, key, value, partition=self.partition)
        for key, value in prepared.batch.timer_writes.items():
            out.add(d.timers.changelog_topic, key, value, partition=self.partition)
        started = asyncio.get_running_loop().time()
        # The offset applied up to is in the state changelog (applied_up_to), where the
        # lane reads it; the group offset goes in the same transaction, fenced by the
        # generation (agents.transactions).
        written = await d.transactions.commit(
            out, self.partition, next_offset, self.member, alone=alone
        )
        prepared.batch.apply_locally()
        self.committed = next_offset
        if WRITER_KEY in prepared.batch.state_writes:
            self._writer = None
        # Tell Faust's recovery how far the local store has the changelog, so a restart
        # replays only what came after.
        for store in (d.state, d.timers):
            last = written.get((store.changelog_topic, self.partition))
            if last is not None:
                store.set_changelog_offset(self.partition, last)
        d.stats.batches += 1
        d.stats.add(prepared.tally)
        if d.metrics is not None:
            took = asyncio.get_running_loop().time() - started
            d.metrics.committed(prepared.tally, len(prepared.records), took)
        if prepared.letters:
            dead_letter_log.committed(self.partition, prepared.letters)
