"""The per-record decision, without Kafka: every verdict and every dead-letter stage.

``apply_record`` gets a consumed record and a loader, and returns what to store and
what to produce; here the loader is a dict of records and nothing is sent anywhere.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import orjson
import pytest

from pipeline import (
    ChartMachine,
    Contract,
    Emit,
    Machine,
    Next,
    Registry,
    StateChange,
    encode_event,
)
from pipeline.address import Address
from pipeline.deadletter import DeadLetter, original_headers
from pipeline.decision import Applied, Rules, apply_record
from pipeline.envelope import decode_event
from pipeline.ids import timer_event_id
from pipeline.record import Record, load_record
from pipeline.seal import SEAL_HEADER
from pipeline.settings import Topics
from pipeline.statechart import Chart
from pipeline.step import TTL_TIMER
from tests.samples import SEAL_KEY, consumed, counter_machine, event, pinger_machine, sealed

TOPICS = Topics.of("app")
ADDRESS = Address("acme", "counter", "c1")


def _set_machine() -> Machine[dict[str, Any]]:
    m: Machine[dict[str, Any]] = Machine("bag")

    @m.on("bag.filled")
    def filled(config: Any, state: dict[str, Any], event: Any) -> dict[str, Any]:
        return {"items": {1, 2}}  # a set is not JSON

    return m


def _chart_machine() -> ChartMachine:
    chart = Chart(
        {"id": "door", "initial": "shut", "states": {"shut": {"on": {"open": "open"}}, "open": {}}}
    )
    return ChartMachine(
        chart, Contract(init="door.made", accepts={"door.made": None, "open": None})
    )


KEY = SEAL_KEY  # the partition's seal key


REG = Registry(
    [counter_machine(ttl=timedelta(seconds=60)), pinger_machine(), _set_machine(), _chart_machine()]
)
RULES = Rules(REG, TOPICS, seal_key=KEY)


class Store:
    """The loader apply_record reads through, and the store the lane would write."""

    def __init__(self) -> None:
        self.records: dict[Address, Record | None] = {}

    def load(self, address: Address) -> Record | None:
        return self.records.get(address)

    def apply(self, rec: Any) -> Applied:
        applied = apply_record(RULES, self.load, rec)
        if applied.outcome is not None:
            assert applied.address is not None
            self.records[applied.address] = applied.outcome.record
            stored = applied.stored
            assert (stored is None) == (applied.outcome.record is None)
            if stored is not None:
                assert load_record(stored) == applied.outcome.record
        return applied


def _dead_letter(applied: Applied, rec: Any, stage: str, text: str) -> None:
    assert applied.verdict == "rejected"
    assert applied.outcome is None
    assert applied.stored is None
    assert (applied.stage, text in applied.reason) == (stage, True), applied.reason
    [out] = applied.outputs
    assert (out.topic, out.key, out.value) == (TOPICS.dlq, rec.key, rec.value)
    headers = DeadLetter.read_headers(out.headers)
    assert headers["garrison.stage"] == stage
    assert headers["garrison.reason"] == applied.reason
    assert (
        headers["garrison.topic"],
        headers["garrison.partition"],
        headers["garrison.offset"],
    ) == (rec.topic, str(rec.partition), str(rec.offset))


def test_an_applied_event_stores_the_record_and_publishes_its_change() -> None:
    store = Store()
    applied = store.apply(consumed(event(data={"amount": 4})))
    assert (applied.verdict, applied.address) == ("applied", ADDRESS)
    [out] = applied.outputs
    assert (out.topic, out.key, out.partition) == (TOPICS.state_changes, b"acme", None)
    change = StateChange.from_json(out.value or b"")
    assert (change.seq, change.prev, change.state["total"]) == (1, None, 4)
    again = store.apply(consumed(event(id="e2", data={"amount": 1}), offset=1))
    assert StateChange.from_json(again.outputs[0].value or b"").seq == 2


def test_emitted_events_go_to_the_events_topic_keyed_by_tenant() -> None:
    applied = Store().apply(consumed(event("counter.ping", {}, id="p1")))
    change, sent = applied.outputs
    assert change.topic == TOPICS.state_changes
    assert (sent.topic, sent.key) == (TOPICS.events, b"acme")
    emitted = decode_event(sent.value, fallback_time_ms=0)
    assert (emitted.id, emitted.machine, emitted.parentid) == ("p1/e0", "pinger", "p1")


def test_a_duplicate_produces_and_stores_nothing() -> None:
    store = Store()
    store.apply(consumed(event()))
    applied = store.apply(consumed(event(), offset=1))
    assert applied == Applied("duplicate", ADDRESS, reason="event id 'e1' was applied already")


def test_a_firing_of_a_timer_no_longer_armed_is_stale() -> None:
    store = Store()
    store.apply(consumed(event("counter.alarm", {"seconds": 5})))
    due = 1_700_000_000_000 + 5_000
    fire = event("x", id=timer_event_id("alarm", due), time_ms=due, timer="alarm")
    store.apply(consumed(event("counter.snooze", id="s"), offset=1))
    applied = store.apply(sealed(fire, offset=2))
    assert (applied.verdict, applied.outputs, applied.outcome) == ("stale", (), None)


def test_ttl_rearms_silently_then_expires_with_a_null_state() -> None:
    store = Store()
    store.apply(consumed(event(time_ms=0)))
    store.apply(consumed(event(id="e2", time_ms=30_000), offset=1))
    first = timer_event_id(TTL_TIMER, 60_000)
    rearmed = store.apply(sealed(event("x", id=first, time_ms=60_000, timer=TTL_TIMER), offset=2))
    assert (rearmed.verdict, rearmed.outputs) == ("rearmed", ())
    assert rearmed.outcome is not None
    assert rearmed.stored is not None
    later = timer_event_id(TTL_TIMER, 90_000)
    expired = store.apply(sealed(event("x", id=later, time_ms=90_000, timer=TTL_TIMER), offset=3))
    assert expired.verdict == "expired"
    tombstone = load_record(expired.stored or b"")
    assert (tombstone.state, tombstone.seq) == (None, 3)
    change = StateChange.from_json(expired.outputs[0].value or b"")
    assert (change.event_type, change.state, change.seq) == ("garrison.expired", None, 3)
    # A new event continues the sequence; the tombstone's purge, once due, deletes.
    again = store.apply(consumed(event(id="e4", time_ms=100_000), offset=4))
    assert StateChange.from_json(again.outputs[0].value or b"").seq == 4
    store.records[ADDRESS] = tombstone
    due = tombstone.timers["__purge__"].due_ms
    purge = event("x", id=timer_event_id("__purge__", due), time_ms=due, timer="__purge__")
    purged = store.apply(sealed(purge, offset=5))
    assert (purged.verdict, purged.stored, purged.outputs) == ("purged", None, ())
    assert store.records[ADDRESS] is None


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "tombstone"),
        (b"{not json", "value is not JSON"),
        (b"[1, 2]", "expected a CloudEvent object"),
        (b'{"specversion": "1.0", "id": "x"}', "missing CloudEvents attribute(s): source, type"),
        (
            orjson.dumps(
                {
                    "specversion": "1.0",
                    "id": "x",
                    "source": "s",
                    "type": "t",
                    "tenant": "a/b",
                    "machine": "m",
                    "instance": "i",
                }
            ),
            "contains '/'",
        ),
    ],
)
def test_undecodable_records_are_dead_letters_of_stage_decode(
    value: bytes | None, text: str
) -> None:
    rec = consumed(value, key=b"k", offset=7, partition=3)
    _dead_letter(Store().apply(rec), rec, "decode", text)


@pytest.mark.parametrize(
    ("ev", "stage", "text"),
    [
        (event(machine="ghost"), "route", "no machine named 'ghost'"),
        (event("counter.nope"), "route", "has no reducer for 'counter.nope'"),
        (event(data={"amount": 5000}), "contract", "less than or equal to 1000"),
        (event("counter.broken"), "reducer", "RuntimeError: this reducer always fails"),
        (event("counter.corrupt"), "state", "does not fit Counter"),
        (event("bag.filled", machine="bag"), "output", "not JSON"),
        (event("open", machine="door"), "route", "start it with 'door.made'"),
    ],
)
def test_each_refusal_is_a_dead_letter_with_its_stage(ev: Any, stage: str, text: str) -> None:
    rec = consumed(ev, offset=11)
    _dead_letter(Store().apply(rec), rec, stage, text)


def test_a_transition_the_chart_cannot_take_is_a_dead_letter_of_stage_transition() -> None:
    store = Store()
    made = store.apply(consumed(event("door.made", machine="door")))
    assert made.verdict == "applied"
    store.apply(consumed(event("open", machine="door", id="o1"), offset=1))
    rec = consumed(event("open", machine="door", id="o2"), offset=2)
    _dead_letter(store.apply(rec), rec, "transition", "'open' is not enabled")


def test_a_rejection_leaves_the_stored_record_as_it_was() -> None:
    store = Store()
    store.apply(consumed(event(data={"amount": 2})))
    before = store.records[ADDRESS]
    store.apply(consumed(event("counter.broken", id="b"), offset=1))
    assert store.records[ADDRESS] is before
    after = store.apply(consumed(event(id="e3", data={"amount": 1}), offset=2))
    assert StateChange.from_json(after.outputs[0].value or b"").seq == 2


# -- trust at the edges -----------------------------------------------------------------


def test_a_firing_without_a_valid_seal_is_a_dead_letter_of_stage_origin() -> None:
    store = Store()
    store.apply(consumed(event(time_ms=0)))
    ttl = event("x", id=timer_event_id(TTL_TIMER, 60_000), time_ms=60_000, timer=TTL_TIMER)
    for forged in (
        consumed(ttl, offset=1),  # no seal at all
        sealed(ttl, offset=1, key=b"x" * 32),  # sealed with another key
        consumed(encode_event(ttl), offset=1, headers=((SEAL_HEADER, b"0" * 16),)),
    ):
        _dead_letter(store.apply(forged), forged, "origin", "only garrison's timer delivery")
    assert store.records[ADDRESS] is not None  # the instance lives on
    reserved = consumed(event("garrison.expired", id="g"), offset=2)
    _dead_letter(store.apply(reserved), reserved, "origin", "types starting 'garrison.'")


def test_a_genuine_ttl_firing_expires_and_a_forged_one_cannot() -> None:
    store = Store()
    store.apply(consumed(event(time_ms=0)))
    ttl = event("x", id=timer_event_id(TTL_TIMER, 60_000), time_ms=60_000, timer=TTL_TIMER)
    assert store.apply(consumed(ttl, offset=1)).verdict == "rejected"
    assert store.apply(sealed(ttl, offset=2)).verdict == "expired"


def test_a_record_outside_its_tenants_partition_is_forwarded_unapplied() -> None:
    rules = replace(RULES, partition=1, home=lambda address: 3 if address.tenant == "acme" else 1)
    store: dict[Address, Record | None] = {}
    headers = (("x-request", b"r1"),)
    raw = encode_event(event(data={"amount": 2}))
    rec = consumed(raw, key=None, partition=1, headers=headers)
    applied = apply_record(rules, store.get, rec)
    assert applied.verdict == "forwarded"
    assert applied.outcome is None
    [out] = applied.outputs
    assert (out.topic, out.key, out.value, out.headers, out.partition) == (
        TOPICS.events,
        b"acme",
        raw,
        headers,
        3,
    )
    home = apply_record(rules, store.get, consumed(raw, partition=3, key=b"other"))
    assert home.verdict == "forwarded"  # the key does not matter, the partition does
    here = replace(rules, partition=3)
    assert apply_record(here, store.get, consumed(raw, partition=3, key=b"x")).verdict == "applied"


def test_emits_to_an_undeclared_topic_and_oversized_outputs_are_dead_letters() -> None:
    shouter: Machine[dict[str, Any]] = Machine("shout", topics=["svc.ok"])

    @shouter.on("send")
    def send(config: Any, state: dict[str, Any], event: Any) -> Any:
        return Next(state, Emit("cmd", {}, topic=event.data["to"]))

    @shouter.on("grow")
    def grow(config: Any, state: dict[str, Any], event: Any) -> dict[str, Any]:
        return {"blob": "x" * event.data["size"]}

    reg = Registry([shouter])
    rules = Rules(reg, TOPICS, service_topics=reg.service_topics, max_record_bytes=50_000)
    ok = apply_record(
        rules, lambda a: None, consumed(event("send", {"to": "svc.ok"}, machine="shout"))
    )
    assert [o.topic for o in ok.outputs] == [TOPICS.state_changes, "svc.ok"]
    rec = consumed(event("send", {"to": "svc.gone"}, machine="shout"))
    _dead_letter(
        apply_record(rules, lambda a: None, rec), rec, "output", "which no machine declares"
    )
    small = apply_record(
        rules, lambda a: None, consumed(event("grow", {"size": 20_000}, machine="shout"))
    )
    assert small.verdict == "applied"
    big = consumed(event("grow", {"size": 60_000}, machine="shout"))
    _dead_letter(
        apply_record(rules, lambda a: None, big), big, "output", "over the limit of 50,000"
    )


def test_a_dead_letter_keeps_the_original_headers_and_a_huge_value_stays_put() -> None:
    headers = (("traceparent", b"00-abc-def-01"), ("x-mine", b"\x00\xff"))
    rec = consumed(b"{not json", headers=headers)
    letter = Store().apply(rec)
    assert tuple(letter.outputs[0].headers[:2]) == headers
    assert original_headers(letter.outputs[0].headers) == list(headers)
    rules = replace(RULES, max_record_bytes=20_000)
    huge = consumed(b"x" * 19_000, offset=9)
    [out] = apply_record(rules, lambda a: None, huge).outputs
    assert out.value is None
    assert "too large to copy here" in DeadLetter.read_headers(out.headers)["garrison.reason"]


def test_binary_content_mode_events_are_applied() -> None:
    headers = tuple(
        (f"ce_{k}", v.encode())
        for k, v in {
            "specversion": "1.0",
            "id": "b1",
            "source": "sdk",
            "type": "counter.added",
            "tenant": "acme",
            "machine": "counter",
            "instance": "c1",
        }.items()
    ) + (("content-type", b"application/json"),)
    applied = Store().apply(consumed(b'{"amount": 5}', headers=headers))
    assert applied.verdict == "applied"
    assert StateChange.from_json(applied.outputs[0].value or b"").state["total"] == 5
