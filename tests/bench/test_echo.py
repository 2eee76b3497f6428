"""The kv part's echo loop, the floor of an answered write: what it reads, it sends on."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.echo import ECHO_CONSUMER, ECHO_PRODUCER, echo
from tests.conftest import TopicFactory

pytestmark = pytest.mark.asyncio(loop_scope="function")


async def test_each_request_comes_back_on_the_reply_topic(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    requests, replies = await topic_factory("requests"), await topic_factory("replies")
    answers = AIOKafkaConsumer(
        replies, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", **ECHO_CONSUMER
    )
    client = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, **ECHO_PRODUCER)
    stop = asyncio.Event()
    loop = asyncio.create_task(echo(kafka_bootstrap, requests, replies, stop))
    await answers.start()
    await client.start()
    try:
        sent, got = {b"r%d" % i for i in range(20)}, set()
        async with asyncio.timeout(60):
            while not got >= sent:  # it reads from the end: resend until it is up
                for token in sent - got:
                    await client.send(requests, token, key=token)
                batch = await answers.getmany(timeout_ms=500)
                got |= {rec.value for records in batch.values() for rec in records}
        assert got == sent
    finally:
        stop.set()
        await asyncio.wait_for(loop, 10)
        await client.stop()
        await answers.stop()
