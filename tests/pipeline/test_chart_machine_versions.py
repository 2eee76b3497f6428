"""Chart machines through the pure step: emit targets, versions, replay."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from pipeline import (
    ChartMachine,
    Contract,
    Emit,
    InvalidDefinition,
    ReducerFailed,
    Registry,
    Rejected,
    UnknownEventType,
    step,
)
from pipeline.chart_machine import service_topics
from pipeline.ids import timer_event_id
from pipeline.outcome import StateChange
from pipeline.statechart import Chart, emit
from tests.pipeline.orders import (
    GIVE_UP,
    REG,
    REMINDER,
    T0,
    Item,
    Open,
    ev,
    opened,
    order_contract,
    order_machine,
)
from tests.pipeline.statechart.charts import order
from tests.samples import event, refused

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
