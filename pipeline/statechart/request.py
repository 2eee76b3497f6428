"""What flows in and out of a chart: the event guards and actions see, and the requests
a step hands back to garrison (events to send, timers to arm or disarm).

All are plain immutable data; the interpreter never carries them out itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

__all__ = ["ChartEvent", "Emitted", "TimerSet", "TimerCancel", "TimerRequest"]

_NO_VIEWS: Mapping[str, Any] = MappingProxyType({})


class ChartEvent(NamedTuple):
    """The event as guards, actions, delays and outputs see it.

    ``type`` is the event type (``"xstate.init"`` on start, ``"xstate.after.<delay>.<id>"``
    for a delayed transition, ``"xstate.done.state.<id>"`` for a completed state);
    ``data`` is its payload (for a done event: the output of the final state reached);
    ``views`` what the machine declared it reads of sibling instances for this event
    (``pipeline.view``), also seen by the eventless and done transitions it leads to.
    """

    type: str
    data: Any = None
    views: Mapping[str, Any] = _NO_VIEWS


@dataclass(frozen=True, slots=True)
class Emitted:
    """An event an ``emit`` action asks garrison to send; ``to`` names a target, or
    ``None`` for garrison's default routing."""

    type: str
    data: Any = None
    to: str | None = None


@dataclass(frozen=True, slots=True)
class TimerSet:
    """Arm the durable timer ``key``: after ``delay_ms``, deliver ``event_type`` (no data).

    Entering a state with ``after`` asks for one per delay. ``key`` is deterministic
    (``"<state id>#after<delay>"``), so setting it again replaces the earlier timer.
    """

    key: str
    delay_ms: int
    event_type: str


@dataclass(frozen=True, slots=True)
class TimerCancel:
    """Disarm the timer ``key``: the state that armed it was exited."""

    key: str


TimerRequest = TimerSet | TimerCancel
