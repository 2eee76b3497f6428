"""Triggers: functions run when a key-value entry is created, updated, deleted or expires.

A trigger is a listener underneath (at-least-once, retries, dead letters, see
``agents.listeners``): :meth:`Trigger.build` makes a
:class:`~pipeline.listener.Listener` whose conditions are the trigger's (the scope, the
kinds of change, a key pattern, a predicate on the old and new value) and whose
function turns the state change into a :class:`KeyChange` and the listener's context
into a :class:`TriggerContext`, with helpers to write state. The runner needs to know
nothing about triggers.

Example::

    @registry.trigger(scope="users", on="created")
    async def welcome(change: KeyChange, ctx: TriggerContext) -> None:
        await ctx.state.update("users", change.key, [{"op": "set", "path": "welcomed",
                                                       "value": True}])

Kinds: ``created`` (no value before), ``updated`` (a value before and after, even an
equal one: use ``when`` to react to real changes only), ``deleted`` (``kv.delete``)
and ``expired`` (the key's TTL). Deleting a key that does not exist is none of them.
"""

from __future__ import annotations

import fnmatch
import inspect
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pipeline.errors import InvalidDefinition
from pipeline.kv import (
    DELETE,
    EXPIRED,
    SET,
    UPDATE,
    check_key,
    check_scope,
    scope_machine,
    scope_of,
    set_data,
    ttl_ms,
    update_data,
    value_of,
)
from pipeline.listener import Listener, ListenerContext, Sender
from pipeline.outcome import StateChange

__all__ = [
    "KINDS",
    "ChangeKind",
    "KeyChange",
    "StateWriter",
    "Trigger",
    "TriggerContext",
    "TriggerFn",
    "change_kind",
]

ChangeKind = Literal["created", "updated", "deleted", "expired"]
KINDS: tuple[ChangeKind, ...] = ("created", "updated", "deleted", "expired")
_EVENT_TYPES: dict[ChangeKind, frozenset[str]] = {
    "created": frozenset({SET, UPDATE}),
    "updated": frozenset({SET, UPDATE}),
    "deleted": frozenset({DELETE}),
    "expired": frozenset({EXPIRED}),
}


def change_kind(change: StateChange) -> ChangeKind | None:
    """What a key-value state change is (None: no value before or after it)."""
    if change.state is not None:
        return "created" if change.prev is None else "updated"
    if change.prev is None:
        return None
    return "expired" if change.event_type == EXPIRED else "deleted"


@dataclass(frozen=True, slots=True)
class KeyChange:
    """What a trigger gets: the change of one key, with its old and new value (None
    when there was none, or is none now)."""

    kind: ChangeKind
    tenant: str
    scope: str
    key: str
    old: Any
    new: Any
    seq: int
    event_id: str
    time_ms: int

    @property
    def time(self) -> datetime:
        """When the change happened (the event's time, aware UTC)."""
        return datetime.fromtimestamp(self.time_ms / 1000, tz=UTC)


class StateWriter:
    """Key-value writes from a trigger, for the change's tenant. They are events sent
    with ids derived from the change and the trigger, so a retried run sends the same
    ids and the writes are applied once."""

    def __init__(self, send: Sender) -> None:
        self._send = send

    async def set(
        self, scope: str, key: str, value: Any, *, ttl: timedelta | float | None = None
    ) -> str:
        """Set ``key`` of ``scope`` to ``value`` (with a TTL: a timedelta or seconds);
        returns the event id."""
        return await self._write(scope, key, SET, set_data(value, ttl_ms(ttl)))

    async def update(self, scope: str, key: str, ops: list[dict[str, Any]]) -> str:
        """Apply update operations (``pipeline.operation``) to ``key`` of ``scope``."""
        return await self._write(scope, key, UPDATE, update_data(ops))

    async def delete(self, scope: str, key: str) -> str:
        """Delete ``key`` of ``scope``."""
        return await self._write(scope, key, DELETE, None)

    async def _write(self, scope: str, key: str, type: str, data: Any) -> str:
        machine = scope_machine(check_scope(scope))
        return await self._send(machine, check_key(key), type, data)


@dataclass(frozen=True, slots=True)
class TriggerContext:
    """What a trigger may use: the app's ``services``, ``send`` (an event to any
    instance of the tenant), ``state`` (key-value writes) and ``attempt`` (0 first)."""

    services: Any
    send: Sender
    state: StateWriter
    attempt: int


TriggerFn = Callable[[KeyChange, TriggerContext], Awaitable[None] | None]
ValuePredicate = Callable[[Any, Any], bool]


@dataclass(frozen=True, slots=True)
class Trigger(Listener):
    """A listener on one scope's changes, with a trigger's conditions."""

    scope: str = ""
    kinds: frozenset[ChangeKind] = frozenset(KINDS)
    key: Callable[[str], bool] | None = None
    values: ValuePredicate | None = None

    @classmethod
    def make(
        cls,
        fn: TriggerFn,
        *,
        scope: str,
        on: Iterable[str] | str | None = None,
        key: str | re.Pattern[str] | None = None,
        when: ValuePredicate | None = None,
        name: str | None = None,
        retries: int = 3,
        backoff_s: float = 0.2,
        start: Literal["earliest", "latest"] = "earliest",
    ) -> Trigger:
        """Validate a trigger's definition; raises :class:`InvalidDefinition` on mistakes.
        ``key`` is a glob (``"user_*"``) or a compiled regex (matched in full); the rest
        is a listener's (its name names its consumer group)."""
        label = name or getattr(fn, "__name__", None)
        if not label:
            raise InvalidDefinition("trigger has no name; pass name=")
        try:
            scope = check_scope(scope)
        except ValueError as exc:
            raise InvalidDefinition(f"trigger {label!r}: {exc}") from None
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            params = None  # builtins and C callables: trust them
        if params is not None and len(params) != 2:
            raise InvalidDefinition(
                f"trigger {label!r} must take (change, ctx); it takes ({', '.join(params)})"
            )
        kinds = _kinds(label, on)
        matcher = _key_matcher(label, key)
        if when is not None and not callable(when):
            raise InvalidDefinition(f"trigger {label!r}: when= must be a function (old, new)")
        # The listener's own checks (name, retries, start), as for any listener.
        listener = Listener.build(
            _adapter(fn, scope),
            name=label,
            machine=scope_machine(scope),
            on=frozenset[str]().union(*(_EVENT_TYPES[k] for k in kinds)),
            when=None,
            retries=retries,
            backoff_s=backoff_s,
            start=start,
        )
        base = {f.name: getattr(listener, f.name) for f in fields(Listener)}
        return cls(**base, scope=scope, kinds=kinds, key=matcher, values=when)

    def matches(self, change: StateChange) -> bool:
        """The listener's conditions (the scope's machine, the event types), then the
        kind of change, the key pattern and the predicate on the old and new value."""
        if not Listener.matches(self, change):
            return False
        kind = change_kind(change)
        if kind is None or kind not in self.kinds:
            return False
        if self.key is not None and not self.key(change.instance):
            return False
        return self.values is None or bool(
            self.values(value_of(change.prev), value_of(change.state))
        )


def _kinds(label: str, on: Iterable[str] | str | None) -> frozenset[ChangeKind]:
    if on is None:
        return frozenset(KINDS)
    given = [on] if isinstance(on, str) else list(on)
    wrong = [k for k in given if k not in KINDS]
    if wrong or not given:
        raise InvalidDefinition(f"trigger {label!r}: on= takes {', '.join(KINDS)}; got {given!r}")
    return frozenset(k for k in KINDS if k in given)


def _key_matcher(label: str, key: str | re.Pattern[str] | None) -> Callable[[str], bool] | None:
    if key is None:
        return None
    if isinstance(key, re.Pattern):
        pattern = key
        return lambda name: pattern.fullmatch(name) is not None
    if isinstance(key, str) and key:
        glob = key
        return lambda name: fnmatch.fnmatchcase(name, glob)
    raise InvalidDefinition(
        f"trigger {label!r}: key= takes a glob ('user_*') or a compiled regex, got {key!r}"
    )


def _adapter(fn: TriggerFn, scope: str) -> Callable[[StateChange, ListenerContext], Any]:
    """The listener function: the change and context as a trigger sees them."""

    def run(change: StateChange, ctx: ListenerContext) -> Awaitable[None] | None:
        kind = change_kind(change)
        assert kind is not None  # matches() let only real changes through
        key_change = KeyChange(
            kind,
            change.tenant,
            scope_of(change.machine) or scope,
            change.instance,
            value_of(change.prev),
            value_of(change.state),
            change.seq,
            change.event_id,
            change.time_ms,
        )
        context = TriggerContext(ctx.services, ctx.send, StateWriter(ctx.send), ctx.attempt)
        return fn(key_change, context)

    run.__name__ = getattr(fn, "__name__", "trigger")
    return run
