"""The worker's HTTP API, asked with curl: only garrison's routes, 400s that say what to
fix, paging, tenant-scoped tokens, health and readiness."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline import Event, encode_event
from tests.harness import WorkerProcess, curl, produce, settings_env, wait_until

pytestmark = pytest.mark.asyncio(loop_scope="function")

TOKENS = '{"acme": "tok-acme", "other": "tok-other"}'


@pytest.fixture
def env(kafka_bootstrap: str, unique: Callable[[str], str], data_dir: Path) -> dict[str, str]:
    return settings_env(
        kafka_bootstrap,
        unique("api"),
        data_dir,
        web_tokens=TOKENS,
        web_operator_token="tok-op",
    )


@pytest.fixture
def worker(env: dict[str, str], tmp_path: Path) -> Iterator[WorkerProcess]:
    proc = WorkerProcess("tests.sample_app", env, tmp_path / "worker.log")
    proc.start()
    yield proc
    proc.stop()


async def _with_instances(kafka_bootstrap: str, env: dict[str, str], worker: WorkerProcess) -> str:
    events = [
        Event(
            f"e{i}", "counter.added", "t", "acme", "counter", f"c{i:02d}", 1_000 + i, {"amount": i}
        )
        for i in range(7)
    ]
    await produce(
        kafka_bootstrap,
        f"{env['GARRISON_APP']}.events",
        [(b"acme", encode_event(e)) for e in events],
    )
    port = env["GARRISON_WEB_PORT"]

    def served() -> bool:
        if curl(port, "/ready")[0] != 200:
            return False
        status, body = curl(port, "/state/acme", token="tok-op")
        return status == 200 and len(body["instances"]) == 7

    await wait_until(served, timeout_s=90, what="acme's 7 instances", describe=worker.log_tail)
    return port


async def test_only_garrisons_routes_and_clear_400s(
    kafka_bootstrap: str, env: dict[str, str], worker: WorkerProcess
) -> None:
    port = await _with_instances(kafka_bootstrap, env, worker)
    assert curl(port, "/health") == (200, {"status": "ok", "app": env["GARRISON_APP"]})
    for path in ("/table/state/", "/router/", "/graph/", "/assignment/", "/"):
        assert curl(port, path, token="tok-op")[0] == 404, path
    status, body = curl(port, "/state/acme/counter/c01", token="tok-op")
    assert status == 200
    assert (body["seq"], body["state"]["total"]) == (1, 1)
    for path, text in (
        ("/state/acme/counter/a%3Fb", "contains '?'"),
        ("/state/acme?limit=abc", "limit must be a whole number from 1 to 1000"),
        ("/state/acme?limit=0", "limit must be a whole number"),
        ("/state/acme?limit=1001", "limit must be a whole number"),
        ("/state/acme?machine=a%2Fb", "machine id 'a/b' contains '/'"),
        ("/state/acme?cursor=bm9wZQ", "cursor is not one this listing returned"),
    ):
        status, body = curl(port, path, token="tok-op")
        assert (status, text in body["error"]) == (400, True), (path, body)
    assert curl(port, "/state/acme/counter/ghost", token="tok-op")[0] == 404


async def test_listing_pages_with_a_cursor(
    kafka_bootstrap: str, env: dict[str, str], worker: WorkerProcess
) -> None:
    port = await _with_instances(kafka_bootstrap, env, worker)
    seen, cursor, pages = [], None, 0
    while True:
        path = "/state/acme?limit=3" + (f"&cursor={cursor}" if cursor else "")
        status, body = curl(port, path, token="tok-acme")
        assert status == 200
        seen += [i["instance"] for i in body["instances"]]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
    assert seen == [f"c{i:02d}" for i in range(7)]
    assert pages == 3
    status, body = curl(port, "/state/acme?limit=7", token="tok-acme")
    assert (len(body["instances"]), body["next"]) == (7, None)


async def test_tokens_scope_reads_to_their_tenant(
    kafka_bootstrap: str, env: dict[str, str], worker: WorkerProcess
) -> None:
    port = await _with_instances(kafka_bootstrap, env, worker)
    assert curl(port, "/state/acme/counter/c01", token="tok-acme")[0] == 200
    assert curl(port, "/state/acme/counter/c01")[0] == 401
    assert curl(port, "/state/acme/counter/c01", token="wrong")[0] == 401
    # Another tenant's token: refused the same way whether the instance exists or not.
    there = curl(port, "/state/acme/counter/c01", token="tok-other")
    missing = curl(port, "/state/acme/counter/ghost", token="tok-other")
    assert there == missing == (403, {"error": "forbidden"})
    assert curl(port, "/state/acme", token="tok-other")[0] == 403
    assert curl(port, "/state/other", token="tok-other")[0] == 200


async def test_cli_state_get_quotes_ids_and_sends_the_token(
    kafka_bootstrap: str, env: dict[str, str], worker: WorkerProcess
) -> None:
    port = await _with_instances(kafka_bootstrap, env, worker)

    def cli(*args: str, token: str | None = "tok-acme") -> subprocess.CompletedProcess[str]:
        extra = {} if token is None else {"GARRISON_TOKEN": token}
        return subprocess.run(
            [sys.executable, "-m", "garrison", "state", "get", *args, "--port", port],
            env={**os.environ, **env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    ok = await asyncio.to_thread(cli, "acme", "counter", "c02")
    assert ok.returncode == 0, ok.stderr
    assert '"seq": 1' in ok.stdout
    # 'c0?x' used to query 'c0' (the '?' started a query string); now it is refused.
    odd = await asyncio.to_thread(cli, "acme", "counter", "c0?x")
    assert (odd.returncode, "contains '?'" in odd.stderr) == (1, True), odd.stderr
    denied = await asyncio.to_thread(cli, "acme", "counter", "c02", token=None)
    assert (denied.returncode, "401" in denied.stderr) == (1, True), denied.stderr
