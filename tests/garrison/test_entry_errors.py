"""Mistakes at the entry points get one line naming what to fix, and quickly: a wrong
bootstrap address, a setting that does not parse, a GARRISON_APP whose topics do not
exist. (They were a 30-line traceback, a raw pydantic error, and a 40 s hang.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import settings_env


def _garrison(env: dict[str, str], *args: str, timeout: float = 60) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "garrison", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.returncode, done.stderr.strip(), time.monotonic() - started


@pytest.mark.parametrize(
    "args",
    [
        ("send", "acme", "counter", "c1", "counter.added"),
        ("tail",),
        ("listen", "tests.listen_app"),
        ("worker", "tests.sample_app"),
    ],
)
def test_a_wrong_bootstrap_is_one_line_naming_the_variable(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    env = settings_env("127.0.0.1:9", "nowhere", tmp_path, kafka_connect_timeout_s="2")
    code, err, took = _garrison(env, *args)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("garrison: cannot reach Kafka at 127.0.0.1:9")
    assert "GARRISON_KAFKA_BOOTSTRAP" in err
    assert took < 20


@pytest.mark.parametrize(
    ("setting", "value", "text"),
    [
        (
            "GARRISON_KAFKA_PARTITIONS",
            "many",
            "GARRISON_KAFKA_PARTITIONS: Input should be a valid integer",
        ),
        (
            "GARRISON_WEB_PORT",
            "70000",
            "GARRISON_WEB_PORT: Input should be less than or equal to 65535",
        ),
        ("GARRISON_APP", "two words", "GARRISON_APP: String should match pattern"),
        (
            "GARRISON_BATCH_SIZE",
            "0",
            "GARRISON_BATCH_SIZE: Input should be greater than or equal to 1",
        ),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    setting: str, value: str, text: str, tmp_path: Path
) -> None:
    env = settings_env("127.0.0.1:9", "app", tmp_path)
    env[setting] = value
    code, err, _ = _garrison(env, "send", "acme", "counter", "c1", "counter.added")
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert text in err
    assert repr(value) in err


@pytest.mark.parametrize("args", [("send", "acme", "counter", "c1", "counter.added"), ("tail",)])
def test_a_wrong_app_is_one_line_asking_about_garrison_app(
    kafka_bootstrap: str, unique: Callable[[str], str], tmp_path: Path, args: tuple[str, ...]
) -> None:
    env = settings_env(kafka_bootstrap, unique("typo"), tmp_path)
    code, err, took = _garrison(env, *args)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert "does not exist" in err
    assert "is GARRISON_APP right" in err
    assert took < 20
