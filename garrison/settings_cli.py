"""``garrison settings``: every ``GARRISON_*`` variable, its value now, its default and
what it does, read from the settings model itself (so the list cannot go stale)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import click
from pydantic import BaseModel, SecretStr

from pipeline.settings import Settings, load_settings

__all__ = ["describe", "settings"]


def describe(
    model: type[BaseModel], current: BaseModel, prefix: str = "GARRISON_"
) -> Iterator[tuple[str, str, str, str]]:
    """``(variable, value now, default, description)`` for every leaf setting."""
    for name, field in model.model_fields.items():
        value = getattr(current, name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from describe(annotation, value, f"{prefix}{name.upper()}_")
            continue
        default = field.get_default(call_default_factory=True)
        yield (f"{prefix}{name.upper()}", _show(value), _show(default), field.description or "")


def _show(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "(set)"
    if isinstance(value, dict) and any(isinstance(v, SecretStr) for v in value.values()):
        return "{" + ", ".join(f"{k}: (set)" for k in value) + "}"
    if isinstance(value, frozenset):  # names, written as the variable takes them
        return ",".join(sorted(value))
    return "" if value is None else str(value)


@click.command(help="List every GARRISON_* setting: its value now, its default, what it does.")
@click.option("--changed", is_flag=True, help="only the settings that differ from the default")
def settings(changed: bool) -> int:
    current = load_settings()
    for variable, now, default, text in describe(Settings, current):
        if changed and now == default:
            continue
        shown = now if now == default else f"{now} (default {default or 'none'})"
        click.echo(f"{variable}={shown}")
        if text:
            click.echo(f"    {text}")
    return 0
