"""Real garrison processes and topic readers for broker tests."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from garrison.process import WorkerProcess
from pipeline.settings import Settings

__all__ = ["WorkerProcess", "free_port", "read_topic", "settings_env", "settings_from"]


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
