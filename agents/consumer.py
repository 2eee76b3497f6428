"""The worker's Faust consumer, with garrison owning the events partitions' positions.

The events topic's records are lifted out of Faust's fetch loop in bulk and handed to
the dispatcher's lanes, skipping Faust's per-event stream (which measured about 6.8k
events/s here doing nothing at all). The consumer reads read_committed, so recovery
never restores a write from an aborted transaction.

Where a lane starts reading is garrison's, not Faust's. aiokafka moves a partition's
position forward when it hands records out, whoever drops them after; so a worker that
dropped records fetched across a rebalance, and was then not sought back, applied
later records while earlier ones were never applied (events lost in rebalances under
load). Now, on every assignment:

1. the events partitions are paused in aiokafka itself, in the consumer thread, before
   any record of the new assignment can be fetched (:class:`_Listener`);
2. Faust's seek to the group's committed offsets leaves them alone
   (:meth:`ConsumerThread.seek_to_committed`);
3. once the tables are recovered, the dispatcher waits until no open transaction holds
   the partitions' group offsets (``wait_stable``: the previous owner's last
   transaction has ended), catches the stores up with the changelog, and each lane
   seeks its partition to the offset stored with its state and resumes it, in one call
   in the consumer thread (``seek_and_resume``);
4. fetched records go only to a lane activated in the current generation; anything
   else is dropped, which is safe because its partition is paused until a lane seeks it.

The group's offsets of the events partitions are committed inside the worker's
transactions, fenced by the group generation (``agents.group_offsets``): the consumer
never commits them itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.protocol.group import LeaveGroupRequest
from faust.transport.drivers import aiokafka as faust_aiokafka

from agents.group_offsets import (
    GroupInstancesRequest,
    GroupMember,
    StableOffsetFetchRequest,
    group_instances,
    stable_offsets,
)

if TYPE_CHECKING:
    from agents.app import GarrisonApp

__all__ = ["ConsumerThread", "Transport", "consumer_thread"]

log = logging.getLogger(__name__)

_STABLE_RETRY_S = 0.1  # between fetches of offsets an open transaction holds


class _Listener(faust_aiokafka.ConsumerRebalanceListener):
    async def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        assigned = list(assigned)
        app = cast("GarrisonApp", self._thread.app)
        events = app.settings.topics.events
        consumer = self._thread._ensure_consumer()  # noqa: SLF001 - Faust's own helper
        standbys = {(tp.topic, tp.partition) for tp in app.assignor.assigned_standbys()}
        held = [tp for tp in assigned if tp.topic == events or (tp.topic, tp.partition) in standbys]
        if held:
            # aiokafka's own pause: its fetcher neither fetches these nor hands out what
            # it holds for them, and their positions stay where they are. The events
            # partitions wait for their lanes to seek them; standby changelogs are tailed
            # by agents.standby, in bulk, instead of Faust's per-record path.
            consumer.pause(*held)
        _leave_when_closed(consumer._coordinator)  # noqa: SLF001
        await super().on_partitions_assigned(assigned)


def _leave_when_closed(coordinator: Any) -> None:
    """Make a static member leave the group when its consumer closes (SIGTERM), so its
    partitions move at once instead of after the session timeout. aiokafka skips the
    LeaveGroup for static members (a restart should get its partitions back without
    a rebalance, which a crash and restart within the session timeout still does)."""
    if getattr(coordinator, "_garrison_leaves", False):
        return
    stay = coordinator._maybe_leave_group  # noqa: SLF001

    async def leave() -> None:
        if coordinator.generation > 0 and coordinator._group_instance_id is not None:  # noqa: SLF001
            try:
                await coordinator._send_req(  # noqa: SLF001
                    LeaveGroupRequest(coordinator.group_id, coordinator.member_id)
                )
            except KafkaError as err:
                log.warning("leaving the group failed (%s); the session timeout applies", err)
        await stay()

    coordinator._maybe_leave_group = leave  # noqa: SLF001
    coordinator._garrison_leaves = True  # noqa: SLF001


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, with what the dispatcher and its lanes ask of the events
    partitions: ``seek_and_resume``, ``hold``, ``member``, ``instances``,
    ``wait_stable``."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Our dispatcher commits state and output in transactions; the
        # changelogs must be read committed-only or recovery could restore aborted writes.
        consumer._isolation_level = "read_committed"  # noqa: SLF001 - no public knob
        # Faust hard-codes a 1.5 s long poll. A partition resumed (a lane that has just
        # sought it) is not fetched until the poll in flight returns, so every start and
        # every recovery step waited up to 1.5 s for it; 100 ms costs a few idle
        # fetches a second.
        consumer._fetch_max_wait_ms = 100  # noqa: SLF001 - no public knob
        return consumer

    async def seek_to_committed(self) -> Any:
        consumer = self._ensure_consumer()
        events = cast("GarrisonApp", self.app).settings.topics.events
        others = [tp for tp in consumer.assignment() if tp.topic != events]
        if not others:  # aiokafka asserts on an empty list
            return {}
        return await self.call_thread(consumer.seek_to_committed, *others)

    def _owned(self, partition: int, generation: int) -> tuple[Any, TopicPartition] | None:
        """The consumer and the events ``partition``, if this worker owns it in
        ``generation``; None if not (a new rebalance is under way). Called in the
        consumer thread, with no await between it and what it guards: no rebalance can
        slip in between."""
        consumer = self._ensure_consumer()
        tp = TopicPartition(cast("GarrisonApp", self.app).settings.topics.events, partition)
        if consumer._coordinator.generation != generation:  # noqa: SLF001
            return None
        return (consumer, tp) if tp in consumer.assignment() else None

    async def seek_and_resume(self, partition: int, offset: int, generation: int) -> bool:
        """Seek the events ``partition`` to ``offset`` and resume it, if this worker
        still owns it in ``generation``; False if not (a new rebalance is under way)."""

        async def seek() -> bool:
            if (owned := self._owned(partition, generation)) is None:
                return False
            consumer, tp = owned
            consumer.seek(tp, max(offset, 0))
            consumer.resume(tp)
            return True

        return bool(await self.call_thread(seek))

    async def hold(self, partition: int, held: bool, generation: int) -> None:
        """Pause (``held``) or resume the events ``partition`` for a lane whose inbox is
        full or has room again, if this worker still owns it in ``generation``: a lane
        of an earlier generation never touches the partition of the current one."""

        async def valve() -> None:
            if (owned := self._owned(partition, generation)) is None:
                return
            consumer, tp = owned
            # aiokafka's pause drops what its fetcher holds for the partition and keeps
            # the position after the last record handed out (in the lane's inbox); the
            # resume fetches from there, which also wakes the fetch loop.
            if held:
                consumer.pause(tp)
            else:
                consumer.resume(tp)

        await self.call_thread(valve)

    async def member(self, generation: int) -> GroupMember | None:
        """Who this worker is in the group in ``generation`` (what its transactions'
        offsets are fenced by, ``agents.group_offsets``); None if the group has moved on."""

        async def who() -> GroupMember | None:
            coordinator = self._ensure_consumer()._coordinator  # noqa: SLF001
            if coordinator.generation != generation:
                return None
            return GroupMember(
                coordinator.group_id,
                generation,
                coordinator.member_id,
                coordinator._group_instance_id,  # noqa: SLF001
            )

        return cast("GroupMember | None", await self.call_thread(who))

    async def instances(self, generation: int) -> set[str] | None:
        """The group.instance.id of every worker in the group (DescribeGroups v4, which
        lists the members of the group's current generation); None if the group has
        moved on from ``generation`` or the coordinator did not answer."""
        coordinator = self._ensure_consumer()._coordinator  # noqa: SLF001
        if coordinator.generation != generation:
            return None

        async def describe() -> set[str]:
            return group_instances(
                await coordinator._send_req(GroupInstancesRequest(coordinator.group_id))  # noqa: SLF001
            )

        try:
            found: set[str] = await self.call_thread(describe)
        except KafkaError as exc:
            log.info("describing the group failed: %r", exc)
            return None
        return found if coordinator.generation == generation else None

    async def wait_stable(self, partitions: set[int], generation: int) -> dict[int, int] | None:
        """Wait until no open transaction holds group offsets of these events partitions
        (OffsetFetch with require_stable, ``agents.group_offsets``), and return them
        (partition -> the next offset to read, -1 for none): a transaction the previous
        owner committed offsets in before the generation moved has then ended. None if
        the group moves on meanwhile."""
        if not partitions:
            return {}
        events = cast("GarrisonApp", self.app).settings.topics.events
        coordinator = self._ensure_consumer()._coordinator  # noqa: SLF001
        request = StableOffsetFetchRequest(coordinator.group_id, events, partitions)
        waited = False

        async def fetch() -> dict[int, int] | None:
            return stable_offsets(await coordinator._send_req(request))  # noqa: SLF001

        while True:
            if coordinator.generation != generation:
                return None
            try:
                found: dict[int, int] | None = await self.call_thread(fetch)
                if found is not None:
                    if waited:
                        log.info("partitions %s: the open transaction ended", sorted(partitions))
                    return found
                if not waited:
                    log.info(
                        "partitions %s: waiting for a transaction that holds their group "
                        "offsets to end",
                        sorted(partitions),
                    )
            except KafkaError as exc:
                log.info("fetching stable offsets of %s failed, retrying: %r", partitions, exc)
            waited = True
            await asyncio.sleep(_STABLE_RETRY_S)


class _Consumer(faust_aiokafka.Consumer):
    RebalanceListener = _Listener

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _wait_next_records(self, timeout: float) -> Any:
        records, active = await super()._wait_next_records(timeout)
        if records:
            app = cast("GarrisonApp", self.app)
            events = app.settings.topics.events
            generation = app.consumer_generation_id  # after the fetch, as Faust reads it
            dispatcher = app.dispatcher
            for tp in [tp for tp in records if tp.topic == events]:
                chunk = records.pop(tp)  # type: ignore[attr-defined]  # a dict at run time
                lane = dispatcher.lane(tp.partition)
                if lane is not None and lane.generation == generation and lane.serving:
                    lane.offer(chunk)
        return records, active


class Transport(faust_aiokafka.Transport):
    """The aiokafka transport with garrison's consumer."""

    Consumer = _Consumer


def consumer_thread(app: GarrisonApp) -> ConsumerThread:
    """``app``'s consumer thread (Faust makes it when the consumer starts)."""
    return cast(ConsumerThread, app.consumer._thread)  # type: ignore[attr-defined]  # noqa: SLF001
