"""The result of starting a chart or sending it one event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.statechart.request import Emitted, TimerRequest

__all__ = ["Step", "make_step"]


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


_new = object.__new__
_slots: dict[str, Any] = dict(vars(Step))
_set_snapshot = _slots["snapshot"].__set__
_set_emitted = _slots["emitted"].__set__
_set_timers = _slots["timers"].__set__
_set_changed = _slots["changed"].__set__
_set_actions_run = _slots["actions_run"].__set__


def make_step(
    snapshot: dict[str, Any],
    emitted: tuple[Emitted, ...],
    timers: tuple[TimerRequest, ...],
    changed: bool,
    actions_run: tuple[str, ...],
) -> Step:
    """Build a Step without the frozen dataclass ``__init__``.

    That ``__init__`` goes through ``object.__setattr__`` per field and costs about a
    third of a flat-chart transition; writing the slots directly keeps the object
    just as immutable to callers at half the cost.
    """
    step: Step = _new(Step)
    _set_snapshot(step, snapshot)
    _set_emitted(step, emitted)
    _set_timers(step, timers)
    _set_changed(step, changed)
    _set_actions_run(step, actions_run)
    return step
