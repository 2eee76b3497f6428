"""The idempotency ids garrison derives, all in one place.

An event's ``id`` is its idempotency key: an instance skips an id it applied recently.
Whatever garrison sends because of an event gets an id derived from that event's id,
so sending it again (a crash, a retry, a replay) repeats the same id and is skipped:

- ``<event id>/e<n>``: the n-th event a reducer or chart emitted while applying it;
- ``<event id>/<listener>/<n>``: the n-th event a listener sent for a state change
  (``<event id>`` is the change's event);
- ``<command id>/reply``: a service's answer to a command;
- ``timer:<name>:<due ms>``: a timer's firing (the due time makes each firing of a
  periodic timer distinct);
- ``redrive:<dlq topic>/<partition>/<offset>``: a listener dead letter sent back to its
  listener (its place in the dead-letter topic names it).

Ids are compared per instance, so a derived id can only ever collide with an id sent
to the same instance.
"""

from __future__ import annotations

__all__ = ["emitted_id", "listener_send_id", "redrive_id", "reply_id", "timer_event_id"]


def emitted_id(event_id: str, n: int) -> str:
    """The id of the ``n``-th event emitted while applying ``event_id``.

    >>> emitted_id("e1", 0)
    'e1/e0'
    """
    return f"{event_id}/e{n}"


def listener_send_id(event_id: str, listener: str, n: int) -> str:
    """The id of the ``n``-th event ``listener`` sent for the change made by ``event_id``."""
    return f"{event_id}/{listener}/{n}"


def reply_id(command_id: str) -> str:
    """The id of a service's answer to the command ``command_id``."""
    return f"{command_id}/reply"


def timer_event_id(name: str, due_ms: int) -> str:
    """The id of a timer's firing: stable, so a firing delivered twice is a duplicate."""
    return f"timer:{name}:{due_ms}"


def redrive_id(dlq_topic: str, partition: int, offset: int) -> str:
    """The id of a re-drive of the dead letter at ``partition``/``offset`` of
    ``dlq_topic``: the same however often it is sent back, so a repeat is recognised.

    >>> redrive_id("shop.dlq", 2, 17)
    'redrive:shop.dlq/2/17'
    """
    return f"redrive:{dlq_topic}/{partition}/{offset}"
