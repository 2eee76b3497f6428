"""A hot tenant on the real broker, with two workers: its instances spread over the
partitions, every record of an instance agrees on where it lives, any worker answers
for any instance (forwarding to the owner), and a listing of the tenant is refused with
the reason."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agents.kafka import partition_of
from garrison.client import Client
from pipeline import Event, StateChange, encode_event
from tests.harness import (
    WorkerProcess,
    curl,
    free_port,
    produce,
    read_topic,
    settings_env,
    settings_from,
    wait_until,
)

pytestmark = pytest.mark.asyncio(loop_scope="function")

INSTANCES = [f"b{i}" for i in range(12)]


@pytest.fixture
def workers(
    kafka_bootstrap: str, unique: Callable[[str], str], tmp_path: Path
) -> Iterator[tuple[dict[str, str], list[WorkerProcess]]]:
    env = settings_env(kafka_bootstrap, unique("hot"), tmp_path / "a", hot_tenants="big")
    procs = []
    for name in ("a", "b"):
        own = {**env, "GARRISON_DATA_DIR": str(tmp_path / name)}
        own["GARRISON_WEB_PORT"] = str(free_port())
        procs.append(WorkerProcess("tests.sample_app", own, tmp_path / f"{name}.log"))
    for proc in procs:
        proc.start()
    try:
        yield env, procs
    finally:
        for proc in procs:
            proc.stop()


async def test_a_hot_tenant_spreads_and_any_worker_reads_any_instance(
    kafka_bootstrap: str, workers: tuple[dict[str, str], list[WorkerProcess]]
) -> None:
    env, procs = workers
    ports = [p.env["GARRISON_WEB_PORT"] for p in procs]

    def describe() -> str:
        return "\n".join(p.log_tail() for p in procs)

    def both_ready() -> bool:
        return all(curl(port, "/ready")[0] == 200 for port in ports)

    await wait_until(both_ready, timeout_s=120, what="two ready workers", describe=describe)
    settings = settings_from(env)
    async with Client(settings, connect_timeout_s=10) as client:
        for round_ in range(2):
            for inst in INSTANCES:
                await client.send("big", "counter", inst, "counter.added", {"amount": round_ + 1})
            await client.send("acme", "counter", "a1", "counter.added", {"amount": 1})

    changes = await read_topic(
        kafka_bootstrap,
        settings.topics.state_changes,
        until=lambda rs: len(rs) >= 2 * len(INSTANCES) + 2,
        timeout_s=90,
        describe=describe,
    )
    homes = set()
    for rec in changes:
        change = StateChange.from_json(rec.value)
        key = b"acme" if change.tenant == "acme" else f"big/{change.instance}".encode()
        assert rec.key == key
        assert rec.partition == partition_of(key, 4)  # where its events and state are
        if change.tenant == "big":
            homes.add(rec.partition)
    assert len(homes) > 1  # one tenant, several partitions (and both workers)

    def seq_everywhere(inst: str, seq: int) -> bool:
        for port in ports:  # one of the two forwards to the owner
            status, body = curl(port, f"/state/big/counter/{inst}", token=None)
            if status != 200 or body["seq"] != seq:
                return False
        return True

    for inst in INSTANCES:
        await wait_until(
            lambda inst=inst: seq_everywhere(inst, 2),  # type: ignore[misc]
            timeout_s=30,
            what=f"{inst} at seq 2",
            describe=describe,
        )
        status, body = curl(ports[0], f"/state/big/counter/{inst}/history?from_seq=1")
        assert status == 200, body
        assert [c["seq"] for c in body["changes"]] == [1, 2]
    status, body = curl(ports[1], "/state/big")
    assert status == 409
    assert "keyed by instance" in body["error"]
    assert curl(ports[0], "/state/acme")[0] == 200  # other tenants list as before

    # A producer that keys by tenant (not knowing big is hot) still reaches the right
    # instance: the partition it lands on forwards the event to the instance's own.
    moved = next(
        i for i in INSTANCES if partition_of(f"big/{i}".encode(), 4) != partition_of(b"big", 4)
    )
    late = Event(
        f"late-{time.time_ns()}", "counter.added", "t", "big", "counter", moved, 0, {"amount": 5}
    )
    async with Client(settings, connect_timeout_s=10) as client:
        # A waiter follows the instance's own partition of the state changes, not the
        # tenant's: it sees the forwarded event's change (total 1 + 2 + 5).
        waiting = asyncio.create_task(
            client.wait_for(
                "big",
                "counter",
                moved,
                lambda s: s["total"] >= 8,
                60,
                url=f"http://127.0.0.1:{ports[1]}",
            )
        )
        await asyncio.sleep(1)  # it reads seq 2 and follows
        await produce(kafka_bootstrap, settings.topics.events, [(b"big", encode_event(late))])
        seen = await waiting
    assert (seen.seq, seen.state["total"]) == (3, 8)
    assert seen.event_id in (late.id, None)  # None: it was read, the waiter was slow
    await wait_until(
        lambda: seq_everywhere(moved, 3), timeout_s=30, what=f"{moved} at 3", describe=describe
    )
