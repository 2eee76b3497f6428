"""Named queries and computed values, purely: answered from the stored record, checked
against their models, with errors that say what to fix; the record's bytes never
change."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from pipeline import ChartMachine, Contract, InvalidDefinition, Machine, Registry, step
from pipeline.query import InvalidQuery, QueryFailed, UnknownQuery, answer, computed_of
from pipeline.record import Record, dump_record
from pipeline.statechart import Chart
from tests.pipeline.shop import shop_registry
from tests.samples import event

REGISTRY = shop_registry()


def _order() -> Record:
    out = step(
        REGISTRY, None, event("order.placed", {"sku": "a", "qty": 3, "price": 5}, machine="order")
    )
    assert out.record is not None
    return out.record


def test_a_query_answers_from_the_record_and_never_changes_it() -> None:
    record = _order()
    before = dump_record(record)
    got = answer(REGISTRY, "order", record, "summary", {})
    assert got.result == {"sku": "a", "status": "accepted", "total": 0}
    assert (got.seq, got.version) == (1, 1)
    assert answer(REGISTRY, "order", record, "scaled", {"times": "3"}).result == {"total": 45}
    assert answer(REGISTRY, "order", record, "scaled", {}).result == {"total": 15}
    assert answer(REGISTRY, "order", record, "raw", {"k": "v", "l": ["1", "2"]}).result == {
        "k": "v",
        "l": ["1", "2"],
    }
    assert answer(REGISTRY, "order", record, "total", {}).result == 15  # a computed, by name
    assert computed_of(REGISTRY, "order", record) == ({"total": 15}, {})
    # The summary query sets status on its copy: the record's bytes are as they were.
    assert dump_record(record) == before
    assert record.state["status"] == "refused"


def test_bad_parameters_and_unknown_names_say_what_to_fix() -> None:
    record = _order()
    for name, params, error, text in (
        ("scaled", {"times": "x"}, InvalidQuery, "parameters of query 'scaled' do not fit Page"),
        ("scaled", {"times": "11"}, InvalidQuery, "times: Input should be less than or equal"),
        ("scaled", {"nope": "1"}, InvalidQuery, "nope: Extra inputs are not permitted"),
        ("summary", {"x": "1"}, InvalidQuery, "takes no parameters; remove x"),
        ("total", {"x": "1"}, InvalidQuery, "computed value 'total' takes no parameters"),
        ("ghost", {}, UnknownQuery, "has no query 'ghost'; it has: raw, scaled, summary, total"),
    ):
        with pytest.raises(error, match=text):
            answer(REGISTRY, "order", record, name, params)
    with pytest.raises(UnknownQuery, match="no machine named 'ghost'"):
        answer(REGISTRY, "ghost", record, "summary", {})
    assert (InvalidQuery.status, UnknownQuery.status, QueryFailed.status) == (400, 404, 500)


class Out(BaseModel):
    n: int


def _failing() -> tuple[Registry, Record]:
    m = Machine("f", initial={"n": 1})

    @m.on("f.go")
    def go(config: None, state: dict[str, Any], event: Any) -> dict[str, Any]:
        return state

    @m.query("boom")
    def boom(config: None, state: dict[str, Any]) -> Any:
        raise RuntimeError("no")

    @m.query("odd")
    def odd(config: None, state: dict[str, Any]) -> Any:
        return {1, 2}

    @m.query("wrong", result=Out)
    def wrong(config: None, state: dict[str, Any]) -> Any:
        return {"n": "x"}

    @m.computed("half")
    def half(config: None, state: dict[str, Any]) -> Any:
        return state["n"] / 0

    @m.computed("n")
    def n(config: None, state: dict[str, Any]) -> Any:
        return state["n"]

    registry = Registry([m])
    out = step(registry, None, event("f.go", None, machine="f"))
    assert out.record is not None
    return registry, out.record


def test_a_failing_query_or_computed_value_is_reported_not_raised_through() -> None:
    registry, record = _failing()
    for name, text in (
        ("boom", "query 'boom' raised RuntimeError: no"),
        ("odd", "query 'odd' answered what is not JSON"),
        ("wrong", "query 'wrong' answered what does not fit Out: n: Input should be"),
        ("half", "computed 'half' raised ZeroDivisionError"),
    ):
        with pytest.raises(QueryFailed, match=text):
            answer(registry, "f", record, name, {})
    values, errors = computed_of(registry, "f", record) or ({}, {})
    assert values == {"n": 1}
    assert list(errors) == ["half"]


def test_a_stored_state_the_model_refuses_fails_the_query_clearly() -> None:
    record = _order()._replace(state={"qty": "many"})
    with pytest.raises(QueryFailed, match="stored state of machine 'order' v1 does not fit Order"):
        answer(REGISTRY, "order", record, "summary", {})


def test_queries_are_checked_when_declared() -> None:
    m = Machine("m")

    @m.query("q")
    def q(config: None, state: Any) -> Any:
        return 1

    with pytest.raises(InvalidDefinition, match="already has a query or computed value named 'q'"):
        m.computed("q")
    with pytest.raises(InvalidDefinition, match=r"must take \(config, state\)"):
        m.query("r")(lambda state: 1)
    with pytest.raises(InvalidDefinition, match="declares params= but takes"):
        m.query("s", params=Out)(lambda config, state: 1)
    with pytest.raises(InvalidDefinition, match=r"computed 'c' must take \(config, state\)"):
        m.computed("c")(lambda config, state, extra: 1)


def test_a_chart_machines_query_and_computed_value_get_the_snapshot() -> None:
    chart = Chart(
        {"id": "door", "initial": "shut", "states": {"shut": {"on": {"open": "ajar"}}, "ajar": {}}}
    )
    door = ChartMachine(
        chart, Contract(init="door.make", accepts={"door.make": None, "open": None})
    )

    @door.query("where")
    def where(snapshot: dict[str, Any]) -> Any:
        return snapshot["value"]

    @door.computed("shut")
    def shut(snapshot: dict[str, Any]) -> bool:
        return bool(snapshot["value"] == "shut")

    registry = Registry([door])
    out = step(registry, None, event("door.make", None, machine="door"))
    assert out.record is not None
    assert answer(registry, "door", out.record, "where", {}).result == "shut"
    assert computed_of(registry, "door", out.record) == ({"shut": True}, {})
    with pytest.raises(InvalidDefinition, match=r"must take \(snapshot\) or \(snapshot, params\)"):
        door.query("x")(lambda a, b, c: 1)
