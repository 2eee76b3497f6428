"""Definition mistakes fail at construction, naming the state and the fix."""

from __future__ import annotations

import re
from typing import Any

import pytest

from pipeline.errors import InvalidDefinition
from pipeline.statechart import Chart, assign


def machine(**states: Any) -> dict[str, Any]:
    return {"id": "m", "initial": next(iter(states)), "states": states}


CASES: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    (
        "unknown target",
        machine(a={"on": {"E": "nope"}}, b={}),
        {},
        "state 'm.a' transition on 'E': target 'nope' not found: state 'm' has no child "
        "'nope' (it has: a, b)",
    ),
    (
        "unknown nested target",
        machine(a={"on": {"E": ".x"}}),
        {},
        "target '.x' not found: state 'm.a' has no child 'x' (it has: no child states)",
    ),
    (
        "unknown id",
        machine(a={"on": {"E": "#ghost"}}),
        {},
        "state 'm.a' transition on 'E': target '#ghost' names no state id",
    ),
    (
        "unknown initial",
        {"id": "m", "initial": "zz", "states": {"a": {}, "b": {}}},
        {},
        "state 'm': initial 'zz' is not a child state; use one of: a, b",
    ),
    (
        "missing initial",
        {"id": "m", "states": {"a": {}}},
        {},
        "state 'm': add 'initial', one of: a",
    ),
    (
        "missing guard",
        machine(a={"on": {"E": {"target": "a", "guard": "isOk"}}}),
        {"guards": {"other": lambda c, e: True}},
        "state 'm.a' transition on 'E': guard 'isOk' has no implementation; pass "
        "guards={'isOk': fn(context, event)} (known: ['other'])",
    ),
    (
        "missing action",
        machine(a={"entry": ["go"]}),
        {},
        "state 'm.a' entry: action 'go' has no implementation; pass actions={'go': ...}",
    ),
    (
        "parallel with initial",
        machine(p={"type": "parallel", "initial": "r", "states": {"r": {}}}),
        {},
        "state 'm.p': a parallel state enters all its regions; remove 'initial'",
    ),
    (
        "atomic with initial",
        machine(a={"initial": "x"}),
        {},
        "state 'm.a': 'initial' needs child states; remove it or add 'states'",
    ),
    (
        "final with children",
        machine(f={"type": "final", "initial": "x", "states": {"x": {}}}),
        {},
        "state 'm.f': a final state cannot have child states",
    ),
    (
        "final with transitions",
        machine(f={"type": "final", "on": {"E": "f"}}),
        {},
        "state 'm.f': a final state cannot have 'on'",
    ),
    (
        "parallel without regions",
        machine(p={"type": "parallel"}),
        {},
        "state 'm.p': a parallel state needs child states",
    ),
    (
        "duplicate ids",
        machine(a={"id": "x"}, b={"id": "x"}),
        {},
        "state 'm.b': id 'x' is already used by another state",
    ),
    (
        "custom id clashing with a path id",
        machine(a={}, b={"id": "m.a"}),
        {},
        "id 'm.a' is already used",
    ),
    (
        "typo in a key",
        machine(a={"entery": "x"}),
        {},
        "state 'm.a': unknown key 'entery'; allowed keys:",
    ),
    (
        "xstate v4 cond",
        machine(a={"on": {"E": {"target": "a", "cond": "ok"}}}),
        {},
        "unknown key 'cond'; xstate v5 renamed 'cond' to 'guard'",
    ),
    (
        "invoke",
        machine(a={"invoke": {"src": "fetch"}}),
        {},
        "state 'm.a': unknown key 'invoke'; invoked actors are not supported",
    ),
    (
        "history",
        machine(a={"type": "history"}),
        {},
        "state 'm.a': type 'history' is not supported; history states are not supported",
    ),
    (
        "root-level plain target",
        {"id": "m", "initial": "a", "on": {"R": "a"}, "states": {"a": {}}},
        {},
        "target 'a' from the machine root is ambiguous; write '.a'",
    ),
    ("wildcard", machine(a={"on": {"*": "a"}}), {}, "wildcard event '*' is not supported"),
    ("empty event", machine(a={"on": {"": "a"}}), {}, "use 'always' for eventless"),
    (
        "conflicting targets",
        machine(a={"on": {"E": {"target": ["b", "a"]}}}, b={}),
        {},
        "targets 'm.b' and 'm.a' cannot be active together",
    ),
    (
        "params to a two-argument guard",
        machine(a={"on": {"E": {"guard": {"type": "g", "params": {"k": 1}}}}}),
        {"guards": {"g": lambda c, e: True}},
        "guard 'g' is given params {'k': 1} but takes only (context, event); add a third",
    ),
    (
        "one-argument action",
        machine(a={"entry": "x"}),
        {"actions": {"x": lambda c: None}},
        "action 'x' takes 1 positional parameter(s); it must accept (context, event)",
    ),
    (
        "output on a plain state",
        machine(a={"output": 1}),
        {},
        "state 'm.a': 'output' belongs on final states or the machine root",
    ),
    (
        "outputs for an unknown state",
        machine(a={}),
        {"outputs": {"m.zz": lambda c, e: 1}},
        "outputs= names 'm.zz', which is not a final state or the machine id",
    ),
    (
        "output twice",
        machine(f={"type": "final", "output": 1}),
        {"outputs": {"m.f": lambda c, e: 2}},
        "state 'm.f': output is given both in the config and in outputs=; keep one",
    ),
    (
        "onDone on an atomic state",
        machine(a={"onDone": "a"}),
        {},
        "state 'm.a': 'onDone' only fires on a nested compound or parallel state",
    ),
    ("final root", {"id": "m", "type": "final"}, {}, "state 'm': the machine root cannot be final"),
    (
        "reenter not a bool",
        machine(a={"on": {"E": {"target": "a", "reenter": "yes"}}}),
        {},
        "'reenter' must be true or false",
    ),
    (
        "context not a dict",
        {"id": "m", "initial": "a", "context": 3, "states": {"a": {}}},
        {},
        "'context' must be a dict or a function of the input",
    ),
    (
        "dotted child key",
        machine(**{"a.b": {}}),
        {},
        "child key 'a.b' must be a non-empty name without '.'",
    ),
    (
        "bad action reference",
        machine(a={"entry": 42}),
        {},
        "state 'm.a' entry: action 42 is not a name",
    ),
    (
        "static assign with params",
        machine(a={"entry": {"type": "s", "params": 1}}),
        {"actions": {"s": assign({"n": 1})}},
        "is static and cannot take params 1",
    ),
]


@pytest.mark.parametrize(
    ("config", "registries", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_definition_errors_name_the_state_and_the_fix(
    config: dict[str, Any], registries: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidDefinition, match=re.escape(message)):
        Chart(config, **registries)


def test_a_valid_chart_lists_its_states_in_document_order() -> None:
    chart = Chart(
        machine(a={"initial": "x", "states": {"x": {}}}, b={"id": "bee"}), name="orders", version=3
    )
    assert chart.state_ids == ("m", "m.a", "m.a.x", "bee")
    assert (chart.name, chart.version) == ("orders", 3)
