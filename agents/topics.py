"""Create garrison's topics explicitly, with the app's partition count.

Faust's table changelogs must have as many partitions as the events topic; a topic
auto-created by the broker with its default count makes Faust fail with
PartitionsMismatch. So every topic is created up front, idempotently.
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from pipeline.client import kafka_options
from pipeline.settings import Settings

__all__ = ["ensure_topics"]


async def ensure_topics(settings: Settings) -> None:
    """Create ``<app>.events``, ``.state-changes`` and ``.dlq`` unless they exist."""
    topics = settings.topics
    n, rf = settings.kafka.partitions, settings.kafka.replication_factor
    admin = AIOKafkaAdminClient(**kafka_options(settings.kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [NewTopic(name, n, rf) for name in
                  (topics.events, topics.state_changes, topics.dlq) if name not in existing]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass  # another process created them meanwhile
    finally:
        await admin.close()
