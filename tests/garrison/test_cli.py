"""The garrison command line against the real broker: send and tail."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from agents.topics import ensure_topics
from pipeline import StateChange
from tests.harness import read_topic, settings_env, settings_from

pytestmark = pytest.mark.asyncio(loop_scope="function")


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "garrison", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_send_validates_then_sends(
    kafka_bootstrap: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    env = settings_env(kafka_bootstrap, unique("cli"), tmp_path)
    settings = settings_from(env)
    await ensure_topics(settings)
    bad = await asyncio.to_thread(_cli, env, "send", "a/b", "counter", "c1", "counter.added")
    assert bad.returncode == 2
    assert "tenant id 'a/b' contains '/'" in bad.stderr
    bad_json = await asyncio.to_thread(
        _cli, env, "send", "acme", "counter", "c1", "counter.added", "--data", "{oops"
    )
    assert bad_json.returncode == 2
    assert "--data is not JSON" in bad_json.stderr
    ok = await asyncio.to_thread(
        _cli,
        env,
        "send",
        "acme",
        "counter",
        "c1",
        "counter.added",
        "--data",
        '{"amount": 3}',
        "--id",
        "cli-1",
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "cli-1"
    sent = await read_topic(
        kafka_bootstrap, settings.topics.events, until=lambda rs: len(rs) >= 1, timeout_s=20
    )
    event = json.loads(sent[0].value)
    assert (event["id"], event["tenant"], event["data"]) == ("cli-1", "acme", {"amount": 3})
    assert sent[0].key == b"acme"


async def test_tail_follows_and_filters(
    kafka_bootstrap: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    env = settings_env(kafka_bootstrap, unique("tail"), tmp_path)
    settings = settings_from(env)
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    for tenant, seq in (("other", 1), ("acme", 1), ("acme", 2)):
        change = StateChange(
            tenant, "counter", "c1", seq, 1, f"e{seq}", "counter.added", 0, None, {"count": seq}
        )
        await producer.send_and_wait(
            settings.topics.state_changes, change.to_json(), key=tenant.encode()
        )
    await producer.stop()
    proc = subprocess.Popen(
        [sys.executable, "-m", "garrison", "tail", "--from-start", "--tenant", "acme"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [
            await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30) for _ in range(2)
        ]
    finally:
        proc.kill()
        proc.wait(10)
    changes = [json.loads(line) for line in lines]
    assert [(c["tenant"], c["seq"]) for c in changes] == [("acme", 1), ("acme", 2)]
