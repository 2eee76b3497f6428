"""Create garrison's topics explicitly, with the app's partition count.

Faust's table changelogs must have as many partitions as the events topic; a topic
auto-created by the broker with its default count makes Faust fail with
PartitionsMismatch. So every topic is created up front, idempotently.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from agents.kafka import kafka_options
from pipeline.settings import Settings

__all__ = ["ensure_topics"]


async def ensure_topics(settings: Settings, extra: Iterable[str] = ()) -> None:
    """Create ``<app>.events``, ``.state-changes``, ``.dlq`` and the ``extra`` topics
    (e.g. service topics) unless they exist, with the app's partition count."""
    topics = settings.topics
    n, rf = settings.kafka.partitions, settings.kafka.replication_factor
    admin = AIOKafkaAdminClient(**kafka_options(settings.kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        names = dict.fromkeys([topics.events, topics.state_changes, topics.dlq, *extra])
        wanted = [NewTopic(name, n, rf) for name in names if name not in existing]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass  # another process created them meanwhile
            await _wait_for_leaders(kafka_options(settings.kafka), [t.name for t in wanted], n)
    finally:
        await admin.close()


async def _wait_for_leaders(
    options: dict[str, object], names: list[str], partitions: int, timeout_s: float = 30.0
) -> None:
    """New partitions answer NotLeaderForPartition until their leader serves them; wait
    until every partition answers a ListOffsets request, so the first produce and fetch
    do not fail and retry."""
    consumer = AIOKafkaConsumer(**options, request_timeout_ms=int(timeout_s * 1000))
    noisy = logging.getLogger("aiokafka")
    was = noisy.disabled
    noisy.disabled = True  # the retries below are expected, not worth a log line
    try:
        await consumer.start()
        await consumer.end_offsets(
            [TopicPartition(name, p) for name in names for p in range(partitions)]
        )
    finally:
        await consumer.stop()
        noisy.disabled = was
