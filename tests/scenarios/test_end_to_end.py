"""End to end on the real broker: many tenants and instances, random events, a worker
that may be SIGKILLed mid-run; the result must equal a pure in-memory fold."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from agents.listeners import ListenerRunner
from pipeline import Event, Registry, StateChange, encode_event, fold
from tests.harness import WorkerProcess, read_topic, settings_env, settings_from
from tests.samples import counter_machine, pinger_machine

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="function")]

TENANTS, INSTANCES, EVENTS, DUPLICATES = 200, 50, 30_000, 500


def _workload(seed: int) -> tuple[list[Event], list[Event]]:
    """Unique events in send order, and the send order with redelivered duplicates."""
    rng = random.Random(seed)
    unique = []
    for i in range(EVENTS):
        tenant, inst = f"t{rng.randrange(TENANTS):03d}", f"i{rng.randrange(INSTANCES):02d}"
        if rng.random() < 0.05:
            kind, data = "counter.reset", None
        else:
            kind, data = "counter.added", {"amount": rng.randint(-50, 50), "note": "x"}
        unique.append(
            Event(f"e{seed}-{i}", kind, "e2e", tenant, "counter", inst, 1_700_000_000_000 + i, data)
        )
    sent = list(unique)
    for _ in range(DUPLICATES):  # a producer retrying: the same event again, later
        pos = rng.randrange(len(sent))
        sent.insert(rng.randrange(pos, len(sent) + 1), sent[pos])
    return unique, sent


def _listeners(runs: list[tuple[str, str, str, int]]) -> Registry:
    registry = Registry([counter_machine(), pinger_machine()])

    @registry.listener(machine="counter", when=lambda prev, cur: cur["count"] % 10 == 0)
    def every_tenth(change: StateChange, ctx: Any) -> None:
        runs.append(("every_tenth", change.tenant, change.instance, change.seq))

    @registry.listener(on="counter.reset")
    async def on_reset(change: StateChange, ctx: Any) -> None:
        await asyncio.sleep(0)
        runs.append(("on_reset", change.tenant, change.instance, change.seq))

    return registry


async def _send(bootstrap: str, topic: str, events: list[Event]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=10)
    await producer.start()
    try:
        for ev in events:
            await producer.send(topic, encode_event(ev), key=ev.tenant.encode())
        await producer.flush()
    finally:
        await producer.stop()


@pytest.mark.parametrize("mode", ["steady", "sigkill", "scale-out"])
async def test_final_states_equal_the_fold_and_sequences_have_no_gaps(
    mode: str, kafka_bootstrap: str, unique: Callable[[str], str], data_dir: Path, tmp_path: Path
) -> None:
    env = settings_env(kafka_bootstrap, unique("e2e"), data_dir)
    app = env["GARRISON_APP"]
    worker = WorkerProcess("tests.sample_app", env, tmp_path / "worker.log")
    # A second worker of the same app: its own data dir and web port.
    other_dir = tmp_path / "data-2"
    other_dir.mkdir()
    other = WorkerProcess(
        "tests.sample_app",
        {**env, **settings_env(kafka_bootstrap, app, other_dir)},
        tmp_path / "worker-2.log",
    )
    unique_events, sent = _workload(seed={"steady": 3, "sigkill": 7, "scale-out": 11}[mode])
    # The expectation: a pure fold of each instance's events, in send order.
    per_instance: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for ev in unique_events:
        per_instance[(ev.tenant, ev.instance)].append(ev)
    registry = Registry([counter_machine(), pinger_machine()])
    expected = {key: fold(registry, evs) for key, evs in per_instance.items()}
    total = sum(len(changes) for _, changes in expected.values())
    assert total == EVENTS

    def logs() -> str:
        return f"{worker.log_tail()}\n--- second worker ---\n{other.log_tail()}"

    worker.start()
    try:
        if mode == "steady":
            await _send(kafka_bootstrap, f"{app}.events", sent)
        else:
            await _send(kafka_bootstrap, f"{app}.events", sent[: len(sent) // 2])
            await read_topic(
                kafka_bootstrap,
                f"{app}.state-changes",
                until=lambda rs: len(rs) >= EVENTS // 4,
                timeout_s=180,
                alive=worker.alive,
                describe=logs,
            )
            if mode == "sigkill":
                worker.kill()
                worker.start()
            else:  # a second worker joins: partitions move to it mid-run
                other.start()
            await _send(kafka_bootstrap, f"{app}.events", sent[len(sent) // 2 :])
            if mode == "scale-out":
                await read_topic(
                    kafka_bootstrap,
                    f"{app}.state-changes",
                    until=lambda rs: len(rs) >= 3 * EVENTS // 4,
                    timeout_s=180,
                    describe=logs,
                )
                worker.stop()  # and the first one leaves: all partitions move again
        survivor = other if mode == "scale-out" else worker
        records = await read_topic(
            kafka_bootstrap,
            f"{app}.state-changes",
            until=lambda rs: len(rs) >= total,
            timeout_s=300,
            alive=survivor.alive,
            describe=logs,
        )
        # Nothing more arrives: no change is published twice.
        await asyncio.sleep(2)
        records = await read_topic(
            kafka_bootstrap, f"{app}.state-changes", until=lambda rs: len(rs) >= total, timeout_s=60
        )
    finally:
        worker.stop()
        other.stop()

    assert len(records) == total, f"{len(records)} state changes for {total} events"
    seqs: dict[tuple[str, str], list[int]] = defaultdict(list)
    last: dict[tuple[str, str], Any] = {}
    for rec in records:
        change = orjson.loads(rec.value)
        key = (change["tenant"], change["instance"])
        seqs[key].append(change["seq"])
        last[key] = change["state"]
        assert rec.key == change["tenant"].encode()
    assert set(seqs) == set(expected)
    for key, (record, changes) in expected.items():
        assert seqs[key] == list(range(1, len(changes) + 1)), f"{key}: {seqs[key][:20]}"
        assert record is not None
        assert last[key] == record.state, key
    assert worker.starts == (2 if mode == "sigkill" else 1)
    assert other.starts == (1 if mode == "scale-out" else 0)

    # Listeners: each runs exactly once per matching change.
    runs: list[tuple[str, str, str, int]] = []
    runner = ListenerRunner(settings_from(env), _listeners(runs), group_id=unique("lst"))
    want = set()
    for (tenant, inst), (_, changes) in expected.items():
        for c in changes:
            if c.state["count"] % 10 == 0:
                want.add(("every_tenth", tenant, inst, c.seq))
            if c.event_type == "counter.reset":
                want.add(("on_reset", tenant, inst, c.seq))
    task = asyncio.create_task(runner.run())
    try:
        for _ in range(600):
            if len(runs) >= len(want) and runner.stats.changes >= total:
                break
            assert not task.done(), task.exception()
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)
    finally:
        runner.stop()
        await asyncio.wait_for(task, 30)
    assert runner.stats.changes == total
    assert len(runs) == len(set(runs)), "a listener ran twice for one change"
    assert set(runs) == want
