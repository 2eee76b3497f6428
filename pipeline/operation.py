"""Atomic update operations on a JSON value: parsed once, applied in order, all or nothing.

An update is a list of operations, each a JSON object with ``op`` and a ``path`` (a
dotted string, ``"profile.name"``, or a list of field names, ``["profile", "name"]``
for names holding a dot; ``""`` or ``[]`` is the value itself):

- ``{"op": "set", "path": p, "value": v}``: set the field (missing objects on the
  way are created);
- ``{"op": "remove", "path": p}``: remove the field (a missing one: nothing to do);
- ``{"op": "increment", "path": p, "by": n}`` / ``"decrement"``: add / subtract a
  number (``by`` defaults to 1; a missing field counts as 0);
- ``{"op": "append", "path": p, "value": v}``: append to a list (a missing one is
  created);
- ``{"op": "remove_item", "path": p, "value": v}``: remove every item equal to ``v``
  from a list;
- ``{"op": "merge", "path": p, "value": {...}}``: copy an object's fields into the
  object at ``p`` (shallow: each given field replaces the one there);
- ``{"op": "set_if_absent", "path": p, "value": v}``: set the field only if it is
  missing (a field holding null is present).

:func:`parse_operations` checks the shape (and is what the client runs before it
sends); :func:`apply_operations` applies them to a copy and returns it, or raises
:class:`~pipeline.errors.InvalidOperation` saying which operation failed and what to
fix, leaving the input untouched. Pure: no clock, no I/O.

Example::

    ops = parse_operations([{"op": "increment", "path": "logins"},
                            {"op": "append", "path": "tags", "value": "beta"}])
    apply_operations({"logins": 1}, ops)  # {"logins": 2, "tags": ["beta"]}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import orjson

from pipeline.errors import InvalidOperation

__all__ = [
    "MAX_OPERATIONS",
    "MISSING",
    "OPERATIONS",
    "Operation",
    "apply_operations",
    "parse_operations",
    "parse_path",
]

MAX_OPERATIONS = 1000


class _Missing:
    """The value of a key that does not exist yet (not null: null is a value)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""What :func:`apply_operations` starts from for a key that does not exist."""

# op name -> (required fields, optional fields) besides "op" and "path"
_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "set": (frozenset({"value"}), frozenset()),
    "remove": (frozenset(), frozenset()),
    "increment": (frozenset(), frozenset({"by"})),
    "decrement": (frozenset(), frozenset({"by"})),
    "append": (frozenset({"value"}), frozenset()),
    "remove_item": (frozenset({"value"}), frozenset()),
    "merge": (frozenset({"value"}), frozenset()),
    "set_if_absent": (frozenset({"value"}), frozenset()),
}
OPERATIONS: tuple[str, ...] = tuple(_FIELDS)
"""The operation names, in the order the docs list them."""

_INT64 = (-(2**63), 2**63 - 1)

Path = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Operation:
    """One parsed operation: ``op`` on the field at ``path`` with ``value`` (or ``by``)."""

    op: str
    path: Path
    value: Any = None
    by: int | float = 1

    def describe(self) -> str:
        """``increment at 'profile.age'``: how error messages name it."""
        return f"{self.op} at {_show(self.path)}"


def _show(path: Path) -> str:
    return "the value itself" if not path else repr(".".join(path))


def parse_path(raw: object, where: str = "path") -> Path:
    """``"a.b"`` or ``["a", "b"]`` as a path; ``""`` / ``[]`` is the value itself."""
    if isinstance(raw, str):
        parts = raw.split(".") if raw else []
    elif isinstance(raw, list | tuple):
        parts = list(raw)
    else:
        raise InvalidOperation(
            f"{where} must be a dotted string or a list of field names, got {type(raw).__name__}"
        )
    for part in parts:
        if not isinstance(part, str) or not part:
            raise InvalidOperation(
                f"{where} {raw!r} has an empty or non-string field name; write 'a.b' or "
                "['a', 'b'] (fields of objects only: lists are not indexed)"
            )
    return tuple(parts)


def _number(raw: object, where: str) -> int | float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise InvalidOperation(f"{where} must be a number, got {raw!r}")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise InvalidOperation(f"{where} must be a finite number, got {raw!r}")
    return raw


def parse_operations(raw: object) -> tuple[Operation, ...]:
    """Check a list of operations (JSON as sent) and parse it; raises
    :class:`InvalidOperation` naming the first operation that is wrong and how."""
    if not isinstance(raw, list | tuple):
        raise InvalidOperation(
            f"an update takes a list of operations, got {type(raw).__name__}; e.g. "
            '[{"op": "set", "path": "name", "value": "ann"}]'
        )
    if not raw:
        raise InvalidOperation("an update needs at least one operation")
    if len(raw) > MAX_OPERATIONS:
        raise InvalidOperation(
            f"an update takes at most {MAX_OPERATIONS} operations, got {len(raw)}"
        )
    return tuple(_parse_one(item, i + 1) for i, item in enumerate(raw))


def _parse_one(item: object, n: int) -> Operation:
    where = f"operation {n}"
    if not isinstance(item, dict):
        raise InvalidOperation(f"{where} must be an object with 'op', got {item!r}")
    name = item.get("op")
    if name not in _FIELDS:
        known = ", ".join(OPERATIONS)
        raise InvalidOperation(f"{where} has unknown op {name!r}; known: {known}")
    required, optional = _FIELDS[name]
    given = set(item) - {"op", "path"}
    if missing := required - given:
        raise InvalidOperation(f"{where} ({name}) needs {', '.join(sorted(missing))}")
    if extra := given - required - optional:
        allowed = ", ".join(sorted({"op", "path", *required, *optional}))
        raise InvalidOperation(
            f"{where} ({name}) does not take {', '.join(sorted(extra))}; it takes {allowed}"
        )
    path = parse_path(item.get("path", ""), f"{where}'s path")
    value = item.get("value")
    if name == "remove" and not path:
        raise InvalidOperation(f"{where} (remove) needs a path; to remove the key, delete it")
    if name == "merge" and not isinstance(value, dict):
        raise InvalidOperation(
            f"{where} (merge) needs an object as value, got {type(value).__name__}"
        )
    by = _number(item.get("by", 1), f"{where}'s by")
    return Operation(name, path, value, by)


def apply_operations(value: Any, operations: tuple[Operation, ...]) -> Any:
    """The value after every operation, in order (``value`` may be :data:`MISSING`).
    Works on a copy: if one fails, :class:`InvalidOperation` says which, and ``value``
    is as it was (so the update is all or nothing)."""
    current: Any = MISSING if value is MISSING else _copy(value)
    for n, op in enumerate(operations, 1):
        try:
            current = _apply(current, op)
        except InvalidOperation as exc:
            raise InvalidOperation(
                f"operation {n} ({op.describe()}): {exc.reason}; nothing was changed"
            ) from None
    return current


def _copy(value: Any) -> Any:
    try:
        return orjson.loads(orjson.dumps(value))
    except TypeError as exc:  # orjson.JSONEncodeError: only a value that was never stored
        raise InvalidOperation(f"the value is not JSON: {exc}") from None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _apply(root: Any, op: Operation) -> Any:
    if not op.path:
        return _change(root, op, "the value")
    if root is MISSING:
        if op.op in ("remove", "remove_item"):
            return root
        root = {}
    parent = root
    for i, name in enumerate(op.path[:-1]):
        if not isinstance(parent, dict):
            raise InvalidOperation(_not_object(op.path[:i], parent))
        child = parent.get(name, MISSING)
        if child is MISSING:
            if op.op in ("remove", "remove_item"):
                return root  # nothing there to remove
            child = parent[name] = {}
        parent = child
    if not isinstance(parent, dict):
        raise InvalidOperation(_not_object(op.path[:-1], parent))
    last = op.path[-1]
    new = _change(parent.get(last, MISSING), op, _show(op.path))
    if new is MISSING:
        parent.pop(last, None)
    else:
        parent[last] = new
    return root


def _not_object(path: Path, found: Any) -> str:
    where = "the value" if not path else repr(".".join(path))
    return (
        f"{where} is {_kind(found)}, not an object, so the path cannot go into it; "
        "set it to an object first, or use a shorter path"
    )


def _change(current: Any, op: Operation, where: str) -> Any:
    """The new value of one field (MISSING: remove it). What an operation puts in is a
    copy of its value, so a later operation of the same update changing it in place
    changes neither the operation nor another place it was put."""
    name = op.op
    if name == "set":
        return _copy(op.value)
    if name == "set_if_absent":
        return _copy(op.value) if current is MISSING else current
    if name == "remove":
        return MISSING
    if name in ("increment", "decrement"):
        base = 0 if current is MISSING else current
        if isinstance(base, bool) or not isinstance(base, int | float):
            raise InvalidOperation(
                f"{where} is {_kind(base)} ({base!r}), not a number; {name} only numbers, "
                "or set the field to a number first"
            )
        result = base + op.by if name == "increment" else base - op.by
        if isinstance(result, int) and not _INT64[0] <= result <= _INT64[1]:
            raise InvalidOperation(f"{where} would leave the 64-bit integer range")
        if isinstance(result, float) and not math.isfinite(result):
            raise InvalidOperation(f"{where} would not be a finite number")
        return result
    if name in ("append", "remove_item"):
        if current is MISSING:
            return [_copy(op.value)] if name == "append" else MISSING
        if not isinstance(current, list):
            raise InvalidOperation(
                f"{where} is {_kind(current)}, not a list; {name} works on lists only"
            )
        if name == "append":
            return [*current, _copy(op.value)]
        return [item for item in current if not _same(item, op.value)]
    assert name == "merge", name
    if current is MISSING:
        return _copy(op.value)
    if not isinstance(current, dict):
        raise InvalidOperation(
            f"{where} is {_kind(current)}, not an object; merge works on objects only"
        )
    return {**current, **_copy(op.value)}


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 equals 1.0, but true is not 1 (as Python's == would have it)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)
