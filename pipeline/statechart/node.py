"""The parsed chart: state nodes and transitions, with their precomputed topology.

Built once by :mod:`pipeline.statechart.definition` and completed by
:mod:`pipeline.statechart.topology`; read-only afterwards. Tools such as
:func:`pipeline.statechart.to_mermaid` walk it from ``chart.root``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from pipeline.statechart.action import Call, Op

__all__ = ["Kind", "Guard", "Delay", "Transition", "StateNode"]

Kind = Literal["atomic", "compound", "parallel", "final"]


@dataclass(frozen=True, slots=True)
class Guard:
    """A bound guard; ``name`` is what the chart calls it (for errors and diagrams)."""

    call: Call
    name: str


@dataclass(frozen=True, slots=True)
class Delay:
    """The timer behind one ``after`` entry of a state.

    ``label`` is the delay as written (``"5000"`` or a name from ``delays=``); ``call``
    returns the delay in milliseconds from the context and event at entry.
    """

    key: str
    event_type: str
    label: str
    call: Call


@dataclass(eq=False, slots=True)
class Transition:
    """One transition, in document order (``index``).

    ``event`` is ``None`` for ``always`` transitions. ``domain`` follows xstate v5:
    the source itself when every target lies within it and ``reenter`` is false,
    otherwise the targets' and source's least common ancestor, and ``None`` when a
    re-entering transition must leave the root too. ``scope`` holds the indices of the
    states the transition exits when active; ``entry`` those it enters.
    """

    source: StateNode
    event: str | None
    label: str
    targets: tuple[StateNode, ...]
    guard: Guard | None
    actions: tuple[Op, ...]
    reenter: bool
    index: int = 0
    domain: StateNode | None = None
    scope: frozenset[int] = frozenset()
    entry: frozenset[int] = frozenset()


@dataclass(eq=False, slots=True)
class StateNode:
    """A state of the chart. ``index`` is its position in document order (pre-order)."""

    key: str
    id: str
    kind: Kind
    parent: StateNode | None
    index: int
    children: list[StateNode] = field(default_factory=list)
    initial: StateNode | None = None
    entry: tuple[Op, ...] = ()
    exit: tuple[Op, ...] = ()
    on: dict[str, list[Transition]] = field(default_factory=dict)
    always: list[Transition] = field(default_factory=list)
    delays: list[Delay] = field(default_factory=list)
    output: Call | None = None
    ancestors: tuple[StateNode, ...] = ()
    ancestor_indices: frozenset[int] = frozenset()
    descendant_indices: frozenset[int] = frozenset()

    def is_descendant_of(self, other: StateNode) -> bool:
        """Strictly inside ``other``."""
        return other.index in self.ancestor_indices

    def walk(self) -> Iterator[StateNode]:
        """This node and all its descendants, in document order."""
        yield self
        for child in self.children:
            yield from child.walk()

    def transitions(self) -> Iterator[Transition]:
        """This node's own transitions: ``on`` (incl. ``after``/``onDone``), then ``always``."""
        for group in self.on.values():
            yield from group
        yield from self.always
