"""Caching with TTL: a ``cache`` scope whose entries expire (five minutes unless a set
says otherwise), and an ``expired`` trigger that counts expiries in a ``stats`` scope.

    await client.state.set("acme", "cache", "page:home", "<html>...", ttl=30)
    await client.state.get("acme", "cache", "page:home")  # None once it expired
"""

from __future__ import annotations

from datetime import timedelta

from pipeline import KeyChange, Registry, Scope, TriggerContext

__all__ = ["register"]


def register(registry: Registry) -> None:
    """Declare the ``cache`` and ``stats`` scopes and the expiry trigger."""
    registry.add(Scope("cache", ttl=timedelta(minutes=5)))
    registry.add(Scope("stats"))

    @registry.trigger(scope="cache", on="expired")
    async def count_expiry(change: KeyChange, ctx: TriggerContext) -> None:
        await ctx.state.update(
            "stats",
            "cache",
            [
                {"op": "increment", "path": "expired"},
                {"op": "append", "path": "expired_keys", "value": change.key},
            ],
        )
