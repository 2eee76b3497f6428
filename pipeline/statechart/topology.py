"""Structure computed once per chart: ancestry, transition domains, exit scopes and entry
sets (xstate v5's ``getTransitionDomain`` / ``computeEntrySet``, without history), and
the mapping between a set of active states and its xstate state value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.errors import InvalidState
from pipeline.statechart.node import StateNode, Transition

__all__ = [
    "StateValue",
    "link",
    "prepare",
    "initial_states",
    "in_final_state",
    "encode_value",
    "decode_value",
]

StateValue = str | dict[str, Any]


def link(root: StateNode) -> None:
    """Fill in ancestors and descendant index sets for the whole tree."""

    def visit(node: StateNode, ancestors: tuple[StateNode, ...]) -> frozenset[int]:
        node.ancestors = ancestors
        node.ancestor_indices = frozenset(a.index for a in ancestors)
        below: set[int] = set()
        for child in node.children:
            below.add(child.index)
            below |= visit(child, (node, *ancestors))
        node.descendant_indices = frozenset(below)
        return node.descendant_indices

    visit(root, ())


def _proper_ancestors(node: StateNode, upto: StateNode | None) -> list[StateNode]:
    found: list[StateNode] = []
    current = node.parent
    while current is not None and current is not upto:
        found.append(current)
        current = current.parent
    return found


def _domain(transition: Transition, root: StateNode) -> StateNode | None:
    source, targets = transition.source, transition.targets
    if not transition.reenter and all(t is source or t.is_descendant_of(source) for t in targets):
        return source
    head, *tail = (*targets, source)
    for ancestor in _proper_ancestors(head, None):
        if all(other.is_descendant_of(ancestor) for other in tail):
            return ancestor
    # No common proper ancestor: the root is involved. Re-entering leaves even the root.
    return None if transition.reenter else root


def _has_descendant_in(states: set[StateNode], node: StateNode) -> bool:
    return any(s.is_descendant_of(node) for s in states)


def _add_descendants(node: StateNode, to_enter: set[StateNode]) -> None:
    if node.kind == "compound":
        assert node.initial is not None
        to_enter.add(node.initial)
        _add_descendants(node.initial, to_enter)
    elif node.kind == "parallel":
        for region in node.children:
            if not _has_descendant_in(to_enter, region):
                to_enter.add(region)
                _add_descendants(region, to_enter)


def _add_ancestors(
    to_enter: set[StateNode], ancestors: list[StateNode], reentry: StateNode | None
) -> None:
    for ancestor in ancestors:
        if reentry is None or ancestor.is_descendant_of(reentry):
            to_enter.add(ancestor)
        if ancestor.kind == "parallel":
            for region in ancestor.children:
                if not _has_descendant_in(to_enter, region):
                    to_enter.add(region)
                    _add_descendants(region, to_enter)


def _entry(transition: Transition, domain: StateNode | None) -> frozenset[int]:
    source = transition.source
    to_enter: set[StateNode] = set()
    for target in transition.targets:
        # A non-reentering transition to its own source enters only what lies below it.
        if target is not source or source is not domain or transition.reenter:
            to_enter.add(target)
        _add_descendants(target, to_enter)
    for target in transition.targets:
        ancestors = _proper_ancestors(target, domain)
        if domain is not None and domain.kind == "parallel":
            ancestors.append(domain)
        reentry = None if source.parent is None and transition.reenter else domain
        _add_ancestors(to_enter, ancestors, reentry)
    return frozenset(s.index for s in to_enter)


def prepare(root: StateNode, transitions: list[Transition]) -> None:
    """Compute each transition's domain, exit scope and entry set."""
    everything = frozenset(root.descendant_indices | {root.index})
    for transition in transitions:
        if not transition.targets:
            continue  # targetless: actions only, nothing exited or entered
        domain = _domain(transition, root)
        transition.domain = domain
        transition.scope = everything if domain is None else domain.descendant_indices
        transition.entry = _entry(transition, domain)


def initial_states(root: StateNode) -> frozenset[int]:
    """The states entered on start: the root and its default descendants."""
    to_enter = {root}
    _add_descendants(root, to_enter)
    return frozenset(s.index for s in to_enter)


def in_final_state(node: StateNode, active: set[int] | frozenset[int]) -> bool:
    """Whether ``node`` has completed, given the active state indices."""
    if node.kind == "compound":
        return any(c.kind == "final" and c.index in active for c in node.children)
    if node.kind == "parallel":
        return all(in_final_state(c, active) for c in node.children)
    return node.kind == "final"


def encode_value(node: StateNode, active: frozenset[int]) -> StateValue:
    """The xstate state value of ``node`` given the active state indices."""
    if node.kind == "compound":
        child = next(c for c in node.children if c.index in active)
        if child.kind in ("atomic", "final"):
            return child.key
        return {child.key: encode_value(child, active)}
    return {c.key: encode_value(c, active) for c in node.children}


def decode_value(root: StateNode, value: Any) -> frozenset[int]:
    """The active state indices for a state value; raises InvalidState if it does not fit."""
    active: set[int] = {root.index}

    def visit(node: StateNode, part: Any) -> None:
        if node.kind == "compound":
            if isinstance(part, str):
                key, rest = part, None
            elif isinstance(part, Mapping) and len(part) == 1:
                key, rest = next(iter(part.items()))
            else:
                raise _misfit(node, part)
            child = next((c for c in node.children if c.key == key), None)
            if child is None:
                raise _misfit(node, part)
            leaf = child.kind in ("atomic", "final")
            if leaf != (rest is None):
                raise _misfit(node, part)
            active.add(child.index)
            if rest is not None:
                visit(child, rest)
        elif node.kind == "parallel":
            if not isinstance(part, Mapping) or set(part) != {c.key for c in node.children}:
                raise _misfit(node, part)
            for child in node.children:
                active.add(child.index)
                visit(child, part[child.key])
        elif part != {}:
            raise _misfit(node, part)

    visit(root, value)
    return frozenset(active)


def _misfit(node: StateNode, part: Any) -> InvalidState:
    options = ", ".join(c.key for c in node.children) or "none"
    return InvalidState(
        f"snapshot value {part!r} does not fit state {node.id!r} ({node.kind}; children: {options})"
    )
