"""Cart updates: ``garrison worker examples.cart.app``.

Temporal's ``addItemToCart`` update, ported: the caller adds an item and gets the cart
back. In garrison the update is an event, ``cart.item_added``, and its answer is the
state change it made: ``examples.update.send_and_wait`` sends the event and returns the
state published for that very event (correlated by its id), so two callers updating
the same cart at once each get the cart as their own item left it. A refused update (a
quantity of 0: the contract refuses it) publishes nothing and goes to the dead-letter
topic, with why.

``cart`` answers the ``items`` query and computes ``count`` (how many items in all).

Try it::

    garrison kafka up
    garrison worker examples.cart.app &
    garrison send acme cart c-1 cart.item_added --data '{"item": "productXYZ"}'
    garrison query acme cart c-1 items
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from pipeline import Incoming, Machine, Registry

__all__ = ["Cart", "cart", "registry"]


class Line(BaseModel):
    """One item of the cart and how many of it."""

    item: str
    qty: int


class Cart(BaseModel):
    """A shopping cart."""

    lines: list[Line] = []


class Added(BaseModel):
    """Payload of ``cart.item_added`` (the update's argument)."""

    model_config = ConfigDict(extra="forbid")
    item: str = Field(min_length=1, max_length=100)
    qty: int = Field(default=1, ge=1, le=99)


class Removed(BaseModel):
    """Payload of ``cart.item_removed``."""

    model_config = ConfigDict(extra="forbid")
    item: str


cart: Machine[Cart] = Machine("cart", state=Cart)


@cart.on("cart.item_added")
def item_added(config: None, state: Cart, event: Incoming[Added]) -> Cart:
    """Add an item (or more of one already there)."""
    lines = [line.model_copy() for line in state.lines]
    for line in lines:
        if line.item == event.data.item:
            line.qty += event.data.qty
            break
    else:
        lines.append(Line(item=event.data.item, qty=event.data.qty))
    return Cart(lines=lines)


@cart.on("cart.item_removed")
def item_removed(config: None, state: Cart, event: Incoming[Removed]) -> Cart:
    """Take an item out, all of it."""
    return Cart(lines=[line for line in state.lines if line.item != event.data.item])


@cart.query("items")
def items(config: None, state: Cart) -> list[str]:
    """The items in the cart, one entry per piece (Temporal's ``cartItems``)."""
    return [line.item for line in state.lines for _ in range(line.qty)]


@cart.computed("count")
def count(config: None, state: Cart) -> int:
    """How many pieces the cart holds."""
    return sum(line.qty for line in state.lines)


registry = Registry([cart])
