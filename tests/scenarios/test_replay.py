"""``garrison replay`` on the real broker: a log with duplicates, dead letters and timer
firings replays identically with the deterministic machines, and the machine whose
reducer reads the clock is found, at its first change, with both values."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agents.topics import ensure_topics
from garrison.process import ROOT
from garrison.replay import ReplayOptions, replay
from pipeline import Event, encode_event
from pipeline.replay import AddressFilter
from tests.harness import (
    WorkerProcess,
    curl,
    produce,
    read_topic,
    settings_env,
    settings_from,
    wait_until,
)
from tests.replay_app import registry

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="function")]

T0 = 1_767_225_600_000


def _log() -> list[tuple[bytes | None, bytes | None]]:
    def ev(
        i: int, type: str, inst: str, data: Any = None, machine: str = "counter", **kw: Any
    ) -> bytes:
        return encode_event(
            Event(f"x{i}", type, "t", kw.get("tenant", "acme"), machine, inst, T0 + i, data)
        )

    out: list[tuple[bytes | None, bytes | None]] = []
    for i in range(60):
        tenant = ("acme", "beta", "gamma")[i % 3]
        out.append(
            (tenant.encode(), ev(i, "counter.added", f"c{i % 4}", {"amount": i}, tenant=tenant))
        )
    out.append((b"acme", out[3][1]))  # a redelivered duplicate
    out.append((b"acme", ev(100, "counter.added", "c1", {"amount": 5000})))  # contract
    out.append((b"acme", ev(101, "counter.nope", "c1")))  # unknown type
    out.append((b"acme", b"{not json"))  # decode
    out.append((b"beta", ev(102, "counter.alarm", "c2", {"seconds": 0}, tenant="beta")))  # a timer
    for i in range(6):
        out.append((b"acme", ev(200 + i, "stamp.hit", f"s{i % 2}", machine="stamp")))
    return out


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "garrison", *args],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_replay_passes_the_pure_machines_and_finds_the_one_that_reads_the_clock(
    kafka_bootstrap: str, unique: Callable[[str], str], data_dir: Path, tmp_path: Path
) -> None:
    env = settings_env(kafka_bootstrap, unique("replay"), data_dir)
    settings = settings_from(env)
    await ensure_topics(settings)
    worker = WorkerProcess("tests.replay_app", env, tmp_path / "worker.log")
    worker.start()
    try:
        await produce(kafka_bootstrap, settings.topics.events, _log())
        await read_topic(
            kafka_bootstrap,
            settings.topics.dlq,
            until=lambda rs: len(rs) >= 3,
            timeout_s=90,
            describe=worker.log_tail,
        )

        def rang() -> bool:  # the timer fired and was applied: its firing is in the log
            status, body = curl(env["GARRISON_WEB_PORT"], "/state/beta/counter/c2")
            return status == 200 and body["state"]["count"] >= 100

        await wait_until(rang, timeout_s=60, what="the alarm", describe=worker.log_tail)

        good = await asyncio.to_thread(
            _cli, env, "replay", "tests.replay_app", "--machine", "counter", "--jobs", "2"
        )
        assert good.returncode == 0, good.stdout + good.stderr
        assert "0 instance(s) differ" in good.stdout
        assert "2 dead letters" in good.stdout  # the bad JSON is no counter's
        assert "1 duplicates" in good.stdout

        bad = await asyncio.to_thread(_cli, env, "replay", "tests.replay_app", "--json")
        assert bad.returncode == 1, bad.stdout + bad.stderr
        found = json.loads(bad.stdout)
        assert [(d["machine"], d["instance"], d["seq"]) for d in found["differ"]] == [
            ("stamp", "s0", 1),
            ("stamp", "s1", 1),
        ]
        first = found["differ"][0]
        assert first["live"]["state"]["hits"] == first["replayed"]["state"]["hits"] == 1
        assert first["live"]["state"]["at"] != first["replayed"]["state"]["at"]
        assert found["stats"]["rejected"] == 3
        assert found["stats"]["identical"] >= 60

        # In-process, one tenant, on disk: the same verdict for what it covers.
        result = await replay(
            settings, registry, ReplayOptions(AddressFilter(tenant="beta"), scratch="disk")
        )
        assert result.identical
        assert len(result.partitions) == 1
        assert result.stats.applied == 20 + 2  # beta's 20 adds, the alarm and its firing
    finally:
        worker.stop()
