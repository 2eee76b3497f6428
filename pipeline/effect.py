"""What a reducer (or chart) may ask for besides its new state: events and timers.

Commands, so imperative names. They are plain data; the pipeline carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pipeline.address import check_id
from pipeline.errors import InvalidDefinition

__all__ = ["Emit", "SetTimer", "CancelTimer", "Next", "Effect"]


@dataclass(frozen=True, slots=True)
class Emit:
    """Send an event. Without ``machine``/``instance`` it goes to the emitting instance;
    with ``topic`` it goes to that service topic instead of ``<app>.events`` (a command to
    a service, whose reply comes back to this instance). Always within the same tenant."""

    type: str
    data: Any = None
    machine: str | None = None
    instance: str | None = None
    topic: str | None = None

    def __post_init__(self) -> None:
        if not self.type:
            raise InvalidDefinition("Emit needs a non-empty event type")
        if self.machine is not None:
            check_id("machine", self.machine)
        if self.instance is not None:
            check_id("instance", self.instance)


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Arm (or re-arm) the instance's timer ``name``: at ``at``, or ``after`` the current
    event's time; with ``every`` it fires again each period until cancelled. When it
    fires, the instance receives an event of ``event_type`` with ``data``."""

    name: str
    event_type: str
    after: timedelta | None = None
    at: datetime | None = None
    every: timedelta | None = None
    data: Any = None

    def __post_init__(self) -> None:
        if (self.after is None) == (self.at is None):
            raise InvalidDefinition(f"SetTimer {self.name!r}: give exactly one of after= or at=")
        if self.at is not None and self.at.tzinfo is None:
            raise InvalidDefinition(f"SetTimer {self.name!r}: at= must be timezone-aware")
        if self.every is not None and self.every <= timedelta(0):
            raise InvalidDefinition(f"SetTimer {self.name!r}: every= must be positive")
        if not self.name or self.name.startswith("__"):
            raise InvalidDefinition(
                f"timer name {self.name!r} is reserved or empty; use a name not starting '__'"
            )

    def due_ms(self, now_ms: int) -> int:
        """When it fires, from the current event's time."""
        if self.at is not None:
            return int(self.at.timestamp() * 1000)
        assert self.after is not None
        return now_ms + int(self.after.total_seconds() * 1000)


@dataclass(frozen=True, slots=True)
class CancelTimer:
    """Disarm the instance's timer ``name``; cancelling an unknown timer does nothing."""

    name: str


Effect = Emit | SetTimer | CancelTimer


class Next:
    """A new state together with effects: ``return Next(state, Emit("greeted"))``."""

    __slots__ = ("state", "effects")

    def __init__(self, state: Any, *effects: Effect) -> None:
        self.state = state
        self.effects = effects
