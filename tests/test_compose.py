"""docker-compose.yml and the Dockerfile, read (there is no Docker engine here): the
deployment's invariants that a typo or a well-meant edit would break."""

from __future__ import annotations

import base64
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from garrison.cli import load_registry
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
GARRISON = {name: s for name, s in SERVICES.items() if s.get("command", [""])[0] == "garrison"}
PORT_OF = {"worker": "GARRISON_WEB_PORT", "listen": "GARRISON_WEB_LISTENER_PORT"}


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in service.get("environment", {}).items()}


def test_the_garrison_services_are_a_worker_and_a_listener_of_one_app() -> None:
    assert sorted(s["command"][1] for s in GARRISON.values()) == ["listen", "worker"]
    apps = {_env(s)["GARRISON_APP"] for s in GARRISON.values()}
    assert apps == {"chatbot"}
    # The README's commands use the same app id, as ./run demo does.
    assert "GARRISON_APP=chatbot" in (ROOT / "README.md").read_text()
    for service in GARRISON.values():
        load_registry(service["command"][2])  # the app module they run exists


@pytest.mark.parametrize("name", sorted(GARRISON))
def test_every_garrison_setting_in_compose_is_a_real_one(name: str) -> None:
    fields = Settings.model_fields
    for var in _env(GARRISON[name]):
        assert var.startswith("GARRISON_"), var
        key = var.removeprefix("GARRISON_").lower()
        if key in fields:
            continue
        group, _, rest = key.partition("_")
        model = fields[group].annotation if group in fields else None
        assert isinstance(model, type), f"{var}: no such group"
        assert issubclass(model, BaseModel), f"{var}: no such group"
        assert rest in model.model_fields, f"{var}: {group} has no setting {rest!r}"


@pytest.mark.parametrize("name", sorted(GARRISON))
def test_scaled_services_restart_check_ready_and_take_no_fixed_host_port(name: str) -> None:
    service = GARRISON[name]
    assert service["restart"] in ("always", "unless-stopped", "on-failure")
    assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
    port = _env(service)[PORT_OF[service["command"][1]]]
    for published in service.get("ports", []):
        # "6066" publishes on a free host port; "6066:6066" would clash at --scale 2.
        assert ":" not in str(published), published
        assert str(published) == port
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]  # the image has no curl
    assert f"http://127.0.0.1:{port}/ready" in test[3]
    assert _env(service)["GARRISON_WEB_BIND"] == "0.0.0.0"  # reachable from the others
    assert "GARRISON_WEB_HOST" not in _env(service)  # each replica advertises its hostname


def test_workers_do_not_share_a_data_folder() -> None:
    worker = next(s for s in GARRISON.values() if s["command"][1] == "worker")
    data_dir = _env(worker)["GARRISON_DATA_DIR"]
    for volume in worker.get("volumes", []):
        assert not str(volume).endswith(":" + data_dir), "one RocksDB folder for every replica"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"VOLUME {data_dir}" in dockerfile  # an anonymous volume per container instead


def test_kafka_keeps_its_data_in_a_named_volume() -> None:
    kafka = SERVICES["kafka"]
    env = _env(kafka)
    log_dirs = env["KAFKA_LOG_DIRS"]
    [volume] = [v for v in kafka["volumes"] if v.endswith(":" + log_dirs)]
    assert volume.split(":")[0] in COMPOSE["volumes"]
    raw = env["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))) == 16  # a UUID
    assert kafka["restart"] in ("always", "unless-stopped")
    assert "healthcheck" in kafka


def test_the_image_installs_dependencies_first_and_runs_unprivileged() -> None:
    lines = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.strip()]
    copies = [i for i, line in enumerate(lines) if line.startswith("COPY")]
    install = next(i for i, line in enumerate(lines) if "pip install" in line and "-r" in line)
    assert lines[copies[0]].split()[1:] == ["pyproject.toml", "./"]
    assert copies[0] < install < copies[1]  # the source comes after the dependencies
    [user] = [line for line in lines if line.startswith("USER")]
    assert user.split()[1] not in ("root", "0")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert re.fullmatch(r"[A-Za-z0-9.+-]+( (AND|OR) [A-Za-z0-9.+-]+)*", project["license"])
    assert (ROOT / "LICENSE").is_file()
