"""The shop the view, collect and query tests share: inventory instances, orders that read
their sku's inventory through a view, and a dashboard that collects every order."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipeline import ChartMachine, Collect, Contract, Emit, Incoming, Machine, Next, Registry, View
from pipeline.statechart import Chart, assign


class Stock(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int = 0


class Stocked(BaseModel):
    model_config = ConfigDict(extra="forbid")
    qty: int


class Placed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: str
    qty: int = Field(ge=1)
    price: int = 1


class Order(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: str = ""
    qty: int = 0
    price: int = 0
    status: str = "new"
    seen_stock: int | None = None


class Page(BaseModel):
    model_config = ConfigDict(extra="forbid")
    times: int = Field(default=1, ge=1, le=10)


class Summary(BaseModel):
    sku: str
    status: str
    total: int


def shop_machines() -> list[Any]:
    """inventory, order (a view of its sku's inventory), dashboard (a collect of orders),
    and ``gate``, a chart whose guard reads a view."""
    inventory: Machine[Stock] = Machine("inventory", state=Stock)

    @inventory.on("inventory.stocked")
    def stocked(config: None, state: Stock, event: Incoming[Stocked]) -> Stock:
        return Stock(count=state.count + event.data.qty)

    @inventory.on("inventory.taken")
    def taken(config: None, state: Stock, event: Incoming[Stocked]) -> Stock:
        return Stock(count=state.count - event.data.qty)

    order: Machine[Order] = Machine("order", state=Order, publish_computed=True)

    @order.on(
        "order.placed",
        views=[View("stock", machine="inventory", instance=lambda ev: ev.data.sku)],
    )
    def placed(config: None, state: Order, event: Incoming[Placed]) -> Next:
        stock = event.views["stock"]
        have = 0 if stock is None else stock["count"]
        if stock is not None:
            stock["count"] = -999  # a view is a private copy: this changes nothing
        ok = have >= event.data.qty
        new = Order(
            sku=event.data.sku,
            qty=event.data.qty,
            price=event.data.price,
            status="accepted" if ok else "refused",
            seen_stock=have,
        )
        take = Emit("inventory.taken", {"qty": event.data.qty}, "inventory", event.data.sku)
        return Next(new, take) if ok else Next(new)

    @order.computed("total")
    def total(config: None, state: Order) -> int:
        return state.qty * state.price

    @order.query("summary", result=Summary)
    def summary(config: None, state: Order) -> Summary:
        state.status = "tampered"  # a query's state is its own copy: this changes nothing
        return Summary(sku=state.sku, status="accepted" if state.qty else "new", total=0)

    @order.query("scaled", params=Page)
    def scaled(config: None, state: Order, params: Page) -> dict[str, int]:
        return {"total": state.qty * state.price * params.times}

    @order.query("raw")
    def raw(config: None, state: Order, params: Any) -> dict[str, Any]:
        return dict(params)

    dashboard: Machine[dict[str, Any]] = Machine(
        "dashboard", initial={"orders": {}, "more": False, "refreshes": 0}
    )

    @dashboard.on(
        "dashboard.refresh",
        views=[
            Collect(
                "orders",
                machine="order",
                prefix=lambda ev: (ev.data or {}).get("prefix", ""),
                transform=lambda s: [s["status"], s["qty"] * s["price"]],
                limit=5,
            )
        ],
    )
    def refresh(config: None, state: dict[str, Any], event: Incoming[Any]) -> dict[str, Any]:
        orders = event.views["orders"]
        return {
            "orders": dict(orders),
            "more": orders.more,
            "refreshes": state["refreshes"] + 1,
        }

    @dashboard.on(
        "dashboard.pick",
        views=[Collect("picked", machine="order", ids=lambda ev: ev.data["ids"], limit=2)],
    )
    def pick(config: None, state: dict[str, Any], event: Incoming[Any]) -> dict[str, Any]:
        picked = event.views["picked"]
        return {**state, "picked": {k: v["qty"] for k, v in picked.items()}, "more": picked.more}

    chart = Chart(
        {
            "id": "gate",
            "initial": "closed",
            "context": {"opened_with": None},
            "states": {
                "closed": {
                    "on": {
                        "gate.try": {
                            "guard": "stocked",
                            "target": "open",
                            "actions": "remember",
                        }
                    }
                },
                "open": {},
            },
        },
        guards={"stocked": lambda ctx, ev: (ev.views["stock"] or {}).get("count", 0) > 0},
        actions={"remember": assign(lambda ctx, ev: {"opened_with": ev.views["stock"]["count"]})},
    )

    class Try(BaseModel):
        sku: str

    gate = ChartMachine(
        chart,
        Contract(init="gate.open", accepts={"gate.open": None, "gate.try": Try}),
        views={
            "gate.try": [View("stock", machine="inventory", instance=lambda ev: ev.data["sku"])]
        },
    )
    return [inventory, order, dashboard, gate]


def shop_registry() -> Registry:
    """A registry of the shop's machines."""
    return Registry(shop_machines())
