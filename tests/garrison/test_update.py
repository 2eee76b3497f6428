"""``Client.update`` and ``garrison send --wait`` against a real worker: applied,
rejected, duplicate and timed-out answers, many concurrent callers in several clients
and processes, and nothing extra published for an event nobody waits for."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.topics import ensure_topics
from garrison.client import Client
from pipeline.errors import AnswerTimeout, InvalidAddress
from pipeline.settings import Settings
from tests.harness import WorkerProcess, serving_worker, settings_env, settings_from

pytestmark = pytest.mark.asyncio(loop_scope="function")


@pytest.fixture(scope="module")
def worker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """One worker of the sample app for the whole module."""
    tmp = tmp_path_factory.mktemp("update")
    env = settings_env(kafka_bootstrap, f"upd-{uuid.uuid4().hex[:6]}", tmp / "data", partitions=2)
    with serving_worker("tests.sample_app", env, tmp / "worker.log") as proc:
        yield proc


@pytest.fixture
async def client(worker: WorkerProcess) -> Client:
    async with Client(settings_from(worker.env)) as c:
        # The first answer waits for the worker to join its group: give it time once.
        first = await c.update("warm", "counter", "w", "counter.added", {"amount": 1}, timeout=90)
        assert first.status in ("applied", "duplicate"), worker.log_tail()
        yield c


def _replies(settings: Settings) -> int:
    """Records on <app>.replies so far (read_committed; transaction markers not counted)."""

    async def count() -> int:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka.bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            tps = [
                TopicPartition(settings.topics.replies, p) for p in range(settings.kafka.partitions)
            ]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            n = 0
            while any([await consumer.position(tp) < ends[tp] for tp in tps]):
                batch = await consumer.getmany(timeout_ms=500)
                n += sum(len(records) for records in batch.values())
            return n
        finally:
            await consumer.stop()

    return asyncio.run(count())


async def test_applied_rejected_and_duplicate_answers(
    client: Client, worker: WorkerProcess
) -> None:
    tenant = f"t{uuid.uuid4().hex[:6]}"
    first = await client.update(tenant, "counter", "c1", "counter.added", {"amount": 3}, id="a1")
    assert (first.status, first.seq, first.state["total"], first.prev) == ("applied", 1, 3, None)
    second = await client.update(tenant, "counter", "c1", "counter.added", {"amount": 4})
    assert (second.status, second.seq, second.state["total"]) == ("applied", 2, 7)

    rejected = await client.update(tenant, "counter", "c1", "counter.added", {"amount": 5000})
    assert (rejected.status, rejected.stage) == ("rejected", "contract")
    assert rejected.reason is not None
    assert "less than or equal to 1000" in rejected.reason
    broken = await client.update(tenant, "counter", "c1", "counter.broken")
    assert (broken.status, broken.stage) == ("rejected", "reducer")
    ghost = await client.update(tenant, "ghost", "g1", "ghost.made")
    assert (ghost.status, ghost.stage) == ("rejected", "route")
    assert ghost.reason is not None
    assert "no machine named 'ghost'" in ghost.reason

    settings = settings_from(worker.env)
    before = await asyncio.to_thread(_replies, settings)
    again = await client.update(tenant, "counter", "c1", "counter.added", {"amount": 3}, id="a1")
    assert (again.status, again.event_id, again.seq, again.state["total"]) == (
        "duplicate",
        "a1",
        2,
        7,
    )
    # Only the duplicate published a reply; a plain send of a duplicate publishes none.
    await client.send(tenant, "counter", "c1", "counter.added", {"amount": 3}, id="a1")
    await client.update(tenant, "counter", "c1", "counter.added", {"amount": 1})  # a barrier
    assert await asyncio.to_thread(_replies, settings) == before + 1


async def test_many_callers_in_two_clients_share_one_reader_each(
    client: Client, worker: WorkerProcess
) -> None:
    tenant = f"t{uuid.uuid4().hex[:6]}"
    async with Client(settings_from(worker.env)) as other:

        async def one(c: Client, i: int) -> tuple[int, int]:
            answer = await c.update(tenant, "counter", "shared", "counter.added", {"amount": 1})
            assert answer.status == "applied", answer
            assert answer.seq is not None
            return answer.seq, answer.state["count"]

        results = await asyncio.gather(
            *(one(client if i % 2 else other, i) for i in range(60)),
        )
        seqs = sorted(s for s, _ in results)
        assert seqs == list(range(1, 61))  # every caller got its own change
        assert all(seq == count for seq, count in results)
        # Ids are idempotency keys per instance: the same id for two instances is two
        # events, and each caller gets its own instance's answer.
        a, b = await asyncio.gather(
            client.update(tenant, "counter", "a", "counter.added", {"amount": 1}, id="same"),
            client.update(tenant, "counter", "b", "counter.added", {"amount": 2}, id="same"),
        )
        assert (a.instance, a.state["total"], b.instance, b.state["total"]) == ("a", 1, "b", 2)
        assert client.correlator is not None
        assert other.correlator is not None
        assert client.correlator.waiting == other.correlator.waiting == 0


async def test_no_answer_in_time_is_a_typed_error_that_says_what_to_do(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # An app whose topics exist but whose worker does not run: no answer comes.
    settings = settings_from(
        settings_env(kafka_bootstrap, f"none-{uuid.uuid4().hex[:6]}", tmp_path)
    )
    await ensure_topics(settings)
    async with Client(settings) as lonely:
        began = time.monotonic()
        with pytest.raises(AnswerTimeout) as err:
            await lonely.update("acme", "counter", "c1", "counter.added", {"amount": 1}, id="x1",
                                timeout=2)  # fmt: skip
        assert 2 <= time.monotonic() - began < 8
        assert err.value.event_id == "x1"
        assert "within 2 s" in str(err.value)
        assert "send it again with the same id" in str(err.value)
        assert lonely.correlator is not None
        assert lonely.correlator.waiting == 0
        with pytest.raises(InvalidAddress, match="tenant id 'a/b' contains '/'"):
            await lonely.update("a/b", "counter", "c1", "counter.added")


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "garrison", "send", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


async def test_send_wait_prints_the_answer_with_an_exit_status(
    client: Client, worker: WorkerProcess, kafka_bootstrap: str, tmp_path: Path
) -> None:
    tenant = f"t{uuid.uuid4().hex[:6]}"
    env = worker.env
    base = [tenant, "counter", "c1", "counter.added"]
    # Several processes at once, each with its own reader.
    runs = await asyncio.gather(
        *(
            asyncio.to_thread(_cli, env, *base, "--data", '{"amount": 2}', "--wait")
            for _ in range(3)
        )
    )
    for run in runs:
        assert run.returncode == 0, run.stderr
    answers = [json.loads(r.stdout) for r in runs]
    assert sorted(a["seq"] for a in answers) == [1, 2, 3]
    assert {a["status"] for a in answers} == {"applied"}

    bad = await asyncio.to_thread(_cli, env, *base, "--data", '{"amount": 5000}', "--wait")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["stage"] == "contract"
    plain = await asyncio.to_thread(_cli, env, *base, "--data", '{"amount": 1}', "--id", "p1")
    assert (plain.returncode, plain.stdout.strip()) == (0, "p1")
    dup = await asyncio.to_thread(_cli, env, *base, "--data", '{"amount": 1}', "--id", "p1",
                                  "--wait")  # fmt: skip
    assert dup.returncode == 0, dup.stderr
    assert json.loads(dup.stdout)["status"] == "duplicate"

    nobody = settings_env(kafka_bootstrap, f"none-{uuid.uuid4().hex[:6]}", tmp_path)
    await ensure_topics(settings_from(nobody))
    late = await asyncio.to_thread(_cli, nobody, *base, "--wait", "--timeout", "1")
    assert late.returncode == 3
    assert "no answer to event" in late.stderr
