"""``garrison dlq`` on the real broker: a contract violation re-driven after the contract
is relaxed is applied once, also when the re-drive runs twice; a listener's dead letter
goes back to that listener only, once; neither goes where the other belongs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agents.listeners import ListenerRunner
from agents.topics import ensure_topics
from garrison.process import ROOT
from pipeline import Event, StateChange, encode_event
from tests import redrive_app
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


def _ev(eid: str, type: str = "counter.added", amount: int | None = None) -> tuple[bytes, bytes]:
    data = None if amount is None else {"amount": amount}
    return b"acme", encode_event(Event(eid, type, "t", "acme", "counter", "r1", 1_000, data))


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


async def test_redrive_after_the_contract_is_relaxed_applies_once(
    kafka_bootstrap: str, unique: Callable[[str], str], data_dir: Path, tmp_path: Path
) -> None:
    env = settings_env(kafka_bootstrap, unique("redrive"), data_dir)
    settings = settings_from(env)
    topics = settings.topics
    await ensure_topics(settings)
    port = env["GARRISON_WEB_PORT"]
    worker = WorkerProcess("tests.redrive_app:strict", env, tmp_path / "worker.log")
    worker.start()
    redrive_app.BROKEN["audit"] = True
    runner = ListenerRunner(settings, redrive_app.relaxed)
    listening = asyncio.create_task(runner.run())

    def total(n: int) -> Callable[[], bool]:
        def check() -> bool:
            status, body = curl(port, "/state/acme/counter/r1")
            return status == 200 and body["state"]["total"] == n

        return check

    try:
        await produce(
            kafka_bootstrap,
            topics.events,
            [_ev("r-1", amount=1), _ev("big", amount=5000), _ev("r-2", amount=2)],
        )
        await wait_until(total(3), timeout_s=90, what="r-1 and r-2", describe=worker.log_tail)
        listed = await asyncio.to_thread(_cli, env, "dlq", "list", "--stage", "contract", "--json")
        assert listed.returncode == 0, listed.stderr
        (letter,) = [json.loads(line) for line in listed.stdout.splitlines()]
        assert (letter["event_id"], letter["error"], letter["instance"]) == (
            "big",
            "ContractViolation",
            "r1",
        )
        assert "less than or equal to 1000" in letter["reason"]

        # The owner relaxes the contract and deploys; then sends the letter back, twice.
        worker.stop()
        worker = WorkerProcess("tests.redrive_app:relaxed", env, tmp_path / "worker2.log")
        worker.start()
        for _ in range(2):
            sent = await asyncio.to_thread(
                _cli, env, "dlq", "redrive", "--stage", "contract", "--by", "tester"
            )
            assert sent.returncode == 0, sent.stdout + sent.stderr
            assert f"{topics.dlq}/{letter['at'].replace(':', '/')}  event" in sent.stdout
            assert f"-> {topics.events}  sent" in sent.stdout
        await produce(kafka_bootstrap, topics.events, [_ev("r-3", amount=3)])  # after both
        await wait_until(total(5006), timeout_s=90, what="big, once", describe=worker.log_tail)
        changes = await read_topic(
            kafka_bootstrap,
            topics.state_changes,
            until=lambda rs: any(StateChange.from_json(r.value).event_id == "r-3" for r in rs),
            timeout_s=30,
        )
        r1 = [StateChange.from_json(r.value) for r in changes]
        assert [(c.seq, c.event_id) for c in r1 if c.instance == "r1"] == [
            (1, "r-1"),
            (2, "r-2"),
            (3, "big"),
            (4, "r-3"),
        ]
        events = await read_topic(
            kafka_bootstrap, topics.events, until=lambda rs: len(rs) >= 6, timeout_s=30
        )
        redriven = [dict(r.headers) for r in events if r.headers]
        assert len(redriven) == 2
        assert {h["garrison.redriven-by"] for h in redriven} == {b"tester"}
        assert {h["garrison.redriven-from"].decode() for h in redriven} == {
            f"{topics.dlq}/{letter['at'].replace(':', '/')}"
        }

        # A listener's dead letter: fixed (the audit store is back), sent back twice, run once.
        await produce(kafka_bootstrap, topics.events, [_ev("reset-1", "counter.reset")])
        await read_topic(
            kafka_bootstrap,
            topics.dlq,
            until=lambda rs: any((b"garrison.stage", b"listener") in _h(r) for r in rs),
            timeout_s=60,
        )
        redrive_app.BROKEN["audit"] = False
        for expected in ("sent", "skipped: re-driven already"):
            sent = await asyncio.to_thread(_cli, env, "dlq", "redrive", "--listener", "audit")
            assert sent.returncode == 0, sent.stdout + sent.stderr
            assert f"listener -> {topics.listener_redrive}  {expected}" in sent.stdout

        def audited() -> bool:
            return redrive_app.AUDITED == [("r1", 5)]

        await wait_until(audited, timeout_s=30, what="the audit, once")
        # Forced out again, the runner knows the re-drive id and does not run it twice.
        forced = await asyncio.to_thread(
            _cli, env, "dlq", "redrive", "--listener", "audit", "--force"
        )
        assert f"-> {topics.listener_redrive}  sent" in forced.stdout, forced.stderr
        back = await read_topic(
            kafka_bootstrap, topics.listener_redrive, until=lambda rs: len(rs) >= 2, timeout_s=10
        )
        assert len(back) == 2  # only listener letters; the event letters never went there
        await asyncio.sleep(2.0)
        assert redrive_app.AUDITED == [("r1", 5)]
    finally:
        runner.stop()
        await asyncio.wait_for(listening, 30)
        worker.stop()


def _h(rec: object) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v) for k, v in getattr(rec, "headers", ()) or ()]
