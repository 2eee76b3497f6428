"""Trust at the edges, on the real broker with real clients: nothing leaks, nothing is
forged, every client and partitioner works, and no input stops the worker.

One worker (``tests.trust_app``) serves the whole module; each test uses tenants of
its own. Each of these failed on the worker before the fixes of the trust issue.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from agents.kafka import partition_of
from agents.listeners import ListenerRunner
from pipeline import Event, encode_event
from pipeline.deadletter import DeadLetter
from tests.harness import (
    WorkerProcess,
    curl,
    produce,
    read_topic,
    serving_worker,
    settings_env,
    settings_from,
    wait_until,
)
from tests.trust_app import SMALL_TOPIC, registry

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="function")]

PARTITIONS = 4


@pytest.fixture(scope="module")
def trust(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    work = tmp_path_factory.mktemp("trust")
    env = settings_env(
        kafka_bootstrap,
        f"trust-{uuid.uuid4().hex[:6]}",
        work / "data",
        partitions=PARTITIONS,
        max_record_bytes="50000",
        timer_tick_ms="100",
    )
    env["log"] = str(work / "worker.log")
    with serving_worker("tests.trust_app", env, work / "worker.log"):
        yield env


def _event(
    tenant: str, machine: str, instance: str, type: str, data: Any = None, **kw: Any
) -> Event:
    return Event(
        kw.pop("id", uuid.uuid4().hex),
        type,
        "tests",
        tenant,
        machine,
        instance,
        kw.pop("time_ms", int(time.time() * 1000)),
        data,
        **kw,
    )


async def _send(env: dict[str, str], *events: Event, headers: Any = None) -> None:
    await produce(
        env["GARRISON_KAFKA_BOOTSTRAP"],
        f"{env['GARRISON_APP']}.events",
        [(e.tenant.encode(), encode_event(e)) for e in events],
        headers=headers,
    )


async def _changes(
    env: dict[str, str], tenant: str, until: Any, timeout_s: float = 40
) -> list[dict[str, Any]]:
    def mine(records: list[Any]) -> list[dict[str, Any]]:
        out = [orjson.loads(r.value) for r in records]
        return [c for c in out if c["tenant"] == tenant]

    records = await read_topic(
        env["GARRISON_KAFKA_BOOTSTRAP"],
        f"{env['GARRISON_APP']}.state-changes",
        until=lambda rs: until(mine(rs)),
        timeout_s=timeout_s,
    )
    return mine(records)


async def _dead(env: dict[str, str], tenant: bytes, count: int) -> list[dict[str, str]]:
    records = await read_topic(
        env["GARRISON_KAFKA_BOOTSTRAP"],
        f"{env['GARRISON_APP']}.dlq",
        until=lambda rs: sum(1 for r in rs if r.key == tenant) >= count,
        timeout_s=40,
    )
    return [DeadLetter.read_headers(r.headers) for r in records if r.key == tenant]


async def test_casern_ported_literally_reaches_its_listener(trust: dict[str, str]) -> None:
    settings = settings_from({k: v for k, v in trust.items() if k.startswith("GARRISON_")})
    runner = ListenerRunner(settings, registry, group_id=f"{trust['GARRISON_APP']}.casern")
    task = asyncio.create_task(runner.run())
    try:
        await _send(trust, _event("t-chat", "chat", "c1", "chat.inquired", {"name": "ann"}))
        changes = await _changes(
            trust, "t-chat", lambda cs: any(c["state"]["status"] == "escalated" for c in cs)
        )
    finally:
        runner.stop()
        await asyncio.wait_for(task, 30)
    timeout = [c for c in changes if c["event_type"] == "chat.timeout_checked"]
    assert [(c["prev"]["status"], c["state"]["status"]) for c in timeout] == [
        ("inquired", "timeout")
    ]
    assert registry.services["mail"] == ["ann"]


async def test_producers_cannot_forge_firings_and_expiry_keeps_the_sequence(
    trust: dict[str, str],
) -> None:
    port = trust["GARRISON_WEB_PORT"]
    now = int(time.time() * 1000)
    await _send(trust, _event("t-ttl", "session", "s1", "session.touched", time_ms=now))
    await _changes(trust, "t-ttl", lambda cs: len(cs) == 1)
    # A producer forging the TTL firing with the (guessable) due time, and the expiry.
    forged = _event(
        "t-ttl",
        "session",
        "s1",
        "x",
        id=f"timer:__ttl__:{now + 2000}",
        time_ms=now + 2000,
        timer="__ttl__",
    )
    await _send(trust, forged, _event("t-ttl", "session", "s1", "garrison.expired"))
    dead = await _dead(trust, b"t-ttl", 2)
    assert [d["garrison.stage"] for d in dead] == ["origin", "origin"]
    status, body = curl(port, "/state/t-ttl/session/s1")
    assert (status, body.get("seq")) == (200, 1)  # still alive, untouched
    # A back-dated touch does not move the expiry back.
    await _send(
        trust, _event("t-ttl", "session", "s1", "session.touched", time_ms=now - 40 * 86_400_000)
    )
    await _changes(trust, "t-ttl", lambda cs: len(cs) == 2)
    status, body = curl(port, "/state/t-ttl/session/s1")
    assert body["expires_ms"] >= now + 2000
    # The genuine expiry comes from garrison; the next event continues the sequence.
    changes = await _changes(
        trust, "t-ttl", lambda cs: any(c["event_type"] == "garrison.expired" for c in cs)
    )
    assert [(c["seq"], c["state"] is None) for c in changes] == [(1, False), (2, False), (3, True)]
    await _send(trust, _event("t-ttl", "session", "s1", "session.touched"))
    changes = await _changes(trust, "t-ttl", lambda cs: len(cs) == 4)
    assert (changes[-1]["seq"], changes[-1]["prev"], changes[-1]["state"]) == (
        4,
        None,
        {"touches": 1},
    )


async def test_any_client_and_partitioner_gives_one_instance_per_address(
    trust: dict[str, str],
) -> None:
    from cloudevents.core.bindings import kafka as ce_kafka
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent
    from confluent_kafka import Producer

    bootstrap, topic = trust["GARRISON_KAFKA_BOOTSTRAP"], f"{trust['GARRISON_APP']}.events"
    tenants = [f"t-any-{n}" for n in range(10)]
    # librdkafka's default partitioner (CRC32) puts most of these tenants elsewhere.
    assert any(partition_of(t.encode(), PARTITIONS) != _crc32_partition(t) for t in tenants)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(5):
        for tenant in tenants:
            for inst in ("a", "b", "c"):
                e = _event(tenant, "shout", inst, "shout.counted", {}, id=f"{tenant}-{inst}-{i}")
                producer.produce(topic, encode_event(e), key=tenant.encode())
    # The CloudEvents SDK, both content modes, with no Kafka key at all.
    for n, mode in enumerate((ce_kafka.to_binary, ce_kafka.to_structured)):
        event = CloudEvent(
            attributes={
                "type": "shout.counted",
                "source": "/sdk",
                "id": f"sdk-{n}",
                "time": datetime.now(UTC),
                "datacontenttype": "application/json",
                "tenant": "t-any-sdk",
                "machine": "shout",
                "instance": "z",
            },
            data={},
        )
        message = mode(event, JSONFormat())
        producer.produce(topic, message.value, headers=list(message.headers.items()))
    assert producer.flush(30) == 0
    for tenant in tenants:
        changes = await _changes(trust, tenant, lambda cs: len(cs) >= 15)
        assert len(changes) == 15
        for inst in ("a", "b", "c"):
            mine = [c for c in changes if c["instance"] == inst]
            assert [c["seq"] for c in mine] == [1, 2, 3, 4, 5]
            assert mine[-1]["state"] == {"n": 5}
            assert [c["event_id"] for c in mine] == [f"{tenant}-{inst}-{i}" for i in range(5)]
    sdk = await _changes(trust, "t-any-sdk", lambda cs: len(cs) >= 2)
    assert sorted(c["seq"] for c in sdk) == [1, 2]


async def _refused_by_kafka(bootstrap: str, topic: str) -> None:
    """Wait until the broker refuses a 10 kB record on ``topic`` (a config change takes
    effect a moment after it is made)."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import MessageSizeTooLargeError

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for _ in range(100):
            try:
                await producer.send_and_wait(topic, b"x" * 10_000)
            except MessageSizeTooLargeError:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"the broker still takes 10 kB records on {topic}")
    finally:
        await producer.stop()


def _seq(port: str, path: str) -> Any:
    status, body = curl(port, path)
    return body.get("seq") if status == 200 else None


def _crc32_partition(key: str) -> int:
    import zlib

    return zlib.crc32(key.encode()) % PARTITIONS


async def test_bad_effects_are_dead_letters_and_the_partition_goes_on(
    trust: dict[str, str],
) -> None:
    bootstrap = trust["GARRISON_KAFKA_BOOTSTRAP"]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:  # Kafka itself refuses records over 5,000 bytes on this topic
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, SMALL_TOPIC, {"max.message.bytes": "5000"})]
        )
    finally:
        await admin.close()
    await _refused_by_kafka(bootstrap, SMALL_TOPIC)  # the broker applies the limit now
    events = [
        _event("t-bad", "shout", "x", "shout.counted", {}),
        _event("t-bad", "shout", "x", "shout.sent", {"to": "trust.undeclared"}),
        _event("t-bad", "shout", "x", "shout.counted", {}),
        _event("t-bad", "shout", "x", "shout.grown", {"size": 60_000}),
        _event("t-bad", "shout", "x", "shout.counted", {}),
        _event("t-bad", "shout", "x", "shout.sent", {"to": SMALL_TOPIC, "size": 20_000}),
        _event("t-bad", "shout", "x", "shout.counted", {}),
    ]
    await _send(trust, *events)
    dead = await _dead(trust, b"t-bad", 3)
    assert [d["garrison.stage"] for d in dead] == ["output"] * 3
    assert "which no machine declares" in dead[0]["garrison.reason"]
    assert "over the limit of 50,000" in dead[1]["garrison.reason"]
    assert "Kafka refused" in dead[2]["garrison.reason"]
    changes = await _changes(trust, "t-bad", lambda cs: len(cs) >= 4)
    assert [(c["seq"], c["state"].get("n")) for c in changes] == [(1, 1), (2, 2), (3, 3), (4, 4)]


async def test_a_store_ahead_of_its_changelog_is_rebuilt(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    from agents.topics import ensure_topics

    env = settings_env(kafka_bootstrap, f"wiped-{uuid.uuid4().hex[:6]}", tmp_path / "data")
    worker = WorkerProcess("tests.trust_app", env, tmp_path / "worker.log")
    port = env["GARRISON_WEB_PORT"]
    worker.start()
    try:
        await _send(env, *[_event("t-w", "shout", "w", "shout.counted", {}) for _ in range(5)])
        await wait_until(
            lambda: _seq(port, "/state/t-w/shout/w") == 5,
            timeout_s=90,
            what="seq 5",
            describe=worker.log_tail,
        )
        worker.stop()
        # The broker loses the app's data (wiped, or a new cluster at the same address).
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            mine = [t for t in await admin.list_topics() if t.startswith(env["GARRISON_APP"])]
            await admin.delete_topics(mine)
        finally:
            await admin.close()
        await asyncio.sleep(2)
        await ensure_topics(settings_from(env))
        worker.start()
        await _send(env, _event("t-w", "shout", "w", "shout.counted", {}))
        await wait_until(
            lambda: _seq(port, "/state/t-w/shout/w") == 1,
            timeout_s=90,
            what="seq 1 again",
            describe=worker.log_tail,
        )
        assert worker.alive()
        assert "Rebuilding it from the changelog" in worker.log_tail(200)
    finally:
        worker.stop()


async def test_a_mix_of_hostile_and_good_input_applies_every_good_event(
    trust: dict[str, str],
) -> None:
    from tests.pipeline.test_fuzz import bad_records

    bad = bad_records(11, 150)
    good = [
        (b"fuzz-good", encode_event(_event("fuzz-good", "shout", f"g{n % 5}", "shout.counted", {})))
        for n in range(150)
    ]
    mixed = [record for pair in zip(bad, good, strict=True) for record in pair]
    await produce(trust["GARRISON_KAFKA_BOOTSTRAP"], f"{trust['GARRISON_APP']}.events", mixed)
    changes = await _changes(trust, "fuzz-good", lambda cs: len(cs) >= 150)
    assert len(changes) == 150
    for n in range(5):
        mine = [c["seq"] for c in changes if c["instance"] == f"g{n}"]
        assert mine == list(range(1, 31))
    dead = await _dead(trust, b"fuzz-bad", 150)
    assert len(dead) == 150
    assert {d["garrison.stage"] for d in dead} <= {"decode", "origin", "route", "contract"}
