"""Differential test: random charts run in garrison and in python-statemachine 3.2
(an SCXML implementation) must pass through the same active configurations.

Guards read a shared ``world``, so both sides see the same answers: event guards read
bits drawn per event, eventless guards bits fixed for the whole run (python-statemachine
also checks eventless transitions *before* taking an event, which only matters if their
guards' inputs changed in between; a pure chart's cannot, they see context and event).
The generator avoids the one place where xstate v5 and SCXML knowingly differ:
a transition targeting its own source is written ``reenter: true`` here (SCXML makes
it external), and a compound source targeting its descendant is ``internal`` there
(xstate v5 does not leave the source). Eventless transitions only move forward to a
later sibling, so no macrostep loops in either implementation.

python-statemachine 3.2.2 picks transitions in the order states were entered, not in
document order as SCXML says (``engines/sync.py``: "TODO: sorted by document order").
The two orders only give different results when transitions of different parallel
regions conflict, so the generator keeps every transition inside the parallel region
it starts in (checked with the SCXML domain); those conflicts are pinned down by exact
expectations in ``test_hierarchy.py`` instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.statechart import Chart

pytest.importorskip("statemachine", minversion="3.2")
from statemachine.io import create_machine_class_from_definition  # noqa: E402

EVENTS = ("E0", "E1", "E2", "E3")
GUARDS = 3


@dataclass
class Spec:
    key: str
    kind: str
    children: list[Spec] = field(default_factory=list)
    initial: int = 0
    parent: Spec | None = None
    on: list[tuple[str, Spec, int | None]] = field(default_factory=list)
    always: list[tuple[Spec, int | None]] = field(default_factory=list)

    def walk(self) -> list[Spec]:
        return [self, *(n for c in self.children for n in c.walk())]

    def contains(self, other: Spec) -> bool:
        node = other.parent
        while node is not None:
            if node is self:
                return True
            node = node.parent
        return False


@st.composite
def trees(draw: st.DrawFn, kinds: tuple[str, ...]) -> list[Spec]:
    counter = itertools.count()

    def node(depth: int, parent: Spec | None) -> Spec:
        options = kinds if depth < 3 else ("atomic",)
        kind = draw(st.sampled_from(options))
        spec = Spec(f"s{next(counter)}", kind, parent=parent)
        if kind != "atomic":
            spec.children = [node(depth + 1, spec) for _ in range(draw(st.integers(2, 3)))]
            spec.initial = draw(st.integers(0, len(spec.children) - 1))
        return spec

    top = [node(1, None) for _ in range(draw(st.integers(2, 4)))]
    states = [n for t in top for n in t.walk()]
    guard = st.none() | st.integers(0, GUARDS - 1)
    for state in states:
        targets = [t for t in states if stays_in_region(state, t)]
        for _ in range(draw(st.integers(0, 3)) if targets else 0):
            state.on.append(
                (draw(st.sampled_from(EVENTS)), draw(st.sampled_from(targets)), draw(guard))
            )
        siblings = state.parent.children if state.parent else top
        later = siblings[siblings.index(state) + 1 :]
        parent_is_parallel = state.parent is not None and state.parent.kind == "parallel"
        if state.kind == "atomic" and later and not parent_is_parallel and draw(st.booleans()):
            state.always.append((draw(st.sampled_from(later)), draw(guard)))
    return top


def internal(source: Spec, target: Spec) -> bool:
    """Written ``internal`` for python-statemachine (xstate v5's default behaviour)."""
    return source.kind == "compound" and source.contains(target)


def stays_in_region(source: Spec, target: Spec) -> bool:
    """Whether the SCXML domain of ``source -> target`` lies within the parallel region
    ``source`` is in (always true outside parallel states)."""
    region: Spec | None = source
    while region is not None and (region.parent is None or region.parent.kind != "parallel"):
        region = region.parent
    if region is None:
        return True
    if internal(source, target):
        domain: Spec | None = source
    else:  # least common compound ancestor; None stands for the machine root
        domain = source.parent
        while domain is not None and (domain.kind != "compound" or not domain.contains(target)):
            domain = domain.parent
    return domain is not None and (domain is region or region.contains(domain))


def reader(world: dict[str, int], slot: str, bit: int) -> Callable[..., bool]:
    def read(*args: Any) -> bool:  # garrison passes (ctx, ev); psm passes nothing
        return bool(world[slot] >> bit & 1)

    return read


def registry(world: dict[str, int]) -> dict[str, Callable[..., bool]]:
    """``g<i>`` for event transitions, ``a<i>`` for eventless ones."""
    return {
        **{f"g{i}": reader(world, "bits", i) for i in range(GUARDS)},
        **{f"a{i}": reader(world, "fixed", i) for i in range(GUARDS)},
    }


def garrison_chart(top: list[Spec], world: dict[str, int]) -> Chart:
    def config(spec: Spec) -> dict[str, Any]:
        out: dict[str, Any] = {"id": spec.key}
        if spec.kind == "parallel":
            out["type"] = "parallel"
        if spec.children:
            out["states"] = {c.key: config(c) for c in spec.children}
            if spec.kind == "compound":
                out["initial"] = spec.children[spec.initial].key
        on: dict[str, list[dict[str, Any]]] = {}
        for event, target, guard in spec.on:
            t: dict[str, Any] = {"target": f"#{target.key}", "reenter": target is spec}
            if guard is not None:
                t["guard"] = f"g{guard}"
            on.setdefault(event, []).append(t)
        if on:
            out["on"] = on
        if spec.always:
            out["always"] = [
                {"target": f"#{t.key}", **({"guard": f"a{g}"} if g is not None else {})}
                for t, g in spec.always
            ]
        return out

    return Chart(
        {"id": "root", "initial": top[0].key, "states": {s.key: config(s) for s in top}},
        guards=registry(world),
    )


def psm_machine(top: list[Spec], world: dict[str, int]) -> Any:
    guards = registry(world)

    def definition(spec: Spec, initial: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"initial": initial}
        if spec.kind == "parallel":
            out["parallel"] = True
        if spec.children:
            out["states"] = {
                c.key: definition(c, i == spec.initial or spec.kind == "parallel")
                for i, c in enumerate(spec.children)
            }
        on: dict[str, list[dict[str, Any]]] = {}
        for event, target, guard in spec.on:
            t: dict[str, Any] = {"target": target.key}
            if internal(spec, target):
                t["internal"] = True
            if guard is not None:
                t["cond"] = guards[f"g{guard}"]
            on.setdefault(event, []).append(t)
        if on:
            out["on"] = on
        if spec.always:
            out["transitions"] = [
                {"target": t.key, **({"cond": guards[f"a{g}"]} if g is not None else {})}
                for t, g in spec.always
            ]
        return out

    cls = create_machine_class_from_definition(
        "Generated",
        states={s.key: definition(s, i == 0) for i, s in enumerate(top)},  # type: ignore[misc]
        validate_disconnected_states=False,
        validate_trap_states=False,
        validate_final_reachability=False,
    )
    return cls()


def compare(top: list[Spec], fixed: int, events: list[tuple[str, int]]) -> None:
    world = {"bits": 0, "fixed": fixed}
    chart = garrison_chart(top, world)
    machine = psm_machine(top, world)
    snapshot = chart.start().snapshot

    def ours() -> set[str]:
        return set(chart.active_state_ids(snapshot)) - {"root"}

    assert ours() == set(machine.configuration_values), "after start"
    for position, (event, bits) in enumerate(events):
        world["bits"] = bits
        snapshot = chart.transition(snapshot, event, None).snapshot
        machine.send(event)
        assert ours() == set(machine.configuration_values), (
            f"after event #{position} {event!r} with guard bits {bits:03b}"
        )


bits = st.integers(0, 2**GUARDS - 1)
event_lists = st.lists(st.tuples(st.sampled_from((*EVENTS, "unknown")), bits), max_size=15)
checks = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@checks
@given(top=trees(("atomic",)), fixed=bits, events=event_lists)
def test_flat_charts_agree_with_python_statemachine(
    top: list[Spec], fixed: int, events: list[tuple[str, int]]
) -> None:
    compare(top, fixed, events)


@checks
@given(top=trees(("atomic", "compound")), fixed=bits, events=event_lists)
def test_nested_charts_agree_with_python_statemachine(
    top: list[Spec], fixed: int, events: list[tuple[str, int]]
) -> None:
    compare(top, fixed, events)


@checks
@given(top=trees(("atomic", "compound", "parallel")), fixed=bits, events=event_lists)
def test_parallel_charts_agree_with_python_statemachine(
    top: list[Spec], fixed: int, events: list[tuple[str, int]]
) -> None:
    compare(top, fixed, events)
