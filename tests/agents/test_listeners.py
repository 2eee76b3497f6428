"""The listener runner on the real broker: conditions, retries, dead letters, commits."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from agents.listeners import ListenerRunner
from pipeline import Registry, StateChange
from pipeline.deadletter import DeadLetter
from tests.conftest import TopicFactory
from tests.harness import read_topic, settings_env, settings_from
from tests.samples import counter_machine

pytestmark = pytest.mark.asyncio(loop_scope="function")


def _change(i: int, instance: str, count: int, event_type: str = "counter.added") -> StateChange:
    return StateChange(
        "acme",
        "counter",
        instance,
        i,
        1,
        f"e{i}",
        event_type,
        i,
        {"count": count - 1},
        {"count": count},
    )


async def _publish(bootstrap: str, topic: str, changes: list[StateChange]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for c in changes:
            await producer.send(topic, c.to_json(), key=c.tenant.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def _run_until(
    runner: ListenerRunner, done: Callable[[], bool], timeout_s: float = 30
) -> None:
    task = asyncio.create_task(runner.run())
    try:
        for _ in range(int(timeout_s * 10)):
            if done():
                break
            assert not task.done(), task.exception()
            await asyncio.sleep(0.1)
        assert done(), "listeners did not finish in time"
        await asyncio.sleep(0.5)
    finally:
        runner.stop()
        await asyncio.wait_for(task, 30)


async def test_failing_listener_is_retried_then_dead_lettered_without_holding_others(
    kafka_bootstrap: str, unique: Callable[[str], str], tmp_path: Path, topic_factory: TopicFactory
) -> None:
    env = settings_env(kafka_bootstrap, unique("lst"), tmp_path)
    settings = settings_from(env)
    for name in (settings.topics.state_changes, settings.topics.dlq):
        await topic_factory(name=name, partitions=2)
    calls: dict[str, list[tuple[str, int]]] = {"flaky": [], "steady": [], "big": []}
    registry = Registry([counter_machine()])

    @registry.listener(retries=2, backoff_s=0.01)
    def flaky(change: StateChange, ctx: Any) -> None:
        calls["flaky"].append((change.instance, ctx.attempt))
        if change.instance == "bad":
            raise ConnectionError("mail server down")

    @registry.listener(machine="counter")
    async def steady(change: StateChange, ctx: Any) -> None:
        calls["steady"].append((change.instance, change.seq))

    @registry.listener(on="counter.added", when=lambda prev, cur: cur["count"] >= 3)
    def big(change: StateChange, ctx: Any) -> None:
        calls["big"].append((change.instance, change.seq))

    changes = [_change(i, "bad" if i % 4 == 0 else "good", i) for i in range(1, 13)]
    changes.append(_change(13, "good", 13, event_type="counter.reset"))
    await _publish(kafka_bootstrap, settings.topics.state_changes, changes)

    runner = ListenerRunner(settings, registry, group_id=unique("g"))
    await _run_until(runner, lambda: len(calls["steady"]) == 13 and runner.stats.dead_letters == 3)
    assert sorted(seq for _, seq in calls["steady"]) == list(range(1, 14))
    assert sorted(seq for _, seq in calls["big"]) == list(range(3, 13))  # not the reset
    bad_attempts = [a for inst, a in calls["flaky"] if inst == "bad"]
    assert bad_attempts == [0, 1, 2] * 3  # 1 try + 2 retries, for each bad change
    dead = await read_topic(
        kafka_bootstrap, settings.topics.dlq, until=lambda rs: len(rs) >= 3, timeout_s=20
    )
    assert len(dead) == 3
    for rec in dead:
        headers = DeadLetter.read_headers(rec.headers)
        assert headers["garrison.stage"] == "listener"
        assert headers["garrison.listener"] == "flaky"
        assert "ConnectionError: mail server down" in headers["garrison.reason"]
        assert StateChange.from_json(rec.value).instance == "bad"

    # Offsets were committed: the same group starts after the last change.
    calls["steady"].clear()
    again = ListenerRunner(settings, registry, group_id=runner.group_id)
    await _publish(kafka_bootstrap, settings.topics.state_changes, [_change(14, "good", 14)])
    await _run_until(again, lambda: len(calls["steady"]) >= 1)
    assert calls["steady"] == [("good", 14)]


async def test_listener_send_uses_ids_derived_from_the_change(
    kafka_bootstrap: str, unique: Callable[[str], str], tmp_path: Path, topic_factory: TopicFactory
) -> None:
    env = settings_env(kafka_bootstrap, unique("snd"), tmp_path)
    settings = settings_from(env)
    for name in (settings.topics.state_changes, settings.topics.dlq, settings.topics.events):
        await topic_factory(name=name, partitions=1)
    registry = Registry([counter_machine()])

    @registry.listener
    async def echo(change: StateChange, ctx: Any) -> None:
        await ctx.send("pinger", change.instance, "pinger.pong", {"seq": change.seq})

    await _publish(kafka_bootstrap, settings.topics.state_changes, [_change(1, "c1", 1)])
    runner = ListenerRunner(settings, registry, group_id=unique("g"))
    await _run_until(runner, lambda: runner.stats.sent == 1)
    sent = await read_topic(
        kafka_bootstrap, settings.topics.events, until=lambda rs: len(rs) >= 1, timeout_s=10
    )
    assert b'"id":"e1/echo/0"' in sent[0].value  # a re-run would send the same id
    assert sent[0].key == b"acme"


async def test_a_backing_off_listener_holds_back_no_other(
    kafka_bootstrap: str, unique: Callable[[str], str], tmp_path: Path, topic_factory: TopicFactory
) -> None:
    env = settings_env(kafka_bootstrap, unique("ind"), tmp_path)
    settings = settings_from(env)
    for name in (settings.topics.state_changes, settings.topics.dlq):
        await topic_factory(name=name, partitions=2)
    fast: list[int] = []
    registry = Registry([counter_machine()])

    @registry.listener(retries=1, backoff_s=30)
    def stuck(change: StateChange, ctx: Any) -> None:
        raise ConnectionError("down for a while")

    @registry.listener
    def quick(change: StateChange, ctx: Any) -> None:
        fast.append(change.seq)

    await _publish(
        kafka_bootstrap,
        settings.topics.state_changes,
        [_change(i, f"c{i % 5}", i) for i in range(1, 2001)],
    )
    runner = ListenerRunner(settings, registry, group_id=unique("g"))
    # 2,000 changes, while the other listener sleeps 30 s on its first: the old runner
    # (one queue of 1,000 per listener, fed by one consumer) stopped feeding everyone.
    await _run_until(runner, lambda: len(fast) == 2000, timeout_s=25)
    assert sorted(fast) == list(range(1, 2001))
    assert runner.stats.runs.get("stuck", 0) == 0


async def test_ctx_config_is_the_config_of_the_changes_version(
    kafka_bootstrap: str, unique: Callable[[str], str], tmp_path: Path, topic_factory: TopicFactory
) -> None:
    env = settings_env(kafka_bootstrap, unique("cfg"), tmp_path)
    settings = settings_from(env)
    for name in (settings.topics.state_changes, settings.topics.dlq):
        await topic_factory(name=name, partitions=1)
    v1, v2 = counter_machine(version=1), counter_machine(version=2)
    v1.config, v2.config = {"support": "old@x"}, {"support": "new@x"}
    registry = Registry([v1, v2])
    seen: list[tuple[int, str]] = []

    @registry.listener
    def who(change: StateChange, ctx: Any) -> None:
        seen.append((change.version, ctx.config["support"]))

    changes = [_change(1, "a", 1)._replace(version=1), _change(2, "b", 1)._replace(version=2)]
    await _publish(kafka_bootstrap, settings.topics.state_changes, changes)
    runner = ListenerRunner(settings, registry, group_id=unique("g"))
    await _run_until(runner, lambda: len(seen) == 2)
    assert sorted(seen) == [(1, "old@x"), (2, "new@x")]


async def test_garrison_listen_stops_on_sigterm_and_keeps_its_progress(
    kafka_bootstrap: str, unique: Callable[[str], str], tmp_path: Path, topic_factory: TopicFactory
) -> None:
    env = settings_env(kafka_bootstrap, unique("sig"), tmp_path)
    settings = settings_from(env)
    for name in (settings.topics.state_changes, settings.topics.dlq, settings.topics.events):
        await topic_factory(name=name, partitions=1)
    await _publish(
        kafka_bootstrap, settings.topics.state_changes, [_change(i, "c1", i) for i in range(1, 6)]
    )

    def listen() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "garrison", "listen", "tests.listen_app"],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    proc = listen()
    try:
        echoed = await read_topic(
            kafka_bootstrap, settings.topics.events, until=lambda rs: len(rs) >= 5, timeout_s=40
        )
        assert len(echoed) == 5
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, proc.stderr.read().decode() if proc.stderr else ""
    # Its offsets were committed: a new run only handles the new change.
    await _publish(kafka_bootstrap, settings.topics.state_changes, [_change(6, "c1", 6)])
    again = listen()
    try:
        echoed = await read_topic(
            kafka_bootstrap, settings.topics.events, until=lambda rs: len(rs) >= 6, timeout_s=40
        )
        await asyncio.sleep(2)
        later = await read_topic(
            kafka_bootstrap, settings.topics.events, until=lambda rs: len(rs) >= 6, timeout_s=10
        )
    finally:
        again.send_signal(signal.SIGTERM)
        await asyncio.to_thread(again.wait, 20)
    ids = [orjson.loads(r.value)["id"] for r in later]
    assert ids == [f"e{i}/echo/0" for i in range(1, 7)], ids
