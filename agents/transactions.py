"""The worker's one transactional producer, and the one stream of transactions every
lane's batches go out in.

A lane (``agents.lane``) applies its partition's records into batches; each batch, with
its changelog records and the group offset it applies the partition up to, is handed to
:meth:`Transactions.commit`. While a transaction is in flight, batches of any lane queue;
the moment it has committed, the next transaction takes every queued batch. So the
transactions per second, and the broker's work for them, follow the load and no longer
the number of partitions: with a producer per partition, one worker owning 32 partitions
at 2,000 events/s ran 393 transactions/s and p99 336 ms, against 265/s and 90 ms with 4
(bench/README.md, one transaction stream per worker). The next transaction is opened
the moment one commits, with the partitions that one wrote and the consumer group
(AddPartitionsToTxn, AddOffsetsToTxn), so a batch waits only for its records, the
TxnOffsetCommit sent alongside them, and EndTxn.

Fencing. The transactional id is the worker's (``<app>.dispatch.<member id>``, stable
across restarts of the same worker, so a restart's ``init_transactions`` ends what the
crashed process left open). A new owner of a partition fences the old one through the
consumer group instead (KIP-447, ``agents.group_offsets``): every transaction carries
its batches' group offsets in a TxnOffsetCommit naming the generation they were applied
in, which the group refuses once the generation has moved, and the new owner waits for
the offsets to be stable before it reads the changelog.

When a transaction fails, the producer is replaced (its ``init_transactions`` settles
the failed transaction), and then every batch in it fails; each lane puts its records
back and learns from the changelog what is applied (``Lane._resync``). A record Kafka
refuses fails its own batch with that refusal and the others with
:class:`TransactionAborted`, which they simply redo.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias, cast

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka import errors as kafka_errors

from agents.group_offsets import (
    GroupMember,
    add_group,
    fence_offsets_by_generation,
    send_offsets,
)
from agents.kafka import (
    close_producer,
    commit_transaction,
    forget_failure,
    is_record_refused,
    open_transaction,
    transaction_partitions,
    transactional_producer,
    while_sending,
)
from agents.outbox import Outbox
from pipeline.settings import Settings

__all__ = ["COMMIT_TIMEOUT_S", "TransactionAborted", "Transactions"]

log = logging.getLogger(__name__)

# A transaction that has not committed in this long is given up (and redone): with a
# broker that is down, aiokafka's transactional sends never expire on their own.
COMMIT_TIMEOUT_S = 60.0
# The producer opens its next transaction the moment one commits, adding the partitions
# that one wrote, so the next batches do not wait for AddPartitionsToTxn (and its
# retries while the last commit's markers are written: CONCURRENT_TRANSACTIONS).
# Measured with four producers at 50 transactions/s each on the local broker, beside an
# echo at 200/s: a batch readable (read_committed) after 3.7-5.0 ms at p50 instead of
# 4.8-7.0, p99 7.1-14.9 instead of 10.4-17.4 (bench/README.md, answered writes). One
# left empty this long is committed empty: the broker's transaction timeout counts from
# its opening, so a batch that comes just before still has 8 s of it.
AHEAD_IDLE_S = 2.0
# The broker aborts a transaction left open this long. A worker that dies for good
# leaves its last transaction open: what it wrote holds back read_committed readers of
# those partitions, and its offsets hold back the partitions' new owner, until then.
# Kafka Streams' exactly-once default; the broker checks every
# transaction.abort.timed.out.transaction.cleanup.interval.ms (10 s by default).
TRANSACTION_TIMEOUT_MS = 10_000
# A stopping worker (SIGTERM, a deploy) lets the transaction in flight end for this
# long before it aborts it: left open, it would hold the partitions' new owners back
# until the broker's transaction timeout.
_STOP_GRACE_S = 5.0


Written: TypeAlias = dict[tuple[str, int], int]  # the last offset written per (topic, partition)


class TransactionAborted(kafka_errors.KafkaError):  # type: ignore[misc]
    """The transaction a batch was in failed for another batch's records: redo it."""

    retriable = True


@dataclass(slots=True, eq=False)
class _Part:
    """One lane's batch, waiting for or in a transaction."""

    out: Outbox
    partition: int
    offset: int  # the group offset to commit: the next events offset to read
    member: GroupMember
    alone: bool  # in a transaction of its own (a lane isolating a refused record)
    done: asyncio.Future[dict[tuple[str, int], int]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Transactions:
    """The worker's transactional producer and its stream of transactions:
    :meth:`start`, :meth:`commit` from any lane, :meth:`stop`."""

    def __init__(self, settings: Settings, on_failure: Callable[[], None]) -> None:
        self.settings = settings
        self._on_failure = on_failure  # the stream ended on an error of its own: a bug
        self.transactional_id = settings.transactional_id
        self.producer: AIOKafkaProducer | None = None
        self._queue: list[_Part] = []
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()  # the producer is up (not being replaced)
        self._task: asyncio.Task[None] | None = None
        self._ahead = False  # the producer's transaction is open and empty
        self._idle = asyncio.Event()  # no transaction with batches in flight
        self._idle.set()
        self._member: GroupMember | None = None  # whose offsets the open one carries

    async def start(self) -> None:
        """Initialise the producer (fencing this worker's previous process) and run."""
        if self._task is None:
            self.producer = await self._new_producer()
            self._ready.set()
            self._task = asyncio.create_task(self._run(), name="transactions")
            self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # Every lane would wait for its batch for ever: stop the worker, loudly.
            log.error("the worker's transactions failed; stopping", exc_info=task.exception())
            self._on_failure()

    async def stop(self) -> None:
        """Stop: the transaction in flight may end (for ``_STOP_GRACE_S``), then what is
        still open is aborted and queued batches fail."""
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), _STOP_GRACE_S)
            task.remove_done_callback(self._ended)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for part in self._queue:
            if not part.done.done():
                part.done.cancel()
        self._queue.clear()
        producer, self.producer = self.producer, None
        if producer is not None:
            # Opened ahead, or cut short: end it here rather than leave it to the broker's
            # timeout (a commit under way cannot be aborted; it ends on its own).
            with contextlib.suppress(Exception):  # TimeoutError among them
                if producer._txn_manager.is_in_transaction():  # noqa: SLF001
                    await asyncio.wait_for(producer.abort_transaction(), 2.0)
            await close_producer(producer)

    async def commit(
        self, out: Outbox, partition: int, offset: int, member: GroupMember, *, alone: bool
    ) -> dict[tuple[str, int], int]:
        """Commit ``out`` with the group ``offset`` of ``partition`` in the next
        transaction; the last offset written per (topic, partition). Raises what failed
        the transaction, once the producer is replaced."""
        part = _Part(out, partition, offset, member, alone)
        self._queue.append(part)
        self._wake.set()
        return await part.done

    async def partitions_for(self, topic: str) -> int:
        """How many partitions ``topic`` has."""
        await self._ready.wait()
        assert self.producer is not None
        return len(await self.producer.partitions_for(topic))

    # -- the stream -----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            parts = await self._take()
            if not parts:
                continue
            self._idle.clear()
            try:
                written = await self._transact(parts)
            except Exception as exc:  # noqa: BLE001 - classified for each batch below
                await self._recover(exc)
                self._idle.set()
                for part, error in zip(parts, self._errors(parts, exc), strict=True):
                    if not part.done.done():
                        part.done.set_exception(error)
                continue
            self._idle.set()
            for part in parts:
                if not part.done.done():
                    part.done.set_result(written.pop(id(part)))

    async def _take(self) -> list[_Part]:
        """The batches of the next transaction: a lone one, or every queued one applied
        in the first one's generation."""
        while not self._queue:
            self._wake.clear()
            idle = AHEAD_IDLE_S if self._ahead else None
            try:
                await asyncio.wait_for(self._wake.wait(), idle)
            except TimeoutError:
                await self._close_ahead()
        queue = [p for p in self._queue if not p.done.done()]  # a stopped lane's: dropped
        if not queue:
            self._queue = []
            return []
        first = queue[0]
        if first.alone:
            taken = [first]
        else:
            taken = [p for p in queue if not p.alone and p.member == first.member]
        chosen = {id(p) for p in taken}
        self._queue = [p for p in queue if id(p) not in chosen]
        return taken

    async def _transact(self, parts: list[_Part]) -> dict[int, dict[tuple[str, int], int]]:
        producer = self.producer
        assert producer is not None
        member = parts[0].member
        events = self.settings.topics.events
        offsets = {TopicPartition(events, p.partition): max(p.offset, 0) for p in parts}
        async with asyncio.timeout(COMMIT_TIMEOUT_S):
            # Not `async with producer.transaction()`: its abort on the way out can wait
            # for ever on a broker that is gone. A failed producer is replaced instead,
            # and the new one's init_transactions aborts what this one left open.
            await open_transaction(producer)
            self._ahead = False
            self._member = member  # named by the TxnOffsetCommit sent below
            # The records of every batch and the offsets go out together: the sender
            # sends AddOffsetsToTxn and TxnOffsetCommit while the records are produced.
            flushes = [asyncio.ensure_future(p.out.flush(producer)) for p in parts]
            offered = asyncio.ensure_future(send_offsets(producer, offsets, member.group_id))
            steps = [*flushes, offered]
            try:
                results = await while_sending(
                    producer, asyncio.gather(*steps, return_exceptions=True)
                )
            finally:
                for step in steps:
                    step.cancel()  # the sender died: nothing of them will complete
            own = {
                id(p): r
                for p, r in zip(parts, results, strict=False)
                if isinstance(r, BaseException)
            }
            if own or isinstance(results[-1], BaseException):
                first = next(r for r in results if isinstance(r, BaseException))
                raise _BatchesFailed(own, first)
            partitions = transaction_partitions(producer)
            await commit_transaction(producer)
        # Committed: whatever happens to the next one cannot undo these batches (a
        # failure here surfaces again in the next transaction's open_transaction).
        with contextlib.suppress(Exception):
            await open_transaction(producer, partitions)
            add_group(producer, member.group_id)
            self._ahead = True
        return {id(p): cast(Written, r) for p, r in zip(parts, results[:-1], strict=True)}

    async def _close_ahead(self) -> None:
        """Commit the transaction opened ahead, which no batch came for."""
        producer, self._ahead = self.producer, False
        assert producer is not None
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT_S):
                await commit_transaction(producer)
        except Exception as exc:  # noqa: BLE001 - no batch in it: replace the producer
            await self._recover(exc)

    def _errors(self, parts: list[_Part], exc: Exception) -> list[BaseException]:
        """What each batch of a failed transaction fails with."""
        if not isinstance(exc, _BatchesFailed):
            return [exc] * len(parts)
        own = exc.by_part
        # A refused record fails its own batch with the refusal (the lane isolates the
        # event that made it) and the others with a plain retry.
        return [
            own[id(p)]
            if id(p) in own and is_record_refused(own[id(p)])
            else TransactionAborted(f"another batch's records were refused: {exc.cause!r}")
            if is_record_refused(exc.cause)
            else exc.cause
            for p in parts
        ]

    async def _recover(self, exc: Exception) -> None:
        cause = exc.cause if isinstance(exc, _BatchesFailed) else exc
        if isinstance(cause, kafka_errors.ProducerFenced | kafka_errors.InvalidProducerEpoch):
            # Another process initialised this worker's transactional id: the same
            # worker started again (then this one is a zombie that the group is about
            # to drop) or, after a transaction timed out, the coordinator. Initialising
            # at once would fence the new process in turn; wait until the group has
            # settled.
            wait = self.settings.session_timeout_s + 1
            log.warning("transactions fenced (%s); retrying in %.0f s", cause, wait)
            await asyncio.sleep(wait)
        # The old producer stays `producer` until the new one is up (lanes make their
        # record batches with it meanwhile, which needs no broker), but nothing is
        # sent with it any more.
        self._ahead = False
        self._ready.clear()
        old = self.producer
        if old is not None:
            forget_failure(old)  # reported here, through the batches that failed
            # Do not wait for it: with the broker down its close would wait too.
            asyncio.ensure_future(close_producer(old))
        self.producer = await self._new_producer()
        self._ready.set()

    async def _new_producer(self) -> AIOKafkaProducer:
        producer = await transactional_producer(
            self.settings.kafka,
            self.transactional_id,
            "transactions",
            transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
        )
        fence_offsets_by_generation(producer, self._current_member)
        return producer

    def _current_member(self) -> GroupMember:
        assert self._member is not None
        return self._member


class _BatchesFailed(Exception):
    """Some batches' records or the offsets were not sent; ``by_part``: each failed
    batch's error (by id), ``cause``: the first error."""

    def __init__(self, by_part: dict[int, BaseException], cause: BaseException) -> None:
        super().__init__(repr(cause))
        self.by_part = by_part
        self.cause = cause
