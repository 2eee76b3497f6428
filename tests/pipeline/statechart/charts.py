"""Sample charts reused by the statechart tests."""

from __future__ import annotations

from typing import Any

from pipeline.statechart import Chart, ChartEvent, assign, emit


def _noop(context: dict[str, Any], event: ChartEvent) -> None:
    return None


def tracers(*names: str) -> dict[str, Any]:
    """Plain actions that do nothing: they show up in ``Step.actions_run`` by name."""
    return {name: _noop for name in names}


def ring(size: int = 4) -> Chart:
    """A flat ring: ``next`` moves forward counting in the context, ``back`` moves back."""
    keys = [f"s{i}" for i in range(size)]
    states = {
        key: {
            "on": {
                "next": {"target": keys[(i + 1) % size], "actions": "count"},
                "back": keys[(i - 1) % size],
            }
        }
        for i, key in enumerate(keys)
    }
    return Chart(
        {"id": "ring", "initial": keys[0], "context": {"count": 0}, "states": states},
        actions={"count": assign(lambda ctx, ev: {"count": ctx["count"] + 1})},
    )


def nested() -> Chart:
    """Compound states three deep, entry/exit tracers everywhere (``en<X>``/``ex<X>``)."""
    names = ["A", "A1", "X", "Y", "A2", "B", "B1", "B2"]
    trace = tracers("t", "tParent", *(f"en{n}" for n in names), *(f"ex{n}" for n in names))

    def leaf(name: str, on: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"entry": f"en{name}", "exit": f"ex{name}", "on": on or {}}

    return Chart(
        {
            "id": "m",
            "initial": "a",
            "states": {
                "a": {
                    "entry": "enA",
                    "exit": "exA",
                    "initial": "a1",
                    "on": {"OUT": {"target": "b", "actions": "tParent"}, "E": "b"},
                    "states": {
                        "a1": {
                            "entry": "enA1",
                            "exit": "exA1",
                            "initial": "x",
                            "states": {
                                "x": leaf(
                                    "X", {"OUT": {"target": "#m.b.b1", "actions": "t"}, "NEXT": "y"}
                                ),
                                "y": leaf("Y"),
                            },
                        },
                        "a2": leaf("A2"),
                    },
                },
                "b": {
                    "entry": "enB",
                    "exit": "exB",
                    "initial": "b2",
                    "states": {"b1": leaf("B1"), "b2": leaf("B2")},
                },
            },
        },
        actions=trace,
    )


def parallel() -> Chart:
    """A parallel state with two regions that both react to ``E`` and ``F``."""
    names = ["P", "R1", "R2", "A", "B", "C", "D", "Q"]
    trace = tracers("t1", "t2", "tP", *(f"en{n}" for n in names), *(f"ex{n}" for n in names))

    def state(name: str, on: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"entry": f"en{name}", "exit": f"ex{name}", "on": on or {}}

    return Chart(
        {
            "id": "m",
            "initial": "p",
            "states": {
                "p": {
                    "type": "parallel",
                    "entry": "enP",
                    "exit": "exP",
                    "on": {
                        "G": {"target": "q", "actions": "tP"},
                        "H": {"target": "q", "actions": "tP"},
                        "J": {"target": "q", "actions": "tP"},
                    },
                    "states": {
                        "r1": {
                            **state("R1"),
                            "initial": "a",
                            "states": {
                                "a": state(
                                    "A",
                                    {
                                        "E": {"target": "b", "actions": "t1"},
                                        "F": {"target": "#m.q", "actions": "t1"},
                                        "G": {"target": "b", "actions": "t1"},
                                    },
                                ),
                                "b": state("B", {"E": "a"}),
                            },
                        },
                        "r2": {
                            **state("R2"),
                            "initial": "c",
                            "states": {
                                "c": state(
                                    "C",
                                    {
                                        "E": {"target": "d", "actions": "t2"},
                                        "F": {"target": "d", "actions": "t2"},
                                        "K": {"target": "#m.q", "actions": "t2"},
                                        "J": {"target": "d", "actions": "t2"},
                                    },
                                ),
                                "d": state("D", {"E": "c"}),
                            },
                        },
                    },
                },
                "q": state("Q", {"BACK": "p"}),
            },
        },
        actions=trace,
    )


def order() -> Chart:
    """An order with guards, an emitted event, a delayed reminder and a final output."""
    return Chart(
        {
            "id": "order",
            "initial": "cart",
            "context": {"items": 0, "total": 0},
            "states": {
                "cart": {
                    "on": {
                        "add": {"actions": "add"},
                        "checkout": [
                            {"target": "paying", "guard": "hasItems"},
                            {"actions": "complain"},
                        ],
                    }
                },
                "paying": {
                    "after": {"reminder": {"actions": "remind"}, "60000": "cart"},
                    "on": {
                        "paid": {
                            "target": "done",
                            "guard": {"type": "covers", "params": {"slack": 0}},
                        }
                    },
                },
                "done": {"type": "final"},
            },
        },
        guards={
            "hasItems": lambda ctx, ev: ctx["items"] > 0,
            "covers": lambda ctx, ev, params: ev.data["amount"] + params["slack"] >= ctx["total"],
        },
        actions={
            "add": assign(
                lambda ctx, ev: {
                    "items": ctx["items"] + 1,
                    "total": ctx["total"] + ev.data["price"],
                }
            ),
            "complain": emit({"type": "cart.empty"}),
            "remind": emit(
                lambda ctx, ev: {"type": "reminder", "data": ctx["total"], "to": "mailer"}
            ),
        },
        delays={"reminder": lambda ctx, ev: 1000 * ctx["items"]},
        outputs={"order.done": lambda ctx, ev: {"total": ctx["total"]}},
    )


def review() -> Chart:
    """A document review touching most features: parallel regions with final states,
    guards with params, eventless approval, a named delay, emits, and an output."""

    def output(ctx: dict[str, Any], ev: ChartEvent) -> Any:
        return {"approvals": ctx["approvals"], "amount": ctx["amount"]}

    def pending(who: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "on": {
                "approve": {
                    "target": "ok",
                    "actions": "record",
                    "guard": {"type": "isFrom", "params": {"who": who}},
                }
            },
            **(extra or {}),
        }

    return Chart(
        {
            "id": "review",
            "initial": "draft",
            "context": {"edits": 0, "amount": 0, "approvals": []},
            "states": {
                "draft": {
                    "on": {
                        "edit": {"actions": "edit"},
                        "submit": {"target": "reviewing", "guard": "edited"},
                    }
                },
                "reviewing": {
                    "type": "parallel",
                    "onDone": "approved",
                    "after": {"patience": {"target": "draft", "actions": "timedOut"}},
                    "on": {"withdraw": "draft"},
                    "states": {
                        "legal": {
                            "initial": "pending",
                            "states": {
                                "pending": pending("legal", {"exit": "legalDone"}),
                                "ok": {"type": "final"},
                            },
                        },
                        "finance": {
                            "initial": "pending",
                            "states": {
                                "pending": pending(
                                    "finance", {"always": {"target": "ok", "guard": "small"}}
                                ),
                                "ok": {"type": "final"},
                            },
                        },
                    },
                },
                "approved": {"entry": "announce", "on": {"archive": "archived", "edit": "draft"}},
                "archived": {"type": "final", "output": output},
            },
        },
        guards={
            "edited": lambda ctx, ev: ctx["edits"] > 0,
            "small": lambda ctx, ev: ctx["amount"] < 10,
            "isFrom": lambda ctx, ev, params: (
                isinstance(ev.data, dict) and ev.data.get("who") == params["who"]
            ),
        },
        actions={
            "edit": assign(
                lambda ctx, ev: {"edits": ctx["edits"] + 1, "amount": ctx["amount"] + ev.data}
            ),
            "record": assign(lambda ctx, ev: {"approvals": [*ctx["approvals"], ev.data["who"]]}),
            "legalDone": emit(lambda ctx, ev: {"type": "legal.cleared", "to": "audit"}),
            "timedOut": emit({"type": "review.timed_out"}),
            "announce": emit(
                lambda ctx, ev: {"type": "review.approved", "data": {"amount": ctx["amount"]}}
            ),
        },
        delays={"patience": lambda ctx, ev: 60_000 * (1 + ctx["edits"])},
    )
