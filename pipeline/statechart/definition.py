"""Parse and validate a chart config (the xstate v5 dialect) into state nodes.

Every mistake raises :class:`InvalidDefinition` naming the state (by its id, e.g.
``'checkout.payment'``) and saying what to fix. Python configs may use functions where
xstate JSON uses names: as actions, guards, ``output`` and ``context``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pipeline.errors import InvalidDefinition
from pipeline.statechart.action import Call, action_ops, bind, constant
from pipeline.statechart.node import Delay, Guard, Kind, StateNode, Transition
from pipeline.statechart.target import resolve_targets
from pipeline.statechart.topology import link

__all__ = ["parse", "done_event_type", "after_event_type"]

_STATE_KEYS = frozenset(
    {
        "id",
        "type",
        "initial",
        "states",
        "on",
        "always",
        "after",
        "entry",
        "exit",
        "output",
        "onDone",
        "description",
        "meta",
        "tags",
    }
)
_ROOT_KEYS = _STATE_KEYS | {"context", "version"}
_TRANSITION_KEYS = frozenset({"target", "guard", "actions", "reenter", "description", "meta"})
_HINTS = {
    "invoke": "invoked actors are not supported; model the service as emitted events",
    "onError": "there are no invoked actors, so there is no error event to handle",
    "cond": "xstate v5 renamed 'cond' to 'guard'",
    "internal": "xstate v5 uses 'reenter' (false, i.e. internal, by default)",
    "history": "history states are not supported",
}
_TYPES = ("atomic", "compound", "parallel", "final")


def done_event_type(state_id: str) -> str:
    """The event raised when the compound or parallel state ``state_id`` completes."""
    return f"xstate.done.state.{state_id}"


def after_event_type(label: str, state_id: str) -> str:
    """The event a delayed transition of ``state_id`` waits for."""
    return f"xstate.after.{label}.{state_id}"


def _check_keys(config: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    for key in config:
        if key in allowed:
            continue
        hint = _HINTS.get(key, f"allowed keys: {', '.join(sorted(allowed))}")
        raise InvalidDefinition(f"{where}: unknown key {key!r}; {hint}")


class _Parser:
    def __init__(
        self,
        guards: Mapping[str, Callable[..., Any]],
        actions: Mapping[str, Any],
        delays: Mapping[str, int | Callable[..., Any]],
    ) -> None:
        self.guards = guards
        self.actions = actions
        self.delays = delays
        self.nodes: list[StateNode] = []
        self.configs: list[Mapping[str, Any]] = []
        self.by_id: dict[str, StateNode] = {}
        self.transitions: list[Transition] = []

    # -- pass 1: the tree ---------------------------------------------------------------

    def build(
        self, key: str, config: Any, parent: StateNode | None, path: tuple[str, ...]
    ) -> StateNode:
        path_id = ".".join(path)
        where = f"state {path_id!r}"
        if not isinstance(config, Mapping):
            raise InvalidDefinition(f"{where}: expected an object, got {config!r}")
        _check_keys(config, _ROOT_KEYS if parent is None else _STATE_KEYS, where)
        custom = config.get("id")
        if parent is not None and custom is not None:
            if not isinstance(custom, str) or not custom:
                raise InvalidDefinition(f"{where}: 'id' must be a non-empty string")
        state_id = custom if parent is not None and custom else path_id
        children = config.get("states") or {}
        if not isinstance(children, Mapping):
            raise InvalidDefinition(f"{where}: 'states' must be an object of child states")
        node = StateNode(
            key, state_id, self._kind(config, bool(children), where), parent, len(self.nodes)
        )
        if state_id in self.by_id:
            raise InvalidDefinition(
                f"{where}: id {state_id!r} is already used by another state; ids must be unique"
            )
        self.by_id[state_id] = node
        self.nodes.append(node)
        self.configs.append(config)
        for child_key, child_config in children.items():
            if (
                not isinstance(child_key, str)
                or not child_key
                or "." in child_key
                or child_key.startswith("#")
            ):
                raise InvalidDefinition(
                    f"{where}: child key {child_key!r} must be a non-empty name without "
                    "'.' and not starting with '#'"
                )
            node.children.append(self.build(child_key, child_config, node, (*path, child_key)))
        return node

    @staticmethod
    def _kind(config: Mapping[str, Any], has_children: bool, where: str) -> Kind:
        declared = config.get("type")
        if declared is not None and declared not in _TYPES:
            hint = _HINTS["history"] if declared == "history" else f"use one of {_TYPES}"
            raise InvalidDefinition(f"{where}: type {declared!r} is not supported; {hint}")
        if declared == "final" and has_children:
            raise InvalidDefinition(f"{where}: a final state cannot have child states")
        if declared == "parallel" and not has_children:
            raise InvalidDefinition(f"{where}: a parallel state needs child states (regions)")
        if declared == "atomic" and has_children:
            raise InvalidDefinition(f"{where}: an atomic state cannot have child states")
        if declared == "compound" and not has_children:
            raise InvalidDefinition(f"{where}: a compound state needs child states")
        if declared is None:
            return "compound" if has_children else "atomic"
        kind: Kind = declared
        return kind

    # -- pass 2: what each node does ----------------------------------------------------

    def complete(self, node: StateNode, config: Mapping[str, Any]) -> None:
        where = f"state {node.id!r}"
        self._initial(node, config, where)
        if node.kind == "final":
            for key in ("on", "always", "after", "onDone"):
                if config.get(key):
                    raise InvalidDefinition(
                        f"{where}: a final state cannot have '{key}'; nothing leaves a final state"
                    )
        if "output" in config and node.kind != "final" and node.parent is not None:
            raise InvalidDefinition(
                f"{where}: 'output' belongs on final states or the machine root"
            )
        node.entry = action_ops(config.get("entry"), self.actions, f"{where} entry")
        node.exit = action_ops(config.get("exit"), self.actions, f"{where} exit")
        on = config.get("on") or {}
        if not isinstance(on, Mapping):
            raise InvalidDefinition(f"{where}: 'on' must map event types to transitions")
        for event, spec in on.items():
            if not isinstance(event, str) or not event:
                raise InvalidDefinition(
                    f"{where}: event {event!r} in 'on' is empty; use 'always' for eventless"
                )
            if "*" in event:
                raise InvalidDefinition(
                    f"{where}: wildcard event {event!r} is not supported; list the types"
                )
            self._transitions(node, event, event, spec, where)
        if config.get("always") is not None:
            self._transitions(node, None, "always", config["always"], where)
        self._after(node, config.get("after"), where)
        if config.get("onDone") is not None:
            if node.kind not in ("compound", "parallel") or node.parent is None:
                raise InvalidDefinition(
                    f"{where}: 'onDone' only fires on a nested compound or parallel state; "
                    "the machine root finishing ends the machine (use 'output')"
                )
            self._transitions(node, done_event_type(node.id), "onDone", config["onDone"], where)

    def _initial(self, node: StateNode, config: Mapping[str, Any], where: str) -> None:
        initial = config.get("initial")
        if node.kind == "compound":
            names = ", ".join(child.key for child in node.children)
            if initial is None:
                raise InvalidDefinition(f"{where}: add 'initial', one of: {names}")
            found = next((c for c in node.children if c.key == initial), None)
            if found is None:
                raise InvalidDefinition(
                    f"{where}: initial {initial!r} is not a child state; use one of: {names}"
                )
            node.initial = found
        elif initial is not None:
            if node.kind == "parallel":
                raise InvalidDefinition(
                    f"{where}: a parallel state enters all its regions; remove 'initial'"
                )
            raise InvalidDefinition(
                f"{where}: 'initial' needs child states; remove it or add 'states'"
            )

    def _after(self, node: StateNode, after: Any, where: str) -> None:
        if after is None:
            return
        if not isinstance(after, Mapping):
            raise InvalidDefinition(f"{where}: 'after' must map delays to transitions")
        for raw_delay, spec in after.items():
            label = str(raw_delay)
            call: Call
            if (
                isinstance(raw_delay, int)
                and not isinstance(raw_delay, bool)
                and raw_delay >= 0
                or isinstance(raw_delay, str)
                and raw_delay.isdigit()
            ):
                call = constant(int(label))
            elif isinstance(raw_delay, str) and raw_delay in self.delays:
                impl = self.delays[raw_delay]
                call = (
                    constant(impl)
                    if isinstance(impl, int)
                    else bind(impl, None, f"{where}: delay {raw_delay!r}")
                )
            else:
                raise InvalidDefinition(
                    f"{where}: after key {raw_delay!r} is neither a whole number of "
                    "milliseconds nor a name in delays=; use e.g. '5000' or pass "
                    f"delays={{{label!r}: ms or fn(context, event)}}"
                )
            event = after_event_type(label, node.id)
            node.delays.append(Delay(f"{node.id}#after{label}", event, label, call))
            self._transitions(node, event, f"after {_human(label)}", spec, where)

    def _transitions(
        self, node: StateNode, event: str | None, label: str, spec: Any, where: str
    ) -> None:
        items = spec if isinstance(spec, list | tuple) else [spec]
        for item in items:
            if item is None or isinstance(item, str):
                item = {"target": item}
            if not isinstance(item, Mapping):
                raise InvalidDefinition(
                    f"{where}: transition on {label!r} must be a target string or an object"
                )
            at = f"{where} transition on {label!r}"
            _check_keys(item, _TRANSITION_KEYS, at)
            reenter = item.get("reenter", False)
            if not isinstance(reenter, bool):
                raise InvalidDefinition(f"{at}: 'reenter' must be true or false")
            transition = Transition(
                source=node,
                event=event,
                label=label,
                targets=resolve_targets(node, item.get("target"), self.by_id, at),
                guard=self._guard(item.get("guard"), at),
                actions=action_ops(item.get("actions"), self.actions, at),
                reenter=reenter,
                index=len(self.transitions),
            )
            self.transitions.append(transition)
            if event is None:
                node.always.append(transition)
            else:
                node.on.setdefault(event, []).append(transition)

    def _guard(self, spec: Any, where: str) -> Guard | None:
        if spec is None:
            return None
        params: Any = None
        if isinstance(spec, Mapping):
            if "type" not in spec or set(spec) - {"type", "params"}:
                raise InvalidDefinition(
                    f"{where}: guard {dict(spec)!r} must be {{'type': name, 'params': ...}}"
                )
            spec, params = spec["type"], spec.get("params")
        if isinstance(spec, str):
            if spec not in self.guards:
                raise InvalidDefinition(
                    f"{where}: guard {spec!r} has no implementation; pass "
                    f"guards={{{spec!r}: fn(context, event)}} "
                    f"(known: {sorted(self.guards) or 'none'})"
                )
            return Guard(bind(self.guards[spec], params, f"{where}: guard {spec!r}"), spec)
        if callable(spec):
            name = getattr(spec, "__name__", "guard")
            return Guard(bind(spec, params, f"{where}: guard {name!r}"), name)
        raise InvalidDefinition(f"{where}: guard {spec!r} is not a name, object or function")


def _human(label: str) -> str:
    if label.isdigit():
        ms = int(label)
        return f"{ms // 1000}s" if ms and ms % 1000 == 0 else f"{ms}ms"
    return label


def parse(
    config: Mapping[str, Any],
    *,
    machine_id: str,
    guards: Mapping[str, Callable[..., Any]],
    actions: Mapping[str, Any],
    delays: Mapping[str, int | Callable[..., Any]],
    outputs: Mapping[str, Callable[..., Any]],
) -> tuple[StateNode, list[StateNode], list[Transition]]:
    """Build the node tree; returns the root, all nodes and all transitions (in order).

    ``outputs`` maps a final state's id (or the machine id) to an output function,
    for charts whose config (JSON) cannot hold one.
    """
    parser = _Parser(guards, actions, delays)
    root = parser.build(machine_id, config, None, (machine_id,))
    if root.kind == "final":
        raise InvalidDefinition(f"state {machine_id!r}: the machine root cannot be final")
    link(root)  # target checks need ancestors
    for node, node_config in zip(parser.nodes, parser.configs, strict=True):
        parser.complete(node, node_config)
        node.output = _output(node, node_config, outputs.get(node.id))
    for state_id in outputs:
        known = parser.by_id.get(state_id)
        if known is None or (known.kind != "final" and known is not root):
            raise InvalidDefinition(
                f"outputs= names {state_id!r}, which is not a final state or the machine id; "
                f"final states: {[n.id for n in parser.nodes if n.kind == 'final']}"
            )
    return root, parser.nodes, parser.transitions


def _output(
    node: StateNode, config: Mapping[str, Any], fn: Callable[..., Any] | None
) -> Call | None:
    where = f"state {node.id!r}"
    if fn is not None:
        if "output" in config:
            raise InvalidDefinition(
                f"{where}: output is given both in the config and in outputs=; keep one"
            )
        return bind(fn, None, f"{where}: output")
    if "output" not in config:
        return None
    value = config["output"]
    if callable(value):
        return bind(value, None, f"{where}: output")
    return constant(value)
