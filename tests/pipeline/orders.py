"""The order chart machine the chart-machine tests share, and helpers to drive it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel

from pipeline import ChartMachine, Contract, Registry, step
from pipeline.ids import timer_event_id
from pipeline.record import Record
from tests.pipeline.statechart.charts import order
from tests.samples import event

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
