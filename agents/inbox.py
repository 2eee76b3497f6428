"""A lane's input: the fetched records handed to it and not yet taken.

The worker's one fetch loop hands each partition's records to its lane; the lane takes
them as it applies batches. The queue is bounded by records, not chunks: at a paced rate
chunks are tiny, and a bound on chunks would stall the shared fetch loop behind one lane
that is committing; at 4 batches' worth the fetch loop waits (backpressure). Records a
lane gives back (a batch to redo, the rest of a chunk that overfilled a batch) are taken
first, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

__all__ = ["Inbox"]


class Inbox:
    """Chunks of fetched records, in order, bounded by ``limit`` records."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._queue: asyncio.Queue[Sequence[Any]] = asyncio.Queue()
        self.queued = 0
        self.front: Sequence[Any] = ()  # taken before the queue: a redo, a rest
        self._room = asyncio.Event()
        self._room.set()
        self.closed = False

    async def put(self, chunk: Sequence[Any]) -> None:
        """Queue a fetched chunk; waits while ``limit`` records are queued already."""
        await self._room.wait()
        if self.closed:
            return
        self.queued += len(chunk)
        if self.queued >= self.limit:
            self._room.clear()
        self._queue.put_nowait(chunk)

    def give_back(self, records: Sequence[Any]) -> None:
        """Records to take again before anything else (those not committed)."""
        self.front = [*records, *self.front]

    def close(self) -> None:
        """Nothing more is taken: a fetch loop waiting to put returns at once."""
        self.closed = True
        self._room.set()

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
        if self.queued < self.limit:
            self._room.set()
        return chunk
