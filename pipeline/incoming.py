"""``Incoming``: the event as a reducer sees it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar

from pipeline.envelope import Event
from pipeline.view import NO_VIEWS

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
    views: Mapping[str, Any] = NO_VIEWS
    """What the reducer declared it reads of its siblings (``pipeline.view``), by name."""

    @property
    def time(self) -> datetime:
        """The event's time (aware, UTC); use it instead of the clock."""
        return Event(
            self.id, self.type, "", self.tenant, self.machine, self.instance, self.time_ms
        ).time
