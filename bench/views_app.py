"""The app the query benchmark runs: ``garrison worker bench.views_app``.

The bench's counter (``bench.app``) with a named query and a computed value, as a
garrison user would declare them; its reducer is the same.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bench.app import Added, Counter
from bench.workload import EVENT_TYPE, MACHINE
from pipeline import Machine, Registry

__all__ = ["Scale", "Summary", "counter", "registry"]


class Scale(BaseModel):
    """The ``summary`` query's parameters."""

    model_config = ConfigDict(extra="forbid")
    scale: int = Field(default=1, ge=1, le=100)


class Summary(BaseModel):
    """What ``summary`` answers."""

    count: int
    total: int
    mean: float


counter: Machine[Counter] = Machine(MACHINE, state=Counter)


@counter.on(EVENT_TYPE, payload=Added)
def added(config: Any, state: Counter, event: Any) -> Counter:
    """count += 1, total += amount, last = event id (``bench.app``'s reducer)."""
    return Counter(count=state.count + 1, total=state.total + event.data.amount, last=event.id)


@counter.computed("mean")
def mean(config: Any, state: Counter) -> float:
    """The mean amount added."""
    return state.total / state.count if state.count else 0.0


@counter.query("summary", params=Scale, result=Summary)
def summary(config: Any, state: Counter, params: Scale) -> Summary:
    """The counter's figures, scaled."""
    return Summary(
        count=state.count * params.scale,
        total=state.total * params.scale,
        mean=mean(config, state),
    )


registry = Registry([counter])
