"""Chart machines: a statechart and its contract, run by the pipeline like any machine.

:class:`ChartMachine` implements :class:`~pipeline.machine.Behaviour` over a
:class:`~pipeline.statechart.Chart`. The stored state is the chart's snapshot
(``{"value", "context", "status", "output"}``); each event is checked against the
version's :class:`~pipeline.contract.Contract`, given to the chart, and what the chart
asked for becomes garrison effects:

- ``Emitted(type, data, to)`` becomes :class:`~pipeline.effect.Emit`, routed by ``to``:
  ``None`` sends it back to the emitting instance (through ``<app>.events``);
  ``"machine:<name>"`` to the instance of the same id of machine ``<name>``;
  ``"machine:<name>/<instance>"`` to that instance; anything else is a Kafka topic
  name, a service's command topic (``Emit(topic=...)``), which the machine must declare
  in ``topics=`` (a send to a topic that does not exist would stall the worker, so an
  undeclared one is refused here instead). The service replies to the same tenant,
  machine and instance, so the reply comes back here.
- ``TimerSet(key, delay_ms, event_type)`` becomes ``SetTimer(key, event_type,
  after=delay)`` and ``TimerCancel(key)`` ``CancelTimer(key)``: the firing arrives with
  the ``xstate.after...`` type the chart waits for.

Refusals, all dead-lettered with the reason: the first event of an instance must be
the contract's ``init`` (:class:`UnknownEventType`); a type outside the contract is
:class:`UnknownEventType`; a declared type that no transition takes in the current
state, or any event after the machine is done, is :class:`TransitionNotAllowed`.

Example::

    machine = ChartMachine(chart, Contract(init="order.place", accepts={...}), version=1)
    registry = Registry([machine])
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

import orjson

from pipeline.address import check_id
from pipeline.behaviour import Migration, migration_registrar
from pipeline.contract import Contract
from pipeline.effect import CancelTimer, Effect, Emit, SetTimer
from pipeline.envelope import Event
from pipeline.errors import (
    GarrisonError,
    InvalidDefinition,
    ReducerFailed,
    TransitionNotAllowed,
    UnknownEventType,
)
from pipeline.query import Queries, Queryable
from pipeline.statechart import Chart, ChartEvent, Emitted, Step, TimerCancel, TimerSet
from pipeline.view import Siblings, ViewSpec, check_views, resolve

__all__ = ["ChartMachine", "TransitionNotAllowed", "MACHINE_TARGET", "service_topics"]

MACHINE_TARGET = "machine:"
"""Prefix of an emit target naming a machine (``machine:<name>[/<instance>]``)."""

_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_INTERNAL = "xstate."


def _describe(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


class ChartMachine(Queryable):
    """A statechart with a contract, as a garrison machine.

    ``name`` defaults to the chart's name, ``version`` to the chart's version (or 1);
    each version of a machine is its own ``ChartMachine``, with its own chart and
    contract, registered side by side. The contract and the chart must agree: every
    event the chart listens to is declared, and every declared event but ``init`` has
    a transition; otherwise :class:`InvalidDefinition` is raised here. ``topics`` are
    the service topics the chart may send commands to. ``views`` maps event types to
    what their guards and actions read of sibling instances (``event.views``,
    ``pipeline.view``); ``publish_computed`` adds the computed values to each published
    change (``pipeline.query``).
    """

    def __init__(
        self,
        chart: Chart,
        contract: Contract,
        *,
        name: str | None = None,
        version: int | None = None,
        ttl: timedelta | None = None,
        topics: Iterable[str] = (),
        views: Mapping[str, Iterable[ViewSpec]] | None = None,
        publish_computed: bool = False,
    ) -> None:
        if not isinstance(chart, Chart):
            raise InvalidDefinition(f"ChartMachine needs a Chart, got {type(chart).__name__}")
        if not isinstance(contract, Contract):
            raise InvalidDefinition(f"ChartMachine needs a Contract, got {type(contract).__name__}")
        self.name = name or chart.name
        try:
            check_id("machine", self.name)
        except GarrisonError as exc:
            raise InvalidDefinition(str(exc)) from None
        chosen = version if version is not None else chart.version
        if chosen is None:
            chosen = 1
        if not isinstance(chosen, int) or isinstance(chosen, bool) or chosen < 1:
            raise InvalidDefinition(
                f"machine {self.name!r}: version must be an int >= 1, "
                f"got {chosen!r} (pass version=)"
            )
        self.version: int = chosen
        self.ttl_ms = None if ttl is None else int(ttl.total_seconds() * 1000)
        if self.ttl_ms is not None and self.ttl_ms <= 0:
            raise InvalidDefinition(f"machine {self.name!r}: ttl must be positive")
        self.migrations: dict[int, Migration] = {}
        self.copies_state = False  # step copies the snapshot before the chart sees it
        self.topics = frozenset(topics)
        for topic in self.topics:
            if not isinstance(topic, str) or _TOPIC.fullmatch(topic) is None:
                raise InvalidDefinition(
                    f"machine {self.name!r}: {topic!r} is not a Kafka topic name "
                    "(1 to 249 letters, digits, '.', '_', '-')"
                )
        self.chart = chart
        self.contract = contract
        self._label = f"machine {self.name!r} v{self.version}"
        self._nodes = {node.id: node for node in chart.root.walk()}
        self._check_agreement()
        self.views = {
            t: specs for t, v in (views or {}).items() if (specs := check_views(self._label, t, v))
        }
        unknown = sorted(set(self.views) - set(contract.accepts))
        if unknown:
            raise InvalidDefinition(
                f"{self._label}: views are declared for {', '.join(map(repr, unknown))}, "
                "which the contract does not accept"
            )
        self.queries = Queries(self._label, publish=publish_computed)

    def _check_agreement(self) -> None:
        listened = {t for t in self.chart.event_types if not t.startswith(_INTERNAL)}
        declared = set(self.contract.accepts)
        undeclared = sorted(listened - declared)
        if undeclared:
            raise InvalidDefinition(
                f"{self._label}: the chart handles {', '.join(map(repr, undeclared))} but "
                "the contract does not declare it; add its payload model to accepts="
            )
        unhandled = sorted(declared - listened - {self.contract.init})
        if unhandled:
            raise InvalidDefinition(
                f"{self._label}: the contract accepts {', '.join(map(repr, unhandled))} "
                "but no transition of the chart handles it; remove it or add a transition"
            )
        if self.contract.output is not None and not any(
            node.kind == "final" for node in self._nodes.values()
        ):
            raise InvalidDefinition(
                f"{self._label}: the contract declares an output but the chart has no "
                "final state, so it never completes"
            )

    @property
    def event_types(self) -> frozenset[str]:
        """The event types the contract accepts (timer firings come on top)."""
        return frozenset(self.contract.accepts)

    def migrate(self, from_version: int) -> Callable[[Migration], Migration]:
        """Register ``fn(old_snapshot) -> snapshot`` upgrading instances of
        ``from_version`` to this version on their next event."""
        return migration_registrar(self.migrations, self.version, from_version, self._label)

    # -- the Behaviour protocol ---------------------------------------------------------

    def start(
        self, event: Event, siblings: Siblings | None = None
    ) -> tuple[Any, tuple[Effect, ...]]:
        """Start an instance with the contract's init event: its payload is the chart's
        input (the context factory gets it) and the event entry actions see."""
        init = self.contract.init
        if event.type != init:
            raise UnknownEventType(
                f"instance does not exist; start it with {init!r} ({self._label} got "
                f"{event.type!r})",
                event_type=event.type,
                data=event.data,
            )
        data = self.contract.payload(event.type, event.data, machine=self._label)
        if self.views and (specs := self.views.get(event.type)) is not None:
            seen = resolve(specs, ChartEvent(event.type, data), event.type, siblings)
            return self._effects(self.chart.start(data, (event.type, data, seen)), event.type)
        return self._effects(self.chart.start(data, (event.type, data)), event.type)

    def apply(
        self, state: Any, event: Event, siblings: Siblings | None = None
    ) -> tuple[Any, tuple[Effect, ...]]:
        """Send one event to the chart; refuse it if the chart takes no transition."""
        if isinstance(state, dict) and state.get("status") == "done":
            raise TransitionNotAllowed(
                f"{self._label} instance is done (output {_describe(state.get('output'))})"
                f"; it accepts no more events",
                event_type=event.type,
                data=event.data,
                value=state.get("value"),
            )
        if event.type.startswith(_INTERNAL):
            if event.timer is None:
                raise UnknownEventType(
                    f"{event.type!r} is an interpreter event; only garrison's timers deliver it",
                    event_type=event.type,
                    data=event.data,
                )
            data = None
        else:
            data = self.contract.payload(event.type, event.data, machine=self._label)
        if self.views and (specs := self.views.get(event.type)) is not None:
            seen = resolve(specs, ChartEvent(event.type, data), event.type, siblings)
            step = self.chart.transition(state, event.type, data, seen)
        else:
            step = self.chart.transition(state, event.type, data)
        if not step.changed:
            raise self._not_allowed(state, event.type, data)
        return self._effects(step, event.type)

    # -- internals ----------------------------------------------------------------------

    def _not_allowed(
        self, state: dict[str, Any], event_type: str, data: Any
    ) -> TransitionNotAllowed:
        value = state.get("value")
        where = f"{self._label} in state {_describe(value)}"
        enabled = sorted(
            {
                t
                for sid in self.chart.active_state_ids(state)
                for t in self._nodes[sid].on
                if not t.startswith(_INTERNAL)
            }
        )
        if event_type == self.contract.init and event_type not in enabled:
            reason = f"{where}: the instance exists already; {event_type!r} only starts one"
        elif event_type in enabled:
            reason = f"{where}: no guard of {event_type!r} allows it"
        elif event_type.startswith(_INTERNAL):
            reason = f"{where}: timer {event_type!r} is no longer awaited"
        else:
            reason = (
                f"{where}: {event_type!r} is not enabled; enabled now: "
                f"{', '.join(enabled) or 'none'}"
            )
        return TransitionNotAllowed(reason, event_type=event_type, data=data, value=value)

    def _effects(self, step: Step, event_type: str) -> tuple[Any, tuple[Effect, ...]]:
        effects: list[Effect] = [self._emit(e, event_type) for e in step.emitted]
        for request in step.timers:
            try:
                if isinstance(request, TimerSet):
                    effects.append(
                        SetTimer(
                            request.key,
                            request.event_type,
                            after=timedelta(milliseconds=request.delay_ms),
                        )
                    )
                elif isinstance(request, TimerCancel):
                    effects.append(CancelTimer(request.key))
            except GarrisonError as exc:
                raise ReducerFailed(
                    f"{self._label}: timer {request.key!r}: {exc}", event_type=event_type
                ) from None
        snapshot = step.snapshot
        if snapshot.get("status") == "done":
            output = self.contract.completed(snapshot.get("output"), event_type=event_type)
            if output is not snapshot.get("output"):
                snapshot = {**snapshot, "output": output}
        return snapshot, tuple(effects)

    def _emit(self, emitted: Emitted, event_type: str) -> Emit:
        data = self.contract.emitted(emitted.type, emitted.data, machine=self._label)
        to = emitted.to
        try:
            if to is None:
                return Emit(emitted.type, data)
            if to.startswith(MACHINE_TARGET):
                machine, _, instance = to[len(MACHINE_TARGET) :].partition("/")
                return Emit(emitted.type, data, machine=machine, instance=instance or None)
            if to not in self.topics:
                declared = ", ".join(sorted(self.topics)) or "none"
                raise InvalidDefinition(
                    f"target {to!r} is neither '{MACHINE_TARGET}<name>[/<instance>]' nor a "
                    f"topic declared in topics= (declared: {declared})"
                )
            return Emit(emitted.type, data, topic=to)
        except GarrisonError as exc:
            raise ReducerFailed(
                f"{self._label} emitted {emitted.type!r}: {exc}",
                event_type=event_type,
                data=emitted.data,
            ) from None


def service_topics(behaviours: Iterable[object]) -> frozenset[str]:
    """Every service topic the given machines declare (``topics=`` of chart machines),
    e.g. for a worker to create them before it runs::

        service_topics(m for name in registry.machines
                       for m in registry.versions(name).values())
    """
    found: set[str] = set()
    for behaviour in behaviours:
        found |= getattr(behaviour, "topics", frozenset())
    return frozenset(found)
