"""Draw a chart as a Mermaid ``stateDiagram-v2``.

Nested states become ``state X { ... }`` blocks, parallel regions are separated by
``--``, each compound block starts with ``[*] --> <initial>``, final states end with
``--> [*]``, and edges are labelled ``EVENT [guard]``, ``always``, ``after 5s`` or
``onDone``. A targetless transition is drawn as a self-loop.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pipeline.statechart.node import StateNode

if TYPE_CHECKING:
    from pipeline.statechart.chart import Chart

__all__ = ["to_mermaid"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def _mermaid_ids(root: StateNode) -> dict[int, str]:
    ids: dict[int, str] = {}
    taken: set[str] = set()
    for node in root.walk():
        candidate = _UNSAFE.sub("_", node.id) or "state"
        if candidate in taken:
            candidate = f"{candidate}_{node.index}"
        taken.add(candidate)
        ids[node.index] = candidate
    return ids


class _Drawer:
    def __init__(self, root: StateNode) -> None:
        self.ids = _mermaid_ids(root)
        self.lines = ["stateDiagram-v2"]

    def name(self, node: StateNode) -> str:
        return self.ids[node.index]

    def emit(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)

    def body(self, node: StateNode, depth: int) -> None:
        """The inside of a compound or parallel state."""
        if node.initial is not None:
            self.emit(depth, f"[*] --> {self.name(node.initial)}")
        for position, child in enumerate(node.children):
            if node.kind == "parallel" and position:
                self.emit(depth, "--")
            self.state(child, depth)

    def state(self, node: StateNode, depth: int) -> None:
        name = self.name(node)
        self.emit(depth, f'state "{node.key}" as {name}')
        if node.children:
            self.emit(depth, f"state {name} {{")
            self.body(node, depth + 1)
            self.emit(depth, "}")
        if node.kind == "final":
            self.emit(depth, f"{name} --> [*]")
        self.edges(node, depth)

    def edges(self, node: StateNode, depth: int) -> None:
        name = self.name(node)
        for transition in node.transitions():
            label = transition.label
            if transition.guard is not None:
                label += f" [{transition.guard.name}]"
            label = label.replace("\n", " ").replace(":", "")
            for target in transition.targets or (node,):
                self.emit(depth, f"{name} --> {self.name(target)} : {label}")


def to_mermaid(chart: Chart) -> str:
    """The chart as Mermaid ``stateDiagram-v2`` source.

    >>> print(to_mermaid(chart))  # doctest: +SKIP
    stateDiagram-v2
        [*] --> light_green
        ...
    """
    root = chart.root
    drawer = _Drawer(root)
    wrap = root.kind == "parallel" or any(True for _ in root.transitions())
    if wrap:
        drawer.emit(1, f"[*] --> {drawer.name(root)}")
        drawer.state(root, 1)
    else:
        drawer.body(root, 1)
    return "\n".join(drawer.lines) + "\n"
