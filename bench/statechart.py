"""Statechart throughput: garrison's interpreter against python-statemachine.

Both run the same flat chart, a ring of four states with two event types (``next``
counts in the context through an assign action, ``back`` moves back), on the same event
sequence in the same process. garrison is also measured on a parallel chart with guards.

    python bench/statechart.py [seconds]

``measure()`` returns the figures; python-statemachine is imported lazily and, when it
is missing, its figures and the ratio are left out.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # `python bench/statechart.py` from a checkout, not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.statechart import Chart, assign  # noqa: E402

__all__ = ["measure", "ring_chart", "parallel_chart"]

SEQUENCE = ("next", "next", "back", "next")
RING = ("s0", "s1", "s2", "s3")


def ring_chart() -> Chart:
    """The flat ring, in garrison."""
    states = {
        key: {
            "on": {
                "next": {"target": RING[(i + 1) % 4], "actions": "count"},
                "back": RING[(i - 1) % 4],
            }
        }
        for i, key in enumerate(RING)
    }
    return Chart(
        {"id": "ring", "initial": "s0", "context": {"count": 0}, "states": states},
        actions={"count": assign(lambda ctx, ev: {"count": ctx["count"] + 1})},
    )


def parallel_chart() -> Chart:
    """Two regions that both move on ``tick``, one of them guarded by the event data."""

    def region(guarded: bool) -> dict[str, Any]:
        step: dict[str, Any] = {"target": "b", "actions": "count"}
        back: dict[str, Any] = {"target": "a"}
        if guarded:
            step["guard"] = back["guard"] = "even"
        return {
            "initial": "a",
            "states": {"a": {"on": {"tick": step}}, "b": {"on": {"tick": back}}},
        }

    return Chart(
        {
            "id": "par",
            "type": "parallel",
            "context": {"count": 0},
            "states": {"left": region(False), "right": region(True)},
        },
        guards={"even": lambda ctx, ev: ev.data % 2 == 0},
        actions={"count": assign(lambda ctx, ev: {"count": ctx["count"] + 1})},
    )


def _rate(run_batch: Callable[[], int], seconds: float) -> float:
    """Events per second over at least ``seconds`` of batches."""
    run_batch()  # warm caches and compiled tables
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        done += run_batch()
    return done / elapsed


def _garrison_rate(chart: Chart, events: list[tuple[str, Any]], seconds: float) -> float:
    snapshot = chart.start().snapshot
    transition = chart.transition

    def batch() -> int:
        nonlocal snapshot
        for event_type, data in events:
            snapshot = transition(snapshot, event_type, data).snapshot
        return len(events)

    return _rate(batch, seconds)


def _python_statemachine_rate(seconds: float) -> float | None:
    try:
        from statemachine.io import create_machine_class_from_definition
    except ImportError:
        return None
    counter = [0]

    def count() -> None:
        counter[0] += 1

    states: dict[str, Any] = {
        key: {
            "initial": i == 0,
            "on": {
                "next": [{"target": RING[(i + 1) % 4], "on": count}],
                "back": [{"target": RING[(i - 1) % 4]}],
            },
        }
        for i, key in enumerate(RING)
    }
    machine = create_machine_class_from_definition("Ring", states=states)()
    events = list(SEQUENCE) * 250

    def batch() -> int:
        for event in events:
            machine.send(event)
        return len(events)

    return _rate(batch, seconds)


def measure(seconds: float = 2.0) -> dict[str, float]:
    """Throughput figures; ``seconds`` is split between the measured runs."""
    share = seconds / 3
    flat = _garrison_rate(ring_chart(), [(e, None) for e in SEQUENCE] * 250, share)
    parallel = _garrison_rate(parallel_chart(), [("tick", i) for i in range(1000)], share)
    figures = {
        "statechart_transitions_per_s": flat,
        "statechart_us_per_transition": 1e6 / flat,
        "statechart_parallel_transitions_per_s": parallel,
        "statechart_parallel_us_per_transition": 1e6 / parallel,
    }
    other = _python_statemachine_rate(share)
    if other is not None:
        figures["python_statemachine_sends_per_s"] = other
        figures["python_statemachine_us_per_send"] = 1e6 / other
        figures["statechart_vs_python_statemachine"] = flat / other
    return figures


def main() -> None:
    """Print the figures, one per line."""
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    for name, value in measure(seconds).items():
        print(f"{name:42} {value:14,.2f}")


if __name__ == "__main__":
    main()
