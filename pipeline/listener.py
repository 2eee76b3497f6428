"""Listeners: side effects run on state changes (casern's stateChangeListeners).

A listener gets the change (previous and current state) and a context with the
services the app registered, the machine's config, and ``send`` to emit new events.
Conditions (machine, event types, a predicate on previous and current state) decide
whether it runs; the listener runner retries failures with backoff and sends what
still fails to the dead-letter topic.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pipeline.address import check_id
from pipeline.errors import InvalidAddress, InvalidDefinition
from pipeline.outcome import StateChange

__all__ = ["Listener", "ListenerContext", "ListenerFn", "Predicate", "Sender"]

Predicate = Callable[[Any, Any], bool]


class Sender(Protocol):
    """Sends an event to an instance of the change's tenant."""

    async def __call__(
        self, machine: str, instance: str, type: str, data: Any = None, *, id: str | None = None
    ) -> str: ...


@dataclass(frozen=True, slots=True)
class ListenerContext:
    """What a listener may use: ``services``, the machine's ``config``, and ``send``."""

    services: Any
    config: Any
    send: Sender
    attempt: int


ListenerFn = Callable[[StateChange, ListenerContext], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class Listener:
    """A registered listener and its conditions."""

    name: str
    fn: ListenerFn
    machine: str | None
    on: frozenset[str] | None
    when: Predicate | None
    retries: int
    backoff_s: float
    start: Literal["earliest", "latest"] = "earliest"

    @classmethod
    def build(
        cls,
        fn: ListenerFn,
        *,
        name: str | None,
        machine: str | None,
        on: Iterable[str] | str | None,
        when: Predicate | None,
        retries: int,
        backoff_s: float,
        start: Literal["earliest", "latest"] = "earliest",
    ) -> Listener:
        """Validate a definition; raises :class:`InvalidDefinition` on mistakes."""
        label = name or getattr(fn, "__name__", None)
        if not label:
            raise InvalidDefinition("listener has no name; pass name=")
        try:
            check_id("listener", label)  # it names the listener's consumer group
        except InvalidAddress as exc:
            raise InvalidDefinition(f"{exc}; pass name=") from None
        if start not in ("earliest", "latest"):
            raise InvalidDefinition(
                f"listener {label!r}: start must be 'earliest' or 'latest', got {start!r}"
            )
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            params = None
        if params is not None and len(params) != 2:
            raise InvalidDefinition(
                f"listener {label!r} must take (change, ctx); it takes ({', '.join(params)})"
            )
        if retries < 0 or backoff_s < 0:
            raise InvalidDefinition(f"listener {label!r}: retries and backoff_s must be >= 0")
        events = frozenset([on] if isinstance(on, str) else on) if on is not None else None
        return cls(label, fn, machine, events, when, retries, backoff_s, start)

    def matches(self, change: StateChange) -> bool:
        """Whether this listener's conditions hold for ``change``."""
        if self.machine is not None and change.machine != self.machine:
            return False
        if self.on is not None and change.event_type not in self.on:
            return False
        return self.when is None or bool(self.when(change.prev, change.state))

    async def run(self, change: StateChange, ctx: ListenerContext) -> None:
        """Call the listener once (sync or async)."""
        result = self.fn(change, ctx)
        if inspect.isawaitable(result):
            await result
