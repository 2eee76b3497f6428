"""Triggers as listeners, without Kafka: their conditions, what they are called with,
the writes their context sends, and definition mistakes."""

from __future__ import annotations

import re
from typing import Any

import pytest

from pipeline import KeyChange, Registry, Scope, StateChange, TriggerContext
from pipeline.errors import InvalidAddress, InvalidDefinition, InvalidOperation
from pipeline.listener import ListenerContext
from pipeline.trigger import Trigger, change_kind


def change(prev: Any, state: Any, *, event_type: str = "kv.set", key: str = "u1",
           machine: str = "kv.users") -> StateChange:  # fmt: skip
    wrap = lambda v: None if v is None else {"value": v}  # noqa: E731
    return StateChange("acme", machine, key, 3, 1, "e9", event_type, 1_000, wrap(prev), wrap(state))


def registry() -> Registry:
    return Registry([Scope("users"), Scope("config")])


def test_kinds_of_change() -> None:
    assert change_kind(change(None, 1)) == "created"
    assert change_kind(change(1, 1, event_type="kv.update")) == "updated"
    assert change_kind(change(1, None, event_type="kv.delete")) == "deleted"
    assert change_kind(change(1, None, event_type="kv.expired")) == "expired"
    assert change_kind(change(None, None, event_type="kv.delete")) is None


def test_conditions_scope_kind_key_and_values() -> None:
    reg = registry()

    @reg.trigger(scope="users", on="created", key="user_*")
    def welcome(c: KeyChange, ctx: TriggerContext) -> None: ...

    @reg.trigger(scope="users", key=re.compile(r"u\d+"), when=lambda old, new: new != old)
    def changed(c: KeyChange, ctx: TriggerContext) -> None: ...

    @reg.trigger(scope="config", on=("deleted", "expired"))
    def gone(c: KeyChange, ctx: TriggerContext) -> None: ...

    w, ch, g = reg.listeners
    assert isinstance(w, Trigger)
    assert w.matches(change(None, 1, key="user_7"))
    assert not w.matches(change(None, 1, key="admin"))
    assert not w.matches(change(1, 2, key="user_7"))  # updated, not created
    assert not w.matches(change(None, 1, key="user_7", machine="kv.config"))
    assert ch.matches(change(1, 2, key="u12"))
    assert not ch.matches(change(1, 1, key="u12"))  # the same value: when says no
    assert not ch.matches(change(1, 2, key="u12x"))  # a regex matches the whole key
    assert g.matches(change(1, None, event_type="kv.expired", machine="kv.config"))
    assert g.matches(change(1, None, event_type="kv.delete", machine="kv.config"))
    assert not g.matches(change(None, None, event_type="kv.delete", machine="kv.config"))
    assert not g.matches(change(1, 2, machine="kv.config"))
    # A listener underneath: its own conditions name the scope's machine and event types.
    assert (g.machine, g.on) == ("kv.config", frozenset({"kv.delete", "kv.expired"}))


async def test_a_trigger_gets_the_key_change_and_writes_through_send() -> None:
    reg = registry()
    seen: list[tuple[KeyChange, TriggerContext]] = []

    @reg.trigger(scope="users", on="created")
    async def welcome(c: KeyChange, ctx: TriggerContext) -> None:
        seen.append((c, ctx))
        await ctx.state.set("users", c.key, {"welcomed": True}, ttl=2)
        await ctx.state.update("config", "k", [{"op": "increment", "path": "users"}])
        await ctx.state.delete("users", "old")
        await ctx.send("mailer", c.key, "mail.welcome", {"to": c.new["email"]})

    sent: list[tuple[str, str, str, Any]] = []

    async def send(
        machine: str, instance: str, type: str, data: Any = None, *, id: str | None = None
    ) -> str:
        sent.append((machine, instance, type, data))
        return f"id{len(sent)}"

    [trigger] = reg.listeners
    ctx = ListenerContext({"mail": 1}, None, send, attempt=1)
    await trigger.run(change(None, {"email": "a@x"}), ctx)
    [(c, tctx)] = seen
    assert (c.kind, c.tenant, c.scope, c.key, c.old, c.new) == (
        "created",
        "acme",
        "users",
        "u1",
        None,
        {"email": "a@x"},
    )
    assert (c.seq, c.event_id, c.time.year) == (3, "e9", 1970)
    assert (tctx.services, tctx.attempt) == ({"mail": 1}, 1)
    assert sent == [
        ("kv.users", "u1", "kv.set", {"value": {"welcomed": True}, "ttl_ms": 2000}),
        ("kv.config", "k", "kv.update", {"ops": [{"op": "increment", "path": "users"}]}),
        ("kv.users", "old", "kv.delete", None),
        ("mailer", "u1", "mail.welcome", {"to": "a@x"}),
    ]


async def test_trigger_writes_are_checked_before_they_are_sent() -> None:
    async def send(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("nothing should be sent")

    ctx = ListenerContext(None, None, send, 0)
    reg = registry()
    calls: list[str] = []

    @reg.trigger(scope="users")
    async def bad(c: KeyChange, t: TriggerContext) -> None:
        for attempt in (
            lambda: t.state.set("no/scope", "k", 1),
            lambda: t.state.set("users", "a b", 1),
            lambda: t.state.update("users", "k", [{"op": "nope"}]),
        ):
            with pytest.raises((InvalidAddress, InvalidOperation)) as err:
                await attempt()
            calls.append(str(err.value))

    await reg.listeners[0].run(change(None, 1), ctx)
    assert ["contains '/'" in calls[0], "contains ' '" in calls[1], "unknown op" in calls[2]] == [
        True,
        True,
        True,
    ]


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"scope": "nope"}, "no scope 'nope' is declared; add registry.add(Scope('nope'))"),
        ({"scope": "a/b"}, "scope id 'a/b' contains '/'"),
        ({"scope": "users", "on": "changed"}, "on= takes created, updated, deleted, expired"),
        ({"scope": "users", "on": ()}, "on= takes"),
        ({"scope": "users", "key": ""}, "key= takes a glob"),
        ({"scope": "users", "retries": -1}, "retries and backoff_s must be >= 0"),
        ({"scope": "users", "start": "now"}, "start must be 'earliest' or 'latest'"),
        ({"scope": "users", "name": None}, "listener id '<lambda>' contains '<'"),
    ],
)
def test_definition_mistakes_are_found_at_import(kwargs: dict[str, Any], text: str) -> None:
    reg = registry()
    with pytest.raises(InvalidDefinition) as err:
        reg.trigger(**{"name": "t", **kwargs})(lambda c, ctx: None)
    assert text in str(err.value)


def test_a_trigger_takes_change_and_context_and_a_unique_name() -> None:
    reg = registry()
    with pytest.raises(InvalidDefinition, match=r"must take \(change, ctx\)"):
        reg.trigger(scope="users", name="t")(lambda c: None)

    @reg.listener
    def audit(c: StateChange, ctx: ListenerContext) -> None: ...

    with pytest.raises(InvalidDefinition, match="two listeners are named 'audit'"):
        reg.trigger(scope="users", name="audit")(lambda c, ctx: None)


def test_a_trigger_keeps_the_listener_retry_settings() -> None:
    reg = registry()
    reg.trigger(scope="users", name="a")(lambda c, ctx: None)
    reg.trigger(scope="users", name="b", retries=0, backoff_s=1.5)(lambda c, ctx: None)
    a, b = reg.listeners
    assert (a.retries, a.backoff_s, b.retries, b.backoff_s) == (3, 0.2, 0, 1.5)
