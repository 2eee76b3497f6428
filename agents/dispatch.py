"""The dispatcher: the lanes of the partitions this worker owns, and what they counted.

Records of ``<app>.events`` arrive in bulk from the worker's Faust consumer (see
``agents.app``), never through Faust's per-event stream, and go to the lane of their
partition (``agents.lane``): it applies them with the pure decision
(``pipeline.decision``) and commits each batch in the worker's stream of transactions
(``agents.transactions``: one producer for every lane), with the partition's group
offset, fenced by the group generation. Where a lane reads is the offset stored with
its state; records a new owner reads below it are skipped unopened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agents.consumer import ConsumerThread
from agents.kafka import close_producer, kafka_options, transactional_producer
from agents.lane import Lane
from agents.logs import announce_ready
from agents.metrics import Tally, WorkerMetrics
from agents.tracing import Tracing
from agents.transactions import Transactions
from pipeline.decision import Rules, Verdict
from pipeline.registry import Registry
from pipeline.settings import Settings
from tables.batch import applied_offset
from tables.changelog import held_open
from tables.keys import WRITER_KEY
from tables.store import PartitionStore

__all__ = ["DispatchStats", "Dispatcher"]

log = logging.getLogger(__name__)


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
    forwarded: int = 0  # records on another partition than their tenant's, sent on
    dead_letters: int = 0
    batches: int = 0

    def add(self, tally: Tally) -> None:
        """Add a committed batch's counts (keys start with the verdict)."""
        for key, n in tally.items():
            name = _COUNTER[key[0]]  # type: ignore[index]  # a Verdict
            setattr(self, name, getattr(self, name) + n)


_COUNTER: dict[Verdict, str] = {
    "applied": "applied",
    "duplicate": "duplicates",
    "stale": "stale",
    "rearmed": "rearmed",
    "expired": "expired",
    "purged": "purged",
    "forwarded": "forwarded",
    "rejected": "dead_letters",
}


class Dispatcher:
    """Owns the lanes of the partitions this worker is assigned."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        state: PartitionStore,
        timers: PartitionStore,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.state = state
        self.timers = timers
        self.rules = Rules(
            registry,
            settings.topics,
            keep_ids=settings.dedupe_ids,
            tombstone_ms=settings.tombstone_ms,
            service_topics=registry.service_topics,
            max_record_bytes=settings.max_record_bytes,
            partitioning=settings.partitioning,
        )
        self.stats = DispatchStats()
        # Set by the worker app: None when metrics or tracing are off (agents.metrics,
        # agents.tracing).
        self.metrics: WorkerMetrics | None = None
        self.tracing: Tracing | None = None
        self._lanes: dict[int, Lane] = {}
        self.transactions = Transactions(settings, on_failure=self.fail)
        self.failed = asyncio.Event()
        self.on_failure: Callable[[], None] | None = None
        # Hooks the worker app sets: bring the local stores of some partitions up to
        # their changelogs' ends; the consumer thread, which seeks, pauses and resumes
        # the events partitions, each only for the generation that asks, and says who
        # the worker is in the group (agents.consumer).
        self.catch_up: Callable[..., Awaitable[None]] = _nothing
        self.consumer: Callable[[], ConsumerThread] = _no_consumer
        self.generation = -1  # the generation the lanes were last activated for
        self.active = asyncio.Event()  # every lane of that generation serves

    @property
    def partitions(self) -> set[int]:
        """Partitions with a running lane."""
        return set(self._lanes)

    def lane(self, partition: int) -> Lane | None:
        """The lane of ``partition``, if any."""
        return self._lanes.get(partition)

    async def activate(self, partitions: set[int], generation: int) -> None:
        """Start the lanes of ``partitions`` for ``generation``, after the tables are
        recovered: wait until the previous owners' transactions holding their offsets
        have ended (``ConsumerThread.wait_stable``), catch the stores up with what they
        committed meanwhile, then seek each partition to its stored offset."""
        if generation == self.generation and self.active.is_set():
            return  # this generation's lanes serve already
        self.generation = generation
        self.active.clear()
        await self.transactions.start()
        stale = {p for p, lane in self._lanes.items() if lane.generation != generation}
        await self.revoke(stale | (set(self._lanes) - partitions))
        # A lane of this generation that a cancelled activation left behind is redone.
        await self.revoke({p for p, lane in self._lanes.items() if not lane.serving})
        lanes = []
        for p in sorted(partitions):
            if p not in self._lanes:
                lanes.append(self._lanes.setdefault(p, Lane(self, p, generation)))
        taken = {lane.partition for lane in lanes}
        # The stores are as recovery left them: their WRITER_KEY names the last writer.
        await self._end_open_transactions(taken, generation)
        stable = await self.consumer().wait_stable(taken, generation)
        await self._caught_up(taken, stable or {})
        began = await asyncio.gather(*(lane.begin() for lane in lanes))
        if all(began) and self.generation == generation:
            self.active.set()
            log.info("serving partitions %s", sorted(partitions) or "none")
            announce_ready(self.settings, sorted(partitions))

    async def _end_open_transactions(self, partitions: set[int], generation: int) -> None:
        """End a transaction the previous owners of ``partitions`` may have left open,
        by initialising their transactional ids (which fences them and aborts the
        transaction at once): a previous owner no longer in the group at once, and one
        still in it only if its transaction still holds the partitions' changelogs
        after ``_OPEN_GRACE_S``.

        A worker killed in the middle of a transaction leaves it open until the broker's
        transaction timeout (and the broker looks only every
        ``transaction.abort.timed.out.transaction.cleanup.interval.ms``, 10 s by
        default): its records hold back every read_committed reader of those
        partitions, and its offsets this worker's stable fetch. Measured, a standby took
        18.5 s to serve the partitions of a worker SIGKILLed under load, against a target
        of 10; and 19.3 s when only the ends of the changelogs were looked at, because
        the dead worker's offsets had reached the group coordinator while its records
        were still being retried (NOT_ENOUGH_REPLICAS while the broker verifies the
        partition is in the transaction, KIP-890): nothing held the changelogs, and the
        offsets were held until the transaction timed out.

        A previous owner still in the group has stopped its lanes before it rejoined
        (the group's rebalances are eager), but a commit may still be under way:
        fencing it would make that worker wait a session timeout before it commits
        again. The previous owner is the last writer the stores name (``WRITER_KEY``);
        one that died in its first transaction on a partition is not named, and its
        transaction is left to the broker's timeout."""
        mine = self.transactions.transactional_id.encode()
        writers: dict[str, set[int]] = {}
        for p in partitions:
            last = self.state.get(p, WRITER_KEY)
            if last is not None and last != mine:
                writers.setdefault(last.decode(errors="replace"), set()).add(p)
        if not writers:
            return
        members = await self.consumer().instances(generation)
        topics = (self.state.changelog_topic, self.timers.changelog_topic)
        options = kafka_options(self.settings.kafka)
        for name, written in sorted(writers.items()):
            if members is not None and self.settings.group_instance_of(name) not in members:
                why = "it is no longer in the group"
            else:
                wanted = [(t, p) for t in topics for p in written]
                if not await held_open(options, wanted, within=_OPEN_GRACE_S):
                    continue
                why = "its transaction still holds their changelogs"
            log.warning(
                "partitions %s: fencing their last writer, %s, which may have left a "
                "transaction open (%s)",
                sorted(written),
                name,
                why,
            )
            await close_producer(
                await transactional_producer(self.settings.kafka, name, f"fencing {name}")
            )

    async def _caught_up(self, partitions: set[int], offsets: dict[int, int]) -> None:
        """Catch the stores of ``partitions`` up with their changelogs until each is
        applied up to at least its group offset (``offsets``, from the stable fetch).

        The group offset and the applied offset stored with the state are written in
        the same transactions, but the group's offsets are stable once the commit
        marker on ``__consumer_offsets`` is written, and each changelog partition's
        marker is written on its own (by another broker, in a cluster): until it is, the
        catch-up does not see that transaction, and the lane would apply its events
        again. A group offset that no changelog ever reaches (reset by hand) is waited
        for at most ``_BARRIER_S``, and then the stored offset is where the lane reads."""
        deadline = asyncio.get_running_loop().time() + _BARRIER_S
        caught_up = False
        while True:
            behind = {
                p: offset
                for p, offset in offsets.items()
                if offset > 0 and applied_offset(self.state, p) < offset
            }
            if not behind:
                # Recovery has just brought both stores to their changelogs' ends; a
                # store applied up to its group offset holds every transaction that
                # committed offsets for it, so a catch-up would find nothing. It costs
                # four consumers' start-ups: in a CI run where a standby took 11.2 s
                # to serve (target 10), 2.0 s passed between fencing the dead worker
                # and serving, against 0.1 s on an idle machine.
                return
            if caught_up and asyncio.get_running_loop().time() > deadline:
                log.warning(
                    "the group's offsets of partitions %s are ahead of the offsets stored "
                    "with their state, %s; the stored offsets decide where they are read "
                    "(were the group's offsets reset by hand?)",
                    behind,
                    {p: applied_offset(self.state, p) for p in behind},
                )
                return
            if caught_up:
                await asyncio.sleep(_BARRIER_POLL_S)
            await self.catch_up(partitions)
            caught_up = True

    async def revoke(self, partitions: set[int]) -> None:
        """Stop the lanes of revoked partitions; their uncommitted work is aborted and
        will be consumed by the new owner from the offset stored with the state."""
        if partitions & set(self._lanes):
            self.active.clear()
        lanes = [self._lanes.pop(p) for p in partitions if p in self._lanes]
        await asyncio.gather(*(lane.stop() for lane in lanes), return_exceptions=True)

    async def stop(self) -> None:
        """Stop every lane, then the worker's transactions."""
        await self.revoke(set(self._lanes))
        await self.transactions.stop()

    def fail(self) -> None:
        """A lane hit an unrecoverable error: tell the worker, which stops."""
        self.failed.set()
        if self.on_failure is not None:
            self.on_failure()


_BARRIER_S = 10.0  # how long a group offset ahead of the changelog is waited for
_OPEN_GRACE_S = 1.0  # how long the previous owner's open transaction may end on its own
_BARRIER_POLL_S = 0.05


async def _nothing(partitions: set[int], *, settled: bool = False) -> None:
    return None


def _no_consumer() -> ConsumerThread:
    raise RuntimeError("the dispatcher has no consumer: agents.app.create_app sets it")
