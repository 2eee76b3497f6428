"""A lane's input: the fetched records handed to it and not yet taken.

The worker's one fetch loop hands each partition's records to its lane; the lane takes
them as it applies batches. The queue is bounded by records, not chunks (at a paced rate
chunks are tiny). Handing records over never waits: a fetch loop that waited for one
lane's room stalled every other partition of the worker behind it (one tenant over its
lane's bound held up every tenant, not only the ones sharing its partition). Instead, at
``limit`` records the inbox says it is full (:meth:`add` returns True) and the lane has
its partition paused in the consumer (``agents.consumer``); once the lane has taken it
down to half, ``on_room`` runs and the partition resumes. Records a lane gives back (a
batch to redo, the rest of a chunk that overfilled a batch) are taken first, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Inbox"]


class Inbox:
    """Chunks of fetched records, in order; full at ``limit`` records, with room again
    at half of it (``on_room`` is told)."""

    def __init__(self, limit: int, on_room: Callable[[], None] | None = None) -> None:
        self.limit = limit
        self.on_room = on_room
        self._queue: asyncio.Queue[Sequence[Any]] = asyncio.Queue()
        self.queued = 0
        self.front: Sequence[Any] = ()  # taken before the queue: a redo, a rest
        self.full = False
        self.closed = False

    def add(self, chunk: Sequence[Any]) -> bool:
        """Queue a fetched chunk (dropped once closed); True if the inbox is full now."""
        if self.closed:
            return False
        self.queued += len(chunk)
        self._queue.put_nowait(chunk)
        if self.queued >= self.limit:
            self.full = True
        return self.full

    def give_back(self, records: Sequence[Any]) -> None:
        """Records to take again before anything else (those not committed)."""
        self.front = [*records, *self.front]

    def close(self) -> None:
        """Nothing more is taken: what is added from now on is dropped."""
        self.closed = True

    async def next(
        self, *, until: asyncio.Future[Any] | None = None, timeout: float | None = None
    ) -> Sequence[Any] | None:
        """The next chunk; None if ``until`` finishes or ``timeout`` passes first.
        (A cancelled ``Queue.get`` leaves its item in the queue: nothing is lost.)"""
        if self.front:
            chunk, self.front = self.front, ()
            return chunk
        if not self._queue.empty():
            return self._took(self._queue.get_nowait())
        if until is None and timeout is None:
            return self._took(await self._queue.get())
        getter = asyncio.ensure_future(self._queue.get())
        try:
            waits: set[asyncio.Future[Any]] = {getter} if until is None else {getter, until}
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            return self._took(getter.result()) if getter.done() else None
        finally:
            if not getter.done():
                getter.cancel()

    def _took(self, chunk: Sequence[Any]) -> Sequence[Any]:
        self.queued -= len(chunk)
        if self.full and self.queued <= self.limit // 2:
            self.full = False
            if self.on_room is not None:
                self.on_room()
        return chunk
