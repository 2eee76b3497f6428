"""Loading xstate v5 JSON configs with Python implementations."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.errors import InvalidDefinition
from pipeline.statechart import Chart, ChartEvent, Emitted, TimerSet, assign, emit, load_xstate

DOCUMENT = """
{
  "id": "approval",
  "initial": "draft",
  "context": {"approvals": 0, "needed": 2},
  "on": {"reset": {"target": ".draft", "actions": [{"type": "clear"}]}},
  "states": {
    "draft": {
      "on": {"submit": {"target": "review", "actions": ["log", {"type": "notify",
             "params": {"channel": "reviewers"}}]}}
    },
    "review": {
      "id": "rev",
      "initial": "waiting",
      "after": {"86400000": "#approval.expired"},
      "states": {
        "waiting": {
          "on": {
            "approve": [
              {"target": "#approval.approved",
               "guard": {"type": "enough", "params": {"extra": 1}},
               "actions": "count"},
              {"actions": "count"}
            ],
            "comment": ".commented"
          }
        }
      },
      "onDone": "approved"
    },
    "approved": {"type": "final", "output": {"result": "approved"}},
    "expired": {"type": "final"}
  }
}
"""


def implementations() -> dict[str, Any]:
    return {
        "guards": {
            "enough": lambda ctx, ev, params: ctx["approvals"] + params["extra"] >= ctx["needed"]
        },
        "actions": {
            "clear": assign({"approvals": 0}),
            "log": lambda ctx, ev: None,
            "notify": emit(lambda ctx, ev, params: {"type": "notify", "to": params["channel"]}),
            "count": assign(lambda ctx, ev: {"approvals": ctx["approvals"] + 1}),
        },
    }


def test_unknown_relative_child_target_is_reported() -> None:
    # '.child' is relative to the state declaring the transition (here: waiting)
    with pytest.raises(
        InvalidDefinition,
        match="target '.commented' not found: state "
        "'approval.review.waiting' has no child 'commented'",
    ):
        Chart.from_xstate(DOCUMENT, **implementations())


def approval() -> Chart:
    fixed = DOCUMENT.replace('"comment": ".commented"', '"comment": "waiting"')
    return Chart.from_xstate(fixed, **implementations())


def test_json_machine_runs_with_python_guards_actions_and_params() -> None:
    chart = approval()
    assert chart.name == "approval"
    step = chart.transition(chart.start().snapshot, "submit", None)
    assert step.snapshot["value"] == {"review": "waiting"}
    assert step.emitted == (Emitted("notify", None, "reviewers"),)
    assert step.actions_run == ("log", "notify")
    assert step.timers == (TimerSet("rev#after86400000", 86400000, "xstate.after.86400000.rev"),)
    step = chart.transition(step.snapshot, "approve", None)
    assert step.snapshot["value"] == {"review": "waiting"}  # 0 + 1 < 2: fallback only counts
    step = chart.transition(step.snapshot, "approve", None)
    assert step.snapshot["value"] == "approved"
    assert step.snapshot["status"] == "done"
    assert step.snapshot["output"] == {"result": "approved"}
    assert step.snapshot["context"]["approvals"] == 2


def test_root_relative_target_and_custom_id_delays() -> None:
    chart = approval()
    step = chart.transition(chart.start().snapshot, "submit", None)
    expired = chart.transition(step.snapshot, "xstate.after.86400000.rev", None)
    assert expired.snapshot["value"] == "expired"
    reset = chart.transition(step.snapshot, "reset", None)
    assert reset.snapshot["value"] == "draft"
    assert reset.actions_run == ("clear",)


def test_loaded_config_equals_the_parsed_json_and_is_a_fresh_copy() -> None:
    parsed = orjson.loads(DOCUMENT)
    loaded = load_xstate(parsed)
    assert loaded == parsed
    loaded["states"]["draft"]["on"] = {}
    assert parsed["states"]["draft"]["on"] != {}
    assert load_xstate(DOCUMENT.encode()) == parsed


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{not json", "from_xstate expects a JSON machine config"),
        ("[1, 2]", "from_xstate expects a JSON object"),
        (
            {"id": "m", "initial": "a", "states": {"a": {"entry": lambda c, e: None}}},
            "a config holding Python functions goes to Chart",
        ),
    ],
)
def test_non_json_sources_are_rejected(source: Any, message: str) -> None:
    with pytest.raises(InvalidDefinition, match=message):
        Chart.from_xstate(source)


def test_guard_object_without_params_and_action_arrays() -> None:
    seen: list[str] = []

    def mark(label: str) -> Any:
        def action(ctx: dict[str, Any], ev: ChartEvent) -> None:
            seen.append(label)

        return action

    chart = Chart.from_xstate(
        {
            "id": "m",
            "initial": "a",
            "states": {
                "a": {
                    "on": {
                        "go": {
                            "target": "b",
                            "guard": {"type": "yes"},
                            "actions": ["one", {"type": "two"}],
                        }
                    }
                },
                "b": {"entry": [{"type": "three"}]},
            },
        },
        guards={"yes": lambda ctx, ev: True},
        actions={"one": mark("one"), "two": mark("two"), "three": mark("three")},
    )
    chart.transition(chart.start().snapshot, "go", None)
    assert seen == ["one", "two", "three"]
