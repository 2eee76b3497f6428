"""garrison creates its topics with the retention its settings give, compacts the
latest-state topic, and reports (never changes) an existing topic that differs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from agents.topics import ensure_topics
from tests.conftest import TopicFactory
from tests.harness import settings_env, settings_from

pytestmark = pytest.mark.asyncio(loop_scope="function")


async def _configs(bootstrap: str, names: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        out: dict[str, dict[str, str]] = {}
        for response in await admin.describe_configs(resources):
            for _code, _msg, _type, name, entries in response.resources:
                out[name] = {e[0]: e[1] for e in entries}
        return out
    finally:
        await admin.close()


async def test_topics_get_the_retention_of_the_settings(
    kafka_bootstrap: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    env = settings_env(
        kafka_bootstrap,
        unique("ret"),
        tmp_path,
        retention_state_changes_ms="86400000",
        retention_dlq_ms="default",
        history_latest_topic="true",
    )
    settings = settings_from(env)
    assert await ensure_topics(settings) == []
    t = settings.topics
    assert t.latest is not None
    got = await _configs(kafka_bootstrap, [t.events, t.state_changes, t.dlq, t.latest])
    assert got[t.events]["retention.ms"] == "-1"  # forever: replay reads the whole log
    assert got[t.state_changes]["retention.ms"] == "86400000"
    assert got[t.dlq]["retention.ms"] == "604800000"  # the broker's default, as asked
    assert got[t.latest]["cleanup.policy"] == "compact"
    assert await ensure_topics(settings) == []  # again: nothing to create or report


async def test_an_existing_topic_that_differs_is_reported_not_changed(
    kafka_bootstrap: str, unique: Callable[[str], str], tmp_path: Path, topic_factory: TopicFactory
) -> None:
    env = settings_env(kafka_bootstrap, unique("ret"), tmp_path)
    settings = settings_from(env)
    await topic_factory(name=settings.topics.events, config={"retention.ms": "3600000"})
    report = await ensure_topics(settings)
    assert report == [
        f"topic {settings.topics.events} has retention.ms=3600000, the settings say -1; "
        "garrison does not change an existing topic (kafka-configs --alter does, or set "
        "GARRISON_RETENTION_* to match)"
    ]
    got = await _configs(kafka_bootstrap, [settings.topics.events])
    assert got[settings.topics.events]["retention.ms"] == "3600000"
