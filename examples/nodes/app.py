"""Happen-style nodes: ``garrison worker examples.nodes.app``.

Happen's nodes own their state and read each other's through views. Here each node is
a machine instance of one tenant, and all of a tenant's instances live in one partition,
so a reducer may read its siblings as they are at that point of the partition's order:

- ``inventory/<sku>`` owns the stock of one sku (``inventory.restocked``,
  ``inventory.reserve``);
- ``order/<id>`` reads its sku's inventory through a **view** when it is placed: with no
  stock in sight it is backordered at once, without a round trip; otherwise it asks the
  inventory to reserve, and the inventory, which owns the stock, confirms or refuses
  (two orders may see the same last piece; only the owner decides who gets it);
- ``dashboard/summary`` **collects** a summary of every order of the tenant on each
  ``dashboard.refresh`` (which every order sends when it settles): counts by status and
  the confirmed revenue, at most 1,000 orders (``more`` says when there are more); its
  computed ``confirmed_share`` is derived on every read, never stored.

Try it::

    garrison kafka up
    garrison worker examples.nodes.app &
    garrison send acme inventory mug inventory.restocked --data '{"qty": 2}'
    garrison send acme order o-1 order.placed --data '{"sku": "mug", "qty": 1, "price": 12}'
    garrison state get acme dashboard summary
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline import Collect, Emit, Incoming, Machine, Next, Registry, View

__all__ = ["Order", "Stock", "Summary", "dashboard", "inventory", "order", "registry"]

DASHBOARD = "summary"
"""The dashboard instance every order refreshes."""


class Stock(BaseModel):
    """One sku's stock."""

    available: int = 0
    reserved: int = 0


class Restocked(BaseModel):
    """Payload of ``inventory.restocked``."""

    model_config = ConfigDict(extra="forbid")
    qty: int = Field(ge=1)


class Reserve(BaseModel):
    """Payload of ``inventory.reserve``, an order's request."""

    model_config = ConfigDict(extra="forbid")
    order: str
    qty: int


class Order(BaseModel):
    """One order."""

    sku: str = ""
    qty: int = 0
    price: int = 0
    status: Literal["reserving", "confirmed", "backordered"] = "reserving"
    stock_seen: int | None = None  # what the view showed when it was placed


class Placed(BaseModel):
    """Payload of ``order.placed``."""

    model_config = ConfigDict(extra="forbid")
    sku: str
    qty: int = Field(ge=1)
    price: int = Field(ge=0)


class Summary(BaseModel):
    """The dashboard's state."""

    orders: int = 0
    by_status: dict[str, int] = {}
    confirmed_revenue: int = 0
    more: bool = False
    refreshes: int = 0


inventory: Machine[Stock] = Machine("inventory", state=Stock)


@inventory.on("inventory.restocked")
def restocked(config: None, state: Stock, event: Incoming[Restocked]) -> Stock:
    """More stock arrived."""
    return state.model_copy(update={"available": state.available + event.data.qty})


@inventory.on("inventory.reserve")
def reserve(config: None, state: Stock, event: Incoming[Reserve]) -> Next:
    """An order asks for stock: the owner of the stock decides."""
    ask = event.data
    if state.available < ask.qty:
        return Next(state, Emit("order.backordered", None, machine="order", instance=ask.order))
    kept = Stock(available=state.available - ask.qty, reserved=state.reserved + ask.qty)
    return Next(kept, Emit("order.confirmed", None, machine="order", instance=ask.order))


order: Machine[Order] = Machine("order", state=Order)
_refresh = Emit("dashboard.refresh", None, machine="dashboard", instance=DASHBOARD)


@order.on(
    "order.placed",
    views=[View("stock", machine="inventory", instance=lambda ev: ev.data.sku)],
)
def placed(config: None, state: Order, event: Incoming[Placed]) -> Next:
    """Read the sku's inventory: backorder at once when there is none to be had."""
    ask = event.data
    stock = event.views["stock"]  # the inventory's state as of this event, or None
    seen = 0 if stock is None else stock["available"]
    new = Order(sku=ask.sku, qty=ask.qty, price=ask.price, stock_seen=seen)
    if seen < ask.qty:
        return Next(new.model_copy(update={"status": "backordered"}), _refresh)
    request = {"order": event.instance, "qty": ask.qty}
    return Next(new, Emit("inventory.reserve", request, machine="inventory", instance=ask.sku))


@order.on("order.confirmed")
def confirmed(config: None, state: Order, event: Incoming[None]) -> Next:
    """The inventory reserved it."""
    return Next(state.model_copy(update={"status": "confirmed"}), _refresh)


@order.on("order.backordered")
def backordered(config: None, state: Order, event: Incoming[None]) -> Next:
    """The inventory had none left by the time it asked."""
    return Next(state.model_copy(update={"status": "backordered"}), _refresh)


def _line(state: Any) -> tuple[str, int]:
    return state["status"], state["qty"] * state["price"]


dashboard: Machine[Summary] = Machine("dashboard", state=Summary)


@dashboard.on(
    "dashboard.refresh",
    views=[Collect("orders", machine="order", transform=_line, limit=1000)],
)
def refresh(config: None, state: Summary, event: Incoming[None]) -> Summary:
    """Collect every order of the tenant into one summary."""
    orders = event.views["orders"]
    by_status: dict[str, int] = {}
    revenue = 0
    for status, total in orders.values():
        by_status[status] = by_status.get(status, 0) + 1
        revenue += total if status == "confirmed" else 0
    return Summary(
        orders=len(orders),
        by_status=by_status,
        confirmed_revenue=revenue,
        more=orders.more,
        refreshes=state.refreshes + 1,
    )


@dashboard.computed("confirmed_share")
def confirmed_share(config: None, state: Summary) -> float:
    """The share of orders confirmed."""
    return state.by_status.get("confirmed", 0) / state.orders if state.orders else 0.0


registry = Registry([inventory, order, dashboard])
