"""Resolving transition targets, in xstate v5's forms.

``"sibling"`` or ``"sibling.child"`` is relative to the source's parent, ``".child"`` to
the source itself (``"."`` is the source), and ``"#id"`` (or ``"#id.child"``) names any
state by id. Several targets must lie in different regions of a parallel state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.errors import InvalidDefinition
from pipeline.statechart.node import StateNode

__all__ = ["resolve_targets"]


def resolve_targets(
    node: StateNode, target: Any, by_id: Mapping[str, StateNode], where: str
) -> tuple[StateNode, ...]:
    """The states ``target`` (a string, a list of them, or None) names from ``node``."""
    if target is None:
        return ()
    refs = target if isinstance(target, list | tuple) else [target]
    resolved = tuple(_resolve(node, ref, by_id, where) for ref in refs)
    for i, first in enumerate(resolved):
        for second in resolved[i + 1 :]:
            if not _orthogonal(first, second):
                raise InvalidDefinition(
                    f"{where}: targets {first.id!r} and {second.id!r} cannot be active "
                    "together; several targets must lie in different parallel regions"
                )
    return resolved


def _resolve(node: StateNode, ref: Any, by_id: Mapping[str, StateNode], where: str) -> StateNode:
    if not isinstance(ref, str) or not ref:
        raise InvalidDefinition(f"{where}: target {ref!r} must be a non-empty string")
    if ref.startswith("#"):
        return _by_id(ref, by_id, where)
    if ref.startswith("."):
        return _by_path(node, ref[1:], ref, where)
    if node.parent is None:
        raise InvalidDefinition(
            f"{where}: target {ref!r} from the machine root is ambiguous; "
            f"write '.{ref}' for a child state or '#id' for any state"
        )
    return _by_path(node.parent, ref, ref, where)


def _by_id(ref: str, by_id: Mapping[str, StateNode], where: str) -> StateNode:
    ident = ref[1:]
    if ident in by_id:
        return by_id[ident]
    head, _, rest = ident.partition(".")
    if rest and head in by_id:
        return _by_path(by_id[head], rest, ref, where)
    raise InvalidDefinition(
        f"{where}: target {ref!r} names no state id; known ids: {', '.join(by_id)}"
    )


def _by_path(start: StateNode, path: str, ref: str, where: str) -> StateNode:
    node = start
    for key in path.split(".") if path else ():
        child = next((c for c in node.children if c.key == key), None)
        if child is None:
            options = ", ".join(c.key for c in node.children) or "no child states"
            raise InvalidDefinition(
                f"{where}: target {ref!r} not found: state {node.id!r} has no child "
                f"{key!r} (it has: {options})"
            )
        node = child
    return node


def _orthogonal(first: StateNode, second: StateNode) -> bool:
    if first is second or first.is_descendant_of(second) or second.is_descendant_of(first):
        return False
    common = first.parent
    while common is not None and not second.is_descendant_of(common):
        common = common.parent
    return common is not None and common.kind == "parallel"
