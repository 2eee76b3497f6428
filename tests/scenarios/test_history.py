"""An instance's history on the real broker: 100 changes read by seq and by time, from
the worker's store and the state-change topic, time travel, across a restart that
restores the store from the changelog; with the compacted latest-state topic on."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agents.topics import ensure_topics
from garrison.client import Client
from pipeline import Event, encode_event
from pipeline.errors import GarrisonError
from tests.harness import (
    WorkerProcess,
    curl,
    produce,
    read_topic,
    settings_env,
    settings_from,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="function")]

PATH = "/state/acme/counter/h1/history"


def _events(start: int, stop: int, time_ms: Callable[[int], int]) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(start, stop):
        ev = Event(
            f"h{i}", "counter.added", "t", "acme", "counter", "h1", time_ms(i), {"amount": i}
        )
        other = Event(
            f"o{i}", "counter.added", "t", "acme", "counter", "h2", time_ms(i), {"amount": 1}
        )
        out += [(b"acme", encode_event(ev)), (b"acme", encode_event(other))]
    return out


def _total(n: int) -> int:
    return sum(range(1, n + 1))


async def test_history_by_seq_and_time_across_a_restart(
    kafka_bootstrap: str, unique: Callable[[str], str], data_dir: Path, tmp_path: Path
) -> None:
    env = settings_env(
        kafka_bootstrap,
        unique("hist"),
        data_dir,
        history_keep="10",
        history_latest_topic="true",
        history_clock_skew_ms="0",
    )
    topics = settings_from(env).topics
    await ensure_topics(settings_from(env))
    worker = WorkerProcess("tests.sample_app", env, tmp_path / "worker.log")
    worker.start()
    port = env["GARRISON_WEB_PORT"]
    try:
        # Two rounds, a pause between: the second's changes are stamped after ``middle``.
        await produce(
            kafka_bootstrap, topics.events, _events(1, 51, lambda i: int(time.time() * 1000))
        )

        def at_seq(n: int) -> Callable[[], bool]:
            def check() -> bool:
                status, body = curl(port, "/state/acme/counter/h1")
                return status == 200 and body["seq"] == n

            return check

        await wait_until(at_seq(50), timeout_s=90, what="seq 50", describe=worker.log_tail)
        await asyncio.sleep(1.5)
        middle = int(time.time() * 1000)
        # Dated before they are sent: an event's time is never ahead of the worker's
        # clock here (the skew allowance is 0).
        await asyncio.sleep(0.3)
        await produce(kafka_bootstrap, topics.events, _events(51, 101, lambda i: middle + i))
        await wait_until(at_seq(100), timeout_s=60, what="seq 100", describe=worker.log_tail)
        before = _reads(port, middle)

        status, body = curl(port, f"{PATH}?from_seq=1&limit=100")
        assert status == 200, body
        assert [c["seq"] for c in body["changes"]] == list(range(1, 101))
        assert [c["event_id"] for c in body["changes"]] == [f"h{i}" for i in range(1, 101)]
        assert body["changes"][-1]["state"]["total"] == _total(100)
        assert body["changes"][41]["prev"]["total"] == _total(41)
        assert (body["read"], body["next"]) == ({"store": 10, "topic": 90}, None)
        # Only the kept changes: no topic at all.
        status, body = curl(port, f"{PATH}?from_seq=91")
        assert (body["read"], body["scanned"]) == ({"store": 10, "topic": 0}, 0)
        # Pages, and errors that say what to fix.
        status, body = curl(port, f"{PATH}?from_seq=20&limit=5&diff=true")
        assert ([c["seq"] for c in body["changes"]], body["next"]) == ([20, 21, 22, 23, 24], 25)
        assert body["changes"][0]["diff"][0]["path"] in ("/count", "/total", "/last")
        status, body = curl(port, f"{PATH}?to_seq=0")
        assert (status, "to_seq must be a whole number" in body["error"]) == (400, True)
        assert curl(port, "/state/acme/counter/nope/history")[0] == 404

        # Restart on an empty data dir: the store, slots included, comes back from the
        # changelog, and every read answers the same.
        worker.stop()
        shutil.rmtree(data_dir)
        data_dir.mkdir()
        worker.start()
        await wait_until(at_seq(100), timeout_s=90, what="restored", describe=worker.log_tail)
        assert _reads(port, middle) == before

        async with Client(settings_from(env)) as client:
            url = f"http://127.0.0.1:{port}"
            page = await client.history("acme", "counter", "h1", url=url, from_seq=99)
            assert [c["seq"] for c in page["changes"]] == [99, 100]
            with pytest.raises(GarrisonError, match="limit must be a whole number from 1 to 1000"):
                await client.history("acme", "counter", "h1", url=url, limit=5000)
        cli = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "garrison",
                "history",
                "acme",
                "counter",
                "h1",
                "--from-seq",
                "98",
                "--json",
            ],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert cli.returncode == 0, cli.stderr
        assert [json.loads(line)["seq"] for line in cli.stdout.splitlines()] == [98, 99, 100]

        latest = await read_topic(
            kafka_bootstrap,
            topics.latest or "",
            until=lambda rs: any(
                json.loads(r.value)["seq"] == 100 for r in rs if r.key == b"acme/counter/h1"
            ),
            timeout_s=30,
        )
        last = [r for r in latest if r.key == b"acme/counter/h1"][-1]
        assert json.loads(last.value)["state"]["total"] == _total(100)
    finally:
        worker.stop()


def _reads(port: str, middle: int) -> dict[str, object]:
    """The history reads the test repeats after the restart."""
    out: dict[str, object] = {}
    # By time: the second round only; the scan starts at its offset, not the start.
    status, body = curl(port, f"{PATH}?since={middle}&limit=1000")
    assert status == 200, body
    assert [c["seq"] for c in body["changes"]] == list(range(51, 101))
    assert 0 < body["scanned"] <= 2 * 50 + 10  # the second round's records (two instances)
    out["since"] = body["changes"]
    status, body = curl(port, f"{PATH}?since={middle + 60}&until={middle + 70}")
    assert [c["seq"] for c in body["changes"]] == list(range(60, 71))
    status, body = curl(port, f"{PATH}?as_of_seq=42")
    assert (body["seq"], body["state"]["total"]) == (42, _total(42))
    status, body = curl(port, f"{PATH}?as_of={middle + 75}")
    assert (body["seq"], body["state"]["total"]) == (75, _total(75))
    status, body = curl(port, f"{PATH}?as_of_seq=97")
    assert (body["seq"], body["scanned"]) == (97, 0)  # a kept one
    out["as_of"] = body
    status, body = curl(port, f"{PATH}?as_of_seq=101")
    assert (status, body["error"]) == (404, "acme/counter/h1 is at seq 100; it has no seq 101")
    return out
