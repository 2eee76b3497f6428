"""Chart machines through the pure step: contracts, refusals, timers, versions, replay."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, RootModel

from pipeline import (
    ChartMachine,
    Contract,
    ContractViolation,
    Emit,
    InvalidDefinition,
    ReducerFailed,
    Registry,
    Rejected,
    ServiceError,
    TransitionNotAllowed,
    UnknownEventType,
    error_event_type,
    step,
)
from pipeline.chart_machine import service_topics
from pipeline.outcome import StateChange
from pipeline.record import Record
from pipeline.statechart import Chart, emit
from pipeline.ids import timer_event_id
from pipeline.step import TTL_TIMER
from tests.pipeline.statechart.charts import order
from tests.samples import refused, event

T0 = 1_700_000_000_000


class Open(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer: str
    vip: bool = False


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    price: int = Field(ge=0)


class Payment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: int


class Total(BaseModel):
    model_config = ConfigDict(extra="forbid")
    total: int


def order_contract(
    *, reminder: type[BaseModel] = RootModel[int], output: type[BaseModel] | None = Total
) -> Contract:
    return Contract(
        init="order.open",
        accepts={"order.open": Open, "add": Item, "checkout": None, "paid": Payment},
        emits={"cart.empty": None, "reminder": reminder},
        output=output,
    )


def order_machine(version: int = 1, **kwargs: Any) -> ChartMachine:
    return ChartMachine(order(), order_contract(**kwargs), version=version, topics=["mailer"])


REG = Registry([order_machine()])
REMINDER = "order.paying#afterreminder"
GIVE_UP = "order.paying#after60000"


def ev(
    type: str,
    data: Any = None,
    *,
    id: str,
    time_ms: int = T0,
    instance: str = "o1",
    timer: str | None = None,
) -> Any:
    return event(
        type, data, id=id, machine="order", instance=instance, time_ms=time_ms, timer=timer
    )


def opened(reg: Registry = REG, instance: str = "o1") -> Record:
    out = step(
        reg, None, ev("order.open", {"customer": "ann"}, id=f"{instance}-open", instance=instance)
    )
    assert out.record is not None
    return out.record


def run(record: Record | None, *events: Any, reg: Registry = REG) -> Any:
    out = None
    for e in events:
        out = step(reg, record, e)
        record = out.record if out.record is not None else record
    return out


def in_paying(reg: Registry = REG) -> Record:
    out = run(
        opened(reg),
        ev("add", {"price": 10}, id="a1"),
        ev("add", {"price": 5}, id="a2"),
        ev("checkout", id="c", time_ms=T0 + 1),
        reg=reg,
    )
    assert out.record.state["value"] == "paying"
    return out.record  # type: ignore[no-any-return]


def fire(record: Record, name: str) -> Any:
    due = record.timers[name].due_ms
    return ev("ignored", id=timer_event_id(name, due), time_ms=due, timer=name)


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


# -- emit targets -------------------------------------------------------------------------


def _router() -> Registry:
    chart = Chart(
        {
            "id": "router",
            "initial": "a",
            "states": {
                "a": {
                    "on": {
                        "send": {
                            "actions": emit(
                                lambda ctx, e: {"type": "note", "data": None, "to": e.data["to"]}
                            )
                        }
                    }
                }
            },
        }
    )
    return Registry(
        [
            ChartMachine(
                chart,
                Contract(
                    init="start", accepts={"start": None, "send": Target}, emits={"note": None}
                ),
                topics=["svc.notes", "svc.other"],
            )
        ]
    )


class Target(BaseModel):
    to: str | None


@pytest.mark.parametrize(
    ("to", "where"),
    [
        (None, (None, "router", "r1")),
        ("machine:audit", (None, "audit", "r1")),
        ("machine:audit/log-1", (None, "audit", "log-1")),
        ("svc.notes", ("svc.notes", "router", "r1")),
    ],
)
def test_emit_targets_map_to_instances_or_topics(to: str | None, where: tuple[Any, ...]) -> None:
    reg = _router()
    rec = step(reg, None, event("start", None, machine="router", instance="r1")).record
    out = step(reg, rec, event("send", {"to": to}, id="s", machine="router", instance="r1"))
    [sent] = out.emitted
    assert (sent.topic, sent.event.machine, sent.event.instance) == where
    assert sent.event.parentid == "s"


@pytest.mark.parametrize(
    ("to", "text"),
    [
        ("machine:a/b/c", "contains '/'"),
        ("machine:", "machine id is empty"),
        ("svc.undeclared", r"nor a topic declared in topics= \(declared: svc.notes, svc.other\)"),
    ],
)
def test_a_bad_emit_target_is_a_reducer_failure_not_a_crash(to: str, text: str) -> None:
    reg = _router()
    rec = step(reg, None, event("start", None, machine="router", instance="r1")).record
    with pytest.raises(ReducerFailed, match=f"emitted 'note': .*{text}"):
        raise refused(
            step(reg, rec, event("send", {"to": to}, id="s", machine="router", instance="r1"))
        )


def test_declared_topics_are_checked_and_collected() -> None:
    with pytest.raises(InvalidDefinition, match="'no spaces' is not a Kafka topic name"):
        ChartMachine(order(), order_contract(), topics=["no spaces"])
    reg = Registry([order_machine(), *_router().machines.values()])
    everything = (m for name in reg.machines for m in reg.versions(name).values())
    assert service_topics(everything) == {"mailer", "svc.notes", "svc.other"}


def test_effects_are_plain_garrison_effects() -> None:
    machine = order_machine()
    _, effects = machine.start(ev("order.open", {"customer": "a"}, id="x"))
    assert effects == ()
    state = {
        "value": "cart",
        "context": {"items": 0, "total": 0},
        "status": "active",
        "output": None,
    }
    _, effects = machine.apply(state, ev("checkout", id="c"))
    assert effects == (Emit("cart.empty", None),)


# -- versions -----------------------------------------------------------------------------


def _order_v2() -> ChartMachine:
    """v2 charges a flat fee of 1 per item: its context keeps a 'fee'."""
    chart = order()
    config = {
        "id": "order",
        "initial": "cart",
        "context": {"items": 0, "total": 0, "fee": 0},
        "states": {"cart": {"on": {"add": {"actions": "add"}}}},
    }
    from pipeline.statechart import assign

    v2 = Chart(
        config,
        actions={
            "add": assign(
                lambda ctx, e: {
                    "items": ctx["items"] + 1,
                    "total": ctx["total"] + e.data["price"] + 1,
                    "fee": ctx["fee"] + 1,
                }
            )
        },
    )
    assert chart.name == v2.name
    return ChartMachine(
        v2, Contract(init="order.open", accepts={"order.open": Open, "add": Item}), version=2
    )


def test_instances_keep_their_version_and_new_ones_take_the_latest() -> None:
    reg = Registry([order_machine()])
    old = opened(reg, "old")
    reg.add(_order_v2())
    kept = step(reg, old, ev("add", {"price": 10}, id="a", instance="old"))
    assert kept.record.version == 1
    assert kept.record.state["context"] == {"items": 1, "total": 10}
    assert (
        step(reg, kept.record, ev("checkout", id="c", instance="old")).record.state["value"]
        == "paying"
    )
    new = opened(reg, "new")
    assert new.version == 2
    added = step(reg, new, ev("add", {"price": 10}, id="a", instance="new"))
    assert added.record.state["context"] == {"items": 1, "total": 11, "fee": 1}
    with pytest.raises(UnknownEventType, match="v2 does not accept 'checkout'"):
        raise refused(step(reg, added.record, ev("checkout", id="c", instance="new")))


def test_a_migration_moves_a_snapshot_to_the_new_version() -> None:
    reg = Registry([order_machine()])
    old = step(reg, opened(reg), ev("add", {"price": 10}, id="a")).record
    v2 = _order_v2()

    @v2.migrate(from_version=1)
    def add_fee(snapshot: dict[str, Any]) -> dict[str, Any]:
        return {**snapshot, "context": {**snapshot["context"], "fee": 0}}

    reg.add(v2)
    out = step(reg, old, ev("add", {"price": 1}, id="b"))
    assert out.record.version == 2
    assert out.record.state["context"] == {"items": 2, "total": 12, "fee": 1}


# -- replay -------------------------------------------------------------------------------

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(-1, 20)),
        st.tuples(st.sampled_from(["checkout", "bogus", REMINDER, GIVE_UP]), st.just(0)),
        st.tuples(st.just("paid"), st.integers(0, 40)),
    ),
    max_size=30,
)


def _replay(ops: list[tuple[str, int]]) -> tuple[Any, list[Any], list[Any]]:
    record = opened()
    changes: list[Any] = []
    sent: list[Any] = []
    for i, (kind, n) in enumerate(ops):
        t = T0 + 1000 * (i + 1)
        if kind in (REMINDER, GIVE_UP):
            armed = record.timers.get(kind)
            due = armed.due_ms if armed is not None else t
            e = ev("x", id=timer_event_id(kind, due), time_ms=due, timer=kind)
        else:
            data = {"price": n} if kind == "add" else {"amount": n} if kind == "paid" else None
            e = ev(kind, data, id=f"e{i}", time_ms=t)
        try:
            out = step(REG, record, e)
        except Rejected as exc:
            changes.append((type(exc).__name__, exc.reason))
            continue
        if out.record is not None:
            record = out.record
        changes.append(out.change)
        sent.extend(out.emitted)
    return record, changes, sent


@settings(max_examples=150, deadline=None)
@given(_ops)
def test_replay_through_step_is_deterministic(ops: list[tuple[str, int]]) -> None:
    first = _replay(ops)
    assert first == _replay(ops)
    record, changes, _ = first
    applied = [c for c in changes if c is not None and isinstance(c, StateChange)]
    assert [c.seq for c in applied] == list(range(2, record.seq + 1))
