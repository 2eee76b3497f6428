"""Eventless (``always``) transitions: fixed point, guards, loop detection."""

from __future__ import annotations

import pytest

from pipeline.errors import ReducerFailed
from pipeline.statechart import Chart, assign
from tests.pipeline.statechart.charts import tracers


def test_always_transitions_chain_on_start_until_none_is_enabled() -> None:
    chart = Chart(
        {
            "id": "m",
            "initial": "a",
            "states": {
                "a": {"always": {"target": "b", "actions": "ab"}},
                "b": {"entry": "enB", "always": [{"target": "c", "guard": "no"}, "d"]},
                "c": {},
                "d": {"entry": "enD"},
            },
        },
        guards={"no": lambda ctx, ev: False},
        actions=tracers("ab", "enB", "enD"),
    )
    step = chart.start()
    assert step.snapshot["value"] == "d"
    assert step.actions_run == ("ab", "enB", "enD")


def test_guarded_targetless_always_runs_to_a_fixed_point() -> None:
    chart = Chart(
        {
            "id": "m",
            "initial": "filling",
            "context": {"n": 0},
            "states": {
                "filling": {
                    "always": [
                        {"target": "full", "guard": "isFull"},
                        {"actions": "inc"},
                    ]
                },
                "full": {},
            },
        },
        guards={"isFull": lambda ctx, ev: ctx["n"] >= 3},
        actions={"inc": assign(lambda ctx, ev: {"n": ctx["n"] + 1})},
    )
    step = chart.start()
    assert step.snapshot["value"] == "full"
    assert step.snapshot["context"] == {"n": 3}
    assert step.actions_run == ("inc", "inc", "inc")


def test_always_is_checked_after_an_event_and_sees_that_event() -> None:
    chart = Chart(
        {
            "id": "m",
            "initial": "idle",
            "states": {
                "idle": {"on": {"score": "judging"}},
                "judging": {"always": [{"target": "high", "guard": "isHigh"}, {"target": "low"}]},
                "high": {},
                "low": {},
            },
        },
        guards={"isHigh": lambda ctx, ev: ev.data > 10},
    )
    start = chart.start().snapshot
    assert chart.transition(start, "score", 11).snapshot["value"] == "high"
    assert chart.transition(start, "score", 3).snapshot["value"] == "low"


def test_an_always_loop_raises_reducer_failed_instead_of_hanging() -> None:
    chart = Chart(
        {
            "id": "m",
            "initial": "idle",
            "states": {
                "idle": {"on": {"go": "ping"}},
                "ping": {"always": "pong"},
                "pong": {"always": "ping"},
            },
        },
        max_microsteps=50,
    )
    with pytest.raises(ReducerFailed, match="did not settle after 50 microsteps") as caught:
        chart.transition(chart.start().snapshot, "go", {"x": 1})
    assert caught.value.event_type == "go"
    assert caught.value.data == {"x": 1}


def test_a_targetless_always_that_changes_nothing_fires_once_like_xstate() -> None:
    chart = Chart(
        {"id": "m", "initial": "a", "states": {"a": {"always": {"actions": "look"}}}},
        actions=tracers("look"),
    )
    assert chart.start().actions_run == ("look",)


def test_a_targetless_always_that_keeps_assigning_is_a_loop() -> None:
    chart = Chart(
        {
            "id": "m",
            "initial": "a",
            "context": {"n": 0},
            "states": {"a": {"always": {"actions": "inc"}}},
        },
        actions={"inc": assign(lambda ctx, ev: {"n": ctx["n"] + 1})},
        max_microsteps=10,
    )
    with pytest.raises(ReducerFailed, match="always"):
        chart.start()


def test_always_on_an_ancestor_applies_in_every_child() -> None:
    chart = Chart(
        {
            "id": "m",
            "initial": "p",
            "context": {"stop": False},
            "states": {
                "p": {
                    "initial": "a",
                    "always": {"target": "stopped", "guard": "stop"},
                    "states": {
                        "a": {"on": {"next": "b"}},
                        "b": {"on": {"halt": {"actions": "halt"}}},
                    },
                },
                "stopped": {},
            },
        },
        guards={"stop": lambda ctx, ev: ctx["stop"]},
        actions={"halt": assign({"stop": True})},
    )
    step = chart.start()
    step = chart.transition(step.snapshot, "next", None)
    assert step.snapshot["value"] == {"p": "b"}
    step = chart.transition(step.snapshot, "halt", None)
    assert step.snapshot["value"] == "stopped"


def test_an_event_no_transition_handles_still_lets_eventless_guards_see_it() -> None:
    chart = Chart(
        {
            "id": "m",
            "initial": "waiting",
            "states": {"waiting": {"always": {"target": "woken", "guard": "isAlarm"}}, "woken": {}},
        },
        guards={"isAlarm": lambda ctx, ev: ev.type == "alarm"},
    )
    snapshot = chart.start().snapshot
    assert snapshot["value"] == "waiting"
    assert not chart.accepts("noise", snapshot)
    assert not chart.transition(snapshot, "noise", None).changed
    assert chart.accepts("alarm", snapshot)
    step = chart.transition(snapshot, "alarm", None)
    assert step.changed
    assert step.snapshot["value"] == "woken"
