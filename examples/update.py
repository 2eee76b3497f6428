"""An update that returns the new state, as the examples use it (Temporal's ``update``).

:func:`send_and_wait` takes its position in the tenant's state changes, sends the event
and returns the state the change *of that event* published (correlated by event id),
so a concurrent event for the same instance cannot be mistaken for it. An event the
machine refuses (it goes to the dead-letter topic) publishes no change: the call ends
with :class:`~garrison.waiter.WaitTimedOut` after ``timeout`` seconds.
"""

from __future__ import annotations

import uuid
from typing import Any

from garrison.client import Client
from garrison.waiter import ChangeFollower, Seen, WaitTimedOut
from pipeline.history import change_prefix
from pipeline.settings import Settings

__all__ = ["send_and_wait"]


async def send_and_wait(
    client: Client,
    settings: Settings,
    tenant: str,
    machine: str,
    instance: str,
    type: str,
    data: Any = None,
    *,
    timeout: float = 10.0,
) -> Seen:
    """Send one event and return the state its change published."""
    event_id = uuid.uuid4().hex
    # The position comes first: the change cannot be published before it.
    async with ChangeFollower(settings, tenant, machine, instance) as follower:
        await client.send(tenant, machine, instance, type, data, id=event_id)
        prefix = change_prefix(tenant, machine, instance)
        async for change in follower.changes(timeout, prefix=prefix):
            if change.event_id == event_id:
                return Seen.of(change)
    raise WaitTimedOut(
        f"{type!r} to {tenant}/{machine}/{instance} published no change within {timeout:g} s "
        "(refused? see the dead-letter topic)"
    )
