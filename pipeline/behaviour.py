"""``Behaviour``: what the pipeline needs of a machine, whatever kind it is.

A reducer :class:`~pipeline.machine.Machine` and a statechart
:class:`~pipeline.chart_machine.ChartMachine` both implement it; :func:`~pipeline.step.step`
knows nothing else about them. States cross this boundary as JSON-compatible values,
the form they are stored in. A behaviour refuses an event by raising a
:class:`~pipeline.errors.Rejected` subclass; ``step`` turns that into data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.effect import Effect
from pipeline.envelope import Event
from pipeline.errors import InvalidDefinition

if TYPE_CHECKING:
    from pipeline.query import Queries
    from pipeline.view import Siblings, ViewSpec

__all__ = ["Behaviour", "Migration", "migration_registrar"]

Migration = Callable[[Any], Any]
"""``fn(old_state_json) -> state_json``: upgrades an instance's state by one version."""


class Behaviour(Protocol):
    """A machine as the pipeline runs it: a name, a version, and two pure functions."""

    name: str
    version: int
    ttl_ms: int | None
    migrations: dict[int, Migration]
    copies_state: bool
    """True if :meth:`apply` hands the machine's own code a private copy of the state
    itself (else ``step`` copies it first)."""

    @property
    def views(self) -> Mapping[str, tuple[ViewSpec, ...]]:
        """What the machine reads of sibling instances, by event type (``pipeline.view``)."""

    @property
    def queries(self) -> Queries:
        """Its named queries and computed values (``pipeline.query``)."""

    @property
    def event_types(self) -> frozenset[str]:
        """The event types the machine takes."""

    def start(
        self, event: Event, siblings: Siblings | None = None
    ) -> tuple[Any, tuple[Effect, ...]]:
        """State of a new instance after its first event (``siblings``: what its views
        read, given when the machine declares views)."""

    def apply(
        self, state: Any, event: Event, siblings: Siblings | None = None
    ) -> tuple[Any, tuple[Effect, ...]]:
        """State after ``event``; raises a :class:`Rejected` subclass to refuse it."""


def migration_registrar(
    migrations: dict[int, Migration], version: int, from_version: int, label: str
) -> Callable[[Migration], Migration]:
    """The decorator behind ``migrate(from_version)`` of every machine kind."""
    if from_version >= version:
        raise InvalidDefinition(
            f"{label}: can only migrate from an older version, not v{from_version}"
        )

    def register(fn: Migration) -> Migration:
        migrations[from_version] = fn
        return fn

    return register
