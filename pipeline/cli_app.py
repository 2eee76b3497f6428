"""CLI commands that work with a user's app module: worker, listen, send, tail, state.

``APP`` is a module path (``examples.chatbot.app``), optionally ``module:attribute``;
without an attribute the module's one :class:`Registry` is used.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from pipeline.errors import GarrisonError
from pipeline.registry import Registry
from pipeline.settings import Settings

__all__ = ["add_app_commands", "load_registry"]


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
        raise GarrisonError(f"module {module_name!r} defines {len(registries)} Registry "
                            "objects; name one as MODULE:ATTRIBUTE")
    return registries[0]


def _worker(args: argparse.Namespace) -> int:
    from agents.worker import run_worker

    return run_worker(Settings(), load_registry(args.app))


def _listen(args: argparse.Namespace) -> int:
    from agents.listeners import ListenerRunner

    runner = ListenerRunner(Settings(), load_registry(args.app))
    asyncio.run(runner.run())
    return 0


def _send(args: argparse.Namespace) -> int:
    from pipeline.client import Client

    try:
        data = json.loads(args.data) if args.data else None
    except json.JSONDecodeError as exc:
        raise GarrisonError(f"--data is not JSON: {exc}") from None

    async def go() -> str:
        async with Client(Settings(), source="garrison.cli") as client:
            return await client.send(args.tenant, args.machine, args.instance, args.type,
                                     data, id=args.id)

    print(asyncio.run(go()))
    return 0


def _tail(args: argparse.Namespace) -> int:
    from aiokafka import AIOKafkaConsumer

    from pipeline.client import kafka_options

    settings = Settings()

    async def go() -> None:
        consumer = AIOKafkaConsumer(settings.topics.state_changes,
                                    **kafka_options(settings.kafka),
                                    isolation_level="read_committed",
                                    auto_offset_reset="earliest" if args.from_start
                                    else "latest")
        await consumer.start()
        try:
            async for rec in consumer:
                change = json.loads(rec.value)
                if args.tenant and change["tenant"] != args.tenant:
                    continue
                if args.machine and change["machine"] != args.machine:
                    continue
                print(json.dumps(change), flush=True)
        finally:
            await consumer.stop()

    asyncio.run(go())
    return 0


def _state(args: argparse.Namespace) -> int:
    settings = Settings()
    url = (f"http://{args.host or settings.web_host}:{args.port or settings.web_port}"
           f"/state/{args.tenant}/{args.machine}/{args.instance}")
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - our own API
            print(json.dumps(json.loads(resp.read()), indent=2))
            return 0
    except urllib.error.HTTPError as exc:
        print(exc.read().decode(), file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        raise GarrisonError(f"no worker answers at {url}: {exc.reason}") from None


def _diagram(args: argparse.Namespace) -> int:
    from pipeline.diagram import mermaid

    registry = load_registry(args.app)
    if args.version is None:
        behaviour = registry.latest(args.machine)
    else:
        versions = registry.versions(args.machine)
        if args.version not in versions:
            known = ", ".join(f"v{v}" for v in sorted(versions)) or "none"
            raise GarrisonError(f"machine {args.machine!r} has no version {args.version}; "
                                f"registered: {known}")
        behaviour = versions[args.version]
    print(mermaid(behaviour), end="")
    return 0


def add_app_commands(sub: Any) -> None:
    """Register the app-level subcommands on ``sub``."""
    p = sub.add_parser("worker", help="run a dispatch worker for APP's machines")
    p.add_argument("app")
    p.set_defaults(handler=_worker)

    p = sub.add_parser("listen", help="run APP's listeners on the state-change topic")
    p.add_argument("app")
    p.set_defaults(handler=_listen)

    p = sub.add_parser("send", help="send one event")
    for name in ("tenant", "machine", "instance", "type"):
        p.add_argument(name)
    p.add_argument("--data", help="JSON payload")
    p.add_argument("--id", help="event id (idempotency key); default a new uuid")
    p.set_defaults(handler=_send)

    p = sub.add_parser("tail", help="follow state changes")
    p.add_argument("--tenant")
    p.add_argument("--machine")
    p.add_argument("--from-start", action="store_true")
    p.set_defaults(handler=_tail)

    p = sub.add_parser("state", help="read an instance's state from the worker")
    p.add_argument("action", choices=["get"])
    for name in ("tenant", "machine", "instance"):
        p.add_argument(name)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(handler=_state)

    p = sub.add_parser("diagram", help="print a machine as a Mermaid state diagram")
    p.add_argument("app")
    p.add_argument("machine")
    p.add_argument("--version", type=int, help="a registered version; default the latest")
    p.set_defaults(handler=_diagram)
