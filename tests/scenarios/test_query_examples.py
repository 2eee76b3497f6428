"""The query, view and waiting examples end to end on the real broker: document approval,
batch progress, cart updates and Happen-style nodes, each driven as a user would (the
client, its queries and waits, the update helper), with one worker for the module
(``tests.query_examples_app``: the four examples' machines together)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from agents.service import serve
from agents.topics import ensure_topics
from examples.batch.app import ITEMS_TOPIC
from examples.batch.services import service
from examples.update import send_and_wait
from garrison.client import Client
from garrison.waiter import WaitTimedOut
from pipeline.deadletter import DeadLetter
from pipeline.envelope import Event
from pipeline.settings import Settings
from tests.harness import curl, read_topic, serving_worker, settings_env, settings_from

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="function")]


@pytest.fixture(scope="module")
def env(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    work = tmp_path_factory.mktemp("query-examples")
    env = settings_env(
        kafka_bootstrap,
        f"qexamples-{uuid.uuid4().hex[:6]}",
        work / "data",
        partitions=2,
        timer_tick_ms="100",
    )
    asyncio.run(ensure_topics(settings_from(env), [ITEMS_TOPIC]))
    with serving_worker("tests.query_examples_app", env, work / "worker.log"):
        yield env


def _tenant(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def _dead_letters(settings: Settings, tenant: str, count: int) -> list[dict[str, str]]:
    records = await read_topic(
        settings.kafka.bootstrap,
        settings.topics.dlq,
        until=lambda rs: sum(r.key == tenant.encode() for r in rs) >= count,
        timeout_s=30,
    )
    return [DeadLetter.read_headers(r.headers) for r in records if r.key == tenant.encode()]


async def test_document_approval(env: dict[str, str]) -> None:
    settings = settings_from(env)
    tenant = _tenant("approvals")
    url = f"http://127.0.0.1:{env['GARRISON_WEB_PORT']}"
    async with Client(settings) as client:
        await client.send(
            tenant,
            "approval",
            "doc-1",
            "approval.requested",
            {"document": "doc-1", "reviewer": "ann", "remind_every_s": 0.5, "timeout_s": 120},
        )
        await client.send(
            tenant,
            "approval",
            "doc-2",
            "approval.requested",
            {"document": "doc-2", "reviewer": "bob", "remind_every_s": 0.4, "timeout_s": 1.5},
        )
        # The reminder timer fires while the request waits.
        reminded = await client.wait_for(
            tenant, "approval", "doc-1", lambda s: s["reminders"] >= 2, 30, url=url
        )
        assert reminded.state["status"] == "PENDING"
        asked = await client.query(tenant, "approval", "doc-1", "getApprovalState", url=url)
        assert asked["status"] == "PENDING"
        assert asked["assigned_to"] == "ann"
        assert asked["reminders"] >= 2
        # The signal, as an update that returns the new state.
        decided = await send_and_wait(
            client,
            settings,
            tenant,
            "approval",
            "doc-1",
            "approvalDecision",
            {"approved": True, "comment": "looks good"},
        )
        assert decided.state["status"] == "APPROVED"
        assert [c["text"] for c in decided.state["comments"]] == ["looks good"]
        # ZoopFlow's waitForCondition, already true: answered at once from a read.
        done = await client.wait_for(
            tenant, "approval", "doc-1", lambda s: s["status"] != "PENDING", 5, url=url
        )
        assert (done.seq, done.event_id) == (decided.seq, None)
        assert done.computed == {"pending": False}
        # The timers are disarmed: no reminder comes after the decision.
        await asyncio.sleep(1.5)
        after = await client.query(tenant, "approval", "doc-1", "getApprovalState", url=url)
        assert after == {
            **asked,
            "status": "APPROVED",
            "comments": ["looks good"],
            "reminders": decided.state["reminders"],
        }
        # A second decision is refused: no change, a dead letter that says why.
        with pytest.raises(WaitTimedOut, match="published no change"):
            await send_and_wait(
                client,
                settings,
                tenant,
                "approval",
                "doc-1",
                "approvalDecision",
                {"approved": False},
                timeout=3,
            )
        [letter] = await _dead_letters(settings, tenant, 1)
        assert letter["garrison.stage"] == "reducer"
        assert (
            "the request is APPROVED already; a decision needs PENDING" in letter["garrison.reason"]
        )
        # Nobody decides doc-2: its timeout ends it.
        timed = await client.wait_for(
            tenant, "approval", "doc-2", lambda s: s["status"] != "PENDING", 30, url=url
        )
    assert timed.state["status"] == "TIMED_OUT"
    # The firing's time is its due time: the request's time plus timeout_s.
    assert timed.state["decided_ms"] == timed.state["created_ms"] + 1500
    assert timed.state["reminders"] >= 1


async def test_batch_progress(env: dict[str, str]) -> None:
    settings = settings_from(env)
    tenant = _tenant("batches")
    url = f"http://127.0.0.1:{env['GARRISON_WEB_PORT']}"
    items = [str(n) for n in range(1, 26)]
    items[3], items[14] = "x", "7y"  # two items that fail
    gate = asyncio.Event()

    async def paced(command: Event) -> None:
        if command.data["index"] >= 10:  # the second chunk waits until the test says so
            await gate.wait()

    ready = asyncio.Event()
    running = asyncio.create_task(serve(service(paced), settings, ready=ready, from_start=False))
    try:
        await asyncio.wait_for(ready.wait(), 60)
        async with Client(settings) as client:
            await client.send(
                tenant, "batch", "b-1", "batch.started", {"items": items, "chunk_size": 10}
            )
            first = await client.wait_for(
                tenant, "batch", "b-1", lambda s: s["processed"] == 10, 60, url=url
            )
            # Mid-batch: the first chunk answered, the second in flight.
            progress = await client.query(tenant, "batch", "b-1", "progress", url=url)
            assert progress == {
                "status": "PROCESSING",
                "processed": 10,
                "total": 25,
                "percentage": 40,
                "errors": [
                    {
                        "index": 3,
                        "item": "x",
                        "error": "invalid literal for int() with base 10: 'x'",
                    }
                ],
            }
            assert first.state["in_flight"] == list(range(10, 20))
            status, body = curl(env["GARRISON_WEB_PORT"], f"/state/{tenant}/batch/b-1")
            assert (status, body["computed"]) == (200, {"percentage": 40})
            gate.set()
            done = await client.wait_for(
                tenant, "batch", "b-1", lambda s: s["status"] == "COMPLETED", 60, url=url
            )
            final = await client.query(tenant, "batch", "b-1", "progress", url=url)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert (final["processed"], final["percentage"], final["status"]) == (25, 100, "COMPLETED")
    assert [(e["index"], e["item"]) for e in final["errors"]] == [(3, "x"), (14, "7y")]
    results = done.state["results"]
    assert len(results) == 23
    assert (results["0"], results["24"]) == (1, 625)
    status, body = curl(env["GARRISON_WEB_PORT"], f"/state/{tenant}/batch/b-1")
    assert (status, body["computed"]) == (200, {"percentage": 100})


async def test_cart_updates(env: dict[str, str]) -> None:
    settings = settings_from(env)
    tenant = _tenant("carts")
    url = f"http://127.0.0.1:{env['GARRISON_WEB_PORT']}"

    async def add(item: str, qty: int = 1, **kw: Any) -> Any:
        return await send_and_wait(
            client,
            settings,
            tenant,
            "cart",
            "c-1",
            "cart.item_added",
            {"item": item, "qty": qty},
            **kw,
        )

    async with Client(settings) as client:
        one = await add("productXYZ")
        assert one.state == {"lines": [{"item": "productXYZ", "qty": 1}]}
        two = await add("productXYZ", 2)
        assert two.state == {"lines": [{"item": "productXYZ", "qty": 3}]}
        # Two updates at once: each gets the cart as its own event left it.
        mug, pen = await asyncio.gather(add("mug"), add("pen"))
        assert {mug.seq, pen.seq} == {3, 4}
        last, other = (mug, pen) if mug.seq == 4 else (pen, mug)
        assert len(last.state["lines"]) == 3
        assert len(other.state["lines"]) == 2
        assert await client.query(tenant, "cart", "c-1", "items", url=url) == [
            "productXYZ",
            "productXYZ",
            "productXYZ",
            *(line["item"] for line in last.state["lines"][1:]),
        ]
        # A refused update (the contract says qty >= 1) publishes nothing.
        with pytest.raises(WaitTimedOut):
            await add("ghost", 0, timeout=3)
        [letter] = await _dead_letters(settings, tenant, 1)
        assert letter["garrison.stage"] == "contract"
        current = await client.wait_for(tenant, "cart", "c-1", bool, 5, url=url)
    assert (current.seq, current.computed) == (4, {"count": 5})


async def test_happen_style_nodes(env: dict[str, str]) -> None:
    settings = settings_from(env)
    shop, other = _tenant("shop"), _tenant("shop")
    url = f"http://127.0.0.1:{env['GARRISON_WEB_PORT']}"
    async with Client(settings) as client:
        await client.send(shop, "inventory", "mug", "inventory.restocked", {"qty": 2})
        for n in (1, 2, 3):  # three orders for the two mugs
            await client.send(
                shop, "order", f"o-{n}", "order.placed", {"sku": "mug", "qty": 1, "price": 12}
            )
        await client.send(
            shop, "order", "o-4", "order.placed", {"sku": "pen", "qty": 1, "price": 3}
        )
        await client.send(
            other, "order", "o-1", "order.placed", {"sku": "pen", "qty": 1, "price": 3}
        )
        summary = await client.wait_for(
            shop,
            "dashboard",
            "summary",
            lambda s: s["by_status"] == {"confirmed": 2, "backordered": 2},
            60,
            url=url,
        )
        elsewhere = await client.wait_for(
            other, "dashboard", "summary", lambda s: s["orders"] >= 1, 60, url=url
        )
        orders = {
            n: (await client.wait_for(shop, "order", f"o-{n}", bool, 5, url=url)).state
            for n in (1, 2, 3, 4)
        }
        stock = await client.wait_for(shop, "inventory", "mug", bool, 5, url=url)
    assert summary.state["orders"] == 4
    assert summary.state["confirmed_revenue"] == 24
    assert summary.state["more"] is False
    status, body = curl(env["GARRISON_WEB_PORT"], f"/state/{shop}/dashboard/summary")
    assert (status, body["computed"]) == (200, {"confirmed_share": 0.5})  # derived on read
    # The view showed o-1 the two mugs restocked before it; pens were never stocked, so
    # o-4 was backordered at once by what its view saw, without asking the inventory.
    assert orders[1]["stock_seen"] == 2
    assert orders[4] == {
        "sku": "pen",
        "qty": 1,
        "price": 3,
        "status": "backordered",
        "stock_seen": 0,
    }
    assert sorted(o["status"] for o in orders.values()) == [
        "backordered",
        "backordered",
        "confirmed",
        "confirmed",
    ]
    assert stock.state == {"available": 0, "reserved": 2}
    # The other tenant's dashboard sees its own order only.
    assert elsewhere.state["orders"] == 1
    assert elsewhere.state["by_status"] == {"backordered": 1}
