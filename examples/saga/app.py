"""The order saga: ``garrison worker examples.saga.app``.

``order.place`` starts an order. The saga reserves inventory, charges the payment,
ships, and completes with ``status: "completed"``. When a step fails (the service
answers ``sys.<command>.error``) or the payment service does not answer within
:data:`PAYMENT_TIMEOUT_MS`, the saga undoes the steps already done, in reverse order:
refund the payment, then release the inventory, and completes with
``status: "compensated"`` (``"failed"`` if nothing was done yet). Every command sent is
appended to ``context.log``; the compensations are also listed in the output.

A compensation waits for its answer before the next one starts, so their order holds
across services. Compensations are idempotent in the services (a refund of an order
never charged is a no-op), which is what lets a timed-out payment be refunded safely.

Try it::

    garrison kafka up
    python -m examples.saga.services &
    garrison worker examples.saga.app &
    garrison send acme order o-1 order.place \\
        --data '{"order_id": "o-1", "sku": "mug", "qty": 2, "amount": 30, "address": "Oslo"}'
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline import ChartMachine, Contract, Registry, ServiceError, error_event_type
from pipeline.statechart import Chart, ChartEvent, assign, emit

__all__ = [
    "registry",
    "order",
    "INVENTORY_TOPIC",
    "PAYMENT_TOPIC",
    "SHIPPING_TOPIC",
    "SERVICE_TOPICS",
    "PAYMENT_TIMEOUT_MS",
]

INVENTORY_TOPIC = "svc.inventory"
PAYMENT_TOPIC = "svc.payment"
SHIPPING_TOPIC = "svc.shipping"
SERVICE_TOPICS = (INVENTORY_TOPIC, PAYMENT_TOPIC, SHIPPING_TOPIC)
PAYMENT_TIMEOUT_MS = 5000


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PlaceOrder(_Data):
    """Init payload."""

    order_id: str
    sku: str
    qty: int = Field(ge=1)
    amount: int = Field(ge=0, description="in cents")
    address: str


class Reserve(_Data):
    """Command: reserve ``qty`` of ``sku`` for the order."""

    order_id: str
    sku: str
    qty: int


class OrderRef(_Data):
    """Command or answer that names only the order (charge's undo, release, ...)."""

    order_id: str


class Charge(_Data):
    """Command: charge ``amount`` for the order."""

    order_id: str
    amount: int


class Ship(_Data):
    """Command: ship the order to ``address``."""

    order_id: str
    address: str


class Reserved(_Data):
    """Answer to ``inventory.reserve``."""

    reservation: str


class Charged(_Data):
    """Answer to ``payment.charge``."""

    payment: str


class Shipped(_Data):
    """Answer to ``shipping.ship``."""

    tracking: str


class OrderResult(_Data):
    """Completion output."""

    status: Literal["completed", "compensated", "failed"]
    tracking: str | None = None
    error: str | None = None
    compensated: list[str] = []


def _send(kind: str, to: str, fields: tuple[str, ...]) -> Any:
    """An emit of command ``kind`` to ``to``, its data picked from the order, and a log
    entry in the context (an assign runs first so the log is part of the snapshot)."""

    def command(ctx: dict[str, Any], ev: ChartEvent) -> dict[str, Any]:
        return {"type": kind, "to": to, "data": {f: ctx["order"][f] for f in fields}}

    return [assign(lambda ctx, ev: {"log": [*ctx["log"], kind]}), emit(command)]


def _fail(ctx: dict[str, Any], ev: ChartEvent) -> dict[str, Any]:
    return {"error": ev.data["errorMessage"]}


def _result(status: str) -> Any:
    def output(ctx: dict[str, Any], ev: ChartEvent) -> dict[str, Any]:
        undone = [step for step in ctx["log"] if step in ("payment.refund", "inventory.release")]
        return {
            "status": status,
            "tracking": ctx["tracking"],
            "error": ctx["error"],
            "compensated": undone,
        }

    return output


chart = Chart(
    {
        "id": "order",
        "initial": "reserving",
        "context": lambda order: {
            "order": order,
            "reservation": None,
            "payment": None,
            "tracking": None,
            "error": None,
            "log": [],
        },
        "states": {
            "reserving": {
                "entry": _send("inventory.reserve", INVENTORY_TOPIC, ("order_id", "sku", "qty")),
                "on": {
                    "inventory.reserved": {
                        "target": "charging",
                        "actions": assign(lambda ctx, ev: {"reservation": ev.data["reservation"]}),
                    },
                    error_event_type("inventory.reserve"): {"target": "failed", "actions": "fail"},
                },
            },
            "charging": {
                "entry": _send("payment.charge", PAYMENT_TOPIC, ("order_id", "amount")),
                "after": {
                    "paymentTimeout": {
                        "target": "refunding",
                        "actions": assign({"error": "payment did not answer in time"}),
                    }
                },
                "on": {
                    "payment.charged": {
                        "target": "shipping",
                        "actions": assign(lambda ctx, ev: {"payment": ev.data["payment"]}),
                    },
                    error_event_type("payment.charge"): {"target": "releasing", "actions": "fail"},
                },
            },
            "shipping": {
                "entry": _send("shipping.ship", SHIPPING_TOPIC, ("order_id", "address")),
                "on": {
                    "shipping.shipped": {
                        "target": "completed",
                        "actions": assign(lambda ctx, ev: {"tracking": ev.data["tracking"]}),
                    },
                    error_event_type("shipping.ship"): {"target": "refunding", "actions": "fail"},
                },
            },
            # Compensations, in reverse order of the steps they undo.
            "refunding": {
                "entry": _send("payment.refund", PAYMENT_TOPIC, ("order_id",)),
                "on": {"payment.refunded": "releasing"},
            },
            "releasing": {
                "entry": _send("inventory.release", INVENTORY_TOPIC, ("order_id",)),
                "on": {"inventory.released": "compensated"},
            },
            "completed": {"type": "final", "output": _result("completed")},
            "compensated": {"type": "final", "output": _result("compensated")},
            "failed": {"type": "final", "output": _result("failed")},
        },
    },
    actions={"fail": assign(_fail)},
    delays={"paymentTimeout": PAYMENT_TIMEOUT_MS},
)

contract = Contract(
    init="order.place",
    accepts={
        "order.place": PlaceOrder,
        "inventory.reserved": Reserved,
        error_event_type("inventory.reserve"): ServiceError,
        "payment.charged": Charged,
        error_event_type("payment.charge"): ServiceError,
        "shipping.shipped": Shipped,
        error_event_type("shipping.ship"): ServiceError,
        "payment.refunded": OrderRef,
        "inventory.released": OrderRef,
    },
    emits={
        "inventory.reserve": Reserve,
        "payment.charge": Charge,
        "shipping.ship": Ship,
        "payment.refund": OrderRef,
        "inventory.release": OrderRef,
    },
    output=OrderResult,
)

order = ChartMachine(chart, contract, version=1, topics=SERVICE_TOPICS)
registry = Registry([order])
