"""Create garrison's topics explicitly, with the app's partition count.

Faust's table changelogs must have as many partitions as the events topic; a topic
auto-created by the broker with its default count makes Faust fail with
PartitionsMismatch. So every topic is created up front, idempotently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from agents.kafka import kafka_options
from pipeline.errors import GarrisonError
from pipeline.settings import Settings

__all__ = ["KafkaUnreachable", "MissingTopics", "admin_client", "ensure_topics", "require_topics"]


class KafkaUnreachable(GarrisonError):
    """No broker answers at the configured bootstrap address."""


class MissingTopics(GarrisonError):
    """Topics an entry point needs do not exist (often: GARRISON_APP is not the app's)."""


async def admin_client(settings: Settings, *, wait_s: float | None = None) -> AIOKafkaAdminClient:
    """A started admin client; retries for ``wait_s`` (default the connect timeout),
    then raises :class:`KafkaUnreachable` saying what to check."""
    wait = settings.kafka.connect_timeout_s if wait_s is None else wait_s
    deadline = time.monotonic() + wait
    noisy = logging.getLogger("aiokafka")
    was = noisy.disabled
    noisy.disabled = True  # the refused connections are expected while we retry
    try:
        while True:
            admin = AIOKafkaAdminClient(**kafka_options(settings.kafka))
            try:
                await admin.start()
                return admin
            except (KafkaError, OSError) as exc:
                await admin.close()
                if time.monotonic() >= deadline:
                    raise KafkaUnreachable(
                        f"cannot reach Kafka at {settings.kafka.bootstrap} "
                        f"({type(exc).__name__}: {exc}); check GARRISON_KAFKA_BOOTSTRAP, and "
                        "that the broker runs (garrison kafka up starts a local one)"
                    ) from None
                await asyncio.sleep(0.5)
    finally:
        noisy.disabled = was


async def require_topics(
    settings: Settings, names: Iterable[str], *, wait_s: float | None = None
) -> None:
    """Wait up to ``wait_s`` for ``names`` to exist; then :class:`MissingTopics`."""
    wanted = set(names)
    wait = settings.kafka.connect_timeout_s if wait_s is None else wait_s
    deadline = time.monotonic() + wait
    admin = await admin_client(settings, wait_s=wait)
    try:
        while True:
            missing = wanted - set(await admin.list_topics())
            if not missing:
                return
            if time.monotonic() >= deadline:
                listed = ", ".join(repr(m) for m in sorted(missing))
                raise MissingTopics(
                    f"topic {listed} does not exist at {settings.kafka.bootstrap}: is "
                    f"GARRISON_APP right (it is {settings.app!r})? A worker creates its "
                    "app's topics when it starts (garrison worker APP)"
                )
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


async def ensure_topics(settings: Settings, extra: Iterable[str] = ()) -> None:
    """Create ``<app>.events``, ``.state-changes``, ``.dlq`` and the ``extra`` topics
    (e.g. service topics) unless they exist, with the app's partition count."""
    topics = settings.topics
    n, rf = settings.kafka.partitions, settings.kafka.replication_factor
    admin = await admin_client(settings)
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
