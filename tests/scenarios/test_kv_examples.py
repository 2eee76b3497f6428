"""The key-value examples end to end: a real worker running ``examples.kv.app``, its
triggers in a listener runner in this process (so the example's services can be looked
at), and writes and reads through the client: user management, configuration with a
flags trigger, a cache whose entries expire."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

from agents.listeners import ListenerRunner
from examples.kv.app import registry
from examples.kv.services import Services
from garrison.client import Client
from pipeline.errors import WriteRejected
from tests.harness import WorkerProcess, serving_worker, settings_env, settings_from

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

SERVICES: Services = registry.services


@pytest.fixture(scope="module")
def worker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    tmp = tmp_path_factory.mktemp("kvx")
    env = settings_env(kafka_bootstrap, f"kvx-{uuid.uuid4().hex[:6]}", tmp / "data", partitions=2)
    with serving_worker("examples.kv.app", env, tmp / "worker.log") as proc:
        yield proc


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(worker: WorkerProcess) -> AsyncIterator[Client]:
    """The client, with the examples' triggers running for the whole module."""
    settings = settings_from(worker.env)
    async with Client(settings) as c:
        await c.state.set("warm", "stats", "w", 0, timeout=90)  # the worker has joined
        runner = ListenerRunner(settings, registry, group_id=f"{settings.app}.triggers")
        task = asyncio.create_task(runner.run())
        try:
            yield c
        finally:
            runner.stop()
            await asyncio.wait_for(task, 30)


async def eventually(check: Callable[[], Any], what: str, timeout_s: float = 30) -> Any:
    for _ in range(int(timeout_s * 10)):
        if result := await check() if asyncio.iscoroutinefunction(check) else check():
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout_s} s")


async def test_users_are_welcomed_once_and_profiles_change_atomically(client: Client) -> None:
    tenant = f"t{uuid.uuid4().hex[:6]}"
    email = f"ann@{tenant}"
    await client.state.set(tenant, "users", "u1", {"name": "Ann", "email": email})
    await eventually(lambda: (email, "Welcome, Ann!") in SERVICES.mail.sent, "the welcome mail")

    async def welcomed() -> bool:
        entry = await client.state.get(tenant, "users", "u1")
        return entry is not None and entry.value.get("welcomed") is True

    await eventually(welcomed, "the welcomed mark")  # written back by the trigger

    # Profile updates: many at once, none lost; a failing one changes nothing.
    await asyncio.gather(
        *(
            client.state.update(
                tenant,
                "users",
                "u1",
                [
                    {"op": "increment", "path": "logins"},
                    {"op": "append", "path": "devices", "value": f"d{i % 3}"},
                ],
            )
            for i in range(12)
        )
    )
    answer = await client.state.update(
        tenant,
        "users",
        "u1",
        [
            {"op": "remove_item", "path": "devices", "value": "d0"},
            {"op": "merge", "path": "prefs", "value": {"theme": "dark", "lang": "nb"}},
            {"op": "set_if_absent", "path": "name", "value": "Bob"},
        ],
    )
    value = answer.state["value"]
    assert (value["name"], value["logins"], value["prefs"]) == (
        "Ann",
        12,
        {"theme": "dark", "lang": "nb"},
    )
    assert sorted(value["devices"]) == ["d1"] * 4 + ["d2"] * 4
    with pytest.raises(WriteRejected, match="'logins' is a number, not a list"):
        await client.state.update(
            tenant, "users", "u1", [{"op": "append", "path": "logins", "value": 1}]
        )
    entry = await client.state.get(tenant, "users", "u1")
    assert entry is not None
    assert entry.value == value
    # Set again: an update, so no second welcome.
    await client.state.set(tenant, "users", "u1", {**value, "name": "Ann B"})
    await client.state.set(tenant, "users", "u2", {"name": "Cy", "email": f"cy@{tenant}"})
    await eventually(lambda: (f"cy@{tenant}", "Welcome, Cy!") in SERVICES.mail.sent, "Cy's mail")
    assert [to for to, _ in SERVICES.mail.sent if to.endswith(tenant)] == [email, f"cy@{tenant}"]


async def test_config_trigger_reacts_only_when_a_flag_changed(client: Client) -> None:
    tenant = f"t{uuid.uuid4().hex[:6]}"

    def reloads() -> list[dict[str, Any]]:
        return [changed for t, _, changed in SERVICES.flags.reloads if t == tenant]

    await client.state.set(tenant, "config", "app", {"title": "Shop", "flags": {"beta": False}})
    await eventually(lambda: reloads() == [{"beta": False}], "the first reload")
    # Not a flag: no reload. The same flag value again: no reload.
    await client.state.update(
        tenant, "config", "app", [{"op": "set", "path": "title", "value": "S"}]
    )
    await client.state.set(tenant, "config", "app", {"title": "S", "flags": {"beta": False}})
    await client.state.update(
        tenant,
        "config",
        "app",
        [{"op": "merge", "path": "flags", "value": {"beta": True, "dark": True}}],
    )
    await eventually(lambda: len(reloads()) == 2, "the flag reload")
    await client.state.update(tenant, "config", "app", [{"op": "remove", "path": "flags.dark"}])
    await eventually(lambda: len(reloads()) == 3, "the removal's reload")
    # A barrier: a last write whose trigger does run, so the earlier ones are all past it.
    await client.state.set(tenant, "config", "other", {"flags": {"x": 1}})
    await eventually(
        lambda: any(t == tenant and k == "other" for t, k, _ in SERVICES.flags.reloads), "barrier"
    )
    assert reloads() == [{"beta": False}, {"beta": True, "dark": True}, {"dark": None}, {"x": 1}]


async def test_cache_entries_expire_and_the_expired_trigger_counts_them(client: Client) -> None:
    tenant = f"t{uuid.uuid4().hex[:6]}"
    await client.state.set(tenant, "cache", "page:home", "<html>home</html>", ttl=1)
    await client.state.set(tenant, "cache", "page:about", "<html>about</html>", ttl=1.5)
    await client.state.set(tenant, "cache", "page:keep", "<html>keep</html>")  # 5 minutes
    entry = await client.state.get(tenant, "cache", "page:home")
    assert entry is not None
    assert entry.value == "<html>home</html>"

    async def counted() -> Any:
        stats = await client.state.get(tenant, "stats", "cache")
        return stats is not None and stats.value.get("expired") == 2 and stats.value

    stats = await eventually(counted, "two expiries counted")
    assert sorted(stats["expired_keys"]) == ["page:about", "page:home"]
    assert await client.state.get(tenant, "cache", "page:home") is None
    kept = await client.state.get(tenant, "cache", "page:keep")
    assert kept is not None
    assert kept.expires_ms is not None
    assert kept.expires_ms - kept.updated_ms == 300_000
    page = await client.state.list(tenant, "cache", count=True)
    assert ([k.key for k in page.keys], page.count) == (["page:keep"], 1)
    assert await client.state.scopes(tenant) == ["cache", "stats"]
