"""The ``garrison`` command line (also ``python -m garrison``).

``garrison kafka up|down|status``  run a local Apache Kafka (no Docker needed)
``garrison worker APP``            run a dispatch worker for the machines in module APP
``garrison listen APP``            run APP's listeners on the state-change topic
``garrison send ...``              send one event (``--wait``: and print its outcome)
``garrison kv ...``                key-value scopes: set, get, update, delete, list, scopes
``garrison tail``                  follow state changes
``garrison state get T M I``       read one instance's state from the worker's query API
``garrison diagram APP MACHINE``   print a machine as a Mermaid state diagram
``garrison history T M I``         an instance's applied changes, or its state as of then
``garrison query T M I NAME``      ask an instance's named query
``garrison replay APP``            replay the log with APP's machines and compare
``garrison dlq list|show|redrive`` dead letters: choose, inspect, send back

``APP`` is a module path (``examples.chatbot.app``), optionally ``module:attribute``;
without an attribute the module's one :class:`~pipeline.registry.Registry` is used.
Settings come from ``GARRISON_*`` environment variables (see ``pipeline.settings``),
read once per command.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from aiokafka.errors import KafkaError

from garrison import __version__
from garrison.dlq_cli import dlq
from garrison.history_cli import history
from garrison.kv_cli import echo_answer, kv
from garrison.local_kafka import LocalKafka
from garrison.query_cli import query
from garrison.replay_cli import replay
from garrison.settings_cli import settings as settings_command
from garrison.worker_http import get_json, worker_base
from pipeline.errors import GarrisonError
from pipeline.registry import Registry
from pipeline.settings import load_settings

__all__ = ["cli", "load_registry", "main"]


def load_registry(spec: str) -> Registry:
    """Import ``module[:attr]`` and return its Registry."""
    module_name, _, attr = spec.partition(":")
    sys.path.insert(0, ".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise GarrisonError(f"cannot import app module {module_name!r}: {exc}") from None
    if attr:
        found = getattr(module, attr, None)
        if not isinstance(found, Registry):
            raise GarrisonError(f"{spec} is not a pipeline.Registry")
        return found
    registries = [v for v in vars(module).values() if isinstance(v, Registry)]
    if len(registries) != 1:
        raise GarrisonError(
            f"module {module_name!r} defines {len(registries)} Registry "
            "objects; name one as MODULE:ATTRIBUTE"
        )
    return registries[0]


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]}, help=__doc__.split("\n\n")[0]
)
@click.version_option(__version__, prog_name="garrison")
def cli() -> None:
    """The ``garrison`` command group."""


@cli.command(help="Run a local single-node Apache Kafka (KRaft) without Docker.")
@click.argument("action", type=click.Choice(["up", "down", "status"]))
@click.option(
    "--port", type=int, default=None, help="listener port (default 9092; 0 picks a free one)"
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="data, config and pid folder (default ~/.cache/garrison/broker)",
)
@click.option("--heap-mb", type=int, default=512, show_default=True)
@click.option("--purge", is_flag=True, help="with down: delete the data")
def kafka(action: str, port: int | None, state_dir: Path | None, heap_mb: int, purge: bool) -> int:
    local = LocalKafka(state_dir, port=port, heap_mb=heap_mb)
    if action == "up":
        before = local.status()
        started = time.monotonic()
        bootstrap = local.up()
        if before.running:
            click.echo(f"kafka is already running at {bootstrap} (pid {before.pid})")
        else:
            click.echo(f"kafka is up at {bootstrap} (ready in {time.monotonic() - started:.1f} s)")
            click.echo(f"  export GARRISON_KAFKA_BOOTSTRAP={bootstrap}")
        return 0
    if action == "down":
        stopped = local.down(purge=purge)
        click.echo("kafka stopped" if stopped else "kafka was not running")
        if purge:
            click.echo(f"removed {local.state_dir}")
        return 0
    status = local.status()
    click.echo(status.describe())
    return 0 if status.running else 3


@cli.command(help="Run a dispatch worker for APP's machines.")
@click.argument("app")
def worker(app: str) -> int:
    from agents.worker import run_worker

    return run_worker(load_settings(), load_registry(app))


@cli.command(help="Run APP's listeners on the state-change topic.")
@click.argument("app")
def listen(app: str) -> int:
    from agents.listener_api import serve_listeners
    from agents.listeners import ListenerRunner
    from agents.logs import setup_logging
    from agents.tracing import setup_tracing

    settings = load_settings()
    setup_logging(settings)
    tracing = setup_tracing(settings, "listener")
    runner = ListenerRunner(settings, load_registry(app), tracing=tracing)

    async def go() -> None:
        from agents.topics import require_topics

        await require_topics(settings, [settings.topics.state_changes, settings.topics.events])
        # SIGTERM (docker stop, a rolling deploy) and SIGINT stop it cleanly: each
        # listener finishes its change and commits what it finished.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.stop)
        await serve_listeners(runner)  # with /metrics, /health, /ready (agents.listener_api)

    asyncio.run(go())
    return 0


@cli.command(help="Send one event to TENANT's instance INSTANCE of MACHINE.")
@click.argument("tenant")
@click.argument("machine")
@click.argument("instance")
@click.argument("type")
@click.option("--data", help="JSON payload")
@click.option("--id", "event_id", help="event id (idempotency key); default a new uuid")
@click.option(
    "--wait",
    is_flag=True,
    help="wait for the outcome and print it as JSON (exit 1: rejected, 3: no answer in time)",
)
@click.option("--timeout", type=float, default=10.0, show_default=True, help="with --wait: seconds")
def send(
    tenant: str,
    machine: str,
    instance: str,
    type: str,
    data: str | None,
    event_id: str | None,
    wait: bool,
    timeout: float,
) -> int:
    from garrison.client import Client
    from pipeline.answer import Answer
    from pipeline.errors import AnswerTimeout

    try:
        payload = json.loads(data) if data else None
    except json.JSONDecodeError as exc:
        raise GarrisonError(f"--data is not JSON: {exc}") from None

    async def go() -> str | Answer:
        async with Client(load_settings(), source="garrison.cli", connect_timeout_s=5) as client:
            if wait:
                return await client.update(
                    tenant, machine, instance, type, payload, id=event_id, timeout=timeout
                )
            return await client.send(tenant, machine, instance, type, payload, id=event_id)

    try:
        result = asyncio.run(go())
    except AnswerTimeout as exc:
        click.echo(f"garrison: {exc}", err=True)
        return 3
    if isinstance(result, Answer):
        return echo_answer(result)
    click.echo(result)
    return 0


@cli.command(help="Follow state changes (read_committed).")
@click.option("--tenant")
@click.option("--machine")
@click.option("--from-start", is_flag=True, help="from the oldest change kept")
def tail(tenant: str | None, machine: str | None, from_start: bool) -> int:
    from aiokafka import AIOKafkaConsumer

    from agents.kafka import kafka_options
    from agents.topics import require_topics

    settings = load_settings()

    async def go() -> None:
        await require_topics(settings, [settings.topics.state_changes], wait_s=5)
        consumer = AIOKafkaConsumer(
            settings.topics.state_changes,
            **kafka_options(settings.kafka),
            isolation_level="read_committed",
            auto_offset_reset="earliest" if from_start else "latest",
        )
        await consumer.start()
        try:
            async for rec in consumer:
                change = json.loads(rec.value)
                if tenant and change["tenant"] != tenant:
                    continue
                if machine and change["machine"] != machine:
                    continue
                click.echo(json.dumps(change))
        finally:
            await consumer.stop()

    asyncio.run(go())
    return 0


@cli.command(help="Read an instance's state from the worker's query API.")
@click.argument("action", type=click.Choice(["get"]))
@click.argument("tenant")
@click.argument("machine")
@click.argument("instance")
@click.option("--host", help="a worker's host (any worker: it forwards to the owner)")
@click.option("--port", type=int)
@click.option("--token", envvar="GARRISON_TOKEN", help="bearer token, if reads need one")
def state(
    action: str,
    tenant: str,
    machine: str,
    instance: str,
    host: str | None,
    port: int | None,
    token: str | None,
) -> int:
    path = "/state/" + "/".join(
        urllib.parse.quote(part, safe="") for part in (tenant, machine, instance)
    )
    status, body = get_json(worker_base(load_settings(), host, port) + path, token, timeout=10)
    if status == 200:
        click.echo(json.dumps(body, indent=2))
        return 0
    click.echo(f"garrison: {status}: {body.get('error', body)}", err=True)
    return 1


@cli.command(help="Print MACHINE of APP as a Mermaid state diagram.")
@click.argument("app")
@click.argument("machine")
@click.option("--version", "version", type=int, help="a registered version; default the latest")
def diagram(app: str, machine: str, version: int | None) -> int:
    from pipeline.diagram import mermaid

    registry = load_registry(app)
    if version is None:
        behaviour = registry.latest(machine)
    else:
        versions = registry.versions(machine)
        if version not in versions:
            known = ", ".join(f"v{v}" for v in sorted(versions)) or "none"
            raise GarrisonError(
                f"machine {machine!r} has no version {version}; registered: {known}"
            )
        behaviour = versions[version]
    click.echo(mermaid(behaviour), nl=False)
    return 0


cli.add_command(history)
cli.add_command(replay)
cli.add_command(dlq)
cli.add_command(kv)
cli.add_command(settings_command)
cli.add_command(query)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``garrison`` console script: the command's exit status; a
    :class:`GarrisonError` is one line on stderr and status 2."""
    try:
        result: Any = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="garrison",
            standalone_mode=False,
        )
    except GarrisonError as exc:
        click.echo(f"garrison: {exc}", err=True)
        return 2
    except KafkaError as exc:  # Kafka failed in a way the command could not handle
        click.echo(f"garrison: Kafka: {type(exc).__name__}: {exc}", err=True)
        return 2
    except click.exceptions.Abort:
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return result if isinstance(result, int) else 0
