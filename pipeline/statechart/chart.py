"""The public statechart: define once, then start and transition pure snapshots.

Example::

    chart = Chart(
        {
            "id": "light",
            "initial": "green",
            "context": {"cycles": 0},
            "states": {
                "green": {"on": {"TIMER": "yellow"}},
                "yellow": {"on": {"TIMER": "red"}},
                "red": {"on": {"TIMER": {"target": "green", "actions": "count"}}},
            },
        },
        actions={"count": assign(lambda ctx, ev: {"cycles": ctx["cycles"] + 1})},
    )
    step = chart.start()
    step = chart.transition(step.snapshot, "TIMER", None)
    assert step.snapshot["value"] == "yellow"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pipeline.errors import InvalidDefinition, InvalidState
from pipeline.statechart.compiler import IGNORED, Config, Guarded, Micro, Program
from pipeline.statechart.definition import parse
from pipeline.statechart.interpreter import choose, eventless_only, failure, macrostep, select
from pipeline.statechart.macrostep import Step
from pipeline.statechart.node import StateNode
from pipeline.statechart.request import ChartEvent
from pipeline.statechart.xstate import load_xstate

__all__ = ["Chart", "INIT_EVENT"]

_new_tuple = tuple.__new__
_NO_VIEWS: Mapping[str, Any] = ChartEvent._field_defaults["views"]

INIT_EVENT = "xstate.init"
"""The event type entry actions see on :meth:`Chart.start` when no event is given."""


class Chart:
    """A statechart, validated and compiled when constructed.

    ``config`` is an xstate v5 machine config (``id``, ``initial``, ``context``,
    ``states``, ``on``, ``always``, ``after``, ``entry``, ``exit``, ``type``, ``output``,
    ``onDone``); Python configs may use functions in place of names. ``guards``,
    ``actions`` and ``delays`` implement the names the config refers to; ``outputs``
    maps final-state ids (or the machine id) to output functions. ``max_microsteps``
    bounds eventless transitions per event, so an ``always`` loop fails instead of
    hanging. Any mistake raises :class:`InvalidDefinition`.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        guards: Mapping[str, Callable[..., Any]] | None = None,
        actions: Mapping[str, Any] | None = None,
        delays: Mapping[str, int | Callable[..., Any]] | None = None,
        outputs: Mapping[str, Callable[..., Any]] | None = None,
        name: str | None = None,
        version: int | str | None = None,
        max_microsteps: int = 1000,
    ) -> None:
        if not isinstance(config, Mapping):
            raise InvalidDefinition(f"a chart config is a dict, got {type(config).__name__}")
        machine_id = config.get("id") or name or "machine"
        if not isinstance(machine_id, str) or "." in machine_id:
            raise InvalidDefinition(f"machine id {machine_id!r} must be a string without '.'")
        context = config.get("context")
        if context is not None and not callable(context) and not isinstance(context, Mapping):
            raise InvalidDefinition(
                f"state {machine_id!r}: 'context' must be a dict or a function of the input"
            )
        if max_microsteps < 1:
            raise InvalidDefinition("max_microsteps must be at least 1")
        root, nodes, transitions = parse(
            config,
            machine_id=machine_id,
            guards=guards or {},
            actions=actions or {},
            delays=delays or {},
            outputs=outputs or {},
        )
        self.name: str = name or machine_id
        """The chart's name (``name=``, else the config's ``id``)."""
        self.version: int | str | None = version if version is not None else config.get("version")
        """The chart's version (``version=``, else the config's ``version``)."""
        self._program = Program(root, nodes, transitions)
        self._context = context
        self._limit = max_microsteps

    @classmethod
    def from_xstate(
        cls,
        source: Mapping[str, Any] | str | bytes,
        *,
        guards: Mapping[str, Callable[..., Any]] | None = None,
        actions: Mapping[str, Any] | None = None,
        delays: Mapping[str, int | Callable[..., Any]] | None = None,
        outputs: Mapping[str, Callable[..., Any]] | None = None,
        name: str | None = None,
        version: int | str | None = None,
    ) -> Chart:
        """Build a chart from an xstate v5 JSON machine config (a dict or JSON text),
        with the named guards, actions, delays and outputs implemented in Python."""
        return cls(
            load_xstate(source),
            guards=guards,
            actions=actions,
            delays=delays,
            outputs=outputs,
            name=name,
            version=version,
        )

    @property
    def root(self) -> StateNode:
        """The compiled root state node, for tools that walk the chart."""
        return self._program.root

    @property
    def event_types(self) -> frozenset[str]:
        """Every event type some transition listens to (incl. after and done events)."""
        return self._program.event_types

    @property
    def state_ids(self) -> tuple[str, ...]:
        """Every state id, in document order."""
        return tuple(node.id for node in self._program.nodes)

    def start(
        self,
        input: Any = None,
        event: tuple[str, Any] | tuple[str, Any, Mapping[str, Any]] | None = None,
    ) -> Step:
        """Enter the initial configuration: entry actions, then eventless transitions.

        The context is the config's ``context`` (copied) or ``context(input)``; entry
        actions see ``event`` (default: ``("xstate.init", input)``; a third item is its
        ``views``).
        """
        chart_event = ChartEvent(INIT_EVENT, input) if event is None else ChartEvent(*event)
        context: Any
        if callable(self._context):
            try:
                context = self._context(input)
            except Exception as exc:
                raise failure("context of", self.name, exc, chart_event) from exc
        else:
            context = _deep_copy(self._context or {})
        if not isinstance(context, dict):
            raise failure(
                "context of",
                self.name,
                TypeError(f"context must be a dict, got {context!r}"),
                chart_event,
            )
        return macrostep(self._program, context, chart_event, self._program.start, self._limit)

    def transition(
        self,
        snapshot: Mapping[str, Any],
        event_type: str,
        data: Any = None,
        views: Mapping[str, Any] | None = None,
    ) -> Step:
        """Apply one event to ``snapshot``; pure: ``snapshot`` is not modified. ``views``
        are what guards and actions see as ``event.views``.

        As in SCXML and xstate, eventless transitions are checked after every event,
        handled or not (their guards see it). When nothing was enabled at all (or the
        machine is done) the result is ``Step(<copy of snapshot>, changed=False)``.
        """
        program = self._program
        config, context, status = self._read(snapshot, event_type, data)
        if status == "done":
            return Step(dict(snapshot), changed=False)
        plan = config.plans.get(event_type)
        if plan is None:
            plan = program.plan(config, event_type)
        # Skips NamedTuple's slow __new__ (so every field is given).
        event = _new_tuple(ChartEvent, (event_type, data, _NO_VIEWS if views is None else views))
        if plan.__class__ is Micro:
            return macrostep(program, context, event, plan, self._limit)
        micro = choose(program, config, plan, context, event) if isinstance(plan, Guarded) else None
        if micro is not None:
            return macrostep(program, context, event, micro, self._limit)
        if config.has_always:
            step = eventless_only(program, config, context, event, self._limit)
            if step is not None:
                return step
        return Step(dict(snapshot), changed=False)

    def accepts(self, event_type: str, snapshot: Mapping[str, Any], data: Any = None) -> bool:
        """Whether ``event_type`` (with ``data``) would take a transition now; guards are
        evaluated, actions are not run."""
        config, context, status = self._read(snapshot, event_type, data)
        if status == "done":
            return False
        plan = config.plans.get(event_type)
        if plan is None:
            plan = self._program.plan(config, event_type)
        event = ChartEvent(event_type, data)
        if isinstance(plan, Guarded):
            if choose(self._program, config, plan, context, event) is not None:
                return True
        elif plan is not IGNORED:
            return True
        # An otherwise ignored event still counts if an eventless guard lets it through.
        return config.has_always and select(self._program, config, None, context, event) is not None

    def active_state_ids(self, snapshot: Mapping[str, Any]) -> frozenset[str]:
        """The ids of every active state (the root included)."""
        config = self._read(snapshot, "", None)[0]
        return frozenset(node.id for node in config.nodes)

    def _read(
        self, snapshot: Mapping[str, Any], event_type: str, data: Any
    ) -> tuple[Config, dict[str, Any], str]:
        try:
            value, context, status = snapshot["value"], snapshot["context"], snapshot["status"]
        except (KeyError, TypeError):
            raise InvalidState(
                "a snapshot is a dict with 'value', 'context', 'status' (and 'output')",
                event_type=event_type,
                data=data,
            ) from None
        config = self._program.by_text.get(value) if value.__class__ is str else None
        if config is None:
            try:
                config = self._program.decode(value)
            except InvalidState as exc:
                raise InvalidState(exc.reason, event_type=event_type, data=data) from None
        if context.__class__ is not dict or status not in ("active", "done"):
            raise InvalidState(
                f"snapshot context must be a dict and status 'active' or 'done'; got "
                f"{type(context).__name__} and {status!r}",
                event_type=event_type,
                data=data,
            )
        return config, context, status


def _deep_copy(value: Any) -> Any:
    # Static contexts are JSON-like; each instance gets its own nested lists and dicts.
    if isinstance(value, Mapping):
        return {key: _deep_copy(part) for key, part in value.items()}
    if isinstance(value, list):
        return [_deep_copy(part) for part in value]
    return value
