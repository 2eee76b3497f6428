"""The local broker is a real Apache Kafka: produce, consume, transactions, lifecycle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from garrison.local_kafka import LocalKafka
from tests.conftest import TopicFactory


async def test_produce_and_consume(kafka_bootstrap: str, topic_factory: TopicFactory) -> None:
    topic = await topic_factory("roundtrip", partitions=3)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for i in range(30):
            await producer.send(topic, f"v{i}".encode(), key=f"k{i % 5}".encode())
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got: list[tuple[bytes, bytes]] = []
    try:
        while len(got) < 30:
            batch = await consumer.getmany(timeout_ms=5000)
            assert batch, "no records within 5 s"
            for records in batch.values():
                got += [(r.key, r.value) for r in records]
    finally:
        await consumer.stop()
    assert sorted(v for _, v in got) == sorted(f"v{i}".encode() for i in range(30))
    # One key always lands in one partition, in order.
    per_key = [v for k, v in got if k == b"k0"]
    assert per_key == [f"v{i}".encode() for i in range(0, 30, 5)]


async def test_transactions_commit_and_abort(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory("txn", partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"{topic}-tx")
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send(topic, b"kept")
        await producer.begin_transaction()
        await producer.send(topic, b"dropped")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send(topic, b"end")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    seen: list[bytes] = []
    try:
        while b"end" not in seen:
            batch = await consumer.getmany(timeout_ms=5000)
            assert batch, "no committed records within 5 s"
            seen += [r.value for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()
    assert seen == [b"kept", b"end"]


@pytest.mark.slow
def test_cli_up_twice_status_down(tmp_path: Path) -> None:
    state = tmp_path / "cli-broker"
    cmd = [sys.executable, "-m", "garrison", "kafka"]
    opts = ["--state-dir", str(state), "--port", "0"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cmd, *args, *opts], capture_output=True, text=True, timeout=120, check=False
        )

    try:
        first = run("up")
        assert first.returncode == 0, first.stderr
        assert "kafka is up at 127.0.0.1:" in first.stdout
        ready_s = float(first.stdout.split("ready in ")[1].split(" s)")[0])
        assert ready_s < 30, f"broker took {ready_s} s to answer (jar cache is warm here)"
        second = run("up")
        assert second.returncode == 0
        assert "already running" in second.stdout
        status = run("status")
        assert status.returncode == 0
        assert "kafka is running" in status.stdout
        bootstrap = first.stdout.split("kafka is up at ")[1].split()[0]
        assert bootstrap in status.stdout
        # It is a real kafka.Kafka JVM.
        pid = LocalKafka(state).status().pid
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"kafka.Kafka" in cmdline
        down = run("down")
        assert down.returncode == 0
        assert "kafka stopped" in down.stdout
        after = run("status")
        assert after.returncode == 3
        assert "not running" in after.stdout
        assert "was not running" in run("down").stdout
    finally:
        LocalKafka(state).down(purge=True)
