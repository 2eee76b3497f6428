"""Final states, done events and the machine's output."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.errors import ReducerFailed
from pipeline.statechart import Chart, ChartEvent, assign, done_event_type
from tests.pipeline.statechart.charts import tracers


def test_reaching_a_top_level_final_state_makes_the_machine_done_with_output() -> None:
    chart = Chart(
        {
            "id": "m",
            "initial": "a",
            "states": {
                "a": {"on": {"finish": "end"}},
                "end": {"type": "final", "output": {"ok": True}},
            },
        }
    )
    step = chart.transition(chart.start().snapshot, "finish", None)
    assert step.snapshot == {
        "value": "end",
        "context": {},
        "status": "done",
        "output": {"ok": True},
    }
    later = chart.transition(step.snapshot, "finish", None)
    assert not later.changed
    assert later.snapshot == step.snapshot
    assert not chart.accepts("finish", step.snapshot)


def test_output_function_sees_context_and_the_event_that_finished() -> None:
    def output(ctx: dict[str, Any], ev: ChartEvent) -> Any:
        return {"total": ctx["total"], "via": ev.type}

    chart = Chart(
        {
            "id": "m",
            "initial": "a",
            "context": {"total": 7},
            "states": {"a": {"on": {"pay": "paid"}}, "paid": {"type": "final", "output": output}},
        }
    )
    step = chart.transition(chart.start().snapshot, "pay", None)
    assert step.snapshot["output"] == {"total": 7, "via": "pay"}


def test_compound_final_child_raises_done_state_with_the_output_as_data() -> None:
    seen: list[ChartEvent] = []

    def record(ctx: dict[str, Any], ev: ChartEvent) -> None:
        seen.append(ev)

    chart = Chart(
        {
            "id": "m",
            "initial": "form",
            "states": {
                "form": {
                    "initial": "editing",
                    "onDone": {"target": "review", "actions": "record"},
                    "states": {
                        "editing": {"on": {"submit": "submitted"}},
                        "submitted": {"type": "final"},
                    },
                },
                "review": {},
            },
        },
        actions={"record": record},
        outputs={"m.form.submitted": lambda ctx, ev: {"fields": 3}},
    )
    step = chart.transition(chart.start().snapshot, "submit", None)
    assert step.snapshot["value"] == "review"
    assert step.snapshot["status"] == "active"
    assert seen == [ChartEvent(done_event_type("m.form"), {"fields": 3})]
    assert done_event_type("m.form") == "xstate.done.state.m.form"
    assert done_event_type("m.form") in chart.event_types


def test_done_state_can_be_handled_with_on_and_the_event_type() -> None:
    chart = Chart(
        {
            "id": "m",
            "initial": "job",
            "states": {
                "job": {
                    "initial": "run",
                    "states": {"run": {"on": {"ok": "fin"}}, "fin": {"type": "final"}},
                    "on": {"xstate.done.state.m.job": "after_job"},
                },
                "after_job": {},
            },
        }
    )
    step = chart.transition(chart.start().snapshot, "ok", None)
    assert step.snapshot["value"] == "after_job"


def test_parallel_state_is_done_when_every_region_is_final() -> None:
    chart = Chart(
        {
            "id": "m",
            "initial": "both",
            "states": {
                "both": {
                    "type": "parallel",
                    "onDone": "next",
                    "states": {
                        "left": {
                            "initial": "l",
                            "states": {"l": {"on": {"L": "lf"}}, "lf": {"type": "final"}},
                        },
                        "right": {
                            "initial": "r",
                            "states": {"r": {"on": {"R": "rf"}}, "rf": {"type": "final"}},
                        },
                    },
                },
                "next": {},
            },
        }
    )
    step = chart.transition(chart.start().snapshot, "L", None)
    assert step.snapshot["value"] == {"both": {"left": "lf", "right": "r"}}
    step = chart.transition(step.snapshot, "R", None)
    assert step.snapshot["value"] == "next"


def test_root_parallel_finishing_ends_the_machine_with_the_root_output() -> None:
    chart = Chart(
        {
            "id": "m",
            "type": "parallel",
            "context": {"n": 2},
            "output": lambda ctx, ev: {"n": ctx["n"], "event": ev.type},
            "states": {
                "a": {"initial": "x", "states": {"x": {"on": {"go": "y"}}, "y": {"type": "final"}}},
                "b": {"initial": "z", "states": {"z": {"type": "final"}}},
            },
        }
    )
    step = chart.transition(chart.start().snapshot, "go", None)
    assert step.snapshot["status"] == "done"
    assert step.snapshot["output"] == {"n": 2, "event": "xstate.done.state.m"}


def test_root_output_receives_the_final_states_output_as_done_event_data() -> None:
    chart = Chart(
        {
            "id": "m",
            "initial": "a",
            "states": {"a": {"on": {"end": "z"}}, "z": {"type": "final"}},
        },
        outputs={
            "m.z": lambda ctx, ev: 41,
            "m": lambda ctx, ev: {"answer": ev.data + 1, "type": ev.type},
        },
    )
    step = chart.transition(chart.start().snapshot, "end", None)
    assert step.snapshot["output"] == {"answer": 42, "type": "xstate.done.state.m.z"}


def test_finishing_exits_every_state_after_entering_the_final_one() -> None:
    chart = Chart(
        {
            "id": "m",
            "initial": "p",
            "context": {"n": 0},
            "exit": "exM",
            "states": {
                "p": {
                    "initial": "a",
                    "exit": "exP",
                    "states": {"a": {"exit": "exA", "on": {"end": "#m.z"}}},
                },
                "z": {"type": "final", "entry": "enZ", "exit": "exZ"},
            },
        },
        actions={**tracers("exM", "exP", "exA", "enZ", "exZ")},
    )
    step = chart.transition(chart.start().snapshot, "end", None)
    assert step.actions_run == ("exA", "exP", "enZ", "exZ", "exM")


def test_a_done_machine_keeps_its_context_from_final_entry_actions() -> None:
    chart = Chart(
        {
            "id": "m",
            "initial": "a",
            "context": {"n": 0},
            "states": {
                "a": {"on": {"end": "z"}},
                "z": {"type": "final", "entry": "bump", "output": lambda c, e: c["n"]},
            },
        },
        actions={"bump": assign(lambda c, e: {"n": c["n"] + 1})},
    )
    step = chart.transition(chart.start().snapshot, "end", None)
    assert step.snapshot["context"] == {"n": 1}
    assert step.snapshot["output"] == 1


def test_failing_outputs_are_reducer_failed_naming_the_state() -> None:
    def broken(ctx: dict[str, Any], ev: ChartEvent) -> Any:
        return ctx["missing"]

    inner = Chart(
        {
            "id": "m",
            "initial": "job",
            "states": {
                "job": {
                    "initial": "run",
                    "onDone": "next",
                    "states": {
                        "run": {"on": {"ok": "fin"}},
                        "fin": {"type": "final", "output": broken},
                    },
                },
                "next": {},
            },
        },
    )
    with pytest.raises(ReducerFailed, match="output of state 'm.job.fin' raised KeyError"):
        inner.transition(inner.start().snapshot, "ok", None)
    root = Chart(
        {
            "id": "m",
            "initial": "a",
            "output": broken,
            "states": {"a": {"on": {"end": "z"}}, "z": {"type": "final"}},
        },
    )
    with pytest.raises(ReducerFailed, match="output of machine 'm' raised KeyError"):
        root.transition(root.start().snapshot, "end", None)
