"""Fixtures: one real Kafka broker per test session, and factories for unique names.

``GARRISON_KAFKA_BOOTSTRAP`` points the tests at an existing broker; without it the
session starts garrison's own local Apache Kafka (jars from Maven Central, cached) and
stops it at the end. If the broker cannot start, every broker test errors with the
reason: they never skip.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from garrison.local_kafka import LocalKafka

_counter = itertools.count()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of the session's broker."""
    existing = os.environ.get("GARRISON_KAFKA_BOOTSTRAP")
    if existing:
        yield existing
        return
    kafka = LocalKafka(tmp_path_factory.mktemp("kafka"), port=0, heap_mb=768)
    bootstrap = kafka.up()  # raises BrokerError with the reason: the tests error, not skip
    try:
        yield bootstrap
    finally:
        kafka.down(purge=True)


@pytest.fixture
def unique() -> Callable[[str], str]:
    """``unique("orders")`` -> a name no other test in this run uses."""
    run = uuid.uuid4().hex[:6]

    def make(prefix: str) -> str:
        return f"{prefix}-{run}-{next(_counter)}"

    return make


TopicFactory = Callable[..., Awaitable[str]]


@pytest.fixture
async def topic_factory(
    kafka_bootstrap: str, unique: Callable[[str], str]
) -> AsyncIterator[TopicFactory]:
    """``await topic_factory("events", partitions=4)`` creates a fresh topic."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()

    async def make(
        prefix: str = "t",
        *,
        partitions: int = 4,
        name: str | None = None,
        config: dict[str, str] | None = None,
    ) -> str:
        topic = name or unique(prefix)
        await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=config or {})])
        return topic

    try:
        yield make
    finally:
        await admin.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A fresh folder for a worker's RocksDB data."""
    path = tmp_path / "data"
    path.mkdir()
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the broker (any fixture that needs ``kafka_bootstrap``) are marked
    ``broker``, so a core-only run can deselect them (``-m "not broker"``)."""
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.broker)
