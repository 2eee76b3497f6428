"""The garrison app the benchmark runs: ``garrison worker bench.app``.

One reducer machine, written as a garrison user would write it (a pydantic state, a
payload contract), doing the workload's work (:func:`bench.workload.apply`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from bench.workload import EVENT_TYPE, MACHINE
from pipeline import Machine, Registry

__all__ = ["Counter", "Added", "counter", "registry"]


class Counter(BaseModel):
    """The counter's state."""

    count: int = 0
    total: int = 0
    last: str = ""


class Added(BaseModel):
    """Payload of ``counter.added``."""

    amount: int
    note: str = ""


counter: Machine[Counter] = Machine(MACHINE, state=Counter)


@counter.on(EVENT_TYPE, payload=Added)
def added(config: Any, state: Counter, event: Any) -> Counter:
    """count += 1, total += amount, last = event id."""
    return Counter(count=state.count + 1, total=state.total + event.data.amount, last=event.id)


registry = Registry([counter])
