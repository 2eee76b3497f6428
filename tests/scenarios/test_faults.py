"""Faults on the real broker, under load: crashes and restarts, workers joining and
leaving mid-rebalance, and the broker itself going away. After each scenario every
instance's seq is 1..n, its state equals a pure fold of its events, and the dead-letter
topic is empty.

These run against a broker of their own (the broker outages stop and kill it).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from garrison.local_kafka import LocalKafka
from tests.harness import WorkerProcess, settings_env, wait_until
from tests.scenarios.faults import Follower, Load, verify

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="function")]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    kafka = LocalKafka(tmp_path_factory.mktemp("faults-kafka"), port=0, heap_mb=512)
    bootstrap = kafka.up()
    kafka.port = int(bootstrap.rsplit(":", 1)[1])  # restarts come back on the same port
    try:
        yield kafka
    finally:
        kafka.down(purge=True)


def _bootstrap(kafka: LocalKafka) -> str:
    return f"127.0.0.1:{kafka.port}"


def _workers(kafka: LocalKafka, tmp_path: Path, count: int, partitions: int) -> list[WorkerProcess]:
    app = f"faults-{uuid.uuid4().hex[:6]}"
    out = []
    for n in range(count):
        data = tmp_path / f"data-{n}"
        data.mkdir()
        env = settings_env(
            _bootstrap(kafka), app, data, partitions=partitions, worker_id=f"w{n}", log_level="info"
        )
        out.append(WorkerProcess("tests.sample_app", env, tmp_path / f"worker-{n}.log"))
    return out


def _misbehaving(
    kafka: LocalKafka, tmp_path: Path, app_module: str
) -> tuple[WorkerProcess, WorkerProcess, Path]:
    """Two workers of one app, the first loading ``app_module``: a test app that
    misbehaves while the returned flag file exists (``TEST_MISBEHAVE_FLAG``)."""
    first, second = _workers(kafka, tmp_path, 2, partitions=4)
    flag = tmp_path / "misbehave"
    first.env["TEST_MISBEHAVE_FLAG"] = str(flag)
    first.app_module = app_module
    return first, second, flag


def _logs(workers: list[WorkerProcess]) -> str:
    return "\n".join(f"--- worker {n} ---\n{w.log_tail(30)}" for n, w in enumerate(workers))


async def test_five_sigkills_each_serving_again_within_five_seconds(
    broker: LocalKafka, tmp_path: Path
) -> None:
    [worker] = _workers(broker, tmp_path, 1, partitions=4)
    app = worker.env["GARRISON_APP"]
    follower = Follower(_bootstrap(broker), f"{app}.state-changes")
    load = Load(_bootstrap(broker), f"{app}.events", rate=300)
    worker.start()
    follower.start()
    sending = asyncio.create_task(load.run(12_000))
    gaps = []
    try:
        await follower.silent_for(4, time.monotonic(), timeout_s=90)  # serving
        for _ in range(5):
            await asyncio.sleep(2)
            killed = time.monotonic()
            worker.kill()
            worker.start()
            gaps.append(await follower.silent_for(4, killed, timeout_s=60))
            assert worker.alive(), worker.log_tail()
        load.stop()
        await sending
        await verify(_bootstrap(broker), app, load.sent, describe=lambda: _logs([worker]))
    finally:
        load.stop()
        await follower.stop()
        worker.stop()
    assert max(gaps) < 5.0, f"time to serve again after each SIGKILL: {gaps}"


# GARRISON_FAULTS_ROUNDS=N repeats the join/leave/kill choreography N times (with N
# times the events): the suite runs one round; loops of more rounds reproduced the lost
# events on the code before the fix.
ROUNDS = int(os.environ.get("GARRISON_FAULTS_ROUNDS", "1"))


async def test_three_workers_joining_leaving_and_killed_mid_rebalance(
    broker: LocalKafka, tmp_path: Path
) -> None:
    a, b, c = workers = _workers(broker, tmp_path, 3, partitions=6)
    app = a.env["GARRISON_APP"]
    bootstrap = _bootstrap(broker)
    follower = Follower(bootstrap, f"{app}.state-changes")
    load = Load(bootstrap, f"{app}.events", rate=1000, tenants=60)
    a.start()
    follower.start()
    sending = asyncio.create_task(load.run(24_000 * ROUNDS))
    try:
        await follower.silent_for(6, time.monotonic(), timeout_s=90)
        steps = [
            (2.0, b.start),  # joins: partitions move
            (2.0, c.start),  # joins
            (0.6, b.kill),  # killed in the middle of that rebalance
            (2.5, a.stop),  # leaves (SIGTERM)
            (1.5, b.start),  # comes back
            (2.0, a.start),  # comes back
            (0.7, c.kill),  # killed mid-rebalance again
            (2.0, c.start),
            (2.0, b.stop),
            (1.0, b.start),
        ]
        for _ in range(ROUNDS):
            for pause, act in steps:
                await asyncio.sleep(pause)
                act()
        load.stop()
        await sending
        records = await verify(bootstrap, app, load.sent, describe=lambda: _logs(workers))
        # A live read_committed follower saw exactly what a fresh read sees.
        await asyncio.sleep(3)
        assert len(follower.records) == len(records), (len(follower.records), len(records))
        assert a.alive()
        assert c.alive()
    finally:
        load.stop()
        await follower.stop()
        for w in workers:
            w.stop()


async def test_workers_ride_out_broker_outages(broker: LocalKafka, tmp_path: Path) -> None:
    first, second = workers = _workers(broker, tmp_path, 2, partitions=4)
    app = first.env["GARRISON_APP"]
    bootstrap = _bootstrap(broker)
    follower = Follower(bootstrap, f"{app}.state-changes")
    load = Load(bootstrap, f"{app}.events", rate=300, careful=True)
    first.start()
    second.start()
    follower.start()
    sending = asyncio.create_task(load.run(15_000))
    try:
        await follower.silent_for(4, time.monotonic(), timeout_s=90)
        for how in ("stop", "kill", "stop"):
            await asyncio.sleep(3)
            if how == "stop":
                await asyncio.to_thread(broker.down)
            else:
                await asyncio.to_thread(broker.kill)
            await asyncio.sleep(10)  # the broker is gone for 10 s
            back = time.monotonic()
            await asyncio.to_thread(broker.up)
            for w in workers:
                assert w.alive(), f"a worker exited during the outage\n{_logs(workers)}"
            assert not sending.done() or sending.exception() is None, sending.exception()
            await follower.silent_for(4, back, timeout_s=120)
        load.stop()
        await sending
        await verify(bootstrap, app, load.sent, timeout_s=300, describe=lambda: _logs(workers))
        for w in workers:
            assert w.alive(), _logs(workers)
            assert w.starts == 1
    finally:
        load.stop()
        await follower.stop()
        for w in workers:
            w.stop()


async def test_a_warm_standby_serves_a_dead_workers_partitions(
    broker: LocalKafka, tmp_path: Path
) -> None:
    app = f"standby-{uuid.uuid4().hex[:6]}"
    workers = []
    for n in range(2):
        data = tmp_path / f"data-{n}"
        data.mkdir()
        env = settings_env(
            _bootstrap(broker), app, data, partitions=4, worker_id=f"s{n}", standby_replicas="1"
        )
        workers.append(WorkerProcess("tests.sample_app", env, tmp_path / f"worker-{n}.log"))
    survivor, doomed = workers
    follower = Follower(_bootstrap(broker), f"{app}.state-changes")
    load = Load(_bootstrap(broker), f"{app}.events", rate=300)
    survivor.start()
    doomed.start()
    follower.start()
    sending = asyncio.create_task(load.run(9_000))
    try:
        await follower.silent_for(4, time.monotonic(), timeout_s=90)
        await asyncio.sleep(8)
        killed = time.monotonic()
        doomed.kill()  # for good: its partitions must move to the survivor's warm copies
        gap = await follower.silent_for(4, killed, timeout_s=60)
        load.stop()
        await sending
        await verify(_bootstrap(broker), app, load.sent, describe=lambda: _logs(workers))
    finally:
        load.stop()
        await follower.stop()
        for w in workers:
            w.stop()
    # The session timeout (6 s) passes before the group moves them, then the survivor
    # restores only what its copy lacked.
    assert gap < 10.0, f"{gap:.1f} s to serve the dead worker's partitions"


async def test_a_zombie_worker_commits_nothing_after_losing_its_partitions(
    broker: LocalKafka, tmp_path: Path
) -> None:
    # The first worker stops heartbeating under load (tests.zombie_app: as if its
    # consumer thread stalled) while its lanes go on applying and committing. The group
    # drops it after the session timeout and gives every partition to the second
    # worker; the first is then a zombie: its transactions name a generation the group
    # has left, so the group refuses their offsets and nothing they wrote commits
    # (agents.group_offsets). Every event is applied once: seq 1..n for every
    # instance, the state a fold of its events.
    zombie, owner, flag = _misbehaving(broker, tmp_path, "tests.zombie_app")
    workers = [zombie, owner]
    app = zombie.env["GARRISON_APP"]
    bootstrap = _bootstrap(broker)
    follower = Follower(bootstrap, f"{app}.state-changes")
    load = Load(bootstrap, f"{app}.events", rate=500, tenants=40)
    zombie.start()
    follower.start()
    sending = asyncio.create_task(load.run(20_000))
    try:
        await follower.silent_for(4, time.monotonic(), timeout_s=90)  # the first serves
        flag.touch()
        stalled = time.monotonic()
        owner.start()
        await wait_until(
            lambda: "partitions [0, 1, 2, 3]" in owner.log_tail(400),
            timeout_s=90,
            what="the second worker serving every partition",
            describe=lambda: _logs(workers),
        )
        await follower.silent_for(4, stalled, timeout_s=60)
        refused = await wait_until(
            lambda: [
                line for line in zombie.log_tail(4000).splitlines() if "fenced by the group" in line
            ],
            timeout_s=30,
            what="the zombie's offsets refused",
            describe=lambda: _logs(workers),
        )
        assert "partition has another owner" in refused[0]
        flag.unlink()  # it hears of the rebalance, and joins again
        await asyncio.sleep(8)
        load.stop()
        await sending
        await verify(bootstrap, app, load.sent, describe=lambda: _logs(workers))
        assert zombie.alive(), _logs(workers)
        assert owner.alive(), _logs(workers)
    finally:
        flag.unlink(missing_ok=True)
        load.stop()
        await follower.stop()
        for w in workers:
            w.stop()


async def test_a_worker_killed_in_a_transaction_does_not_hold_its_partitions(
    broker: LocalKafka, tmp_path: Path
) -> None:
    # The first worker hangs in a commit under load (tests.stuck_commit_app): its
    # transaction is open with its records and group offsets sent. It is SIGKILLed, and
    # the second worker, taking its partitions, ends that transaction itself
    # (agents.dispatch, _end_open_transactions) instead of waiting for the broker's
    # transaction timeout, which held read_committed readers and the new owner's stable
    # fetch: a standby once took 18.5 s to serve. Every event is applied once.
    dead, owner, flag = _misbehaving(broker, tmp_path, "tests.stuck_commit_app")
    workers = [dead, owner]
    app = dead.env["GARRISON_APP"]
    bootstrap = _bootstrap(broker)
    follower = Follower(bootstrap, f"{app}.state-changes")
    load = Load(bootstrap, f"{app}.events", rate=300)
    dead.start()
    follower.start()
    sending = asyncio.create_task(load.run(9_000))
    try:
        await follower.silent_for(4, time.monotonic(), timeout_s=90)  # the first serves
        flag.touch()
        await asyncio.sleep(1.0)  # its next commit hangs, the transaction open
        killed = time.monotonic()
        dead.kill()
        owner.start()
        gap = await follower.silent_for(4, killed, timeout_s=90)
        load.stop()
        await sending
        await verify(bootstrap, app, load.sent, describe=lambda: _logs(workers))
    finally:
        flag.unlink(missing_ok=True)
        load.stop()
        await follower.stop()
        for w in workers:
            w.stop()
    # The session timeout (6 s) passes before the group moves them.
    assert gap < 15.0, f"{gap:.1f} s to serve the dead worker's partitions"
    assert "fencing their last writer" in owner.log_tail(2000), _logs(workers)
