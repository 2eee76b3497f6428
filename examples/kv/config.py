"""Configuration management: a ``config`` scope whose entries hold feature flags, and a
trigger that reacts only when a flag actually changed (not on every write).

    await client.state.set("acme", "config", "app", {"title": "Shop", "flags": {"beta": False}})
    await client.state.update("acme", "config", "app", [
        {"op": "set", "path": "flags.beta", "value": True},
    ])
"""

from __future__ import annotations

from typing import Any

from pipeline import KeyChange, Registry, Scope, TriggerContext

__all__ = ["changed_flags", "register"]


def _flags(value: Any) -> dict[str, Any]:
    flags = value.get("flags") if isinstance(value, dict) else None
    return flags if isinstance(flags, dict) else {}


def changed_flags(old: Any, new: Any) -> dict[str, Any]:
    """The flags whose value differs between two config values (None: removed)."""
    before, after = _flags(old), _flags(new)
    return {k: after.get(k) for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def register(registry: Registry) -> None:
    """Declare the ``config`` scope and its flag trigger."""
    registry.add(Scope("config"))

    @registry.trigger(
        scope="config",
        on=("created", "updated"),
        when=lambda old, new: bool(changed_flags(old, new)),
    )
    async def flags_changed(change: KeyChange, ctx: TriggerContext) -> None:
        await ctx.services.flags.reload(
            change.tenant, change.key, changed_flags(change.old, change.new)
        )
