"""Feature parts of ``bench/run``: each measures one capability in the same run.

A part is an ``async def part(ctx: PartContext) -> None`` registered in :data:`PARTS`
under its ``--only`` name. It may start its own garrison processes (``ctx.run``), and
it writes what it measured into ``ctx.report.extra_figures`` / ``extra_ratios`` under
the names its issue gives, with a printed line in ``extra_lines``. Parts run after the
throughput systems, one after another, each on topics of its own.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench.report import Report
from bench.system import Run
from bench.workload import Workload

__all__ = ["MODULES", "PARTS", "Part", "PartContext", "registered"]


@dataclass
class PartContext:
    """What a part gets: the run (broker, app prefix, work folder), the report to fill,
    the harness settings (``quick`` among them) and the broker's pid (for its CPU)."""

    run: Run
    report: Report
    settings: dict[str, Any]
    quick: bool
    workload: Workload
    broker_pid: int | None


Part = Callable[[PartContext], Awaitable[None]]

PARTS: dict[str, Part] = {}
"""Feature parts by name; a module adds its own (``PARTS["update"] = measure_update``)."""

MODULES: list[str] = [
    "bench.replay",
    "bench.kv",
    "bench.views",
    "bench.observe",
    "bench.hot",
    "bench.failover",
    "bench.peer",
    "bench.partition",
]
"""The modules that register parts, imported by :func:`registered` (one line each)."""


def registered() -> dict[str, Part]:
    """Every feature part, after importing the modules that register them."""
    for name in MODULES:
        importlib.import_module(name)
    return PARTS
