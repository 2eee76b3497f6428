"""Nested and parallel states: selection, priority, conflicts and action order."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.statechart import Chart, Step
from tests.pipeline.statechart.charts import nested, parallel, tracers


def run(chart: Chart, *events: str) -> Step:
    step = chart.start()
    for event in events:
        step = chart.transition(step.snapshot, event, None)
    return step


def test_start_enters_nested_initial_states_outermost_first() -> None:
    step = nested().start()
    assert step.snapshot["value"] == {"a": {"a1": "x"}}
    assert step.actions_run == ("enA", "enA1", "enX")


def test_sibling_transition_deep_inside_exits_and_enters_only_the_leaves() -> None:
    step = run(nested(), "NEXT")
    assert step.snapshot["value"] == {"a": {"a1": "y"}}
    assert step.actions_run == ("exX", "enY")


def test_exit_innermost_first_then_transition_actions_then_entry_outermost_first() -> None:
    step = run(nested(), "OUT")
    assert step.snapshot["value"] == {"b": "b1"}
    assert step.actions_run == ("exX", "exA1", "exA", "t", "enB", "enB1")


def test_descendant_transition_wins_over_ancestor_on_the_same_event() -> None:
    # x handles OUT itself (-> b1, action t); from y only the ancestor a handles it.
    from_x = run(nested(), "OUT")
    from_y = run(nested(), "NEXT", "OUT")
    assert from_x.snapshot["value"] == {"b": "b1"}
    assert "tParent" not in from_x.actions_run
    assert from_y.snapshot["value"] == {"b": "b2"}
    assert from_y.actions_run == ("exY", "exA1", "exA", "tParent", "enB", "enB2")


def guarded_chart() -> Chart:
    return Chart(
        {
            "id": "g",
            "initial": "outer",
            "states": {
                "outer": {
                    "initial": "inner",
                    "on": {"E": {"target": "parent_took_it"}},
                    "states": {
                        "inner": {
                            "on": {
                                "E": [
                                    {"target": "first", "guard": "isFirst"},
                                    {"target": "second", "guard": "isSecond"},
                                ],
                            }
                        },
                        "first": {},
                        "second": {},
                    },
                },
                "parent_took_it": {},
            },
        },
        guards={
            "isFirst": lambda ctx, ev: ev.data == 1,
            "isSecond": lambda ctx, ev: ev.data in (1, 2),
        },
    )


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (1, {"outer": "first"}),  # both guards pass: the first in document order wins
        (2, {"outer": "second"}),
        (3, "parent_took_it"),  # no candidate of the child passes: the ancestor's is next
    ],
)
def test_guarded_candidates_in_document_order_then_ancestors(data: int, value: Any) -> None:
    chart = guarded_chart()
    step = chart.transition(chart.start().snapshot, "E", data)
    assert step.snapshot["value"] == value


def test_parallel_regions_each_take_a_transition_in_document_order() -> None:
    chart = parallel()
    start = chart.start()
    assert start.snapshot["value"] == {"p": {"r1": "a", "r2": "c"}}
    assert start.actions_run == ("enP", "enR1", "enA", "enR2", "enC")
    step = chart.transition(start.snapshot, "E", None)
    assert step.snapshot["value"] == {"p": {"r1": "b", "r2": "d"}}
    # exits in reverse document order, actions region by region, entries in order
    assert step.actions_run == ("exC", "exA", "t1", "t2", "enB", "enD")


def test_conflict_the_earlier_region_leaving_the_parallel_state_preempts_the_later() -> None:
    step = run(parallel(), "F")  # r1: a -> q (leaves p); r2: c -> d; they conflict
    assert step.snapshot["value"] == "q"
    assert step.actions_run == ("exC", "exR2", "exA", "exR1", "exP", "t1", "enQ")


def test_conflict_a_later_region_leaving_the_parallel_state_is_preempted() -> None:
    chart = parallel()
    step = chart.transition(chart.start().snapshot, "K", None)  # only r2 handles K
    assert step.snapshot["value"] == "q"
    assert step.actions_run == ("exC", "exR2", "exA", "exR1", "exP", "t2", "enQ")


def test_region_transition_beats_the_parallel_states_own_transition() -> None:
    # r1.a handles G itself; r2.c falls back on p's G, which would exit r1.a: preempted.
    step = run(parallel(), "G")
    assert step.snapshot["value"] == {"p": {"r1": "b", "r2": "c"}}
    assert step.actions_run == ("exA", "t1", "enB")


def test_descendant_source_later_in_document_order_removes_the_ancestor_transition() -> None:
    # r1.a falls back on p's J first; r2.c's own J comes later but its source lies in p.
    step = run(parallel(), "J")
    assert step.snapshot["value"] == {"p": {"r1": "a", "r2": "d"}}
    assert step.actions_run == ("exC", "t2", "enD")


def test_transition_of_the_parallel_state_itself_exits_every_region() -> None:
    step = run(parallel(), "H")
    assert step.snapshot["value"] == "q"
    assert step.actions_run == ("exC", "exR2", "exA", "exR1", "exP", "tP", "enQ")
    back = run(parallel(), "H", "BACK")
    assert back.snapshot["value"] == {"p": {"r1": "a", "r2": "c"}}
    assert back.actions_run == ("exQ", "enP", "enR1", "enA", "enR2", "enC")


def reentry_chart() -> Chart:
    names = ("enP", "exP", "enC1", "exC1", "enC2", "exC2", "t")
    return Chart(
        {
            "id": "r",
            "initial": "p",
            "states": {
                "p": {
                    "entry": "enP",
                    "exit": "exP",
                    "initial": "c1",
                    "on": {
                        "SELF": {"target": "p", "actions": "t"},
                        "RESTART": {"target": "p", "reenter": True, "actions": "t"},
                        "DOWN": {"target": ".c2", "actions": "t"},
                        "DOWN_REENTER": {"target": ".c2", "reenter": True, "actions": "t"},
                        "ONLY_ACTIONS": {"actions": "t"},
                    },
                    "states": {
                        "c1": {
                            "entry": "enC1",
                            "exit": "exC1",
                            "on": {"LEAF": {"target": "c1", "reenter": True}, "LEAF_SELF": "c1"},
                        },
                        "c2": {"entry": "enC2", "exit": "exC2"},
                    },
                },
            },
        },
        actions=tracers(*names),
    )


@pytest.mark.parametrize(
    ("event", "value", "trace"),
    [
        # xstate v5: without reenter, a transition within its source does not leave it
        ("DOWN", {"p": "c2"}, ("exC1", "t", "enC2")),
        ("DOWN_REENTER", {"p": "c2"}, ("exC1", "exP", "t", "enP", "enC2")),
        # targeting the source itself: only its descendants restart, unless reenter
        ("SELF", {"p": "c1"}, ("exC1", "t", "enC1")),
        ("RESTART", {"p": "c1"}, ("exC1", "exP", "t", "enP", "enC1")),
        ("LEAF", {"p": "c1"}, ("exC1", "enC1")),
        ("LEAF_SELF", {"p": "c1"}, ()),
        # targetless: actions only, nothing exited or entered
        ("ONLY_ACTIONS", {"p": "c1"}, ("t",)),
    ],
)
def test_self_internal_and_reentering_transitions(
    event: str, value: Any, trace: tuple[str, ...]
) -> None:
    chart = reentry_chart()
    step = chart.transition(chart.start().snapshot, event, None)
    assert step.changed
    assert step.snapshot["value"] == value
    assert step.actions_run == trace


def test_state_value_shapes_for_atomic_regions_and_nested_parallel() -> None:
    chart = Chart(
        {
            "id": "v",
            "initial": "top",
            "states": {
                "top": {
                    "initial": "par",
                    "states": {
                        "par": {
                            "type": "parallel",
                            "states": {"flat": {}, "deep": {"initial": "k", "states": {"k": {}}}},
                        }
                    },
                }
            },
        }
    )
    step = chart.start()
    assert step.snapshot["value"] == {"top": {"par": {"flat": {}, "deep": "k"}}}
    assert chart.active_state_ids(step.snapshot) == {
        "v",
        "v.top",
        "v.top.par",
        "v.top.par.flat",
        "v.top.par.deep",
        "v.top.par.deep.k",
    }


def test_targeting_a_region_from_outside_enters_the_other_regions_by_default() -> None:
    chart = Chart(
        {
            "id": "m",
            "initial": "idle",
            "states": {
                "idle": {"on": {"GO": "#m.p.r2.y"}},
                "p": {
                    "type": "parallel",
                    "states": {
                        "r1": {"initial": "a", "states": {"a": {}, "b": {}}},
                        "r2": {"initial": "x", "states": {"x": {}, "y": {}}},
                    },
                },
            },
        }
    )
    step = chart.transition(chart.start().snapshot, "GO", None)
    assert step.snapshot["value"] == {"p": {"r1": "a", "r2": "y"}}


def test_multiple_targets_in_different_regions() -> None:
    chart = Chart(
        {
            "id": "m",
            "initial": "idle",
            "states": {
                "idle": {"on": {"GO": {"target": ["#m.p.r1.b", "#m.p.r2.y"]}}},
                "p": {
                    "type": "parallel",
                    "states": {
                        "r1": {"initial": "a", "states": {"a": {}, "b": {}}},
                        "r2": {"initial": "x", "states": {"x": {}, "y": {}}},
                    },
                },
            },
        }
    )
    step = chart.transition(chart.start().snapshot, "GO", None)
    assert step.snapshot["value"] == {"p": {"r1": "b", "r2": "y"}}
