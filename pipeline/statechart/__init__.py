"""A pure statechart interpreter in the spirit of xstate v5 and SCXML.

No I/O, clock or randomness: a chart maps ``(snapshot, event)`` to a :class:`Step`
holding the new JSON-compatible snapshot, the events to emit and the timers to set or
cancel, which garrison carries out. Charts are compiled once into lookup tables.

>>> chart = Chart({"initial": "off", "states": {"off": {"on": {"flip": "on"}},
...                                            "on": {"on": {"flip": "off"}}}})
>>> chart.transition(chart.start().snapshot, "flip").snapshot["value"]
'on'
"""

from pipeline.statechart.action import AssignAction, EmitAction, assign, emit
from pipeline.statechart.chart import INIT_EVENT, Chart
from pipeline.statechart.definition import after_event_type, done_event_type
from pipeline.statechart.macrostep import Step
from pipeline.statechart.mermaid import to_mermaid
from pipeline.statechart.request import ChartEvent, Emitted, TimerCancel, TimerRequest, TimerSet
from pipeline.statechart.xstate import load_xstate

__all__ = [
    "Chart",
    "Step",
    "ChartEvent",
    "Emitted",
    "TimerSet",
    "TimerCancel",
    "TimerRequest",
    "AssignAction",
    "EmitAction",
    "assign",
    "emit",
    "to_mermaid",
    "load_xstate",
    "done_event_type",
    "after_event_type",
    "INIT_EVENT",
]
