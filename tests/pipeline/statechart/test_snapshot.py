"""Snapshots are plain JSON: they round-trip, and malformed ones are refused."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.errors import InvalidState
from pipeline.statechart import Chart
from tests.pipeline.statechart.charts import parallel


def test_nested_snapshot_round_trips_through_json_and_keeps_working() -> None:
    chart = parallel()
    step = chart.transition(chart.start().snapshot, "E", None)
    restored = orjson.loads(orjson.dumps(step.snapshot))
    assert restored == step.snapshot
    again = chart.transition(restored, "E", None)
    assert again.snapshot["value"] == {"p": {"r1": "a", "r2": "c"}}


def test_parallel_value_with_keys_in_another_order_is_the_same_configuration() -> None:
    chart = parallel()
    step = chart.transition(chart.start().snapshot, "E", None)
    shuffled = {**step.snapshot, "value": {"p": {"r2": "d", "r1": "b"}}}
    assert chart.transition(shuffled, "E", None).snapshot["value"] == {"p": {"r1": "a", "r2": "c"}}


def test_returned_state_values_are_fresh_objects() -> None:
    chart = parallel()
    first = chart.start().snapshot
    first["value"]["p"]["r1"] = "tampered"
    assert chart.start().snapshot["value"] == {"p": {"r1": "a", "r2": "c"}}


@pytest.mark.parametrize(
    ("snapshot", "message"),
    [
        ({"value": "a"}, "a snapshot is a dict with 'value', 'context', 'status'"),
        (
            {"value": {"p": {"r1": "zz", "r2": "c"}}, "context": {}, "status": "active"},
            "snapshot value 'zz' does not fit state 'm.p.r1' \\(compound; children: a, b\\)",
        ),
        (
            {"value": {"p": {"r1": "a"}}, "context": {}, "status": "active"},
            "does not fit state 'm.p'",
        ),
        ({"value": "p", "context": {}, "status": "active"}, "does not fit state 'm'"),
        (
            {"value": {"p": {"r1": "a", "r2": "c"}}, "context": [], "status": "active"},
            "snapshot context must be a dict",
        ),
        (
            {"value": {"p": {"r1": "a", "r2": "c"}}, "context": {}, "status": "stopped"},
            "status 'active' or 'done'",
        ),
        ({"value": {"p": {1.5j: "a"}}, "context": {}, "status": "active"}, "is not JSON"),
    ],
)
def test_malformed_snapshots_are_invalid_state(snapshot: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidState, match=message) as caught:
        parallel().transition(snapshot, "E", {"d": 1})
    assert caught.value.event_type == "E"


def test_active_state_ids_follow_the_value() -> None:
    chart = Chart(
        {"id": "m", "initial": "a", "states": {"a": {"initial": "x", "states": {"x": {}}}}}
    )
    snapshot = {"value": {"a": "x"}, "context": {}, "status": "active", "output": None}
    assert chart.active_state_ids(snapshot) == {"m", "m.a", "m.a.x"}
