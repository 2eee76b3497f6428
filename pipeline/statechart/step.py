"""The result of starting a chart or sending it one event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.statechart.effect import Emitted, TimerRequest

__all__ = ["Step"]


@dataclass(frozen=True, slots=True)
class Step:
    """One macrostep's outcome.

    ``snapshot`` is a fresh JSON-compatible dict ``{"value", "context", "status",
    "output"}``: ``value`` is the xstate state value (a string for an atomic state, a
    nested dict for compound and parallel ones), ``status`` is ``"active"`` or ``"done"``
    and ``output`` is set once the machine is done. ``emitted`` and ``timers`` are the
    requests made, in the order the actions ran. ``changed`` is ``False`` when no
    transition was enabled: the event was ignored (xstate semantics) and the snapshot is
    the one given; whether that is an error is the caller's call. ``actions_run`` names
    every action that ran, in order (exit, transition, entry; across microsteps).
    """

    snapshot: dict[str, Any]
    emitted: tuple[Emitted, ...] = ()
    timers: tuple[TimerRequest, ...] = ()
    changed: bool = True
    actions_run: tuple[str, ...] = ()
