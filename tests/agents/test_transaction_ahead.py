"""A transaction opened ahead of its records, on the real broker (``agents.kafka``).

The worker opens its next transaction the moment one commits, with the partitions that
one wrote (``agents.transactions``), so the next batches' records go out without waiting
for AddPartitionsToTxn.
What that must keep: records sent into it commit and are read committed like any
others; one that nothing came for commits empty and the producer goes on; a producer
fenced meanwhile says so (a Kafka error, which the lane recovers from) when its next
transaction is opened or committed, instead of failing on an invalid state; and a producer whose
sender task has ended (aiokafka's sender dies on errors it does not expect, a broker
going away among them) fails what waits on it at once, not after the commit timeout.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import errors as kafka_errors

from agents.kafka import (
    close_producer,
    commit_transaction,
    open_transaction,
    transaction_partitions,
    transactional_producer,
    while_sending,
)
from pipeline.settings import KafkaSettings

pytestmark = pytest.mark.asyncio(loop_scope="function")


async def _committed(bootstrap: str, tp: TopicPartition) -> list[bytes]:
    """Every record of ``tp`` a read_committed consumer sees, to its end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        values = []
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            values += [r.value for r in batch.get(tp, [])]
        return values
    finally:
        await consumer.stop()


async def test_records_sent_into_a_transaction_opened_ahead_commit(
    kafka_bootstrap: str, topic_factory
) -> None:
    a = TopicPartition(await topic_factory("ahead-a", partitions=1), 0)
    b = TopicPartition(await topic_factory("ahead-b", partitions=1), 0)
    kafka = KafkaSettings(bootstrap=kafka_bootstrap)
    producer = await transactional_producer(kafka, f"ahead-{uuid.uuid4().hex}", "test")
    try:
        assert await open_transaction(producer)
        await (await producer.send(a.topic, b"1", partition=0))
        await (await producer.send(b.topic, b"x", partition=0))
        assert transaction_partitions(producer) == {a, b}
        await producer.commit_transaction()
        for i in range(2, 5):
            # Opened ahead with the last one's partitions, as the lane does; opening it
            # again when the batch comes is a no-op.
            assert await open_transaction(producer, [a, b])
            assert not await open_transaction(producer)
            await (await producer.send(a.topic, b"%d" % i, partition=0))
            await producer.commit_transaction()
        # Opened ahead, and nothing came: it commits empty, and the producer goes on.
        assert await open_transaction(producer, [a, b])
        await producer.commit_transaction()
        assert await open_transaction(producer)
        await (await producer.send(a.topic, b"5", partition=0))
        await producer.commit_transaction()
    finally:
        await close_producer(producer)
    assert await _committed(kafka_bootstrap, a) == [b"1", b"2", b"3", b"4", b"5"]
    assert await _committed(kafka_bootstrap, b) == [b"x"]


async def test_a_fenced_producer_says_so_when_its_next_transaction_opens(
    kafka_bootstrap: str, topic_factory
) -> None:
    a = TopicPartition(await topic_factory("fenced", partitions=1), 0)
    kafka = KafkaSettings(bootstrap=kafka_bootstrap)
    txn_id = f"fenced-{uuid.uuid4().hex}"
    old = await transactional_producer(kafka, txn_id, "old owner")
    new: AIOKafkaProducer | None = None
    try:
        await open_transaction(old)
        await (await old.send(a.topic, b"old", partition=0))
        await old.commit_transaction()
        new = await transactional_producer(kafka, txn_id, "new owner")  # fences `old`
        # The old owner's transaction opened ahead: its AddPartitionsToTxn is refused.
        await open_transaction(old, [a])
        with pytest.raises(kafka_errors.KafkaError):
            await old.commit_transaction()
        with pytest.raises(kafka_errors.KafkaError):
            await open_transaction(old)
        # aiokafka itself asserts on a second commit ("Invalid state transition
        # FATAL_ERROR -> COMMITTING_TRANSACTION"): no Kafka error for a lane to recover
        # from. garrison's commit says what failed the producer.
        with pytest.raises(AssertionError):
            await old.commit_transaction()
        with pytest.raises(kafka_errors.KafkaError):
            await commit_transaction(old)
        await open_transaction(new)
        await (await new.send(a.topic, b"new", partition=0))
        await new.commit_transaction()
    finally:
        await close_producer(old)
        if new is not None:
            await close_producer(new)
    assert await _committed(kafka_bootstrap, a) == [b"old", b"new"]


async def test_what_waits_on_a_producer_whose_sender_ended_fails_at_once(
    kafka_bootstrap: str,
) -> None:
    kafka = KafkaSettings(bootstrap=kafka_bootstrap)
    producer = await transactional_producer(kafka, f"sender-{uuid.uuid4().hex}", "test")
    try:
        await open_transaction(producer)
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        producer._sender.sender_task.cancel()  # noqa: SLF001 - as when it dies
        with pytest.raises(kafka_errors.KafkaConnectionError, match="sender stopped"):
            await asyncio.wait_for(while_sending(producer, delivery), 5)
        assert delivery.cancelled()
        with pytest.raises(kafka_errors.KafkaConnectionError, match="sender stopped"):
            await open_transaction(producer)
    finally:
        await close_producer(producer)
