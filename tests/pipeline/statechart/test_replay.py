"""Replay is exact: the same events from the start give the same snapshots, emitted
events, timers and traces, also when every snapshot goes through JSON in between, and
no step modifies the snapshot it was given."""

from __future__ import annotations

import copy
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.statechart import Chart
from tests.pipeline.statechart.charts import review

TIMER = "xstate.after.patience.review.reviewing"
event_data = {
    "edit": st.integers(0, 20),
    "submit": st.none(),
    "approve": st.fixed_dictionaries({"who": st.sampled_from(["legal", "finance", "x"])}),
    "withdraw": st.none(),
    "archive": st.none(),
    TIMER: st.none(),
    "unknown": st.integers(),
}
events = st.lists(
    st.sampled_from(sorted(event_data)).flatmap(
        lambda kind: st.tuples(st.just(kind), event_data[kind])
    ),
    max_size=40,
)


def replay(chart: Chart, history: list[tuple[str, Any]], through_json: bool) -> list[Any]:
    step = chart.start()
    trail: list[Any] = [step]
    for kind, data in history:
        snapshot = step.snapshot
        if through_json:
            snapshot = orjson.loads(orjson.dumps(snapshot))
        untouched = copy.deepcopy(snapshot)
        step = chart.transition(snapshot, kind, data)
        assert snapshot == untouched, f"transition({kind!r}) modified its input snapshot"
        trail.append(step)
    return trail


def test_the_timer_event_type_used_here_is_one_the_chart_listens_to() -> None:
    assert TIMER in review().event_types
    assert set(event_data) - {"unknown"} == review().event_types - {
        "xstate.done.state.review.reviewing"
    }


@settings(max_examples=200, deadline=None)
@given(history=events)
def test_replaying_the_same_events_gives_the_same_steps(history: list[tuple[str, Any]]) -> None:
    chart = review()
    first = replay(chart, history, through_json=False)
    assert replay(chart, history, through_json=True) == first  # warm caches, JSON between
    assert replay(review(), history, through_json=True) == first  # a fresh compile
    final = first[-1].snapshot
    assert orjson.loads(orjson.dumps(final)) == final
    if final["status"] == "done":
        assert final["output"] == {
            "approvals": final["context"]["approvals"],
            "amount": final["context"]["amount"],
        }


def test_a_full_review_reaches_the_output() -> None:
    chart = review()
    history: list[tuple[str, Any]] = [
        ("edit", 50),
        ("submit", None),
        ("approve", {"who": "finance"}),
        ("approve", {"who": "legal"}),
        ("archive", None),
    ]
    trail = replay(chart, history, through_json=True)
    assert [s.snapshot["value"] for s in trail] == [
        "draft",
        "draft",
        {"reviewing": {"legal": "pending", "finance": "pending"}},
        {"reviewing": {"legal": "pending", "finance": "ok"}},
        "approved",
        "archived",
    ]
    assert trail[-1].snapshot["output"] == {"approvals": ["finance", "legal"], "amount": 50}
    assert [e.type for s in trail for e in s.emitted] == ["legal.cleared", "review.approved"]
    assert trail[2].timers[0].delay_ms == 120_000
