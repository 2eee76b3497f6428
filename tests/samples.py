"""The sample machines every test uses: defined once, reused everywhere."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from pipeline import (
    CancelTimer,
    Emit,
    Event,
    Machine,
    Next,
    Outcome,
    Registry,
    Rejected,
    SetTimer,
    encode_event,
)


class Counter(BaseModel):
    """State of the counter machine."""

    model_config = ConfigDict(extra="forbid")
    count: int = 0
    total: int = 0
    last: str = ""


class Added(BaseModel):
    """Payload of ``counter.added``."""

    model_config = ConfigDict(extra="forbid")
    amount: int = Field(ge=-1000, le=1000)
    note: str = ""


def counter_machine(*, version: int = 1, ttl: timedelta | None = None) -> Machine[Counter]:
    """A counter: ``counter.added`` adds, ``counter.reset`` resets, ``counter.broken``
    raises, ``counter.corrupt`` returns a state that fails the model, ``counter.ping``
    emits ``counter.pong`` to the ``pinger`` machine, ``counter.alarm`` arms a timer."""
    m: Machine[Counter] = Machine("counter", state=Counter, version=version, ttl=ttl)

    @m.on("counter.added", payload=Added)
    def added(config: Any, state: Counter, event: Any) -> Counter:
        return Counter(count=state.count + 1, total=state.total + event.data.amount, last=event.id)

    @m.on("counter.reset")
    def reset(config: Any, state: Counter, event: Any) -> Counter:
        return Counter(last=event.id)

    @m.on("counter.broken")
    def broken(config: Any, state: Counter, event: Any) -> Counter:
        raise RuntimeError("this reducer always fails")

    @m.on("counter.corrupt")
    def corrupt(config: Any, state: Counter, event: Any) -> Any:
        return {"count": "not a number", "total": 0, "last": ""}

    @m.on("counter.ping")
    def ping(config: Any, state: Counter, event: Any) -> Next:
        return Next(state, Emit("pinger.pong", {"from": event.instance}, machine="pinger"))

    @m.on("counter.alarm")
    def alarm(config: Any, state: Counter, event: Any) -> Next:
        seconds = (event.data or {}).get("seconds", 60)
        every = (event.data or {}).get("every")
        return Next(
            state,
            SetTimer(
                "alarm",
                "counter.rang",
                after=timedelta(seconds=seconds),
                every=None if every is None else timedelta(seconds=every),
            ),
        )

    @m.on("counter.snooze")
    def snooze(config: Any, state: Counter, event: Any) -> Next:
        return Next(state, CancelTimer("alarm"))

    @m.on("counter.rang")
    def rang(config: Any, state: Counter, event: Any) -> Counter:
        return state.model_copy(update={"count": state.count + 100, "last": event.id})

    return m


def pinger_machine() -> Machine[dict[str, Any]]:
    """Counts the pongs it receives; plain-dict state."""
    m: Machine[dict[str, Any]] = Machine("pinger", initial={"pongs": 0})

    @m.on("pinger.pong")
    def pong(config: Any, state: dict[str, Any], event: Any) -> dict[str, Any]:
        return {"pongs": state["pongs"] + 1}

    return m


def sample_registry(**kwargs: Any) -> Registry:
    """A registry with the counter and pinger machines."""
    return Registry([counter_machine(**kwargs), pinger_machine()])


def fold_counter(amounts: list[int]) -> dict[str, Any]:
    """The in-memory expectation of a counter after ``counter.added`` events."""
    return {"count": len(amounts), "total": sum(amounts)}


def event(
    type: str = "counter.added",
    data: Any = None,
    *,
    id: str = "e1",
    tenant: str = "acme",
    machine: str = "counter",
    instance: str = "c1",
    time_ms: int = 1_700_000_000_000,
    timer: str | None = None,
) -> Event:
    """A valid event with sensible defaults."""
    if data is None and type == "counter.added":
        data = {"amount": 1}
    return Event(id, type, "tests", tenant, machine, instance, time_ms, data, None, timer)


def refused(outcome: Outcome) -> Rejected:
    """The rejection a ``rejected`` outcome carries; fails if the outcome is anything
    else, or a rejected outcome would still store or publish something. Tests write
    ``with pytest.raises(Kind, match=...): raise refused(step(...))``."""
    assert outcome.status == "rejected", outcome
    assert outcome.record is None
    assert outcome.change is None
    assert not outcome.emitted
    assert outcome.rejection is not None
    assert outcome.reason == outcome.rejection.reason
    return outcome.rejection


class Consumed(NamedTuple):
    """A consumed record with the fields of aiokafka's ConsumerRecord that garrison reads."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def consumed(
    value: bytes | Event | None,
    *,
    key: bytes | None = b"acme",
    offset: int = 0,
    partition: int = 0,
    topic: str = "app.events",
    headers: tuple[tuple[str, bytes], ...] = (),
    timestamp: int = 1_700_000_000_000,
) -> Consumed:
    """A record of the events topic holding ``value`` (an Event is encoded)."""
    raw = encode_event(value) if isinstance(value, Event) else value
    return Consumed(topic, partition, offset, timestamp, key, raw, headers)


SEAL_KEY = b"k" * 32
"""The seal key tests give a partition (``Rules(seal_key=SEAL_KEY)``)."""


def sealed(ev: Event, *, offset: int = 0, key: bytes = SEAL_KEY) -> Consumed:
    """A timer firing as garrison's delivery sends it: sealed with the partition's key."""
    from pipeline.seal import SEAL_HEADER, seal

    raw = encode_event(ev)
    return consumed(raw, offset=offset, headers=((SEAL_HEADER, seal(key, raw)),))
