"""Chart machines through the pure step: starting, contracts, refusals, timers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel, RootModel

from pipeline import (
    ChartMachine,
    Contract,
    ContractViolation,
    InvalidDefinition,
    Registry,
    Rejected,
    ServiceError,
    TransitionNotAllowed,
    UnknownEventType,
    error_event_type,
    step,
)
from pipeline.statechart import Chart, emit
from pipeline.step import TTL_TIMER
from tests.pipeline.orders import (
    GIVE_UP,
    REG,
    REMINDER,
    T0,
    Item,
    Open,
    Payment,
    Total,
    ev,
    fire,
    in_paying,
    opened,
    order_contract,
    order_machine,
)
from tests.pipeline.statechart.charts import order
from tests.samples import event, refused

# -- starting ---------------------------------------------------------------------------


def test_the_init_event_starts_an_instance_with_the_chart_snapshot() -> None:
    out = step(REG, None, ev("order.open", {"customer": "ann"}, id="x"))
    assert out.status == "applied"
    assert out.record is not None
    assert out.record.state == {
        "value": "cart",
        "context": {"items": 0, "total": 0},
        "status": "active",
        "output": None,
    }
    assert (out.record.seq, out.record.version) == (1, 1)
    assert REG.latest("order").event_types == {"order.open", "add", "checkout", "paid"}


def test_any_other_first_event_is_refused_with_the_init_type() -> None:
    with pytest.raises(
        UnknownEventType, match="instance does not exist; start it with 'order.open'"
    ):
        raise refused(step(REG, None, ev("add", {"price": 1}, id="x")))


def test_the_init_payload_is_the_chart_input_normalised() -> None:
    chart = Chart(
        {
            "id": "greeter",
            "initial": "idle",
            "context": lambda data: {"who": data["customer"], "vip": data["vip"]},
            "states": {"idle": {"on": {"poke": "idle"}}},
        }
    )
    machine = ChartMachine(chart, Contract(init="hi", accepts={"hi": Open, "poke": None}))
    out = step(Registry([machine]), None, event("hi", {"customer": "bo"}, machine="greeter"))
    assert out.record is not None
    assert out.record.state["context"] == {"who": "bo", "vip": False}  # default filled in


def test_init_again_on_an_existing_instance_is_not_allowed() -> None:
    with pytest.raises(TransitionNotAllowed, match="exists already; 'order.open' only starts"):
        raise refused(step(REG, opened(), ev("order.open", {"customer": "ann"}, id="again")))


# -- contracts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type", "data", "error", "text"),
    [
        ("add", {"price": "lots"}, ContractViolation, "payload of 'add' does not fit Item: price"),
        ("add", {"price": -1}, ContractViolation, "greater than or equal to 0"),
        ("add", {"price": 1, "x": 1}, ContractViolation, "x: Extra inputs"),
        ("checkout", {"now": True}, ContractViolation, "'checkout' carries no data by contract"),
        ("refund", None, UnknownEventType, "does not accept 'refund'; its contract accepts: add"),
    ],
)
def test_incoming_payloads_are_checked_before_the_chart_runs(
    type: str, data: Any, error: type[Rejected], text: str
) -> None:
    record = opened()
    with pytest.raises(error, match=text) as info:
        raise refused(step(REG, record, ev(type, data, id="bad")))
    assert info.value.event_type == type
    assert info.value.data == data


def test_a_bad_init_payload_is_a_contract_violation() -> None:
    with pytest.raises(ContractViolation, match="'order.open' does not fit Open: customer"):
        raise refused(step(REG, None, ev("order.open", {}, id="x")))


def test_emitted_data_is_checked_against_the_contract() -> None:
    reg = Registry([order_machine(reminder=RootModel[str])])
    record = in_paying(reg)
    with pytest.raises(ContractViolation, match="emitted 'reminder' does not fit"):
        raise refused(step(reg, record, fire(record, REMINDER)))


def test_an_emitted_type_outside_the_contract_is_a_violation() -> None:
    chart = Chart(
        {
            "id": "m",
            "initial": "a",
            "states": {"a": {"on": {"go": {"actions": emit({"type": "surprise"})}}}},
        }
    )
    reg = Registry(
        [ChartMachine(chart, Contract(init="start", accepts={"start": None, "go": None}))]
    )
    rec = step(reg, None, event("start", None, machine="m")).record
    with pytest.raises(ContractViolation, match="emitted 'surprise', which its contract does"):
        raise refused(step(reg, rec, event("go", None, id="g", machine="m")))


def test_the_output_is_checked_when_the_machine_completes() -> None:
    class Strict(BaseModel):
        total: int
        currency: str

    reg = Registry([order_machine(output=Strict)])
    record = in_paying(reg)
    with pytest.raises(ContractViolation, match="output does not fit Strict: currency"):
        raise refused(step(reg, record, ev("paid", {"amount": 15}, id="p")))


@pytest.mark.parametrize(
    ("make", "text"),
    [
        (
            lambda: ChartMachine(
                order(),
                Contract(
                    init="order.open",
                    accepts={
                        "order.open": None,
                        "add": Item,
                        "checkout": None,
                        "paid": Payment,
                        "cancel": None,
                    },
                ),
            ),
            "accepts 'cancel' but no transition of the chart handles it",
        ),
        (
            lambda: ChartMachine(
                order(),
                Contract(
                    init="order.open", accepts={"order.open": None, "add": Item, "checkout": None}
                ),
            ),
            "the chart handles 'paid' but the contract does not declare it",
        ),
        (
            lambda: ChartMachine(
                Chart({"initial": "a", "states": {"a": {}}}),
                Contract(init="go", accepts={"go": None}, output=Total),
            ),
            "declares an output but the chart has no final state",
        ),
        (lambda: Contract(init="go", accepts={"other": None}), "init 'go' is not in accepts"),
        (lambda: Contract(init="go", accepts={"go": dict}), "must be a pydantic BaseModel"),
        (
            lambda: Contract(init="go", accepts={"go": None, "xstate.after.1.m.a": None}),
            "is an interpreter event",
        ),
        (lambda: order_machine(version=0), "version must be an int >= 1"),
        (lambda: ChartMachine(order(), order_contract(), name="a/b"), "contains '/'"),
    ],
)
def test_definition_mistakes_are_raised_at_definition(make: Any, text: str) -> None:
    with pytest.raises(InvalidDefinition, match=text):
        make()


def test_service_errors_follow_arvos_convention() -> None:
    assert error_event_type("payment.charge") == "sys.payment.charge.error"
    assert ServiceError(errorName="E", errorMessage="m").model_dump() == {
        "errorName": "E",
        "errorMessage": "m",
        "errorStack": None,
    }


# -- refusals -----------------------------------------------------------------------------


def test_an_event_not_enabled_in_the_current_state_is_refused_with_what_is() -> None:
    with pytest.raises(
        TransitionNotAllowed,
        match=r"in state cart: 'paid' is not enabled; enabled now: add, checkout",
    ) as info:
        raise refused(step(REG, opened(), ev("paid", {"amount": 1}, id="p")))
    assert info.value.stage == "transition"
    assert info.value.value == "cart"


def test_an_event_whose_guards_all_fail_is_refused() -> None:
    with pytest.raises(TransitionNotAllowed, match="no guard of 'paid' allows it"):
        raise refused(step(REG, in_paying(), ev("paid", {"amount": 3}, id="p")))


def test_a_done_machine_refuses_every_further_event() -> None:
    out = step(REG, in_paying(), ev("paid", {"amount": 15}, id="p"))
    assert out.record is not None
    assert out.record.state["status"] == "done"
    assert out.record.state["output"] == {"total": 15}
    assert out.record.timers == {}  # leaving 'paying' cancelled both timers
    with pytest.raises(TransitionNotAllowed, match=r"is done \(output \{\"total\":15\}\)"):
        raise refused(step(REG, out.record, ev("add", {"price": 1}, id="late")))


def test_interpreter_events_from_outside_are_refused() -> None:
    with pytest.raises(UnknownEventType, match="only garrison's timers deliver it"):
        raise refused(step(REG, in_paying(), ev("xstate.after.60000.order.paying", id="spoof")))


# -- timers -------------------------------------------------------------------------------


def test_after_arms_durable_timers_relative_to_the_event_time() -> None:
    record = in_paying()
    assert {n: (t.due_ms, t.event_type) for n, t in record.timers.items()} == {
        REMINDER: (T0 + 1 + 2000, "xstate.after.reminder.order.paying"),
        GIVE_UP: (T0 + 1 + 60_000, "xstate.after.60000.order.paying"),
    }


def test_a_timer_firing_takes_the_after_transition_and_emits_to_a_topic() -> None:
    record = in_paying()
    out = step(REG, record, fire(record, REMINDER))
    assert out.status == "applied"
    assert out.change.event_type == "xstate.after.reminder.order.paying"
    assert out.record.state["value"] == "paying"
    assert set(out.record.timers) == {GIVE_UP}
    [sent] = out.emitted
    assert (sent.topic, sent.event.type, sent.event.data) == ("mailer", "reminder", 15)
    assert (sent.event.machine, sent.event.instance) == ("order", "o1")
    back = step(REG, out.record, fire(out.record, GIVE_UP))
    assert back.record.state["value"] == "cart"
    assert back.record.timers == {}


def test_a_timer_of_a_state_left_early_is_stale() -> None:
    record = in_paying()
    firing = fire(record, GIVE_UP)
    left = step(REG, record, ev("paid", {"amount": 20}, id="p")).record
    assert step(REG, left, firing).status == "stale"


def test_ttl_applies_to_chart_machines_too() -> None:
    reg = Registry(
        [ChartMachine(order(), order_contract(), ttl=timedelta(seconds=5), topics=["mailer"])]
    )
    record = opened(reg)
    assert record.timers[TTL_TIMER].due_ms == T0 + 5000
    gone = step(reg, record, fire(record, TTL_TIMER))
    assert gone.status == "expired"
