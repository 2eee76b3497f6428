"""Real garrison processes and topic readers for broker tests."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from garrison.process import WorkerProcess
from pipeline.settings import Settings

__all__ = [
    "WorkerProcess",
    "curl",
    "drain_topic",
    "free_port",
    "produce",
    "read_topic",
    "settings_env",
    "settings_from",
    "wait_until",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_env(
    bootstrap: str, app: str, data_dir: Path, *, partitions: int = 4, **extra: str
) -> dict[str, str]:
    env = {
        "GARRISON_KAFKA_BOOTSTRAP": bootstrap,
        "GARRISON_APP": app,
        "GARRISON_DATA_DIR": str(data_dir),
        "GARRISON_KAFKA_PARTITIONS": str(partitions),
        "GARRISON_WEB_PORT": str(free_port()),
        "GARRISON_LOG_LEVEL": "warn",
        # A SIGKILLed worker's partitions move after this; short keeps tests quick.
        "GARRISON_SESSION_TIMEOUT_S": "6",
    }
    env.update({f"GARRISON_{k.upper()}": v for k, v in extra.items()})
    return env


def settings_from(env: dict[str, str]) -> Settings:
    """The Settings a process with ``env`` would read."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return Settings()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[Any]], bool],
    timeout_s: float,
    alive: Callable[[], bool] | None = None,
    describe: Callable[[], str] = lambda: "",
) -> list[Any]:
    """Read ``topic`` from the start (read_committed) until ``until(records)`` holds."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not until(out):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{topic}: condition not met within {timeout_s}s after "
                    f"{len(out)} records\n{describe()}"
                )
            if alive is not None and not alive():
                raise AssertionError(f"worker died while reading {topic}\n{describe()}")
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batch.values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


async def produce(
    bootstrap: str,
    topic: str,
    values: list[tuple[bytes | None, bytes | None]],
    *,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    """Produce ``(key, value)`` records with aiokafka's default partitioner and wait."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        for key, value in values:
            await producer.send(topic, value, key=key, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


def curl(port: str | int, path: str, *, token: str | None = None) -> tuple[int, Any]:
    """GET ``path`` on a local worker with curl, a real HTTP client: status and JSON body
    (status 0 when nothing listens on the port)."""
    import json
    import subprocess

    cmd = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", f"http://127.0.0.1:{port}{path}"]
    if token is not None:
        cmd[1:1] = ["-H", f"Authorization: Bearer {token}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode == 7:  # could not connect: nothing listens (yet)
        return 0, done.stderr
    assert done.returncode == 0, f"curl failed: {done.stderr}"
    body, _, status = done.stdout.rpartition("\n")
    try:
        return int(status), json.loads(body)
    except ValueError:
        return int(status), body


@contextmanager
def serving_worker(
    app: str, env: dict[str, str], log: Path, *, timeout_s: float = 90
) -> Iterator[WorkerProcess]:
    """A worker of ``app`` started and serving (``/ready`` answers 200); stopped after,
    and the test fails if it died meanwhile (a module fixture's worker serves many tests)."""
    worker = WorkerProcess(app, env, log)
    worker.start()
    try:
        deadline = time.monotonic() + timeout_s
        while curl(env["GARRISON_WEB_PORT"], "/ready")[0] != 200:
            assert worker.alive(), worker.log_tail()
            assert time.monotonic() < deadline, f"worker not ready\n{worker.log_tail()}"
            time.sleep(0.3)
        yield worker
        assert worker.alive(), f"the worker died during the module\n{worker.log_tail()}"
    finally:
        worker.stop()


async def wait_until(
    check: Callable[[], Any], *, timeout_s: float, what: str, describe: Callable[[], str] = str
) -> Any:
    """Poll ``check`` (run in a thread) until it returns something truthy."""
    import asyncio

    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(check)
        if last:
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what} not within {timeout_s}s (last: {last!r})\n{describe()}")


async def drain_topic(bootstrap: str, topic: str, *, seconds: float = 3.0) -> list[Any]:
    """Everything committed in ``topic`` (read from the start for ``seconds``)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    out: list[Any] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300, max_records=5000)
            for records in batch.values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out
