"""Definition errors raise when a machine, listener or registry is defined, saying what
to fix; never when the first event arrives."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from pipeline import Emit, InvalidDefinition, Machine, Registry, SetTimer
from tests.samples import Counter, counter_machine


class Needs(BaseModel):
    required: int


def test_duplicate_event_type() -> None:
    m: Machine[Counter] = Machine("m", state=Counter)
    m.on("x")(lambda c, s, e: s)
    with pytest.raises(InvalidDefinition, match="already has a reducer for 'x'"):
        m.on("x")(lambda c, s, e: s)


@pytest.mark.parametrize("fn", [lambda s, e: s, lambda c, s, e, extra: s, lambda c, s, *, e: s])
def test_reducer_signature_must_be_config_state_event(fn: Any) -> None:
    with pytest.raises(InvalidDefinition, match=r"must take \(config, state, event\)"):
        Machine("m", state=Counter).on("x")(fn)


def test_async_reducer_is_refused() -> None:
    async def reducer(config: Any, state: Any, event: Any) -> Any:
        return state

    with pytest.raises(InvalidDefinition, match="reducers are pure and synchronous"):
        Machine("m").on("x")(reducer)


def test_state_model_with_required_fields_needs_initial() -> None:
    with pytest.raises(InvalidDefinition, match="give initial="):
        Machine("m", state=Needs)
    assert Machine("m", state=Needs, initial=Needs(required=1)).name == "m"


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"version": 0}, "version must be an int >= 1"),
        ({"ttl": timedelta(0)}, "ttl must be positive"),
        ({"state": list}, "BaseModel subclass or dict"),
    ],
)
def test_bad_machine_options(kwargs: dict[str, Any], text: str) -> None:
    with pytest.raises(InvalidDefinition, match=text):
        Machine("m", **kwargs)


def test_machine_name_follows_the_id_rules() -> None:
    with pytest.raises(InvalidDefinition, match="contains ' '"):
        Machine("my machine")


def test_migration_must_come_from_an_older_version() -> None:
    with pytest.raises(InvalidDefinition, match="only migrate from an older version"):
        counter_machine(version=2).migrate(from_version=2)


def test_registering_one_version_twice() -> None:
    registry = Registry([counter_machine()])
    with pytest.raises(InvalidDefinition, match="registered twice"):
        registry.add(counter_machine())


def test_listener_definitions() -> None:
    registry = Registry()
    with pytest.raises(InvalidDefinition, match=r"must take \(change, ctx\)"):
        registry.listener(lambda change: None, name="x")
    registry.listener(lambda change, ctx: None, name="x")
    with pytest.raises(InvalidDefinition, match="listener names must be unique"):
        registry.listener(lambda change, ctx: None, name="x")
    with pytest.raises(InvalidDefinition, match="retries and backoff_s must be >= 0"):
        registry.listener(lambda change, ctx: None, name="y", retries=-1)


@pytest.mark.parametrize(
    ("make", "text"),
    [
        (lambda: SetTimer("t", "x"), "exactly one of after= or at="),
        (lambda: SetTimer("__ttl__", "x", after=timedelta(1)), "reserved"),
        (lambda: SetTimer("t", "x", after=timedelta(1), every=timedelta(0)), "must be positive"),
        (lambda: Emit(""), "non-empty event type"),
        (lambda: Emit("x", instance="a b"), "contains ' '"),
    ],
)
def test_effects_validate_when_built(make: Any, text: str) -> None:
    with pytest.raises((InvalidDefinition, ValueError), match=text):
        make()
