"""The item service the batch example commands: ``python -m examples.batch.services``.

Each ``batch.item`` command is one item to process; the answer is ``item.processed``
with the result, or ``item.failed`` with the item's error (a bad item is data, not a
failure of the service).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from agents.service import Reply, Service, serve_all
from examples.batch.app import ITEMS_TOPIC, process_item
from pipeline.envelope import Event
from pipeline.settings import load_settings

__all__ = ["handle", "service"]


def handle(command: Event) -> Reply:
    """Process one item of a batch."""
    index, item = command.data["index"], command.data["item"]
    try:
        return "item.processed", {"index": index, "result": process_item(item)}
    except ValueError as exc:
        return "item.failed", {"index": index, "error": str(exc)}


def service(before: Callable[[Event], Awaitable[None]] | None = None) -> Service:
    """The item service; ``before`` is awaited before each item (a test paces it)."""

    async def paced(command: Event) -> Reply:
        if before is not None:
            await before(command)
        return handle(command)

    return Service("batch-items", ITEMS_TOPIC, paced)


if __name__ == "__main__":
    asyncio.run(serve_all([service()], load_settings()))
