"""Batch progress: ``garrison worker examples.batch.app`` and ``python -m examples.batch.services``.

ZoopFlow's ``batchDataProcessing`` workflow, ported. A batch of items is processed in
chunks: the ``batch`` machine sends one chunk at a time (``chunk_size`` commands to the
item service, ``batch.items``), and sends the next chunk when every item of the current
one has answered. Each answer is kept in the state: the result, or the item's error
(an item that fails does not fail the batch). When the last chunk is in, the batch is
``COMPLETED``.

While it runs, ``progress`` answers how far it is (``garrison query acme batch b-1
progress``): processed, total, percentage and the errors so far; ``percentage`` is also
a computed value, in every HTTP read of the instance.

Try it::

    garrison kafka up
    garrison worker examples.batch.app &
    python -m examples.batch.services &
    garrison send acme batch b-1 batch.started --data '{"items": ["1", "2", "x", "4"]}'
    garrison query acme batch b-1 progress
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline import Emit, Incoming, Machine, Next, Registry

__all__ = ["ITEMS_TOPIC", "Batch", "Progress", "batch", "process_item", "registry"]

ITEMS_TOPIC = "batch.items"
"""The item service's command topic."""


class ItemError(BaseModel):
    """An item that failed, and why."""

    index: int
    item: str
    error: str


class Batch(BaseModel):
    """The processing state (ZoopFlow's ``processingState``)."""

    status: Literal["PROCESSING", "COMPLETED"] = "PROCESSING"
    items: list[str] = []
    chunk_size: int = 10
    next_index: int = 0  # the first item of the next chunk
    in_flight: list[int] = []  # items of the current chunk not answered yet
    processed: int = 0
    results: dict[str, int] = {}  # item index -> result
    errors: list[ItemError] = []
    started_ms: int = 0
    ended_ms: int | None = None


class Started(BaseModel):
    """Payload of ``batch.started``."""

    model_config = ConfigDict(extra="forbid")
    items: list[str] = Field(min_length=1, max_length=10_000)
    chunk_size: int = Field(default=10, ge=1, le=500)


class Done(BaseModel):
    """The item service's answer: ``item.processed`` (a result) or ``item.failed``."""

    model_config = ConfigDict(extra="forbid")
    index: int
    result: int | None = None
    error: str | None = None


class Progress(BaseModel):
    """What ``progress`` answers."""

    status: str
    processed: int
    total: int
    percentage: int
    errors: list[ItemError]


batch: Machine[Batch] = Machine("batch", state=Batch, topics=[ITEMS_TOPIC])


def _next_chunk(state: Batch, time_ms: int) -> Next:
    """Send the next chunk's commands, or complete the batch."""
    start = state.next_index
    chunk = list(range(start, min(start + state.chunk_size, len(state.items))))
    if not chunk:
        return Next(state.model_copy(update={"status": "COMPLETED", "ended_ms": time_ms}))
    commands = [
        Emit("batch.item", {"index": i, "item": state.items[i]}, topic=ITEMS_TOPIC) for i in chunk
    ]
    return Next(
        state.model_copy(update={"next_index": chunk[-1] + 1, "in_flight": chunk}), *commands
    )


@batch.on("batch.started")
def started(config: None, state: Batch, event: Incoming[Started]) -> Next:
    """Keep the items and send the first chunk."""
    fresh = Batch(
        items=event.data.items, chunk_size=event.data.chunk_size, started_ms=event.time_ms
    )
    return _next_chunk(fresh, event.time_ms)


def _answered(state: Batch, event: Incoming[Done]) -> Next | Batch:
    done = event.data
    if done.index not in state.in_flight:
        return state  # an answer to an item already answered: nothing new
    update: dict[str, Any] = {
        "in_flight": [i for i in state.in_flight if i != done.index],
        "processed": state.processed + 1,
    }
    if done.error is None:
        update["results"] = {**state.results, str(done.index): done.result}
    else:
        failed = ItemError(index=done.index, item=state.items[done.index], error=done.error)
        update["errors"] = [*state.errors, failed]
    new = state.model_copy(update=update)
    return new if new.in_flight else _next_chunk(new, event.time_ms)


@batch.on("item.processed")
def processed(config: None, state: Batch, event: Incoming[Done]) -> Next | Batch:
    """An item's result."""
    return _answered(state, event)


@batch.on("item.failed")
def failed(config: None, state: Batch, event: Incoming[Done]) -> Next | Batch:
    """An item's error, kept in the state; the batch goes on."""
    return _answered(state, event)


@batch.computed("percentage")
def percentage(config: None, state: Batch) -> int:
    """How much of the batch is processed, in whole percent."""
    return round(100 * state.processed / len(state.items)) if state.items else 100


@batch.query("progress", result=Progress)
def progress(config: None, state: Batch) -> Progress:
    """How far the batch is."""
    return Progress(
        status=state.status,
        processed=state.processed,
        total=len(state.items),
        percentage=percentage(config, state),
        errors=state.errors,
    )


def process_item(item: str) -> int:
    """The work one item takes (the item service's): here, squaring a number."""
    return int(item) ** 2


registry = Registry([batch])
