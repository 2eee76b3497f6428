"""Running compiled microsteps: the hot path.

A macrostep runs the microstep the event selected, then, as xstate v5 does, keeps
taking eventless (``always``) transitions and internally raised done events until
neither is left, or the machine is done. A guard or action that raises becomes
:class:`ReducerFailed`; nothing is swallowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.errors import ReducerFailed
from pipeline.statechart.action import (
    ASSIGN,
    DONE_EVENT,
    EMIT,
    MACHINE_DONE,
    RUN,
    TIMER_SET,
)
from pipeline.statechart.compiler import IGNORED, Config, Guarded, Micro, Program, copy_value
from pipeline.statechart.macrostep import Step, make_step
from pipeline.statechart.node import Transition
from pipeline.statechart.request import ChartEvent, Emitted, TimerCancel, TimerRequest, TimerSet

__all__ = ["choose", "select", "macrostep", "eventless_only", "failure"]

_KIND_LABEL = {
    ASSIGN: "action",
    EMIT: "action",
    RUN: "action",
    TIMER_SET: "delay",
    DONE_EVENT: "output of state",
    MACHINE_DONE: "output of machine",
}


def failure(what: str, name: str, exc: BaseException, event: ChartEvent) -> ReducerFailed:
    """The error for a user function that raised (or returned something unusable)."""
    return ReducerFailed(
        f"{what} {name!r} raised {type(exc).__name__}: {exc} (event {event.type!r})",
        event_type=event.type,
        data=event.data,
    )


def _refused(what: str, name: str, got: Any, fix: str, event: ChartEvent) -> ReducerFailed:
    return ReducerFailed(
        f"{what} {name!r} returned {got!r}; {fix} (event {event.type!r})",
        event_type=event.type,
        data=event.data,
    )


def choose(
    program: Program, config: Config, plan: Guarded, context: dict[str, Any], event: ChartEvent
) -> Micro | None:
    """Evaluate guards: the first enabled transition of each group, or None if none is."""
    selected: list[Transition] = []
    for group in plan.groups:
        for transition in group:
            guard = transition.guard
            if guard is not None:
                try:
                    enabled = guard.call(context, event)
                except Exception as exc:
                    raise failure("guard", guard.name, exc, event) from exc
                if not enabled:
                    continue
            if transition not in selected:
                selected.append(transition)
            break
    return program.micro(config, selected) if selected else None


def select(
    program: Program,
    config: Config,
    event_type: str | None,
    context: dict[str, Any],
    event: ChartEvent,
) -> Micro | None:
    """The microstep ``event_type`` (``None``: eventless) triggers, or None."""
    plan = config.plans.get(event_type)
    if plan is None:
        plan = program.plan(config, event_type)
    if plan.__class__ is Micro:
        return plan
    if plan is IGNORED:
        return None
    assert isinstance(plan, Guarded)
    return choose(program, config, plan, context, event)


class _Outbox:
    __slots__ = ("emitted", "timers", "queue", "output", "done")

    def __init__(self) -> None:
        self.emitted: list[Emitted] = []
        self.timers: list[TimerRequest] = []
        self.queue: list[ChartEvent] = []
        self.output: Any = None
        self.done = False


# Lean microsteps never write to their outbox, so they can all share this one.
_LEAN = _Outbox()


def _run(micro: Micro, context: dict[str, Any], event: ChartEvent, out: _Outbox) -> dict[str, Any]:
    for kind, call, name, extra in micro.ops:
        result: Any = None
        if call is not None:
            try:
                result = call(context, event)
            except Exception as exc:
                raise failure(_KIND_LABEL.get(kind, "action"), name, exc, event) from exc
        if kind == ASSIGN:
            if result.__class__ is dict:
                if result:
                    context = {**context, **result}
            elif isinstance(result, Mapping):
                context = {**context, **result}
            elif result is not None:
                raise _refused("action", name, result, "an assign returns a dict of updates", event)
        elif kind == EMIT:
            out.emitted.append(_emitted(result, name, event))
        elif kind == RUN:
            if result is not None:
                raise _refused(
                    "action",
                    name,
                    result,
                    "wrap it in assign(...) to update the context or emit(...) to send an event",
                    event,
                )
        elif kind == TIMER_SET:
            if result.__class__ is not int or result < 0:
                raise _refused("delay", name, result, "a delay is a whole number of ms >= 0", event)
            out.timers.append(TimerSet(extra[0], result, extra[1]))
        elif kind == DONE_EVENT:
            out.queue.append(ChartEvent(extra, result, event.views))
        elif kind == MACHINE_DONE:
            out.output = result
            out.done = True
        else:
            out.timers.append(TimerCancel(extra))
    return context


def _emitted(spec: Any, name: str, event: ChartEvent) -> Emitted:
    if isinstance(spec, Mapping):
        kind, to = spec.get("type"), spec.get("to")
        if (
            isinstance(kind, str)
            and kind
            and (to is None or isinstance(to, str))
            and set(spec) <= {"type", "data", "to"}
        ):
            return Emitted(kind, spec.get("data"), to)
    raise _refused(
        "action", name, spec, "an emit returns {'type': str, 'data'?: ..., 'to'?: str}", event
    )


def macrostep(
    program: Program,
    context: dict[str, Any],
    event: ChartEvent,
    micro: Micro,
    limit: int,
) -> Step:
    """Run ``micro`` for ``event``, then settle eventless transitions and done events."""
    if micro.lean:
        context = _run(micro, context, event, _LEAN)
        value = micro.target.value
        if value.__class__ is not str:
            value = copy_value(value)
        snapshot = {"value": value, "context": context, "status": "active", "output": None}
        return make_step(snapshot, (), (), True, micro.names)
    out = _Outbox()
    context = _run(micro, context, event, out)
    config = micro.target
    names = micro.names
    if not out.done and (config.has_always or out.queue):
        config, context, names, _ = _settle(program, config, context, event, out, names, limit)
    return _finish(config, context, out, names)


def eventless_only(
    program: Program, config: Config, context: dict[str, Any], event: ChartEvent, limit: int
) -> Step | None:
    """For an event no transition handles: SCXML and xstate still check eventless
    transitions, whose guards see that event. None if none is enabled."""
    out = _Outbox()
    config, context, names, steps = _settle(program, config, context, event, out, (), limit)
    return _finish(config, context, out, names) if steps else None


def _finish(config: Config, context: dict[str, Any], out: _Outbox, names: tuple[str, ...]) -> Step:
    snapshot = {
        "value": config.fresh_value(),
        "context": context,
        "status": "done" if out.done else "active",
        "output": out.output,
    }
    return make_step(snapshot, tuple(out.emitted), tuple(out.timers), True, names)


def _settle(
    program: Program,
    config: Config,
    context: dict[str, Any],
    event: ChartEvent,
    out: _Outbox,
    names: tuple[str, ...],
    limit: int,
) -> tuple[Config, dict[str, Any], tuple[str, ...], int]:
    """Take eventless transitions and queued done events until none is left; returns the
    configuration, context, action names so far and the number of microsteps taken."""
    trigger = event
    check_always = True
    steps = 0
    while not out.done:
        micro = (
            select(program, config, None, context, event)
            if (check_always and config.has_always)
            else None
        )
        eventless = micro is not None
        if micro is None:
            if not out.queue:
                break
            event = out.queue.pop(0)
            check_always = True
            micro = select(program, config, event.type, context, event)
            if micro is None:
                continue
        steps += 1
        if steps > limit:
            raise ReducerFailed(
                f"eventless transitions did not settle after {limit} microsteps (state "
                f"{config.value!r}); an 'always' transition keeps firing: check its guard",
                event_type=trigger.type,
                data=trigger.data,
            )
        new_context = _run(micro, context, event, out)
        names += micro.names
        # xstate v5 stops re-selecting eventless transitions once one changes nothing.
        if eventless and micro.target is config and new_context is context:
            check_always = False
        config, context = micro.target, new_context
    return config, context, names, steps
