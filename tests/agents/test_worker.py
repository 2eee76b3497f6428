"""A real worker process on the real broker: state, recovery, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from agents.kafka import partition_of
from pipeline import Event, encode_event
from pipeline.deadletter import DeadLetter
from tests.harness import WorkerProcess, read_topic, settings_env

pytestmark = pytest.mark.asyncio(loop_scope="function")


def _event(
    i: int,
    tenant: str,
    instance: str,
    kind: str = "counter.added",
    data: Any = None,
    machine: str = "counter",
) -> Event:
    return Event(
        f"ev-{i}",
        kind,
        "tests",
        tenant,
        machine,
        instance,
        1_700_000_000_000 + i,
        {"amount": i % 7} if data is None else data,
    )


async def _produce(
    bootstrap: str, topic: str, values: Sequence[tuple[bytes, bytes | None]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        for key, value in values:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def _changes(
    bootstrap: str,
    app: str,
    worker: WorkerProcess,
    until: Callable[[list[Any]], bool],
    *,
    timeout_s: float,
) -> list[Any]:
    """``app``'s state changes from the start, once ``until`` holds, while ``worker``
    lives (its log tail if not)."""
    return await read_topic(
        bootstrap,
        f"{app}.state-changes",
        until=until,
        timeout_s=timeout_s,
        alive=worker.alive,
        describe=worker.log_tail,
    )


def _get_state(port: str, tenant: str, machine: str, instance: str) -> dict[str, Any] | None:
    url = f"http://127.0.0.1:{port}/state/{tenant}/{machine}/{instance}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - local worker
            return json.loads(resp.read())  # type: ignore[no-any-return]
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


async def _wait_state(
    worker: WorkerProcess,
    port: str,
    address: tuple[str, str, str],
    seq: int,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    found = None
    while time.monotonic() < deadline:
        assert worker.alive(), f"worker died:\n{worker.log_tail()}"
        found = await asyncio.to_thread(_get_state, port, *address)
        if found is not None and found.get("seq") == seq:
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"{address} never reached seq {seq} (last: {found})\n{worker.log_tail()}")


@pytest.fixture
def worker_env(
    kafka_bootstrap: str, unique: Callable[[str], str], data_dir: Path
) -> dict[str, str]:
    return settings_env(kafka_bootstrap, unique("app"), data_dir)


@pytest.fixture
def worker(worker_env: dict[str, str], tmp_path: Path) -> Any:
    proc = WorkerProcess("tests.sample_app", worker_env, tmp_path / "worker.log")
    yield proc
    proc.stop()


async def test_state_survives_restart_by_changelog_recovery(
    kafka_bootstrap: str, worker: WorkerProcess, worker_env: dict[str, str]
) -> None:
    app, port = worker_env["GARRISON_APP"], worker_env["GARRISON_WEB_PORT"]
    worker.start()
    tenants = [f"t{n}" for n in range(6)]
    values = []
    for i in range(60):
        ev = _event(i, tenants[i % 6], f"c{i % 4}")
        values.append((ev.tenant.encode(), encode_event(ev)))
    await _produce(kafka_bootstrap, f"{app}.events", values)
    changes = await _changes(kafka_bootstrap, app, worker, lambda rs: len(rs) >= 60, timeout_s=90)
    assert len(changes) == 60
    before = {}
    for tenant in tenants:
        for c in range(4):
            expected_seq = sum(
                1 for i in range(60) if i % 6 == tenants.index(tenant) and i % 4 == c
            )
            if expected_seq:
                before[(tenant, c)] = await _wait_state(
                    worker, port, (tenant, "counter", f"c{c}"), expected_seq
                )
    worker.stop()
    assert not worker.alive()
    shutil.rmtree(worker_env["GARRISON_DATA_DIR"])  # the local RocksDB is gone
    worker.start()
    for (tenant, c), was in before.items():
        now = await _wait_state(worker, port, (tenant, "counter", f"c{c}"), was["seq"])
        assert now["state"] == was["state"]
    assert worker.starts == 2


BAD_KINDS = {
    "malformed JSON": ("decode", "not JSON"),
    "missing attribute": ("decode", "missing CloudEvents attribute(s): instance"),
    "invalid tenant": ("decode", "tenant id 'a/b' contains '/'"),
    "unknown machine": ("route", "no machine named 'ghost'"),
    "unknown event type": ("route", "has no reducer for 'counter.nope'"),
    "contract": ("contract", "payload of 'counter.added' does not fit Added"),
    "reducer raises": ("reducer", "RuntimeError: this reducer always fails"),
    "state fails model": ("state", "does not fit Counter"),
}


def _bad(kind: str, i: int) -> bytes:
    good = orjson.loads(encode_event(_event(i, "acme", "c1")))
    if kind == "malformed JSON":
        return b'{"specversion": "1.0", "id": '
    if kind == "missing attribute":
        del good["instance"]
    elif kind == "invalid tenant":
        good["tenant"] = "a/b"
    elif kind == "unknown machine":
        good["machine"] = "ghost"
    elif kind == "unknown event type":
        good["type"] = "counter.nope"
    elif kind == "contract":
        good["data"] = {"amount": "lots"}
    elif kind == "reducer raises":
        good["type"], good["data"] = "counter.broken", None
    elif kind == "state fails model":
        good["type"], good["data"] = "counter.corrupt", None
    return orjson.dumps(good)


async def test_bad_input_goes_to_the_dead_letter_topic_and_loses_nothing(
    kafka_bootstrap: str, worker: WorkerProcess, worker_env: dict[str, str]
) -> None:
    app = worker_env["GARRISON_APP"]
    worker.start()
    values: list[tuple[bytes, bytes | None]] = []
    good = 0
    amounts = 0
    for i, kind in enumerate(BAD_KINDS):
        for j in range(3):
            ev = _event(100 * i + j, "acme", "c1")
            values.append((b"acme", encode_event(ev)))
            good += 1
            amounts += ev.data["amount"]
        values.append((b"acme", _bad(kind, 100 * i + 50)))
    await _produce(kafka_bootstrap, f"{app}.events", values)
    dead = await read_topic(
        kafka_bootstrap,
        f"{app}.dlq",
        until=lambda rs: len(rs) >= len(BAD_KINDS),
        timeout_s=90,
        alive=worker.alive,
        describe=worker.log_tail,
    )
    changes = await read_topic(
        kafka_bootstrap, f"{app}.state-changes", until=lambda rs: len(rs) >= good, timeout_s=30
    )
    assert len(dead) == len(BAD_KINDS)
    assert len(changes) == good
    final = orjson.loads(changes[-1].value)
    assert final["seq"] == good
    assert final["state"]["count"] == good
    assert final["state"]["total"] == amounts
    by_value = {rec.value: DeadLetter.read_headers(rec.headers) for rec in dead}
    for i, (kind, (stage, text)) in enumerate(BAD_KINDS.items()):
        raw = _bad(kind, 100 * i + 50)
        assert raw in by_value, f"{kind}: original bytes not in the dead-letter topic"
        headers = by_value[raw]
        assert headers["garrison.stage"] == stage, kind
        assert text in headers["garrison.reason"], (kind, headers["garrison.reason"])
        assert headers["garrison.topic"] == f"{app}.events"
    assert all(rec.key == b"acme" for rec in dead)


async def test_durable_timers_fire_once_and_periodically_then_cancel(
    kafka_bootstrap: str, worker: WorkerProcess, worker_env: dict[str, str]
) -> None:
    app = worker_env["GARRISON_APP"]
    worker.start()
    now = int(time.time() * 1000)
    once = Event("a1", "counter.alarm", "tests", "acme", "counter", "once", now, {"seconds": 1})
    periodic = Event(
        "p1", "counter.alarm", "tests", "acme", "counter", "every", now, {"seconds": 1, "every": 1}
    )
    await _produce(
        kafka_bootstrap,
        f"{app}.events",
        [(b"acme", encode_event(once)), (b"acme", encode_event(periodic))],
    )

    def rang(records: list[Any], instance: str) -> list[dict[str, Any]]:
        changes = [orjson.loads(r.value) for r in records]
        return [
            c for c in changes if c["instance"] == instance and c["event_type"] == "counter.rang"
        ]

    records = await _changes(
        kafka_bootstrap, app, worker, lambda rs: len(rang(rs, "every")) >= 3, timeout_s=60
    )
    fired = rang(records, "every")
    # Each firing is the timer's due time, one period apart, whatever the tick.
    assert [c["time_ms"] - now for c in fired[:3]] == [1000, 2000, 3000]
    assert [c["state"]["count"] for c in fired[:3]] == [100, 200, 300]
    snooze = Event("s1", "counter.snooze", "tests", "acme", "counter", "every", now + 3500, None)
    await _produce(kafka_bootstrap, f"{app}.events", [(b"acme", encode_event(snooze))])
    await asyncio.sleep(4)
    records = await read_topic(
        kafka_bootstrap,
        f"{app}.state-changes",
        until=lambda rs: any(orjson.loads(r.value)["event_id"] == "s1" for r in rs),
        timeout_s=30,
    )
    after = [orjson.loads(r.value) for r in records]
    snoozed_at = next(i for i, c in enumerate(after) if c["event_id"] == "s1")
    assert not [c for c in after[snoozed_at + 1 :] if c["instance"] == "every"]
    assert len(rang(records, "once")) == 1
    seqs = [c["seq"] for c in after if c["instance"] == "every"]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_a_store_ahead_of_an_open_transaction_on_its_changelog_is_kept(
    kafka_bootstrap: str, unique: Callable[[str], str], data_dir: Path, tmp_path: Path
) -> None:
    # Another producer (a dead or zombie worker) leaves a transaction open on the state
    # changelog; the worker's own commits go on after its record, so the changelog's
    # last stable offset stays before them. A restart then finds its store ahead of the
    # last committed record it can read: rebuilding the store from there (as for a
    # broker that lost its data) lost those commits and applied their events again.
    env = settings_env(kafka_bootstrap, unique("app"), data_dir, dedupe_ids="1")
    app = env["GARRISON_APP"]
    worker = WorkerProcess("tests.sample_app", env, tmp_path / "worker.log")
    partitions = int(env.get("GARRISON_KAFKA_PARTITIONS", "4"))
    changelog = TopicPartition(f"{app}-state-changelog", partition_of(b"acme", partitions))

    async def send(events: range) -> None:
        await _produce(
            kafka_bootstrap,
            f"{app}.events",
            [(b"acme", encode_event(_event(i, "acme", "c1"))) for i in events],
        )

    foreign = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap,
        transactional_id=unique("foreign"),
        transaction_timeout_ms=300_000,
    )
    worker.start()
    await foreign.start()
    try:
        await send(range(5))
        await _changes(kafka_bootstrap, app, worker, lambda rs: len(rs) >= 5, timeout_s=90)
        await foreign.begin_transaction()
        await (
            await foreign.send(
                changelog.topic, b"open", key=b"foreign", partition=changelog.partition
            )
        )
        await send(range(5, 10))
        await _changes(kafka_bootstrap, app, worker, lambda rs: len(rs) >= 10, timeout_s=90)
        worker.stop()
        worker.start()
        await send(range(10, 11))
        await _changes(kafka_bootstrap, app, worker, lambda rs: len(rs) >= 11, timeout_s=90)
        await asyncio.sleep(3)  # anything applied twice would arrive by now
        changes = await read_topic(
            kafka_bootstrap, f"{app}.state-changes", until=lambda rs: len(rs) >= 11, timeout_s=30
        )
    finally:
        worker.stop()
        with contextlib.suppress(Exception):
            await foreign.abort_transaction()
        await foreign.stop()
    seqs = [orjson.loads(rec.value)["seq"] for rec in changes]
    assert seqs == list(range(1, 12)), f"{len(seqs)} state changes for 11 events"
    assert "an open transaction holds readers back" in worker.log_tail(400)


@pytest.mark.parametrize("wipe", [False, True], ids=["local-store", "restored"])
async def test_a_restarted_worker_skips_what_it_applied_by_the_stored_offset(
    wipe: bool, kafka_bootstrap: str, unique: Callable[[str], str], data_dir: Path, tmp_path: Path
) -> None:
    # The de-duplication window is one id: after a SIGKILL only the offset kept with
    # the state (in RocksDB, or restored from the changelog when the disk is wiped)
    # keeps the worker from applying those events twice; where a lane reads does not
    # come from the group's offsets.
    env = settings_env(
        kafka_bootstrap,
        unique("app"),
        data_dir,
        dedupe_ids="1",
    )
    app = env["GARRISON_APP"]
    worker = WorkerProcess("tests.sample_app", env, tmp_path / "worker.log")

    async def send(events: range) -> None:
        await _produce(
            kafka_bootstrap,
            f"{app}.events",
            [(b"acme", encode_event(_event(i, "acme", "c1"))) for i in events],
        )

    worker.start()
    try:
        await send(range(300))
        await _changes(kafka_bootstrap, app, worker, lambda rs: len(rs) >= 300, timeout_s=90)
        worker.kill()
        if wipe:
            shutil.rmtree(env["GARRISON_DATA_DIR"])
        worker.start()
        await send(range(300, 400))
        await _changes(kafka_bootstrap, app, worker, lambda rs: len(rs) >= 400, timeout_s=120)
        await asyncio.sleep(3)  # anything applied twice would arrive by now
        changes = await read_topic(
            kafka_bootstrap, f"{app}.state-changes", until=lambda rs: len(rs) >= 400, timeout_s=30
        )
    finally:
        worker.stop()
    seqs = [orjson.loads(rec.value)["seq"] for rec in changes]
    assert seqs == list(range(1, 401)), f"{len(seqs)} state changes for 400 events"


async def test_a_commit_reported_failed_that_committed_is_not_applied_again(
    kafka_bootstrap: str, unique: Callable[[str], str], data_dir: Path, tmp_path: Path
) -> None:
    # Every fifth commit of a lane commits and then raises (tests/lost_answer_app.py);
    # the de-duplication window is one id, so only the offset stored with the state can
    # tell the lane that the batch it is about to redo is applied already.
    env = settings_env(kafka_bootstrap, unique("app"), data_dir, dedupe_ids="1")
    app = env["GARRISON_APP"]
    worker = WorkerProcess("tests.lost_answer_app", env, tmp_path / "worker.log")
    worker.start()
    try:
        for start in range(0, 200, 10):  # in tens, each its own transaction or two
            await _produce(
                kafka_bootstrap,
                f"{app}.events",
                [
                    (b"acme", encode_event(_event(i, "acme", "c1")))
                    for i in range(start, start + 10)
                ],
            )
            if start == 0:  # the lanes are up: every later ten comes on its own
                await _changes(kafka_bootstrap, app, worker, lambda rs: len(rs) >= 10, timeout_s=90)
            await asyncio.sleep(0.2)
        await _changes(kafka_bootstrap, app, worker, lambda rs: len(rs) >= 200, timeout_s=120)
        await asyncio.sleep(3)  # anything applied twice would arrive by now
        changes = await read_topic(
            kafka_bootstrap, f"{app}.state-changes", until=lambda rs: len(rs) >= 200, timeout_s=30
        )
        log = worker.log_tail(5000)
    finally:
        worker.stop()
    seqs = [orjson.loads(rec.value)["seq"] for rec in changes]
    assert seqs == list(range(1, 201)), f"{len(seqs)} state changes for 200 events"
    lost = log.count("had committed")
    assert lost >= 2, f"{lost} commits were reported lost"


async def test_the_groups_offsets_follow_what_the_lanes_committed_at_rest(
    kafka_bootstrap: str, worker: WorkerProcess, worker_env: dict[str, str]
) -> None:
    # A burst, then nothing: the group's offsets, committed in the same transactions
    # as what they applied, reach the end of every events partition.
    app = worker_env["GARRISON_APP"]
    worker.start()
    values = []
    for i in range(200):
        ev = _event(i, f"t{i % 10}", "c1")
        values.append((ev.tenant.encode(), encode_event(ev)))
    await _produce(kafka_bootstrap, f"{app}.events", values)
    await _changes(kafka_bootstrap, app, worker, lambda rs: len(rs) >= 200, timeout_s=90)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await consumer.start()
    try:
        tps = [TopicPartition(f"{app}.events", p) for p in range(4)]
        ends = await consumer.end_offsets(tps)
        assert sum(ends.values()) == 200
        deadline = time.monotonic() + 10  # the changes were read: their commits are done
        committed: dict[TopicPartition, int] = {}
        while time.monotonic() < deadline:
            found = await admin.list_consumer_group_offsets(app, partitions=tps)
            committed = {tp: meta.offset for tp, meta in found.items() if meta is not None}
            if all(committed.get(tp, -1) == end for tp, end in ends.items() if end):
                break
            await asyncio.sleep(0.3)
    finally:
        await consumer.stop()
        await admin.close()
    assert {tp: committed.get(tp, -1) for tp, end in ends.items() if end} == {
        tp: end for tp, end in ends.items() if end
    }, worker.log_tail()
