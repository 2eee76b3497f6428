"""Delayed transitions: timer requests out, timer events in."""

from __future__ import annotations

import pytest

from pipeline.errors import InvalidDefinition, ReducerFailed
from pipeline.statechart import Chart, TimerCancel, TimerSet, after_event_type
from tests.pipeline.statechart.charts import order


def light() -> Chart:
    return Chart(
        {
            "id": "light",
            "initial": "green",
            "states": {
                "green": {
                    "after": {"5000": "yellow"},
                    "on": {"skip": "red", "again": {"target": "green", "reenter": True}},
                },
                "yellow": {"after": {1000: {"target": "red"}}},
                "red": {"on": {"go": "green"}},
            },
        }
    )


def test_entering_a_state_with_after_requests_a_deterministic_timer() -> None:
    step = light().start()
    assert step.timers == (
        TimerSet("light.green#after5000", 5000, "xstate.after.5000.light.green"),
    )
    assert after_event_type("5000", "light.green") == "xstate.after.5000.light.green"


def test_the_timer_event_takes_the_transition_and_the_next_timer_is_set() -> None:
    chart = light()
    step = chart.transition(chart.start().snapshot, "xstate.after.5000.light.green", None)
    assert step.snapshot["value"] == "yellow"
    assert step.timers == (
        TimerCancel("light.green#after5000"),
        TimerSet("light.yellow#after1000", 1000, "xstate.after.1000.light.yellow"),
    )


def test_leaving_early_cancels_and_a_late_timer_event_is_ignored() -> None:
    chart = light()
    step = chart.transition(chart.start().snapshot, "skip", None)
    assert step.snapshot["value"] == "red"
    assert step.timers == (TimerCancel("light.green#after5000"),)
    stale = chart.transition(step.snapshot, "xstate.after.5000.light.green", None)
    assert not stale.changed
    assert stale.snapshot == step.snapshot


def test_reentering_cancels_then_sets_the_same_key_again() -> None:
    chart = light()
    step = chart.transition(chart.start().snapshot, "again", None)
    assert step.timers == (
        TimerCancel("light.green#after5000"),
        TimerSet("light.green#after5000", 5000, "xstate.after.5000.light.green"),
    )


def test_named_delays_are_computed_from_the_context_on_entry() -> None:
    chart = order()
    step = chart.start()
    for price in (10, 5):
        step = chart.transition(step.snapshot, "add", {"price": price})
    step = chart.transition(step.snapshot, "checkout", None)
    assert step.snapshot["value"] == "paying"
    assert step.timers == (
        TimerSet("order.paying#afterreminder", 2000, "xstate.after.reminder.order.paying"),
        TimerSet("order.paying#after60000", 60000, "xstate.after.60000.order.paying"),
    )
    # the reminder is targetless: it emits, and leaves the other timer running
    reminded = chart.transition(step.snapshot, "xstate.after.reminder.order.paying", None)
    assert reminded.snapshot["value"] == "paying"
    assert reminded.timers == ()
    assert [(e.type, e.data, e.to) for e in reminded.emitted] == [("reminder", 15, "mailer")]


def test_static_named_delay() -> None:
    chart = Chart(
        {"id": "m", "initial": "a", "states": {"a": {"after": {"soon": "b"}}, "b": {}}},
        delays={"soon": 250},
    )
    assert chart.start().timers == (TimerSet("m.a#aftersoon", 250, "xstate.after.soon.m.a"),)


def test_a_delay_function_returning_garbage_fails_the_step() -> None:
    chart = Chart(
        {"id": "m", "initial": "a", "states": {"a": {"after": {"soon": "b"}}, "b": {}}},
        delays={"soon": lambda ctx, ev: -1},
    )
    with pytest.raises(ReducerFailed, match="delay 'soon' returned -1"):
        chart.start()


@pytest.mark.parametrize("key", ["-5", "1.5", "soon", ""])
def test_bad_delay_keys_are_definition_errors(key: str) -> None:
    with pytest.raises(InvalidDefinition, match=f"state 'm.a': after key '{key}'"):
        Chart({"id": "m", "initial": "a", "states": {"a": {"after": {key: "b"}}, "b": {}}})
