"""``garrison settings`` lists every variable under the name the settings read it by."""

from __future__ import annotations

import os
import subprocess
import sys

from garrison.settings_cli import describe
from pipeline.settings import Settings


def test_every_listed_variable_is_the_one_the_settings_read() -> None:
    listed = {name: default for name, _, default, _ in describe(Settings, Settings())}
    assert {"GARRISON_WEB_PORT", "GARRISON_HISTORY_KEEP", "GARRISON_KAFKA_BOOTSTRAP"} <= set(listed)
    env = {
        "GARRISON_HISTORY_KEEP": "3",
        "GARRISON_WEB_PORT": "7777",
        "GARRISON_RETENTION_DLQ_MS": "1000",
        "GARRISON_WEB_OPERATOR_TOKEN": "s3cret",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        settings = Settings()
        now = {name: value for name, value, _, _ in describe(Settings, settings)}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
    assert (settings.history.keep, settings.web.port, settings.retention.dlq_ms) == (3, 7777, 1000)
    assert (now["GARRISON_HISTORY_KEEP"], now["GARRISON_WEB_PORT"]) == ("3", "7777")
    assert now["GARRISON_WEB_OPERATOR_TOKEN"] == "(set)"  # never the secret itself


def test_the_command_shows_only_what_changed_with_changed() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "garrison", "settings", "--changed"],
        env={**os.environ, "GARRISON_BATCH_SIZE": "500"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.splitlines()[0] == "GARRISON_BATCH_SIZE=500 (default 2000)"
