"""User management: a ``users`` scope, profiles changed by atomic operations, and a
trigger that welcomes a user once, when the profile is created.

    await client.state.set("acme", "users", "u1", {"name": "Ann", "email": "ann@x"})
    await client.state.update("acme", "users", "u1", [
        {"op": "increment", "path": "logins"},
        {"op": "append", "path": "roles", "value": "editor"},
        {"op": "merge", "path": "prefs", "value": {"theme": "dark"}},
    ])
"""

from __future__ import annotations

from pipeline import KeyChange, Registry, Scope, TriggerContext

__all__ = ["register"]


def register(registry: Registry) -> None:
    """Declare the ``users`` scope and its welcome trigger."""
    registry.add(Scope("users"))

    @registry.trigger(scope="users", on="created")
    async def welcome(change: KeyChange, ctx: TriggerContext) -> None:
        profile = change.new
        await ctx.services.mail.send(
            profile["email"], f"Welcome, {profile['name']}!", key=change.event_id
        )
        # An update, so no other "created": the welcome runs once per user.
        await ctx.state.update(
            "users", change.key, [{"op": "set", "path": "welcomed", "value": True}]
        )
