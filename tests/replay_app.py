"""An app for the replay tests (``garrison worker tests.replay_app``): the sample counter
and pinger, deterministic, and ``stamp``, whose reducer reads the clock (as it never
should), so that a replay has something to find."""

from __future__ import annotations

import time
from typing import Any

from pipeline import Machine, Registry
from tests.samples import counter_machine, pinger_machine

stamp: Machine[dict[str, Any]] = Machine("stamp", initial={"hits": 0})


@stamp.on("stamp.hit")
def hit(config: Any, state: dict[str, Any], event: Any) -> dict[str, Any]:
    """Counts hits and, wrongly, stamps them with the worker's clock."""
    return {"hits": state["hits"] + 1, "at": time.time_ns()}


registry = Registry([counter_machine(), pinger_machine(), stamp])
