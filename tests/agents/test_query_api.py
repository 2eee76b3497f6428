"""Queries, computed values, views and waiting on a real worker (``tests.view_app``),
asked with curl, the client and the CLI: answers, 400s and 404s that say what to fix,
tenant-scoped tokens, and a record that no query changes.

One worker serves the whole module; each test uses tenants of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from garrison.client import Client
from garrison.query import QueryRefused
from garrison.waiter import WaitTimedOut
from pipeline.settings import Settings
from tests.harness import curl, read_topic, serving_worker, settings_env, settings_from

pytestmark = [pytest.mark.asyncio(loop_scope="function")]

TOKENS = '{"acme": "tok-acme", "other": "tok-other"}'


@pytest.fixture(scope="module")
def env(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    work = tmp_path_factory.mktemp("queries")
    env = settings_env(
        kafka_bootstrap,
        f"queries-{uuid.uuid4().hex[:6]}",
        work / "data",
        partitions=2,
        web_tokens=TOKENS,
        web_operator_token="tok-op",
    )
    with serving_worker("tests.view_app", env, work / "worker.log"):
        yield env


def _tenant(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def _placed(client: Client, tenant: str, instance: str, qty: int = 2) -> None:
    await client.send(
        tenant, "order", instance, "order.placed", {"sku": "a", "qty": qty, "price": 5}
    )


def _url(env: dict[str, str]) -> str:
    return f"http://127.0.0.1:{env['GARRISON_WEB_PORT']}"


async def test_views_collects_and_computed_values_on_the_worker(env: dict[str, str]) -> None:
    settings = settings_from(env)
    tenant = "acme"  # the tenant's token reads it
    order = f"o-{uuid.uuid4().hex[:6]}"
    async with Client(settings) as client:
        await client.send(tenant, "inventory", "a", "inventory.stocked", {"qty": 3})
        await _placed(client, tenant, order)
        seen = await client.wait_for(
            tenant,
            "order",
            order,
            lambda s: s["status"] != "new",
            60,
            url=_url(env),
            token="tok-op",
        )
    assert seen.state["seen_stock"] >= 3  # the view saw the stock sent before it
    assert seen.state["status"] == "accepted"
    assert seen.computed == {"total": 10}  # published with the change (publish_computed)
    port = env["GARRISON_WEB_PORT"]
    status, body = curl(port, f"/state/{tenant}/order/{order}", token="tok-acme")
    assert status == 200
    assert body["computed"] == {"total": 10}
    assert "total" not in body["state"]
    status, body = curl(port, f"/state/{tenant}/inventory/a", token="tok-acme")
    assert (status, "computed" in body) == (200, False)  # inventory declares none


async def test_a_query_answers_over_http_and_never_changes_the_record(env: dict[str, str]) -> None:
    settings = settings_from(env)
    tenant = _tenant("q")
    async with Client(settings) as client:
        await _placed(client, tenant, "o1", qty=3)
    port = env["GARRISON_WEB_PORT"]
    first = await client.wait_for(
        tenant, "order", "o1", lambda s: True, 60, url=_url(env), token="tok-op"
    )
    before = curl(port, f"/state/{tenant}/order/o1", token="tok-op")
    for path, want in (
        ("summary", {"sku": "a", "status": "accepted", "total": 0}),
        ("scaled?times=4", {"total": 60}),
        ("raw?k=v&l=1&l=2", {"k": "v", "l": ["1", "2"]}),
        ("total", 15),
    ):
        status, body = curl(port, f"/state/{tenant}/order/o1/query/{path}", token="tok-op")
        assert (status, body.get("result")) == (200, want), (path, body)
        assert (body["seq"], body["query"]) == (1, path.split("?")[0])
    assert curl(port, f"/state/{tenant}/order/o1", token="tok-op") == before
    # The summary query changes status on its copy; nothing was published or stored.
    changes = await read_topic(
        env["GARRISON_KAFKA_BOOTSTRAP"],
        f"{env['GARRISON_APP']}.state-changes",
        until=lambda rs: any(orjson.loads(r.value)["tenant"] == tenant for r in rs),
        timeout_s=30,
    )
    mine = [c for c in map(orjson.loads, (r.value for r in changes)) if c["tenant"] == tenant]
    assert [c["seq"] for c in mine] == [first.seq] == [1]


async def test_bad_queries_get_clear_errors_and_tokens_scope_them(env: dict[str, str]) -> None:
    settings = settings_from(env)
    async with Client(settings) as client:
        await _placed(client, "acme", "o-err")
        await client.wait_for("acme", "order", "o-err", bool, 60, url=_url(env), token="tok-op")
    port = env["GARRISON_WEB_PORT"]
    base = "/state/acme/order/o-err/query"
    for path, code, text in (
        ("/scaled?times=x", 400, "times: Input should be a valid integer"),
        ("/scaled?times=99", 400, "less than or equal to 10"),
        ("/summary?x=1", 400, "takes no parameters; remove x"),
        ("/ghost", 404, "has no query 'ghost'; it has: raw, scaled, summary, total"),
    ):
        status, body = curl(port, base + path, token="tok-acme")
        assert (status, text in body["error"]) == (code, True), (path, body)
    for path, text in (
        ("/state/acme/order/nobody/query/summary", "no instance acme/order/nobody"),
        ("/state/acme/a%2Fb/o-err/query/summary", "machine id 'a/b' contains '/'"),
        ("/state/acme/ghost/o-err/query/summary", "no instance"),
    ):
        status, body = curl(port, path, token="tok-acme")
        assert status in (400, 404), (path, body)
        assert text in body["error"], (path, body)
    assert curl(port, base + "/summary")[0] == 401
    # Another tenant's token: refused alike whether the instance exists or not.
    there = curl(port, base + "/summary", token="tok-other")
    missing = curl(port, "/state/acme/order/nobody/query/summary", token="tok-other")
    assert there == missing == (403, {"error": "forbidden"})
    with pytest.raises(QueryRefused, match="400: parameters of query 'scaled' do not fit Page"):
        await client.query(
            "acme", "order", "o-err", "scaled", {"times": "x"}, url=_url(env), token="tok-acme"
        )
    assert await client.query(
        "acme", "order", "o-err", "scaled", {"times": 2}, url=_url(env), token="tok-acme"
    ) == {"total": 20}


async def test_the_cli_asks_a_query(env: dict[str, str]) -> None:
    async with Client(settings_from(env)) as client:
        await _placed(client, "acme", "o-cli")
        await client.wait_for("acme", "order", "o-cli", bool, 60, url=_url(env), token="tok-op")
    run_env = {**os.environ, **env, "GARRISON_TOKEN": "tok-acme"}
    cmd = [sys.executable, "-m", "garrison", "query", "acme", "order", "o-cli"]
    done = subprocess.run(
        [*cmd, "scaled", "--param", "times=3"],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, json.loads(done.stdout)) == (0, {"total": 30}), done.stderr
    bad = subprocess.run(
        [*cmd, "scaled", "-p", "times=many"],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "400: parameters of query 'scaled' do not fit Page: times:" in bad.stderr


async def test_wait_for_returns_at_once_waits_for_a_later_state_and_times_out(
    env: dict[str, str],
) -> None:
    settings: Settings = settings_from(env)
    tenant = _tenant("w")
    url = _url(env)
    async with Client(settings) as client:
        await client.send(tenant, "inventory", "a", "inventory.stocked", {"qty": 1})
        first = await client.wait_for(tenant, "inventory", "a", bool, 60, url=url, token="tok-op")
        # Already true: answered from the read, no change needed.
        again = await client.wait_for(
            tenant, "inventory", "a", lambda s: s["count"] >= 1, 5, url=url, token="tok-op"
        )
        assert (again.seq, again.event_id) == (first.seq, None)
        # Not yet true: the first later state for which it holds, not a later one.
        waiting = asyncio.create_task(
            client.wait_for(
                tenant, "inventory", "a", lambda s: s["count"] >= 3, 60, url=url, token="tok-op"
            )
        )
        await asyncio.sleep(1.0)  # the wait has read and is following
        ids = [
            await client.send(tenant, "inventory", "a", "inventory.stocked", {"qty": 1})
            for _ in range(4)
        ]
        seen = await waiting
        assert (seen.state, seen.seq, seen.event_id) == ({"count": 3}, 3, ids[1])
        # A condition that never holds: a clear timeout.
        with pytest.raises(WaitTimedOut, match=f"no state of {tenant}/inventory/a met"):
            await client.wait_for(
                tenant, "inventory", "a", lambda s: s["count"] < 0, 2, url=url, token="tok-op"
            )
        # An instance that does not exist yet is waited for.
        later = asyncio.create_task(
            client.wait_for(tenant, "inventory", "b", bool, 60, url=url, token="tok-op")
        )
        await asyncio.sleep(1.0)
        made = await client.send(tenant, "inventory", "b", "inventory.stocked", {"qty": 2})
        assert (await later).event_id == made


async def test_wait_for_fills_a_gap_a_stale_read_leaves_from_the_history(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read served between a commit and the worker's store write is older than the
    position the wait took before it: the wait notices the gap in the sequence and reads
    the changes it skipped from the instance's history, so it still returns the first
    state for which the condition holds."""
    from garrison import waiter

    settings = settings_from(env)
    tenant = _tenant("gap")
    url = _url(env)
    async with Client(settings) as client:
        ids = [
            await client.send(tenant, "inventory", "a", "inventory.stocked", {"qty": 1})
            for _ in range(3)
        ]
        await client.wait_for(
            tenant, "inventory", "a", lambda s: s["count"] == 3, 60, url=url, token="tok-op"
        )
        real = waiter.fetch_state

        async def stale(*args: Any, **kwargs: Any) -> Any:
            body = await real(*args, **kwargs)
            return {**body, "seq": 1, "state": {"count": 1}}  # as of before seq 2 and 3

        monkeypatch.setattr(waiter, "fetch_state", stale)
        waiting = asyncio.create_task(
            client.wait_for(
                tenant, "inventory", "a", lambda s: s["count"] >= 2, 60, url=url, token="tok-op"
            )
        )
        await asyncio.sleep(1.0)
        await client.send(tenant, "inventory", "a", "inventory.stocked", {"qty": 1})
        seen = await waiting
    assert (seen.seq, seen.state, seen.event_id) == (2, {"count": 2}, ids[1])
