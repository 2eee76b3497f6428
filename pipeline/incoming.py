"""``Incoming``: the event as a reducer sees it."""

from __future__ import annotations

from datetime import datetime
from typing import Generic, NamedTuple, TypeVar

from pipeline.envelope import Event

__all__ = ["Incoming"]

P = TypeVar("P")


class Incoming(NamedTuple, Generic[P]):
    """The event as a reducer sees it: ``data`` is the validated payload model.

    Generic in the payload: annotate a reducer's event as ``Incoming[Added]`` and
    ``event.data`` type-checks as ``Added`` (and ``Machine.on`` takes ``Added`` as the
    payload contract when none is given).
    """

    id: str
    type: str
    tenant: str
    machine: str
    instance: str
    time_ms: int
    data: P
    parentid: str | None = None

    @property
    def time(self) -> datetime:
        """The event's time (aware, UTC); use it instead of the clock."""
        return Event(
            self.id, self.type, "", self.tenant, self.machine, self.instance, self.time_ms
        ).time
