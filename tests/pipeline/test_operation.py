"""Update operations, purely: each operation, each mistake's message, and the invariants
(an update is all or nothing, and never touches its input) as properties."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import InvalidOperation
from pipeline.operation import (
    MISSING,
    OPERATIONS,
    Operation,
    apply_operations,
    parse_operations,
    parse_path,
)


def run(value: Any, *ops: dict[str, Any]) -> Any:
    return apply_operations(value, parse_operations(list(ops)))


def test_each_operation_does_what_it_says() -> None:
    start = {"name": "ann", "logins": 1, "tags": ["a", "b", "a"], "prefs": {"theme": "dark"}}
    assert run(start, {"op": "set", "path": "name", "value": "bob"})["name"] == "bob"
    assert "name" not in run(start, {"op": "remove", "path": "name"})
    assert run(start, {"op": "increment", "path": "logins"})["logins"] == 2
    assert run(start, {"op": "increment", "path": "logins", "by": 2.5})["logins"] == 3.5
    assert run(start, {"op": "decrement", "path": "logins", "by": 3})["logins"] == -2
    assert run(start, {"op": "append", "path": "tags", "value": "c"})["tags"] == [
        "a",
        "b",
        "a",
        "c",
    ]
    assert run(start, {"op": "remove_item", "path": "tags", "value": "a"})["tags"] == ["b"]
    assert run(start, {"op": "merge", "path": "prefs", "value": {"lang": "nb"}})["prefs"] == {
        "theme": "dark",
        "lang": "nb",
    }
    assert run(start, {"op": "set_if_absent", "path": "name", "value": "x"})["name"] == "ann"
    assert run(start, {"op": "set_if_absent", "path": "email", "value": "x"})["email"] == "x"


def test_missing_fields_and_keys_are_made_as_the_operation_needs() -> None:
    assert run(MISSING, {"op": "increment"}) == 1
    assert run(MISSING, {"op": "append", "value": 1}) == [1]
    assert run(MISSING, {"op": "merge", "value": {"a": 1}}) == {"a": 1}
    assert run(MISSING, {"op": "set", "path": "a.b.c", "value": 1}) == {"a": {"b": {"c": 1}}}
    assert run({}, {"op": "increment", "path": "stats.visits"}) == {"stats": {"visits": 1}}
    assert run(MISSING, {"op": "remove", "path": "a"}) is MISSING
    assert run({"a": 1}, {"op": "remove", "path": "x.y"}) == {"a": 1}
    assert run({"a": 1}, {"op": "remove_item", "path": "l", "value": 1}) == {"a": 1}


def test_operations_apply_in_order_in_one_step() -> None:
    out = run(
        {"n": 1},
        {"op": "set", "path": "n", "value": 10},
        {"op": "increment", "path": "n"},
        {"op": "append", "path": "log", "value": "x"},
        {"op": "set", "path": ["dotted.name"], "value": True},
    )
    assert out == {"n": 11, "log": ["x"], "dotted.name": True}


def test_remove_item_compares_as_json_does() -> None:
    value = {"l": [1, 1.0, True, "1", {"a": [1]}, None]}
    assert run(value, {"op": "remove_item", "path": "l", "value": 1})["l"] == [
        True,
        "1",
        {"a": [1]},
        None,
    ]
    assert run(value, {"op": "remove_item", "path": "l", "value": True})["l"] == [
        1,
        1.0,
        "1",
        {"a": [1]},
        None,
    ]
    assert run(value, {"op": "remove_item", "path": "l", "value": {"a": [1.0]}})["l"] == [
        1,
        1.0,
        True,
        "1",
        None,
    ]


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ({"op": "set"}, "operation 1 (set) needs value"),
        ({"op": "upsert", "path": "a"}, "unknown op 'upsert'; known: set, remove, increment"),
        ({"path": "a"}, "unknown op None"),
        ({"op": "increment", "by": "2"}, "operation 1's by must be a number, got '2'"),
        ({"op": "increment", "by": True}, "must be a number, got True"),
        ({"op": "increment", "by": float("nan")}, "must be a finite number"),
        ({"op": "set", "value": 1, "vlaue": 2}, "does not take vlaue; it takes op, path, value"),
        ({"op": "remove"}, "remove) needs a path; to remove the key, delete it"),
        ({"op": "merge", "value": [1]}, "merge) needs an object as value, got list"),
        ({"op": "set", "path": "a..b", "value": 1}, "empty or non-string field name"),
        ({"op": "set", "path": 3, "value": 1}, "must be a dotted string or a list of field names"),
        ("set", "must be an object with 'op'"),
    ],
)
def test_malformed_operations_say_what_to_fix(raw: Any, text: str) -> None:
    with pytest.raises(InvalidOperation, match=None) as err:
        parse_operations([raw])
    assert text in err.value.reason
    assert err.value.stage == "operation"


def test_an_update_is_a_non_empty_list() -> None:
    for raw, text in (({"op": "set"}, "takes a list of operations, got dict"), ([], "at least")):
        with pytest.raises(InvalidOperation) as err:
            parse_operations(raw)
        assert text in err.value.reason


@pytest.mark.parametrize(
    ("value", "op", "text"),
    [
        (
            {"age": "ten"},
            {"op": "increment", "path": "age"},
            "operation 2 (increment at 'age'): 'age' is a string ('ten'), not a number",
        ),
        (
            {"profile": [1]},
            {"op": "set", "path": "profile.name", "value": 1},
            "'profile' is a list, not an object, so the path cannot go into it",
        ),
        (
            {"profile": None},
            {"op": "set", "path": "profile.name", "value": 1},
            "'profile' is null, not an object",
        ),
        (5, {"op": "set", "path": "a", "value": 1}, "the value is a number, not an object"),
        ({"tags": "a"}, {"op": "append", "path": "tags", "value": 1}, "not a list; append"),
        ({"p": 1}, {"op": "merge", "path": "p", "value": {}}, "not an object; merge"),
        (
            {"n": 2**63 - 1},
            {"op": "increment", "path": "n"},
            "would leave the 64-bit integer range",
        ),
        ({"f": 1e308}, {"op": "increment", "path": "f", "by": 1e308}, "not be a finite number"),
    ],
)
def test_an_operation_that_cannot_apply_names_itself_and_the_fix(
    value: Any, op: dict[str, Any], text: str
) -> None:
    before = copy.deepcopy(value)
    with pytest.raises(InvalidOperation) as err:
        run(value, {"op": "set", "path": "ok", "value": 1} if isinstance(value, dict) else op, op)
    assert text in err.value.reason
    assert "nothing was changed" in err.value.reason
    assert value == before


def test_paths_parse_from_text_or_lists() -> None:
    assert parse_path("a.b") == ("a", "b")
    assert parse_path("") == ()
    assert parse_path(["a.b", "c"]) == ("a.b", "c")
    assert Operation("set", ("a", "b")).describe() == "set at 'a.b'"
    assert set(OPERATIONS) == {
        "set",
        "remove",
        "increment",
        "decrement",
        "append",
        "remove_item",
        "merge",
        "set_if_absent",
    }


# -- properties ---------------------------------------------------------------------------

json_leaf = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=3)
json_value = st.recursive(
    json_leaf,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.sampled_from("abc"), kids),
    max_leaves=8,
)
path = st.lists(st.sampled_from("abc"), max_size=3)


@st.composite
def operation(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(OPERATIONS))
    out: dict[str, Any] = {"op": op, "path": draw(path if op != "remove" else path.filter(bool))}
    if op in ("increment", "decrement"):
        out["by"] = draw(st.integers(-5, 5))
    elif op == "merge":
        out["value"] = draw(st.dictionaries(st.sampled_from("abc"), json_value, max_size=2))
    elif op != "remove":
        out["value"] = draw(json_value)
    return out


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from("abc"), json_value), st.lists(operation(), min_size=1))
def test_an_update_is_all_or_nothing_and_never_touches_its_input(
    value: dict[str, Any], ops: list[dict[str, Any]]
) -> None:
    before = orjson.dumps(value)
    parsed = parse_operations(ops)
    try:
        out = apply_operations(value, parsed)
    except InvalidOperation:
        out = None
        # All or nothing: applied one at a time, some operation fails too.
        stepwise: Any = value
        failed = False
        for op in parsed:
            try:
                stepwise = apply_operations(stepwise, (op,))
            except InvalidOperation:
                failed = True
                break
        assert failed
    else:
        # The same as one operation after the other.
        stepwise = value
        for op in parsed:
            stepwise = apply_operations(stepwise, (op,))
        assert orjson.dumps(out) == orjson.dumps(stepwise)
        orjson.dumps(out)  # still JSON
    assert orjson.dumps(value) == before


def test_a_value_put_in_is_a_copy_that_later_operations_cannot_reach_back_through() -> None:
    # Found by the property above: a set's value, changed in place by a later increment.
    ops = parse_operations(
        [
            {"op": "set", "value": {}},
            {"op": "increment", "path": "a"},
            {"op": "append", "path": "l", "value": {"x": 1}},
            {"op": "set", "path": "l2", "value": [{"x": 1}]},
        ]
    )
    first = apply_operations({}, ops)
    assert apply_operations({}, ops) == first == {"a": 1, "l": [{"x": 1}], "l2": [{"x": 1}]}
    assert ops[0].value == {}
