"""Lookup tables that make a transition cheap.

Per active configuration (a :class:`Config`, built once and reused) and event type, a
*plan* is cached: either the one :class:`Micro` to run when no candidate has a guard,
or the candidate groups (:class:`Guarded`) whose guards decide at run time, after which
the chosen transition set maps to a cached :class:`Micro`. A ``Micro`` is a microstep
fully laid out: the flat list of ops in SCXML order (exit actions innermost first, then
transition actions, then entry actions outermost first, with timer and completion
requests in place) and the configuration it leads to. Caches grow lazily and are bounded
by the configurations the chart can reach and the event types it listens to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from pipeline.errors import InvalidState
from pipeline.statechart.action import (
    ASSIGN,
    DONE_EVENT,
    MACHINE_DONE,
    RUN,
    TIMER_CANCEL,
    TIMER_SET,
    Call,
    Op,
)
from pipeline.statechart.definition import done_event_type
from pipeline.statechart.node import StateNode, Transition
from pipeline.statechart.request import ChartEvent
from pipeline.statechart.topology import (
    StateValue,
    decode_value,
    encode_value,
    in_final_state,
    initial_states,
    prepare,
)

__all__ = ["Config", "Micro", "Guarded", "IGNORED", "Plan", "Program", "copy_value"]


def copy_value(value: StateValue) -> StateValue:
    """A copy of a nested state value (strings are immutable and returned as they are)."""
    if value.__class__ is str:
        return value
    assert isinstance(value, dict)
    return {key: copy_value(part) for key, part in value.items()}


@dataclass(eq=False, slots=True)
class Config:
    """One set of active states, with its cached plans and microsteps."""

    states: frozenset[int]
    nodes: tuple[StateNode, ...]
    atomics: tuple[StateNode, ...]
    value: StateValue
    has_always: bool
    plans: dict[str | None, Plan] = field(default_factory=dict)
    micros: dict[tuple[int, ...], Micro] = field(default_factory=dict)

    def fresh_value(self) -> StateValue:
        """The state value, copied when nested so callers cannot corrupt the cache."""
        value = self.value
        return value if value.__class__ is str else copy_value(value)


@dataclass(eq=False, slots=True)
class Micro:
    """A compiled microstep: run ``ops`` in order, then the configuration is ``target``.

    ``lean`` marks the common case worth a fast path: only assign and plain actions, and
    nothing eventless to settle afterwards.
    """

    ops: tuple[Op, ...]
    names: tuple[str, ...]
    target: Config
    lean: bool


@dataclass(frozen=True, slots=True)
class Guarded:
    """Candidate groups, one per atomic state (in document order); in each group the
    first transition whose guard passes wins (the state's own before its ancestors')."""

    groups: tuple[tuple[Transition, ...], ...]


class _Ignored:
    __slots__ = ()

    def __repr__(self) -> str:
        return "IGNORED"


IGNORED: Final = _Ignored()
"""The plan of an event no active state listens to."""

Plan = Micro | Guarded | _Ignored


def _json_key(value: Any) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise InvalidState(f"snapshot value {value!r} is not JSON: {exc}") from exc


class Program:
    """A chart compiled for execution: configurations, plans and microsteps."""

    def __init__(self, root: StateNode, nodes: list[StateNode], transitions: list[Transition]):
        prepare(root, transitions)
        self.root = root
        self.nodes = nodes
        self.event_types: frozenset[str] = frozenset(e for n in nodes for e in n.on)
        self.by_text: dict[str, Config] = {}
        self._by_json: dict[bytes, Config] = {}
        self._configs: dict[frozenset[int], Config] = {}
        self.start = self._assemble(frozenset(), frozenset(), [], initial_states(root))

    # -- configurations -----------------------------------------------------------------

    def config(self, states: frozenset[int]) -> Config:
        """The (shared) Config for a set of active state indices."""
        found = self._configs.get(states)
        if found is not None:
            return found
        nodes = tuple(self.nodes[i] for i in sorted(states))
        config = Config(
            states=states,
            nodes=nodes,
            atomics=tuple(n for n in nodes if not n.children),
            value=encode_value(self.root, states),
            has_always=any(n.always for n in nodes),
        )
        self._configs[states] = config
        if isinstance(config.value, str):
            self.by_text[config.value] = config
        else:
            self._by_json[_json_key(config.value)] = config
        return config

    def decode(self, value: Any) -> Config:
        """The Config of a snapshot's state value; raises InvalidState if it does not fit."""
        if isinstance(value, str):
            found = self.by_text.get(value)
        else:
            found = self._by_json.get(_json_key(value))
        return found if found is not None else self.config(decode_value(self.root, value))

    # -- plans ---------------------------------------------------------------------------

    def plan(self, config: Config, event_type: str | None) -> Plan:
        """What to do in ``config`` on ``event_type`` (``None``: eventless), cached."""
        if event_type is not None and event_type not in self.event_types:
            return IGNORED  # not cached: arbitrary unknown types must not grow the cache
        groups: list[tuple[Transition, ...]] = []
        for atomic in config.atomics:
            candidates: list[Transition] = []
            for node in (atomic, *atomic.ancestors):
                own = node.always if event_type is None else node.on.get(event_type, ())
                candidates.extend(own)
            # Candidates after the first unguarded one can never be chosen.
            cut = next((i for i, t in enumerate(candidates) if t.guard is None), None)
            group = tuple(candidates if cut is None else candidates[: cut + 1])
            if group and group not in groups:
                groups.append(group)
        plan: Plan
        if not groups:
            plan = IGNORED
        elif all(group[0].guard is None for group in groups):
            plan = self.micro(config, list(dict.fromkeys(group[0] for group in groups)))
        else:
            plan = Guarded(tuple(groups))
        config.plans[event_type] = plan
        return plan

    def micro(self, config: Config, selected: list[Transition]) -> Micro:
        """The microstep taking the enabled transitions ``selected`` from ``config``."""
        key = tuple(t.index for t in selected)
        found = config.micros.get(key)
        if found is not None:
            return found
        before = config.states
        kept = _without_conflicts(before, selected)
        exits: set[int] = set()
        entries: set[int] = set()
        for transition in kept:
            if transition.targets:
                exits |= before & transition.scope
                entries |= transition.entry
        micro = self._assemble(before, frozenset(exits), kept, frozenset(entries))
        config.micros[key] = micro
        return micro

    # -- microstep layout ----------------------------------------------------------------

    def _assemble(
        self,
        before: frozenset[int],
        exits: frozenset[int],
        kept: list[Transition],
        entries: frozenset[int],
    ) -> Micro:
        after = (before - exits) | entries
        ops: list[Op] = []
        for index in sorted(exits, reverse=True):
            ops.extend(self._leave(self.nodes[index]))
        for transition in kept:
            ops.extend(transition.actions)
        active = set(before - exits)
        completed: set[int] = set()
        finished = False
        for index in sorted(entries):
            node = self.nodes[index]
            active.add(index)
            ops.extend(node.entry)
            ops.extend((TIMER_SET, d.call, d.label, (d.key, d.event_type)) for d in node.delays)
            if node.kind == "final":
                finished = self._complete(node, active, completed, ops) or finished
        if finished:
            # Like SCXML's exitInterpreter and xstate v5: a done machine leaves every state.
            for index in sorted(after, reverse=True):
                ops.extend(self._leave(self.nodes[index]))
        names = tuple(op[2] for op in ops if op[0] <= RUN)
        target = self.config(frozenset(after))
        lean = not target.has_always and all(op[0] in (ASSIGN, RUN) for op in ops)
        return Micro(tuple(ops), names, target, lean)

    @staticmethod
    def _leave(node: StateNode) -> list[Op]:
        return [*node.exit, *((TIMER_CANCEL, None, d.label, d.key) for d in node.delays)]

    def _complete(
        self, final: StateNode, active: set[int], completed: set[int], ops: list[Op]
    ) -> bool:
        """Queue the done events entering ``final`` causes; True if the machine is done."""
        parent = final.parent
        assert parent is not None
        marker = parent if parent.kind == "parallel" else parent.parent
        completion = marker or final
        if parent.kind == "compound" and marker is not None:
            ops.append((DONE_EVENT, final.output, final.id, done_event_type(parent.id)))
        while (
            marker is not None
            and marker.kind == "parallel"
            and marker.index not in completed
            and in_final_state(marker, active)
        ):
            completed.add(marker.index)
            ops.append((DONE_EVENT, None, marker.id, done_event_type(marker.id)))
            completion, marker = marker, marker.parent
        if marker is not None:
            return False
        ops.append((MACHINE_DONE, self._machine_output(completion), self.root.id, None))
        return True

    def _machine_output(self, completion: StateNode) -> Call | None:
        # xstate v5 resolves the root's output with the completing state's done event;
        # without a root output, garrison takes the final state's own output.
        final_output = completion.output if completion.parent is not None else None
        root_output = self.root.output
        if root_output is None:
            return final_output
        event_type = done_event_type(completion.id)

        def machine_output(context: dict[str, Any], event: ChartEvent) -> Any:
            data = None if final_output is None else final_output(context, event)
            return root_output(context, ChartEvent(event_type, data))

        return machine_output


def _without_conflicts(before: frozenset[int], selected: list[Transition]) -> list[Transition]:
    """SCXML's removeConflictingTransitions: of two transitions exiting a common state,
    the one from the descendant source wins, else the earlier in document order."""
    kept: list[Transition] = []
    for first in selected:
        first_exits = before & first.scope if first.targets else frozenset()
        preempted = False
        beaten: list[Transition] = []
        for other in kept:
            other_exits = before & other.scope if other.targets else frozenset()
            if first_exits & other_exits:
                if first.source.is_descendant_of(other.source):
                    beaten.append(other)
                else:
                    preempted = True
                    break
        if not preempted:
            kept = [t for t in kept if t not in beaten]
            kept.append(first)
    return kept
