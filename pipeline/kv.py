"""Scoped key-value state: a machine kind whose instances are keys holding JSON values.

A scope is a namespace of one tenant's keys (``users``, ``config``, ``cache``). It is a
:class:`~pipeline.behaviour.Behaviour` named ``kv.<scope>``, and each key is an
instance of it, so a key's address is ``(tenant, "kv.<scope>", key)``: a value is kept,
ordered, de-duplicated, published and dead-lettered exactly as a machine's state is.
Its stored state is ``{"value": <any JSON>}`` (wrapped, so that a null value is still
a value and not an ended instance).

Writes are events for the key (commands, so imperative):

- ``kv.set``    ``{"value": v}`` or ``{"value": v, "ttl_ms": n}``: store ``v``; with a
  TTL (or the scope's default TTL) the key is deleted ``n`` ms later; a set without
  one clears the key's TTL;
- ``kv.update`` ``{"ops": [...]}``: the operations of :mod:`pipeline.operation`,
  applied in order in one step, all or nothing; the key's TTL stays as it is;
- ``kv.delete``: end the key (a tombstone keeps its sequence, see ``pipeline.step``);
- ``kv.expired``: the key's TTL timer firing; only garrison's timer delivers it.

Example::

    registry = Registry([Scope("users"), Scope("cache", ttl=timedelta(minutes=5))])

Scope names follow the id rules (:func:`~pipeline.address.check_id`) and may be at most
:data:`MAX_SCOPE_LENGTH` characters, so that ``kv.<scope>`` is a valid machine id; keys
follow the id rules as they are.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pipeline.address import MAX_ID_LENGTH, check_id
from pipeline.behaviour import Migration
from pipeline.effect import CancelTimer, Effect, SetTimer
from pipeline.envelope import Event
from pipeline.errors import (
    ContractViolation,
    InvalidAddress,
    InvalidDefinition,
    InvalidState,
    ReducerFailed,
    Rejected,
    UnknownEventType,
)
from pipeline.operation import MISSING, apply_operations, parse_operations
from pipeline.query import Queries
from pipeline.view import Siblings, ViewSpec

__all__ = [
    "DELETE",
    "EXPIRE_TIMER",
    "EXPIRED",
    "KV_PREFIX",
    "MAX_SCOPE_LENGTH",
    "SET",
    "UPDATE",
    "Scope",
    "check_key",
    "check_scope",
    "scope_machine",
    "scope_of",
    "set_data",
    "ttl_ms",
    "update_data",
    "value_of",
]

KV_PREFIX = "kv."
SET, UPDATE, DELETE, EXPIRED = "kv.set", "kv.update", "kv.delete", "kv.expired"
EXPIRE_TIMER = "expire"
MAX_SCOPE_LENGTH = MAX_ID_LENGTH - len(KV_PREFIX)


def check_scope(scope: object) -> str:
    """``scope`` if it is a valid scope name, else :class:`InvalidAddress` saying why."""
    name = check_id("scope", scope)
    if len(name) > MAX_SCOPE_LENGTH:
        raise InvalidAddress(
            f"scope {name[:20]!r}... is {len(name)} characters long; the limit is "
            f"{MAX_SCOPE_LENGTH}"
        )
    return name


def check_key(key: object) -> str:
    """``key`` if it is a valid key, else :class:`InvalidAddress` saying why."""
    return check_id("key", key)


def scope_machine(scope: str) -> str:
    """The machine name of a scope: ``kv.users``."""
    return KV_PREFIX + scope


def scope_of(machine: str) -> str | None:
    """The scope a machine name stands for (None: not a key-value scope's)."""
    return machine[len(KV_PREFIX) :] if machine.startswith(KV_PREFIX) else None


def ttl_ms(ttl: timedelta | float | int | None) -> int | None:
    """A TTL (a timedelta, or seconds) in whole milliseconds, at least 1; None: none."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, timedelta | int | float):
        raise ContractViolation(f"ttl must be a timedelta or seconds, got {ttl!r}")
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    if not seconds > 0:  # also NaN
        raise ContractViolation(f"ttl must be positive, got {ttl!r}")
    return max(1, round(seconds * 1000))


def set_data(value: Any, ttl: int | None = None) -> dict[str, Any]:
    """The payload of ``kv.set`` (``ttl`` in milliseconds)."""
    return {"value": value} if ttl is None else {"value": value, "ttl_ms": ttl}


def update_data(ops: Any) -> dict[str, Any]:
    """The payload of ``kv.update``, its operations checked first (raises
    :class:`~pipeline.errors.InvalidOperation` saying what to fix)."""
    parse_operations(ops)
    return {"ops": ops}


def value_of(state: Any) -> Any:
    """The value a stored key-value state holds (None for no state)."""
    return None if state is None else state["value"]


class Scope:
    """A key-value scope as a machine kind: ``Scope("users")`` is machine ``kv.users``.

    ``ttl`` is the default TTL of a key set (or created by an update) without one.
    """

    ttl_ms: int | None = None  # no idle expiry: a key's TTL is its own timer
    config: Any = None

    def __init__(self, scope: str, *, ttl: timedelta | None = None, version: int = 1) -> None:
        try:
            self.scope = check_scope(scope)
        except InvalidAddress as exc:
            raise InvalidDefinition(str(exc)) from None
        if not isinstance(version, int) or version < 1:
            raise InvalidDefinition(f"scope {scope!r}: version must be an int >= 1")
        try:
            self.default_ttl_ms = ttl_ms(ttl)
        except ContractViolation as exc:
            raise InvalidDefinition(f"scope {scope!r}: {exc.reason}") from None
        self.name = scope_machine(self.scope)
        self.version = version
        self.migrations: dict[int, Migration] = {}
        # The stored entry is never changed in place: set and delete do not read it, and
        # apply_operations works on a copy of its own (step need not copy it again).
        self.copies_state = True
        self.views: dict[str, tuple[ViewSpec, ...]] = {}  # a key reads no siblings
        self.queries = Queries(f"scope {self.scope!r}")  # and has no named queries

    def __repr__(self) -> str:
        return f"Scope({self.scope!r})"

    @property
    def event_types(self) -> frozenset[str]:
        """The event types a scope's keys take."""
        return frozenset({SET, UPDATE, DELETE, EXPIRED})

    def start(
        self, event: Event, siblings: Siblings | None = None
    ) -> tuple[Any, tuple[Effect, ...]]:
        """A key that does not exist (or was deleted) gets its first event (a key reads
        no siblings: ``siblings`` is never given)."""
        return self._run(MISSING, event)

    def apply(
        self, state: Any, event: Event, siblings: Siblings | None = None
    ) -> tuple[Any, tuple[Effect, ...]]:
        """An existing key gets an event."""
        if not isinstance(state, dict) or "value" not in state:
            raise InvalidState(
                f"stored state of {self.name!r} is not a key-value entry "
                "({'value': ...}); was this machine name used by another machine?",
                event_type=event.type,
            )
        return self._run(state["value"], event)

    def _run(self, current: Any, event: Event) -> tuple[Any, tuple[Effect, ...]]:
        try:
            return self._decide(current, event)
        except Rejected:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug here must not stop the worker
            raise ReducerFailed(
                f"{self.name!r} failed on {event.type!r}: {type(exc).__name__}: {exc}",
                event_type=event.type,
            ) from exc

    def _decide(self, current: Any, event: Event) -> tuple[Any, tuple[Effect, ...]]:
        kind, data = event.type, event.data
        if kind == SET:
            if not isinstance(data, dict) or "value" not in data:
                raise ContractViolation(
                    f"{SET} needs data {{'value': ...}} (optionally 'ttl_ms'), got {data!r}",
                    event_type=kind,
                    data=data,
                )
            if extra := set(data) - {"value", "ttl_ms"}:
                raise ContractViolation(
                    f"{SET} takes 'value' and 'ttl_ms', not {', '.join(sorted(extra))}",
                    event_type=kind,
                    data=data,
                )
            ttl = self._ttl(data.get("ttl_ms"), kind)
            if ttl is not None:
                return {"value": data["value"]}, (self._timer(ttl),)
            if current is MISSING:
                return {"value": data["value"]}, ()
            return {"value": data["value"]}, (CancelTimer(EXPIRE_TIMER),)
        if kind == UPDATE:
            if not isinstance(data, dict) or set(data) != {"ops"}:
                raise ContractViolation(
                    f"{UPDATE} needs data {{'ops': [...]}}, got {data!r}", event_type=kind
                )
            new = apply_operations(current, parse_operations(data["ops"]))
            if new is MISSING:  # only removals, on a key that does not exist: none made
                return None, ()
            effects: tuple[Effect, ...] = ()
            if current is MISSING and self.default_ttl_ms is not None:
                effects = (self._timer(self.default_ttl_ms),)
            return {"value": new}, effects
        if kind == DELETE:
            return None, ()
        if kind == EXPIRED:
            if event.timer != EXPIRE_TIMER:
                raise ContractViolation(
                    f"{EXPIRED} is sent by garrison's TTL timer only; to remove a key "
                    f"send {DELETE}",
                    event_type=kind,
                )
            return None, ()
        known = ", ".join(sorted(self.event_types))
        raise UnknownEventType(
            f"scope {self.scope!r} has no event {kind!r}; it takes: {known}", event_type=kind
        )

    def _ttl(self, raw: object, kind: str) -> int | None:
        if raw is None:
            return self.default_ttl_ms
        if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
            raise ContractViolation(
                f"{kind}: ttl_ms must be a positive whole number of milliseconds, got {raw!r}",
                event_type=kind,
            )
        return raw

    @staticmethod
    def _timer(ms: int) -> SetTimer:
        return SetTimer(EXPIRE_TIMER, EXPIRED, after=timedelta(milliseconds=ms))
