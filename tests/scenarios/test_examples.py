"""The examples end to end: a real worker process running the example app, the example's
services in this process, init events for several instances (failing ones included),
and the final state of every instance read from ``<app>.state-changes``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from agents.service import Service, serve
from agents.topics import ensure_topics
from garrison.client import make_event
from pipeline import Event, encode_event
from pipeline.deadletter import DeadLetter
from pipeline.settings import Settings
from tests.harness import WorkerProcess, read_topic, settings_env, settings_from

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="function")]


@asynccontextmanager
async def example(
    app_module: str,
    services: list[Service],
    topics: tuple[str, ...],
    env: dict[str, str],
    log: Path,
) -> AsyncIterator[tuple[WorkerProcess, Settings]]:
    """Service topics created, the worker started, the services consuming (from now on)."""
    settings = settings_from(env)
    await ensure_topics(settings, topics)
    worker = WorkerProcess(app_module, env, log)
    worker.start()
    readies = [asyncio.Event() for _ in services]
    tasks = [
        asyncio.create_task(serve(s, settings, ready=r, from_start=False))
        for s, r in zip(services, readies, strict=True)
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
        yield worker, settings
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        worker.stop()


async def send(settings: Settings, events: list[Event]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for e in events:
            await producer.send(settings.topics.events, encode_event(e), key=e.tenant.encode())
        await producer.flush()
    finally:
        await producer.stop()


def changes_by_instance(records: list[Any]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in records:
        change = orjson.loads(rec.value)
        out.setdefault((change["tenant"], change["instance"]), []).append(change)
    return out


def all_done(n: int) -> Callable[[list[Any]], bool]:
    def check(records: list[Any]) -> bool:
        done = [
            c
            for cs in changes_by_instance(records).values()
            for c in cs
            if c["state"]["status"] == "done"
        ]
        return len(done) >= n

    return check


def recording(
    services: list[Service],
    seen: list[tuple[str, str]],
    drop: Callable[[Event], bool] = lambda e: False,
) -> list[Service]:
    """The services, noting each command they handle; ``drop`` ones go unanswered."""

    def wrap(service: Service) -> Service:
        def handle(command: Event) -> Any:
            seen.append((command.instance, command.type))
            return None if drop(command) else service.handle(command)

        return replace(service, handle=handle)

    return [wrap(s) for s in services]


@pytest.fixture
def env(kafka_bootstrap: str, unique: Callable[[str], str], data_dir: Path) -> dict[str, str]:
    return settings_env(kafka_bootstrap, unique("example"), data_dir, partitions=2)


async def test_counter_orchestrator_calls_services_and_handles_their_errors(
    env: dict[str, str], tmp_path: Path
) -> None:
    from examples.orchestrator.app import INCREMENT_TOPIC, NOTIFY_TOPIC, SERVICE_TOPICS
    from examples.orchestrator.services import services

    runs = {
        ("acme", "c-ok"): (5, 3, 2),
        ("acme", "c-inc-fails"): (99, 5, 1),
        ("acme", "c-dec-fails"): (1, 1, 5),
        ("globex", "c-ok"): (0, 10, 10),
    }
    inits = [
        make_event(t, "counter", i, "counter.start", {"init": a, "increment": b, "decrement": c})
        for (t, i), (a, b, c) in runs.items()
    ]
    bad = make_event("acme", "counter", "c-bad", "counter.start", {"init": "five"})
    async with example(
        "examples.orchestrator.app", services(), SERVICE_TOPICS, env, tmp_path / "worker.log"
    ) as (worker, settings):
        await send(settings, [*inits, bad])
        records = await read_topic(
            settings.kafka.bootstrap,
            settings.topics.state_changes,
            until=all_done(len(runs)),
            timeout_s=90,
            alive=worker.alive,
            describe=worker.log_tail,
        )
        dead = await read_topic(
            settings.kafka.bootstrap,
            settings.topics.dlq,
            until=lambda rs: len(rs) >= 1,
            timeout_s=30,
        )
        ours = {e.id for e in inits}
        notes = await read_topic(
            settings.kafka.bootstrap,
            NOTIFY_TOPIC,
            timeout_s=30,
            until=lambda rs: (
                sum(orjson.loads(r.value)["parentid"].split("/")[0] in ours for r in rs)
                >= len(runs)
            ),
        )
        commands = await read_topic(
            settings.kafka.bootstrap,
            INCREMENT_TOPIC,
            timeout_s=30,
            until=lambda rs: len(rs) >= len(runs),
        )
        events = await read_topic(
            settings.kafka.bootstrap,
            settings.topics.events,
            timeout_s=30,
            until=lambda rs: len(rs) >= 3 * len(runs),
        )

    by_instance = changes_by_instance(records)
    outputs = {key: by_instance[key][-1]["state"]["output"] for key in runs}
    assert outputs == {
        ("acme", "c-ok"): {"final": 6, "error": None},
        ("acme", "c-inc-fails"): {"final": None, "error": "result 104 is outside 0..100"},
        ("acme", "c-dec-fails"): {"final": None, "error": "result -3 is outside 0..100"},
        ("globex", "c-ok"): {"final": 0, "error": None},
    }
    assert [c["event_type"] for c in by_instance[("acme", "c-ok")]] == [
        "counter.start",
        "evt.number.increment.success",
        "evt.number.decrement.success",
    ]
    assert [c["event_type"] for c in by_instance[("acme", "c-dec-fails")]] == [
        "counter.start",
        "evt.number.increment.success",
        "sys.com.number.decrement.error",
    ]
    assert [c["seq"] for c in by_instance[("acme", "c-ok")]] == [1, 2, 3]

    [letter] = dead
    headers = DeadLetter.read_headers(letter.headers)
    assert headers["garrison.stage"] == "contract"
    assert "'counter.start' does not fit Start: init" in headers["garrison.reason"]

    # Commands carry the sending instance's address; answers come back to it, with
    # parentid = the command's id.
    sent = [orjson.loads(r.value) for r in commands]
    sent = [c for c in sent if c["parentid"] in ours]
    assert {(c["tenant"], c["machine"], c["instance"]) for c in sent} == {
        (t, "counter", i) for t, i in runs
    }
    answers = {
        e["parentid"]: e
        for e in map(orjson.loads, (r.value for r in events))
        if e["type"].endswith(".error") or e["type"].startswith("evt.")
    }
    for command in sent:
        answer = answers[command["id"]]
        assert (answer["tenant"], answer["machine"], answer["instance"]) == (
            command["tenant"],
            command["machine"],
            command["instance"],
        )

    updates = {
        (n["tenant"], n["instance"]): n["data"]
        for n in map(orjson.loads, (r.value for r in notes))
        if n["parentid"].split("/")[0] in ours
    }
    assert updates[("acme", "c-ok")] == {"value": 6, "success": True, "error": None}
    assert updates[("acme", "c-inc-fails")]["success"] is False
    assert updates[("acme", "c-dec-fails")] == {
        "value": 2,
        "success": False,
        "error": "result -3 is outside 0..100",
    }


async def test_order_saga_compensates_in_reverse_order(env: dict[str, str], tmp_path: Path) -> None:
    from examples.saga.app import SERVICE_TOPICS
    from examples.saga.services import services

    orders = {
        "o-ok": {"qty": 2, "amount": 30, "address": "Oslo"},
        "o-no-ship": {"qty": 1, "amount": 20, "address": "Atlantis"},
        "o-declined": {"qty": 1, "amount": 5000, "address": "Oslo"},
        "o-no-stock": {"qty": 50, "amount": 10, "address": "Oslo"},
        "o-hangs": {"qty": 1, "amount": 10, "address": "Oslo"},
    }
    seen: list[tuple[str, str]] = []

    def payment_hangs(command: Event) -> bool:
        return command.instance == "o-hangs" and command.type == "payment.charge"

    inits = [
        make_event("shop", "order", i, "order.place", {"order_id": i, "sku": "mug", **o})
        for i, o in orders.items()
    ]
    async with example(
        "examples.saga.app",
        recording(services(), seen, payment_hangs),
        SERVICE_TOPICS,
        env,
        tmp_path / "worker.log",
    ) as (worker, settings):
        await send(settings, inits)
        records = await read_topic(
            settings.kafka.bootstrap,
            settings.topics.state_changes,
            until=all_done(len(orders)),
            timeout_s=90,
            alive=worker.alive,
            describe=worker.log_tail,
        )

    final = {i: cs[-1]["state"] for (_, i), cs in changes_by_instance(records).items()}
    out = {i: final[i]["output"] for i in orders}
    assert out["o-ok"] == {
        "status": "completed",
        "tracking": "t-o-ok",
        "error": None,
        "compensated": [],
    }
    assert out["o-no-ship"] == {
        "status": "compensated",
        "tracking": None,
        "error": "no carrier delivers to 'Atlantis'",
        "compensated": ["payment.refund", "inventory.release"],
    }
    assert out["o-declined"]["compensated"] == ["inventory.release"]
    assert out["o-declined"]["error"] == "card declined: 5000 is over the limit of 1000"
    assert out["o-no-stock"] == {
        "status": "failed",
        "tracking": None,
        "error": "only 10 of 'mug' in stock, 50 asked",
        "compensated": [],
    }
    assert out["o-hangs"] == {
        "status": "compensated",
        "tracking": None,
        "error": "payment did not answer in time",
        "compensated": ["payment.refund", "inventory.release"],
    }

    # The commands each service actually handled, in the order they handled them.
    handled = {i: [kind for inst, kind in seen if inst == i] for i in orders}
    assert handled == {
        "o-ok": ["inventory.reserve", "payment.charge", "shipping.ship"],
        "o-no-ship": [
            "inventory.reserve",
            "payment.charge",
            "shipping.ship",
            "payment.refund",
            "inventory.release",
        ],
        "o-declined": ["inventory.reserve", "payment.charge", "inventory.release"],
        "o-no-stock": ["inventory.reserve"],
        "o-hangs": ["inventory.reserve", "payment.charge", "payment.refund", "inventory.release"],
    }
    assert all(final[i]["context"]["log"] == handled[i] for i in orders)
    hung = [c["event_type"] for c in changes_by_instance(records)[("shop", "o-hangs")]]
    assert hung[2] == "xstate.after.paymentTimeout.order.charging"
