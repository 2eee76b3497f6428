"""Actions, guards, params, context, and runtime failures."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pipeline.errors import ReducerFailed
from pipeline.statechart import Chart, ChartEvent, Emitted, assign, emit
from tests.pipeline.statechart.charts import order, ring


def test_assign_copies_the_context_and_leaves_the_given_snapshot_untouched() -> None:
    chart = Chart(
        {
            "id": "m",
            "initial": "a",
            "context": {"n": 0, "tags": ["x"]},
            "states": {"a": {"on": {"inc": {"actions": "inc"}}}},
        },
        actions={"inc": assign(lambda ctx, ev: {"n": ctx["n"] + ev.data})},
    )
    before = chart.start().snapshot
    frozen = copy.deepcopy(before)
    after = chart.transition(before, "inc", 5).snapshot
    assert before == frozen
    assert after["context"] == {"n": 5, "tags": ["x"]}
    assert after["context"] is not before["context"]


def test_each_start_gets_its_own_copy_of_a_static_context() -> None:
    chart = Chart({"id": "m", "initial": "a", "context": {"tags": []}, "states": {"a": {}}})
    first, second = chart.start().snapshot, chart.start().snapshot
    first["context"]["tags"].append("mutated by a caller")
    assert second["context"] == {"tags": []}


def test_context_function_receives_the_input_and_entry_sees_the_start_event() -> None:
    seen: list[ChartEvent] = []

    def look(ctx: dict[str, Any], ev: ChartEvent) -> None:
        seen.append(ev)

    chart = Chart(
        {
            "id": "m",
            "initial": "a",
            "context": lambda given: {"owner": given["owner"]},
            "states": {"a": {"entry": "look"}},
        },
        actions={"look": look},
    )
    step = chart.start({"owner": "ann"}, event=("order.created", {"id": 7}))
    assert step.snapshot["context"] == {"owner": "ann"}
    assert seen == [ChartEvent("order.created", {"id": 7})]
    chart.start({"owner": "bob"})
    assert seen[-1] == ChartEvent("xstate.init", {"owner": "bob"})


def test_emit_returns_events_in_order_with_optional_target() -> None:
    chart = Chart(
        {
            "id": "m",
            "initial": "a",
            "states": {
                "a": {
                    "on": {"go": {"target": "b", "actions": ["first", emit({"type": "static"})]}}
                },
                "b": {"entry": "second"},
            },
        },
        actions={
            "first": emit(lambda ctx, ev: {"type": "one", "data": ev.data}),
            "second": emit(lambda ctx, ev: {"type": "two", "to": "billing"}),
        },
    )
    step = chart.transition(chart.start().snapshot, "go", {"k": 1})
    assert step.emitted == (
        Emitted("one", {"k": 1}),
        Emitted("static"),
        Emitted("two", None, "billing"),
    )
    assert step.actions_run == ("first", "emit", "second")


def test_guard_and_action_params_are_passed_as_third_argument() -> None:
    chart = Chart(
        {
            "id": "m",
            "initial": "a",
            "context": {"n": 0},
            "states": {
                "a": {
                    "on": {
                        "add": {
                            "guard": {"type": "below", "params": {"limit": 10}},
                            "actions": {"type": "addBy", "params": {"by": 4}},
                        }
                    }
                }
            },
        },
        guards={"below": lambda ctx, ev, params: ctx["n"] < params["limit"]},
        actions={"addBy": assign(lambda ctx, ev, params: {"n": ctx["n"] + params["by"]})},
    )
    step = chart.start()
    values = []
    for _ in range(4):
        step = chart.transition(step.snapshot, "add", None)
        values.append((step.snapshot["context"]["n"], step.changed))
    assert values == [(4, True), (8, True), (12, True), (12, False)]


def test_order_sample_guards_with_params_and_fallback() -> None:
    chart = order()
    step = chart.transition(chart.start().snapshot, "checkout", None)
    assert step.snapshot["value"] == "cart"  # hasItems fails: the fallback complains
    assert step.emitted == (Emitted("cart.empty"),)
    step = chart.transition(step.snapshot, "add", {"price": 30})
    step = chart.transition(step.snapshot, "checkout", None)
    assert not chart.accepts("paid", step.snapshot, {"amount": 29})
    assert chart.accepts("paid", step.snapshot, {"amount": 30})
    short = chart.transition(step.snapshot, "paid", {"amount": 29})
    assert not short.changed
    paid = chart.transition(step.snapshot, "paid", {"amount": 30})
    assert paid.snapshot["status"] == "done"
    assert paid.snapshot["output"] == {"total": 30}


def test_accepts_and_event_types() -> None:
    chart = ring()
    snapshot = chart.start().snapshot
    assert chart.event_types == {"next", "back"}
    assert chart.accepts("next", snapshot)
    assert not chart.accepts("unknown", snapshot)
    guarded = Chart(
        {
            "id": "m",
            "initial": "a",
            "context": {"open": False},
            "states": {"a": {"on": {"go": {"target": "b", "guard": "isOpen"}}}, "b": {}},
        },
        guards={"isOpen": lambda ctx, ev: ctx["open"]},
    )
    closed = guarded.start().snapshot
    assert not guarded.accepts("go", closed)
    assert guarded.accepts("go", {**closed, "context": {"open": True}})


def test_unhandled_event_is_ignored_and_reported_unchanged() -> None:
    chart = ring()
    snapshot = chart.start().snapshot
    step = chart.transition(snapshot, "nobody-listens", {"x": 1})
    assert not step.changed
    assert step.snapshot == snapshot
    assert (step.emitted, step.timers, step.actions_run) == ((), (), ())


def boom(ctx: dict[str, Any], ev: ChartEvent) -> Any:
    raise ValueError("kaput")


@pytest.mark.parametrize(
    ("config_on", "registries", "message"),
    [
        (
            {"go": {"actions": "explode"}},
            {"actions": {"explode": boom}},
            "action 'explode' raised ValueError: kaput",
        ),
        (
            {"go": {"actions": "explode"}},
            {"actions": {"explode": assign(boom)}},
            "action 'explode' raised ValueError: kaput",
        ),
        (
            {"go": {"target": "b", "guard": "check"}},
            {"guards": {"check": boom}},
            "guard 'check' raised ValueError: kaput",
        ),
        (
            {"go": {"actions": "returns"}},
            {"actions": {"returns": lambda c, e: {"n": 1}}},
            "wrap it in assign",
        ),
        (
            {"go": {"actions": "bad"}},
            {"actions": {"bad": assign(lambda c, e: 3)}},  # type: ignore[arg-type, return-value]
            "an assign returns a dict of updates",
        ),
        (
            {"go": {"actions": "bad"}},
            {"actions": {"bad": emit(lambda c, e: {"data": 1})}},
            "an emit returns",
        ),
    ],
)
def test_user_code_failures_become_reducer_failed(
    config_on: dict[str, Any], registries: dict[str, Any], message: str
) -> None:
    chart = Chart(
        {"id": "m", "initial": "a", "states": {"a": {"on": config_on}, "b": {}}}, **registries
    )
    with pytest.raises(ReducerFailed, match=message) as caught:
        chart.transition(chart.start().snapshot, "go", {"p": 1})
    assert caught.value.event_type == "go"
    assert caught.value.data == {"p": 1}
    assert caught.value.stage == "reducer"


def test_failing_context_factory_is_reducer_failed() -> None:
    chart = Chart(
        {"id": "m", "initial": "a", "context": lambda given: given["missing"], "states": {"a": {}}}
    )
    with pytest.raises(ReducerFailed, match="context of 'm' raised TypeError"):
        chart.start()


def test_inline_functions_work_as_actions_and_guards() -> None:
    def allow(ctx: dict[str, Any], ev: ChartEvent) -> bool:
        return True

    chart = Chart(
        {
            "id": "m",
            "initial": "a",
            "context": {"n": 0},
            "states": {
                "a": {
                    "on": {
                        "go": {
                            "target": "b",
                            "guard": allow,
                            "actions": assign(lambda c, e: {"n": 9}),
                        }
                    }
                },
                "b": {},
            },
        }
    )
    step = chart.transition(chart.start().snapshot, "go", None)
    assert step.snapshot["value"] == "b"
    assert step.snapshot["context"] == {"n": 9}
