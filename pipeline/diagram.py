"""Mermaid state diagrams of any machine (``garrison diagram APP MACHINE``).

A :class:`~pipeline.chart_machine.ChartMachine` is drawn by the statechart's own
:func:`~pipeline.statechart.to_mermaid`. A reducer :class:`~pipeline.machine.Machine`
has no states to read, only event types, so it is drawn as one state (the machine)
with a self-loop per event type; its declared emitted events are listed in a note, and
a TTL adds the expiry edge out of it.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.behaviour import Behaviour
from pipeline.chart_machine import ChartMachine
from pipeline.statechart import to_mermaid
from pipeline.step import EXPIRED_EVENT

__all__ = ["mermaid"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def _label(text: str) -> str:
    # ':' ends a Mermaid label and a newline ends the statement.
    return text.replace("\n", " ").replace(":", "")


def mermaid(behaviour: Behaviour) -> str:
    """The machine as Mermaid ``stateDiagram-v2`` source.

    >>> print(mermaid(counter))  # doctest: +SKIP
    stateDiagram-v2
        state "counter v1" as counter
        [*] --> counter : first event
        counter --> counter : counter.added
    """
    if isinstance(behaviour, ChartMachine):
        return to_mermaid(behaviour.chart)
    node = _UNSAFE.sub("_", behaviour.name) or "machine"
    lines = [
        "stateDiagram-v2",
        f'    state "{_label(behaviour.name)} v{behaviour.version}" as {node}',
        f"    [*] --> {node} : first event",
    ]
    lines += [f"    {node} --> {node} : {_label(t)}" for t in sorted(behaviour.event_types)]
    emits: dict[str, Any] = getattr(behaviour, "emits", None) or {}
    if emits:
        lines.append(f"    note right of {node} : emits {_label(', '.join(sorted(emits)))}")
    if behaviour.ttl_ms is not None:
        lines.append(f"    {node} --> [*] : {EXPIRED_EVENT} after {behaviour.ttl_ms} ms idle")
    return "\n".join(lines) + "\n"
