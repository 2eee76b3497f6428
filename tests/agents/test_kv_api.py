"""Key-value scopes against a real worker: ``client.state``, the HTTP reads (with curl)
and ``garrison kv``, TTL, tenant-scoped tokens, and bad input at every entry point
(a clear error, and nothing lost)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from garrison.client import Client
from pipeline.errors import InvalidAddress, InvalidOperation, WriteRejected
from tests.harness import WorkerProcess, curl, settings_env, settings_from, wait_until

pytestmark = pytest.mark.asyncio(loop_scope="function")

TOKENS = '{"acme": "tok-acme", "other": "tok-other"}'


@pytest.fixture(scope="module")
def worker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """One worker of tests.kv_app for the module, with tenant tokens."""
    tmp = tmp_path_factory.mktemp("kv")
    env = settings_env(
        kafka_bootstrap,
        f"kv-{uuid.uuid4().hex[:6]}",
        tmp / "data",
        partitions=2,
        web_tokens=TOKENS,
        web_operator_token="tok-op",
    )
    proc = WorkerProcess("tests.kv_app", env, tmp / "worker.log")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
async def client(worker: WorkerProcess) -> AsyncIterator[Client]:
    port = worker.env["GARRISON_WEB_PORT"]
    async with Client(settings_from(worker.env), token="tok-acme") as c:
        await c.state.set("acme", "users", "warm", 1, timeout=90)  # the worker has joined
        await wait_until(lambda: curl(port, "/ready")[0] == 200, timeout_s=60, what="ready")
        yield c


def tenant() -> str:
    return f"t{uuid.uuid4().hex[:6]}"


async def test_set_get_update_delete_list_and_scopes(worker: WorkerProcess) -> None:
    t = tenant()
    async with Client(settings_from(worker.env), token="tok-op") as c:
        set_ = await c.state.set(t, "users", "u1", {"name": "ann"}, timeout=90)
        assert (set_.status, set_.seq, set_.state) == ("applied", 1, {"value": {"name": "ann"}})
        got = await c.state.get(t, "users", "u1")
        assert got is not None
        assert (got.value, got.seq, got.expires_ms) == ({"name": "ann"}, 1, None)
        ops = [
            {"op": "increment", "path": "logins"},
            {"op": "append", "path": "roles", "value": "editor"},
            {"op": "merge", "path": "prefs", "value": {"theme": "dark"}},
            {"op": "set_if_absent", "path": "name", "value": "bob"},
        ]
        updated = await c.state.update(t, "users", "u1", ops)
        assert updated.state["value"] == {
            "name": "ann",
            "logins": 1,
            "roles": ["editor"],
            "prefs": {"theme": "dark"},
        }
        # Concurrent atomic updates: none is lost.
        await asyncio.gather(
            *(
                c.state.update(t, "users", "u1", [{"op": "increment", "path": "logins"}])
                for _ in range(30)
            )  # fmt: skip
        )
        got = await c.state.get(t, "users", "u1")
        assert got is not None
        assert (got.value["logins"], got.seq) == (31, 32)
        for key in ("u2", "u3", "admin1", "admin2", "u4"):
            await c.state.set(t, "users", key, key, wait=False)
        await c.state.set(t, "config", "app", {"flags": {}})
        gone = await c.state.delete(t, "users", "u4")
        assert (gone.status, gone.state) == ("applied", None)
        assert await c.state.get(t, "users", "u4") is None

        keys, cursor, pages = [], None, 0
        while True:
            page = await c.state.list(t, "users", limit=2, cursor=cursor)
            keys += [k.key for k in page.keys]
            pages += 1
            cursor = page.next
            if cursor is None:
                break
        assert sorted(keys) == ["admin1", "admin2", "u1", "u2", "u3"]
        assert pages == 3
        admins = await c.state.list(t, "users", prefix="admin", count=True, values=True)
        assert [(k.key, k.value) for k in admins.keys] == [
            ("admin1", "admin1"),
            ("admin2", "admin2"),
        ]
        assert (admins.count, admins.next) == (2, None)
        counted = await c.state.list(t, "users", limit=1, count=True)
        assert (len(counted.keys), counted.count) == (1, 5)
        assert await c.state.scopes(t) == ["config", "users"]
        assert await c.state.scopes(tenant()) == []
        # Read your writes: a get right after a write sees that write (the store is
        # written just after the transaction commits; the get waits for it).
        for i in range(20):
            await c.state.set(t, "users", "ryw", i)
            entry = await c.state.get(t, "users", "ryw")
            assert entry is not None
            assert (entry.value, entry.seq) == (i, i + 1)


async def test_a_ttl_key_expires_and_is_not_served_after(client: Client) -> None:
    t = "acme"
    key = f"k{uuid.uuid4().hex[:6]}"
    answer = await client.state.set(t, "cache", key, "<html>", ttl=1.0)
    assert answer.status == "applied"
    entry = await client.state.get(t, "cache", key)
    assert entry is not None
    assert entry.expires_ms is not None
    assert entry.expires_ms - entry.updated_ms == 1000
    default = await client.state.set(t, "cache", key + "d", 1)
    assert default.status == "applied"
    long = await client.state.get(t, "cache", key + "d")
    assert long is not None
    assert long.expires_ms is not None
    assert long.expires_ms - long.updated_ms == 60_000  # the scope's default TTL
    await asyncio.sleep(1.2)
    assert await client.state.get(t, "cache", key) is None
    assert key not in [k.key for k in (await client.state.list(t, "cache", limit=1000)).keys]


async def test_bad_input_at_the_client_is_a_typed_error_and_loses_nothing(client: Client) -> None:
    key = f"k{uuid.uuid4().hex[:6]}"
    await client.state.set("acme", "users", key, {"name": "ann", "tags": "x"})
    for call, kind, text in (
        (lambda: client.state.set("acme", "a/b", key, 1), InvalidAddress, "scope id 'a/b'"),
        (lambda: client.state.get("acme", "users", "k?"), InvalidAddress, "key id 'k?'"),
        (
            lambda: client.state.update("acme", "users", key, [{"op": "upsert"}]),
            InvalidOperation,
            "unknown op 'upsert'",
        ),
    ):
        with pytest.raises(kind, match=None) as err:
            await call()
        assert text in str(err.value)
    for ops, text in (
        ([{"op": "set", "path": "name.first", "value": "a"}], "'name' is a string, not an object"),
        ([{"op": "increment", "path": "name"}], "'name' is a string ('ann'), not a number"),
        (
            [{"op": "increment", "path": "n"}, {"op": "append", "path": "tags", "value": 1}],
            "'tags' is a string, not a list",
        ),  # fmt: skip
    ):
        with pytest.raises(WriteRejected) as rejected:
            await client.state.update("acme", "users", key, ops)
        assert rejected.value.stage == "operation"
        assert text in rejected.value.reason
    with pytest.raises(WriteRejected) as undeclared:
        await client.state.set("acme", "sessions", key, 1)
    assert undeclared.value.stage == "route"
    assert "no machine named 'kv.sessions'" in undeclared.value.reason
    # Past the client's checks (a raw event): the pipeline refuses it the same way.
    raw = await client.update("acme", "kv.users", key, "kv.update", {"ops": [{"op": "nope"}]})
    assert (raw.status, raw.stage) == ("rejected", "operation")
    entry = await client.state.get("acme", "users", key)
    assert entry is not None
    assert (entry.value, entry.seq) == ({"name": "ann", "tags": "x"}, 1)  # nothing changed


async def test_http_reads_say_what_is_wrong_and_keep_tenants_apart(
    client: Client, worker: WorkerProcess
) -> None:
    key = f"k{uuid.uuid4().hex[:6]}"
    await client.state.set("acme", "users", key, {"a": 1})
    port = worker.env["GARRISON_WEB_PORT"]
    status, body = curl(port, f"/kv/acme/users/{key}", token="tok-acme")
    assert (status, body["value"], body["seq"]) == (200, {"a": 1}, 1)
    for path, code, text in (
        ("/kv/acme/users/a%3Fb", 400, "key id 'a?b' contains '?'"),
        ("/kv/acme/us%20rs", 400, "scope id 'us rs' contains ' '"),
        ("/kv/acme/users?limit=0", 400, "limit must be a whole number from 1 to 1000"),
        ("/kv/acme/users?cursor=bm9wZQ", 400, "cursor is not one this listing returned"),
        ("/kv/acme/users?count=maybe", 400, "count must be true or false"),
        (f"/kv/acme/users/{key}?min_seq=x", 400, "min_seq must be a whole number >= 1"),
        (f"/kv/acme/users/{key}?min_seq=9", 503, "has seq 1 for"),
        ("/kv/acme/nope", 404, "no scope 'nope'; this app declares: cache, config, users"),
        ("/kv/acme/users/ghost", 404, "no key 'ghost' in scope 'users'"),
    ):
        status, body = curl(port, path, token="tok-acme")
        assert (status, text in body["error"]) == (code, True), (path, body)
    assert curl(port, "/kv/acme/nope", token="tok-acme")[1]["missing"] == "scope"
    assert curl(port, "/kv/acme/users/ghost", token="tok-acme")[1]["missing"] == "key"
    # Tokens: a tenant's own reads only; refused alike whether the key exists or not.
    assert curl(port, f"/kv/acme/users/{key}")[0] == 401
    there = curl(port, f"/kv/acme/users/{key}", token="tok-other")
    missing = curl(port, "/kv/acme/users/ghost", token="tok-other")
    assert there == missing == (403, {"error": "forbidden"})
    assert curl(port, "/kv/acme", token="tok-other")[0] == 403
    assert curl(port, "/kv/acme/users", token="tok-op")[0] == 200
    assert curl(port, "/kv/other", token="tok-other") == (200, {"tenant": "other", "scopes": []})


def _kv(
    env: dict[str, str], *args: str, token: str = "tok-acme"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "garrison", "kv", *args],
        env={**os.environ, **env, "GARRISON_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


async def test_cli_kv_commands_and_their_errors(client: Client, worker: WorkerProcess) -> None:
    env = worker.env
    key = f"k{uuid.uuid4().hex[:6]}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return _kv(env, *args)

    ok = await asyncio.to_thread(run, "set", "acme", "config", key, '{"flags": {"beta": false}}')
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["seq"] == 1
    upd = await asyncio.to_thread(
        run, "update", "acme", "config", key, '[{"op": "set", "path": "flags.beta", "value": true}]'
    )
    assert upd.returncode == 0, upd.stderr
    assert json.loads(upd.stdout)["state"] == {"value": {"flags": {"beta": True}}}
    got = await asyncio.to_thread(run, "get", "acme", "config", key)
    assert (got.returncode, json.loads(got.stdout)["value"]) == (0, {"flags": {"beta": True}})
    listed = await asyncio.to_thread(run, "list", "acme", "config", "--prefix", key, "--count")
    assert json.loads(listed.stdout) == {"keys": [{"key": key, "seq": 2}], "next": None, "count": 1}
    scopes = await asyncio.to_thread(run, "scopes", "acme")
    assert "config" in json.loads(scopes.stdout)

    for args, code, text in (
        (("set", "acme", "config", key, "{oops"), 2, "VALUE is not JSON"),
        (("set", "acme", "config", "a/b", "1"), 2, "key id 'a/b' contains '/'"),
        (("set", "acme", "a b", key, "1"), 2, "scope id 'a b' contains ' '"),
        (("update", "acme", "config", key, '[{"op": "nope"}]'), 2, "unknown op 'nope'"),
        (
            (
                "update",
                "acme",
                "config",
                key,
                '[{"op": "set", "path": "flags.beta.x", "value": 1}]',
            ),
            1,
            "'flags.beta' is a boolean, not an object",
        ),  # fmt: skip
        (("update", "acme", "config", key, '{"op": "set"}'), 2, "OPS must be a JSON list"),
        (
            ("update", "acme", "config", key, '[{"op": "increment", "path": "flags"}]'),
            1,
            "rejected at stage operation",
        ),  # fmt: skip
        (("get", "acme", "config", "ghost"), 1, "no key 'ghost'"),
        (("get", "acme", "nope", "k"), 2, "404: no scope 'nope'"),
    ):
        done = await asyncio.to_thread(run, *args)
        assert (done.returncode, text in done.stderr) == (code, True), (args, done.stderr)
    denied = await asyncio.to_thread(_kv, env, "get", "acme", "config", key, token="tok-other")
    assert (denied.returncode, "403" in denied.stderr) == (2, True)
    deleted = await asyncio.to_thread(run, "delete", "acme", "config", key)
    assert (deleted.returncode, json.loads(deleted.stdout)["seq"]) == (0, 3)
    after = await asyncio.to_thread(run, "get", "acme", "config", key)
    assert after.returncode == 1
