"""The counter orchestrator: ``garrison worker examples.orchestrator.app``.

After ``counter.start`` ``{"init": 5, "increment": 3, "decrement": 2}`` the instance asks
the increment service for ``init + increment``, then the decrement service for that
minus ``decrement``, notifies, and completes with ``{"final": 6, "error": null}``. A
service that fails answers ``sys.<command>.error``; the orchestrator then notifies the
failure and completes with ``{"final": null, "error": "..."}``.

The chart is plain xstate v5 JSON (what the xstate visualiser exports); the named
actions are implemented here in Python. Try it::

    garrison kafka up
    python -m examples.orchestrator.services &     # creates the topics, runs the services
    garrison worker examples.orchestrator.app &
    garrison send acme counter c-1 counter.start \\
        --data '{"init": 5, "increment": 3, "decrement": 2}'
    garrison tail --machine counter
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipeline import ChartMachine, Contract, Registry, ServiceError, error_event_type
from pipeline.statechart import Chart, ChartEvent, assign, emit

__all__ = [
    "registry",
    "counter",
    "INCREMENT_TOPIC",
    "DECREMENT_TOPIC",
    "NOTIFY_TOPIC",
    "SERVICE_TOPICS",
    "INCREMENT",
    "DECREMENT",
    "NOTIFY",
    "LIMIT",
]

INCREMENT_TOPIC = "svc.number.increment"
DECREMENT_TOPIC = "svc.number.decrement"
NOTIFY_TOPIC = "svc.number.notify"
SERVICE_TOPICS = (INCREMENT_TOPIC, DECREMENT_TOPIC, NOTIFY_TOPIC)

INCREMENT = "com.number.increment"
DECREMENT = "com.number.decrement"
NOTIFY = "notif.number.update"
LIMIT = 100
"""The services refuse results outside ``0..LIMIT``."""


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Start(_Data):
    """Init payload: the start value and the two steps."""

    init: int
    increment: int = Field(ge=0)
    decrement: int = Field(ge=0)


class Adjust(_Data):
    """Command to a number service: apply ``by`` to ``value``."""

    value: int
    by: int


class Adjusted(_Data):
    """A number service's answer."""

    result: int


class Update(_Data):
    """The notification sent when the orchestration ends."""

    value: int
    success: bool
    error: str | None = None


class Result(_Data):
    """Completion output."""

    final: int | None
    error: str | None = None


CHART = {
    "id": "counter",
    "initial": "incrementing",
    "context": {"value": 0, "increment": 0, "decrement": 0, "error": None},
    "states": {
        "incrementing": {
            "entry": ["setup", "sendIncrement"],
            "on": {
                "evt.number.increment.success": {"target": "decrementing", "actions": "store"},
                error_event_type(INCREMENT): {"target": "failed", "actions": "fail"},
            },
        },
        "decrementing": {
            "entry": "sendDecrement",
            "on": {
                "evt.number.decrement.success": {"target": "succeeded", "actions": "store"},
                error_event_type(DECREMENT): {"target": "failed", "actions": "fail"},
            },
        },
        "succeeded": {"type": "final", "entry": "notify"},
        "failed": {"type": "final", "entry": "notify"},
    },
}


def _notify(ctx: dict[str, Any], ev: ChartEvent) -> dict[str, Any]:
    update = {"value": ctx["value"], "success": ctx["error"] is None, "error": ctx["error"]}
    return {"type": NOTIFY, "data": update, "to": NOTIFY_TOPIC}


def _output(ctx: dict[str, Any], ev: ChartEvent) -> dict[str, Any]:
    failed = ctx["error"] is not None
    return {"final": None if failed else ctx["value"], "error": ctx["error"]}


chart = Chart.from_xstate(
    CHART,
    actions={
        "setup": assign(
            lambda ctx, ev: {
                "value": ev.data["init"],
                "increment": ev.data["increment"],
                "decrement": ev.data["decrement"],
            }
        ),
        "sendIncrement": emit(
            lambda ctx, ev: {
                "type": INCREMENT,
                "to": INCREMENT_TOPIC,
                "data": {"value": ctx["value"], "by": ctx["increment"]},
            }
        ),
        "sendDecrement": emit(
            lambda ctx, ev: {
                "type": DECREMENT,
                "to": DECREMENT_TOPIC,
                "data": {"value": ctx["value"], "by": -ctx["decrement"]},
            }
        ),
        "store": assign(lambda ctx, ev: {"value": ev.data["result"]}),
        "fail": assign(lambda ctx, ev: {"error": ev.data["errorMessage"]}),
        "notify": emit(_notify),
    },
    outputs={"counter": _output},
)

contract = Contract(
    init="counter.start",
    accepts={
        "counter.start": Start,
        "evt.number.increment.success": Adjusted,
        error_event_type(INCREMENT): ServiceError,
        "evt.number.decrement.success": Adjusted,
        error_event_type(DECREMENT): ServiceError,
    },
    emits={INCREMENT: Adjust, DECREMENT: Adjust, NOTIFY: Update},
    output=Result,
)

counter = ChartMachine(chart, contract, version=1, topics=SERVICE_TOPICS)
registry = Registry([counter])
