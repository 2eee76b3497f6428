"""The event envelope: CloudEvents 1.0, structured JSON mode, with garrison's extensions.

An event on ``<app>.events`` is a JSON object with the CloudEvents attributes
``specversion`` ("1.0"), ``id``, ``source``, ``type``, optional ``time`` (RFC 3339) and
``data``, plus the extension attributes ``tenant``, ``machine`` and ``instance``
(and ``timer`` on the events garrison's durable timers deliver). Its
Kafka key is the tenant id. ``id`` is the idempotency key. Optional ``parentid`` links
a reply to the command that caused it (arvo's convention).

Example::

    raw = encode_event(Event(id="e1", type="order.placed", source="shop", tenant="acme",
                             machine="order", instance="o-1", time_ms=0, data={"sku": "x"}))
    assert decode_event(raw, fallback_time_ms=0).type == "order.placed"
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson

from pipeline.address import Address, check_id
from pipeline.errors import InvalidAddress, InvalidEvent

__all__ = [
    "Event",
    "Headers",
    "decode_event",
    "encode_event",
    "format_time",
    "new_event",
    "parse_time",
]

Headers = Sequence[tuple[str, bytes]]
"""Kafka record headers, as aiokafka gives and takes them."""

_REQUIRED = ("id", "source", "type", "tenant", "machine", "instance")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_last_second: list[Any] = [None, ""]
_parsed_second: list[Any] = ["", 0]  # "YYYY-MM-DDTHH:MM:SS" and its epoch ms


class Event(NamedTuple):
    """A decoded, validated garrison event. ``time_ms`` is epoch milliseconds.

    Immutable; a NamedTuple rather than a frozen dataclass because one is built per
    event on the hot path, where a frozen dataclass's ``__init__`` costs 5x as much.
    """

    id: str
    type: str
    source: str
    tenant: str
    machine: str
    instance: str
    time_ms: int
    data: Any = None
    parentid: str | None = None
    timer: str | None = None

    @property
    def time(self) -> datetime:
        """The event's time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.time_ms / 1000, tz=UTC)


def new_event(
    tenant: str,
    machine: str,
    instance: str,
    type: str,
    data: Any = None,
    *,
    id: str,
    time_ms: int,
    source: str,
    parentid: str | None = None,
) -> Event:
    """A validated event for ``(tenant, machine, instance)``. Pure: the caller at the edge
    (the client, the listener runner) supplies the id and the time; raises
    :class:`~pipeline.errors.InvalidAddress` or :class:`InvalidEvent` saying what to fix.

    >>> new_event("acme", "order", "o-1", "order.placed", id="e1", time_ms=0,
    ...           source="shop").instance
    'o-1'
    """
    address = Address.checked(tenant, machine, instance)
    for name, text in (("type", type), ("id", id), ("source", source)):
        if not isinstance(text, str) or not text:
            raise InvalidEvent(f"event {name} must be a non-empty string, got {text!r}")
    if isinstance(time_ms, bool) or not isinstance(time_ms, int):
        raise InvalidEvent(f"time_ms must be an int (epoch milliseconds), got {time_ms!r}")
    return Event(
        id, type, source, address.tenant, address.machine, address.instance, time_ms, data, parentid
    )


def parse_time(text: str) -> int:
    """RFC 3339 text to epoch milliseconds; raises :class:`InvalidEvent` if it is not."""
    # Fast path for the form format_time writes, "YYYY-MM-DDTHH:MM:SS.mmmZ", in the
    # same second as the previous such time (events arrive roughly in time order).
    if (
        type(text) is str
        and len(text) == 24
        and text[:19] == _parsed_second[0]
        and text[19] == "."
        and text[23] == "Z"
    ):
        millis = text[20:23]
        if millis.isascii() and millis.isdigit():
            second_ms: int = _parsed_second[1]
            return second_ms + int(millis)
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise InvalidEvent(f"time {text!r} is not RFC 3339, e.g. '2026-01-31T12:00:00Z'") from None
    if moment.tzinfo is None:
        raise InvalidEvent(f"time {text!r} has no UTC offset; add 'Z' or '+00:00'")
    # round(): a float timestamp times 1000 can land a hair under the exact millisecond.
    time_ms = round(moment.timestamp() * 1000)
    if len(text) == 24 and text[19] == "." and text[23] == "Z":
        _parsed_second[0], _parsed_second[1] = text[:19], time_ms - time_ms % 1000
    return time_ms


def format_time(time_ms: int) -> str:
    """Epoch milliseconds to RFC 3339 UTC text with millisecond precision."""
    seconds, millis = divmod(time_ms, 1000)
    if seconds != _last_second[0]:
        # Events arrive roughly in time order: format each second once.
        moment = _EPOCH + timedelta(seconds=seconds)
        _last_second[0], _last_second[1] = seconds, moment.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_last_second[1]}.{millis:03d}Z"


def decode_event(value: bytes | None, *, fallback_time_ms: int) -> Event:
    """Decode and validate one event. Without a ``time`` attribute, the event takes
    ``fallback_time_ms`` (the Kafka record's timestamp), so a replay of the log sees the
    same time. Raises :class:`InvalidEvent` with what is wrong."""
    if value is None:
        raise InvalidEvent("record has no value (a tombstone); send a CloudEvent JSON object")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"value is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidEvent(f"value is JSON {type(obj).__name__}, expected a CloudEvent object")
    try:
        spec, eid, source, etype = obj["specversion"], obj["id"], obj["source"], obj["type"]
        tenant, machine, instance = obj["tenant"], obj["machine"], obj["instance"]
    except KeyError:
        spec = obj.get("specversion")
        if spec == "1.0":
            missing = [name for name in _REQUIRED if name not in obj]
            raise InvalidEvent(f"missing CloudEvents attribute(s): {', '.join(missing)}") from None
    if spec != "1.0":
        raise InvalidEvent(f"specversion is {spec!r}; garrison reads CloudEvents '1.0'")
    for name, text in (("id", eid), ("source", source), ("type", etype)):
        if type(text) is not str or not text:
            raise InvalidEvent(f"attribute {name!r} must be a non-empty string")
    try:
        tenant = check_id("tenant", tenant)
        machine = check_id("machine", machine)
        instance = check_id("instance", instance)
    except InvalidAddress as exc:
        raise InvalidEvent(str(exc), event_type=etype) from None
    raw_time = obj.get("time")
    time_ms = fallback_time_ms if raw_time is None else parse_time(raw_time)
    parent = obj.get("parentid")
    timer = obj.get("timer")
    return Event(
        eid,
        etype,
        source,
        tenant,
        machine,
        instance,
        time_ms,
        obj.get("data"),
        parent if isinstance(parent, str) else None,
        timer if isinstance(timer, str) else None,
    )


def encode_event(event: Event) -> bytes:
    """The structured-mode JSON of ``event``."""
    obj: dict[str, Any] = {
        "specversion": "1.0",
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "time": format_time(event.time_ms),
        "tenant": event.tenant,
        "machine": event.machine,
        "instance": event.instance,
        "datacontenttype": "application/json",
        "data": event.data,
    }
    if event.parentid is not None:
        obj["parentid"] = event.parentid
    if event.timer is not None:
        obj["timer"] = event.timer
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError as exc:
        raise InvalidEvent(
            f"data of {event.type!r} cannot be sent as JSON: {exc}; use "
            "str, int (64-bit), float, bool, None, lists and dicts with "
            "str keys",
            event_type=event.type,
        ) from None
