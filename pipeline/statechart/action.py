"""Actions and guards: the built-in action kinds, and how a reference becomes a call.

An implementation is called ``fn(context, event)``, or ``fn(context, event, params)``
when it takes a third positional parameter; ``params`` is the ``"params"`` of an
``{"type": name, "params": ...}`` reference (``None`` when the reference is a bare name).
The arity is read once, when the chart is compiled, so the hot path pays nothing.

Three kinds of action:

- ``assign(fn)`` (or ``assign({...})``): ``fn`` returns a dict of updates, merged
  shallowly into a copy of the context;
- ``emit(fn)`` (or ``emit({...})``): ``fn`` returns ``{"type", "data"?, "to"?}``, an
  event for garrison to send out;
- a plain function: run for its own sake (tracing, assertions); it must return ``None``,
  since a pure interpreter has nowhere to put anything else.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.errors import InvalidDefinition
from pipeline.statechart.request import ChartEvent

__all__ = [
    "AssignAction",
    "EmitAction",
    "assign",
    "emit",
    "Call",
    "Op",
    "ASSIGN",
    "EMIT",
    "RUN",
    "TIMER_SET",
    "TIMER_CANCEL",
    "DONE_EVENT",
    "MACHINE_DONE",
    "bind",
    "constant",
    "action_ops",
]

Call = Callable[[dict[str, Any], ChartEvent], Any]
"""A bound implementation: ``(context, event) -> result``."""

# Op kinds; small ints so the interpreter dispatches with one comparison each.
ASSIGN, EMIT, RUN, TIMER_SET, TIMER_CANCEL, DONE_EVENT, MACHINE_DONE = range(7)

Op = tuple[int, Call | None, str, Any]
"""One instruction of a compiled microstep: ``(kind, call, name, extra)``."""


@dataclass(frozen=True, slots=True)
class AssignAction:
    """Built-in action that merges updates into the context; build it with :func:`assign`."""

    updates: Callable[..., Mapping[str, Any] | None] | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class EmitAction:
    """Built-in action that sends an event out; build it with :func:`emit`."""

    event: Callable[..., Mapping[str, Any]] | Mapping[str, Any]


def assign(updates: Callable[..., Mapping[str, Any] | None] | Mapping[str, Any]) -> AssignAction:
    """Merge updates into the context.

    >>> inc = assign(lambda ctx, ev: {"count": ctx["count"] + 1})
    """
    return AssignAction(updates)


def emit(event: Callable[..., Mapping[str, Any]] | Mapping[str, Any]) -> EmitAction:
    """Send an event out of the chart (``{"type", "data"?, "to"?}``).

    >>> notify = emit(lambda ctx, ev: {"type": "order.paid", "data": {"id": ctx["id"]}})
    """
    return EmitAction(event)


def _wants_params(fn: Callable[..., Any], what: str) -> bool:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have no signature: call them plainly
        return False
    positional = 0
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return True
        if parameter.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            positional += 1
    if positional < 2:
        raise InvalidDefinition(
            f"{what} takes {positional} positional parameter(s); "
            "it must accept (context, event) or (context, event, params)"
        )
    return positional >= 3


def bind(fn: Callable[..., Any], params: Any, what: str) -> Call:
    """Turn ``fn`` into a ``(context, event)`` call, passing ``params`` if it takes them."""
    if not callable(fn):
        raise InvalidDefinition(f"{what} is {fn!r}, not a function")
    if _wants_params(fn, what):

        def with_params(context: dict[str, Any], event: ChartEvent) -> Any:
            return fn(context, event, params)

        return with_params
    if params is not None:
        raise InvalidDefinition(
            f"{what} is given params {params!r} but takes only (context, event); "
            "add a third parameter to receive them"
        )
    return fn


def constant(value: Any) -> Call:
    """A call that ignores context and event and returns ``value``."""

    def constant_call(context: dict[str, Any], event: ChartEvent) -> Any:
        return value

    return constant_call


def _one_op(impl: Any, name: str, params: Any, what: str) -> Op:
    if isinstance(impl, AssignAction | EmitAction):
        kind = ASSIGN if isinstance(impl, AssignAction) else EMIT
        body = impl.updates if isinstance(impl, AssignAction) else impl.event
        if isinstance(body, Mapping):
            if params is not None:
                raise InvalidDefinition(f"{what} is static and cannot take params {params!r}")
            return (kind, constant(dict(body)), name, None)
        return (kind, bind(body, params, what), name, None)
    return (RUN, bind(impl, params, what), name, None)


def action_ops(spec: Any, registry: Mapping[str, Any], where: str) -> tuple[Op, ...]:
    """Compile an action reference (or a list of them) into ops.

    ``spec`` is a name, ``{"type": name, "params": ...}``, a function, an
    :func:`assign`/:func:`emit` action, or a list of those; names resolve in
    ``registry``. ``where`` locates the reference for error messages.
    """
    if spec is None:
        return ()
    items = spec if isinstance(spec, list | tuple) else [spec]
    ops: list[Op] = []
    for item in items:
        params: Any = None
        if isinstance(item, Mapping):
            unknown = set(item) - {"type", "params"}
            if "type" not in item or unknown:
                raise InvalidDefinition(
                    f"{where}: action {dict(item)!r} must be {{'type': name, 'params': ...}}"
                )
            item, params = item["type"], item.get("params")
        if isinstance(item, str):
            if item not in registry:
                raise InvalidDefinition(
                    f"{where}: action {item!r} has no implementation; "
                    f"pass actions={{{item!r}: ...}} (known: {sorted(registry) or 'none'})"
                )
            ops.append(_one_op(registry[item], item, params, f"{where}: action {item!r}"))
        elif isinstance(item, AssignAction):
            ops.append(_one_op(item, "assign", params, f"{where}: inline assign"))
        elif isinstance(item, EmitAction):
            ops.append(_one_op(item, "emit", params, f"{where}: inline emit"))
        elif callable(item):
            label = getattr(item, "__name__", "action")
            ops.append(_one_op(item, label, params, f"{where}: action {label!r}"))
        else:
            raise InvalidDefinition(
                f"{where}: action {item!r} is not a name, a {{'type': ...}} object, "
                "a function, assign(...) or emit(...)"
            )
    return tuple(ops)
