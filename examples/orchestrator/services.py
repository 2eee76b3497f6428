"""The services the counter orchestrator talks to: increment, decrement, notify.

``python -m examples.orchestrator.services`` creates their topics and runs all three
with the ``GARRISON_*`` settings (the app name decides where answers go).
"""

from __future__ import annotations

import asyncio
import logging

from agents.service import Reply, Service, serve_all
from examples.orchestrator.app import (
    DECREMENT_TOPIC,
    INCREMENT_TOPIC,
    LIMIT,
    NOTIFY_TOPIC,
)
from pipeline.envelope import Event
from pipeline.settings import Settings

__all__ = ["services", "increment", "decrement", "notify", "main"]

log = logging.getLogger(__name__)


def _adjust(command: Event) -> int:
    result = int(command.data["value"]) + int(command.data["by"])
    if not 0 <= result <= LIMIT:
        raise ValueError(f"result {result} is outside 0..{LIMIT}")
    return result


def increment(command: Event) -> Reply:
    """``com.number.increment`` -> ``evt.number.increment.success``."""
    return "evt.number.increment.success", {"result": _adjust(command)}


def decrement(command: Event) -> Reply:
    """``com.number.decrement`` -> ``evt.number.decrement.success``."""
    return "evt.number.decrement.success", {"result": _adjust(command)}


def notify(command: Event) -> None:
    """Deliver a notification (here: a log line); notifications are not answered."""
    log.info("%s/%s: %s", command.tenant, command.instance, command.data)


def services() -> list[Service]:
    """The three services, with their topics."""
    return [
        Service("increment", INCREMENT_TOPIC, increment),
        Service("decrement", DECREMENT_TOPIC, decrement),
        Service("notify", NOTIFY_TOPIC, notify),
    ]


async def main(settings: Settings) -> None:
    """Create the service topics and run every service until interrupted."""
    await serve_all(services(), settings)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(main(Settings()))
