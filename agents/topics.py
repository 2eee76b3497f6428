"""Create garrison's topics explicitly, with the app's partition count and retention.

Faust's table changelogs must have as many partitions as the events topic; a topic
auto-created by the broker with its default count makes Faust fail with
PartitionsMismatch. So every topic is created up front, idempotently.

Retention: the events, state-change and dead-letter topics are what replay, history
and re-drive read, so garrison creates them with ``retention.ms`` from
``GARRISON_RETENTION_*`` (default -1: forever) instead of the broker's default (7
days). The listener re-drive topic keeps the dead letters' retention; the optional
latest-state topic is compacted. A topic that exists already is never changed: one
whose retention differs from the settings is reported (a warning, and the return
value), for its operator to decide.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from agents.kafka import kafka_options
from pipeline.errors import GarrisonError
from pipeline.settings import Settings

__all__ = [
    "KafkaUnreachable",
    "MissingTopics",
    "admin_client",
    "ensure_topics",
    "require_topics",
    "topic_configs",
]

log = logging.getLogger(__name__)


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


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """The configs garrison creates its own topics with, by topic name."""
    topics, keep = settings.topics, settings.retention

    def retention(ms: int | None) -> dict[str, str]:
        return {} if ms is None else {"retention.ms": str(ms)}

    configs = {
        topics.events: retention(keep.events_ms),
        topics.state_changes: retention(keep.state_changes_ms),
        topics.dlq: retention(keep.dlq_ms),
        topics.listener_redrive: retention(keep.dlq_ms),
        # An answer matters only while its sender waits (seconds): an hour is plenty.
        topics.replies: retention(3_600_000),
    }
    if topics.latest is not None:
        configs[topics.latest] = {"cleanup.policy": "compact"}
    return configs


async def ensure_topics(settings: Settings, extra: Iterable[str] = ()) -> list[str]:
    """Create garrison's topics (:func:`topic_configs`) and the ``extra`` ones (e.g.
    service topics, with the broker's defaults) unless they exist, with the app's
    partition count. Returns, and logs, what differs in the existing ones' retention."""
    n, rf = settings.kafka.partitions, settings.kafka.replication_factor
    configs = topic_configs(settings)
    admin = await admin_client(settings)
    try:
        existing = set(await admin.list_topics())
        names = dict.fromkeys([*configs, *extra])
        wanted = [
            NewTopic(name, n, rf, topic_configs=configs.get(name, {}))
            for name in names
            if name not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass  # another process created them meanwhile
            await _wait_for_leaders(kafka_options(settings.kafka), [t.name for t in wanted], n)
        checked = {name: c for name, c in configs.items() if name in existing and c}
        differ = await _differences(admin, checked) if checked else []
    finally:
        await admin.close()
    for line in differ:
        log.warning("%s", line)
    return differ


async def _differences(admin: AIOKafkaAdminClient, wanted: dict[str, dict[str, str]]) -> list[str]:
    """What the existing topics' configs say where they differ from ``wanted``."""
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, dict.fromkeys(c))
        for name, c in wanted.items()
    ]
    out = []
    for response in await admin.describe_configs(resources):
        for _code, _message, _type, name, entries in response.resources:
            have = {entry[0]: entry[1] for entry in entries}
            for key, value in wanted.get(name, {}).items():
                if have.get(key) != value:
                    out.append(
                        f"topic {name} has {key}={have.get(key)}, the settings say {value}; "
                        "garrison does not change an existing topic (kafka-configs --alter "
                        "does, or set GARRISON_RETENTION_* to match)"
                    )
    return out


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
