"""Group offsets in transactions, fenced by the group generation (KIP-447), on the real
broker (``agents.group_offsets``).

The worker's one transactional producer is fenced through the consumer group, not by
a partition's transactional id: a transaction whose offsets name a generation the group
has left cannot commit, so nothing it wrote is ever read committed; and a new owner's
stable fetch of the offsets waits while a transaction holding them is open.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.group_offsets import (
    GroupInstancesRequest,
    GroupMember,
    OffsetsRefused,
    StableOffsetFetchRequest,
    fence_offsets_by_generation,
    group_instances,
    send_offsets,
    stable_offsets,
)
from agents.kafka import (
    close_producer,
    commit_transaction,
    open_transaction,
    transactional_producer,
)
from pipeline.settings import KafkaSettings, Settings
from tests.agents.test_transaction_ahead import _committed
from tests.harness import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="function")


def _member(consumer: AIOKafkaConsumer) -> GroupMember:
    c = consumer._coordinator  # noqa: SLF001
    return GroupMember(c.group_id, c.generation, c.member_id, c._group_instance_id)  # noqa: SLF001


async def _joined(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    return consumer


async def _producer(
    bootstrap: str, member: Callable[[], GroupMember], txn_id: str | None = None
) -> AIOKafkaProducer:
    kafka = KafkaSettings(bootstrap=bootstrap)
    producer = await transactional_producer(kafka, txn_id or f"fence-{uuid.uuid4().hex}", "test")
    fence_offsets_by_generation(producer, member)
    return producer


async def test_a_transaction_with_offsets_of_a_generation_the_group_left_cannot_commit(
    kafka_bootstrap: str, topic_factory, unique: Callable[[str], str]
) -> None:
    events = await topic_factory("fence-events", partitions=2)
    out = TopicPartition(await topic_factory("fence-out", partitions=1), 0)
    group = unique("fence-group")
    first = await _joined(kafka_bootstrap, events, group)
    second = None
    zombie = owner = None
    try:
        await wait_until(
            lambda: len(first.assignment()) == 2, timeout_s=30, what="the first member assigned"
        )
        old = _member(first)
        # A second member joins: the group moves to a new generation, and the first
        # member's old one is what a zombie worker would still name.
        second = await _joined(kafka_bootstrap, events, group)
        await wait_until(
            lambda: second.assignment() and _member(second).generation > old.generation,
            timeout_s=30,
            what="the group's next generation",
        )
        zombie = await _producer(kafka_bootstrap, lambda: old)
        await open_transaction(zombie)
        await (await zombie.send(out.topic, b"zombie", partition=0))
        with pytest.raises(OffsetsRefused, match="ILLEGAL_GENERATION"):
            await send_offsets(zombie, {TopicPartition(events, 0): 5}, group)
        with pytest.raises(OffsetsRefused):
            await commit_transaction(zombie)  # it can only abort
        # As the worker does (agents.transactions): a new producer of the same id, whose
        # init_transactions aborts what the failed one left open. (aiokafka's own abort
        # of a transaction in error sends no EndTxn: it forgot the partitions.)
        zombie_id = zombie._txn_manager.transactional_id  # noqa: SLF001
        await close_producer(zombie)
        zombie = await _producer(kafka_bootstrap, lambda: old, zombie_id)

        current = _member(second)
        owner = await _producer(kafka_bootstrap, lambda: current)
        await open_transaction(owner)
        await (await owner.send(out.topic, b"owner", partition=0))
        mine = next(iter(second.assignment()))
        await send_offsets(owner, {mine: 7}, group)
        await commit_transaction(owner)
        seen: list[bytes] = []
        for _ in range(50):  # EndTxn returns before the markers are written
            if seen := await _committed(kafka_bootstrap, out):
                break
            await asyncio.sleep(0.1)
        assert seen == [b"owner"]
        committed = await second.committed(mine)
        assert committed == 7
    finally:
        for p in (zombie, owner):
            if p is not None:
                await close_producer(p)
        for c in (first, second):
            if c is not None:
                await c.stop()


async def test_a_stable_fetch_of_offsets_waits_for_the_transaction_holding_them(
    kafka_bootstrap: str, topic_factory, unique: Callable[[str], str]
) -> None:
    events = await topic_factory("stable-events", partitions=2)
    group = unique("stable-group")
    consumer = await _joined(kafka_bootstrap, events, group)
    producer = None
    try:
        await wait_until(
            lambda: len(consumer.assignment()) == 2, timeout_s=30, what="the member assigned"
        )
        member = _member(consumer)
        coordinator = consumer._coordinator  # noqa: SLF001
        request = StableOffsetFetchRequest(group, events, [0, 1])

        async def fetch() -> dict[int, int] | None:
            return stable_offsets(await coordinator._send_req(request))  # noqa: SLF001

        assert await fetch() == {0: -1, 1: -1}
        producer = await _producer(kafka_bootstrap, lambda: member)
        await open_transaction(producer)
        await send_offsets(producer, {TopicPartition(events, 0): 3}, group)
        assert await fetch() is None  # the open transaction holds partition 0's offset
        await asyncio.sleep(0.5)
        assert await fetch() is None
        await commit_transaction(producer)
        found = None
        for _ in range(50):
            found = await fetch()
            if found is not None:
                break
            await asyncio.sleep(0.1)
        assert found == {0: 3, 1: -1}
    finally:
        if producer is not None:
            await close_producer(producer)
        await consumer.stop()


async def test_the_group_names_the_workers_in_it_by_their_transactional_ids(
    kafka_bootstrap: str, topic_factory, unique: Callable[[str], str]
) -> None:
    # A new owner fences a previous owner's transactional id at once when that worker
    # is not in the group (agents.dispatch): the group's answer must name it.
    events = await topic_factory("members-events", partitions=2)
    app = unique("members")
    here, gone = Settings(app=app, worker_id="w1"), Settings(app=app, worker_id="w2")
    consumer = AIOKafkaConsumer(
        events,
        bootstrap_servers=kafka_bootstrap,
        group_id=app,
        group_instance_id=here.group_instance_id,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        await wait_until(
            lambda: len(consumer.assignment()) == 2, timeout_s=30, what="the member assigned"
        )
        coordinator = consumer._coordinator  # noqa: SLF001
        members = group_instances(await coordinator._send_req(GroupInstancesRequest(app)))  # noqa: SLF001
        assert members == {here.group_instance_id}
        assert here.group_instance_of(here.transactional_id) in members
        assert here.group_instance_of(gone.transactional_id) not in members
        assert here.group_instance_of("other.dispatch.w1") is None  # not this app's
    finally:
        await consumer.stop()
