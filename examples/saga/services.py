"""The services the order saga talks to: inventory, payment, shipping.

Each keeps its bookings in memory (a real one would use its own database) and makes
its undo operations idempotent: releasing or refunding an order twice, or one that
was never booked, answers success without doing anything.

``python -m examples.saga.services`` creates their topics and runs all three.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from agents.service import Reply, Service, serve_all
from examples.saga.app import INVENTORY_TOPIC, PAYMENT_TOPIC, SHIPPING_TOPIC
from pipeline.envelope import Event
from pipeline.settings import Settings

__all__ = ["Inventory", "Payments", "Shipping", "services", "main"]


class Refused(Exception):
    """A service cannot do what the command asks (answered as ``sys.<command>.error``)."""


def _unknown(command: Event) -> Refused:
    return Refused(f"this service does not handle {command.type!r}")


@dataclass
class Inventory:
    """``inventory.reserve`` (refused beyond ``stock`` per command) and ``inventory.release``."""

    stock: int = 10
    reserved: dict[str, int] = field(default_factory=dict)

    def __call__(self, command: Event) -> Reply:
        order_id = command.data["order_id"]
        if command.type == "inventory.reserve":
            qty = command.data["qty"]
            if qty > self.stock:
                raise Refused(f"only {self.stock} of {command.data['sku']!r} in stock, {qty} asked")
            self.reserved[order_id] = qty
            return "inventory.reserved", {"reservation": f"r-{order_id}"}
        if command.type == "inventory.release":
            self.reserved.pop(order_id, None)
            return "inventory.released", {"order_id": order_id}
        raise _unknown(command)


@dataclass
class Payments:
    """``payment.charge`` (declined above ``limit``) and ``payment.refund``."""

    limit: int = 1000
    charged: dict[str, int] = field(default_factory=dict)

    def __call__(self, command: Event) -> Reply:
        order_id = command.data["order_id"]
        if command.type == "payment.charge":
            amount = command.data["amount"]
            if amount > self.limit:
                raise Refused(f"card declined: {amount} is over the limit of {self.limit}")
            self.charged[order_id] = amount
            return "payment.charged", {"payment": f"p-{order_id}"}
        if command.type == "payment.refund":
            self.charged.pop(order_id, None)
            return "payment.refunded", {"order_id": order_id}
        raise _unknown(command)


@dataclass
class Shipping:
    """``shipping.ship``: refused for addresses in ``unreachable``."""

    unreachable: frozenset[str] = frozenset({"Atlantis"})

    def __call__(self, command: Event) -> Reply:
        if command.type != "shipping.ship":
            raise _unknown(command)
        address = command.data["address"]
        if address in self.unreachable:
            raise Refused(f"no carrier delivers to {address!r}")
        return "shipping.shipped", {"tracking": f"t-{command.data['order_id']}"}


def services() -> list[Service]:
    """The three services, with their topics."""
    return [
        Service("inventory", INVENTORY_TOPIC, Inventory()),
        Service("payment", PAYMENT_TOPIC, Payments()),
        Service("shipping", SHIPPING_TOPIC, Shipping()),
    ]


async def main(settings: Settings) -> None:
    """Create the service topics and run every service until interrupted."""
    await serve_all(services(), settings)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(main(Settings()))
