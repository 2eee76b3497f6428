"""Command-line value types the commands share."""

from __future__ import annotations

from typing import Any

import click

from pipeline.envelope import parse_time
from pipeline.errors import InvalidEvent

__all__ = ["MOMENT"]


class _Moment(click.ParamType):
    """A time on the command line: epoch milliseconds or RFC 3339 text, as epoch ms."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        raw = str(value)
        if raw.lstrip("-").isdigit():
            return int(raw)
        try:
            return parse_time(raw)
        except InvalidEvent:
            self.fail(f"must be RFC 3339 or epoch ms, got {raw!r}", param, ctx)


MOMENT = _Moment()
"""``type=MOMENT``: ``--since 2026-12-01T00:00:00Z`` and ``--since 1764547200000`` alike."""
