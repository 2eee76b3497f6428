"""Hot-tenant keying and trace context as data, in the pure decision: the key each output
gets, the partition it goes to, and the trace context it carries on."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from pipeline import Emit, Machine, Next, Registry
from pipeline.address import Address
from pipeline.decision import Rules, apply_record, trace_headers
from pipeline.envelope import Event, decode_event
from pipeline.partitioning import NOT_HOT, Partitioning
from pipeline.settings import InvalidSettings, Topics, load_settings
from tests.samples import consumed, counter_machine, event

TOPICS = Topics.of("app")
HOT = Partitioning(hot_tenants=frozenset({"big"}), hot_machines=frozenset({"click"}))
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _relay() -> Machine[dict[str, Any]]:
    m: Machine[dict[str, Any]] = Machine("relay", initial={"n": 0})

    @m.on("relay.go")
    def go(config: Any, state: dict[str, Any], ev: Any) -> Any:
        return Next({"n": state["n"] + 1}, Emit("counter.added", {"amount": 1}, machine="counter"))

    return m


REG = Registry([counter_machine(), _relay()])


def _home(partitions: int, part: Partitioning) -> Any:
    # Any deterministic function of the key does: the lane uses murmur2 (agents.kafka).
    return lambda a: sum(part.key(*a)) % partitions


def test_keys_are_the_tenant_unless_the_tenant_or_machine_is_hot() -> None:
    assert HOT.key("acme", "order", "o-1") == b"acme"
    assert HOT.key("big", "order", "o-1") == b"big/o-1"
    assert HOT.key("acme", "click", "c-9") == b"acme/c-9"
    assert NOT_HOT.key("big", "click", "c-9") == b"big"
    assert HOT.spread("big")
    assert HOT.spread("acme")
    assert not Partitioning(hot_tenants=frozenset({"big"})).spread("acme")
    assert not NOT_HOT.any_hot
    assert HOT.any_hot


def test_a_hot_tenants_outputs_are_keyed_and_placed_by_instance() -> None:
    rules = Rules(REG, TOPICS, partitioning=HOT, home=_home(7, HOT))
    ev = event(tenant="big", machine="relay", instance="r1", type="relay.go", data={})
    rules = replace(rules, partition=rules.home(Address("big", "relay", "r1")))
    applied = apply_record(rules, {}.get, consumed(ev, key=b"big/r1"))
    assert applied.verdict == "applied"
    change, emitted = applied.outputs
    assert (change.topic, change.key) == (TOPICS.state_changes, b"big/r1")
    # The emitted event is for another machine of the tenant: its own key and home.
    assert (emitted.topic, emitted.key) == (TOPICS.events, b"big/r1")  # same instance id
    assert emitted.partition == sum(b"big/r1") % 7


def test_a_record_off_its_hot_home_is_forwarded_with_its_hot_key() -> None:
    rules = Rules(REG, TOPICS, partitioning=HOT, home=_home(7, HOT), partition=0)
    ev = event(tenant="big", instance="c5")
    where = sum(b"big/c5") % 7
    assert where != 0
    applied = apply_record(rules, {}.get, consumed(ev, key=b"big"))
    assert applied.verdict == "forwarded"
    [out] = applied.outputs
    assert (out.key, out.partition) == (b"big/c5", where)
    assert apply_record(replace(rules, partition=where), {}.get, consumed(ev)).verdict == "applied"


def test_an_events_trace_context_goes_on_to_its_state_change_and_emits_as_data() -> None:
    ev = event(machine="relay", instance="r1", type="relay.go", data={})._replace(
        traceparent=PARENT, tracestate="k=v"
    )
    applied = apply_record(Rules(REG, TOPICS), {}.get, consumed(ev))
    change, emitted = applied.outputs
    assert change.headers == trace_headers(PARENT, "k=v")
    assert change.headers == (("traceparent", PARENT.encode()), ("tracestate", b"k=v"))
    sent = decode_event(emitted.value, fallback_time_ms=0)
    assert (sent.traceparent, sent.tracestate) == (PARENT, "k=v")
    plain = apply_record(Rules(REG, TOPICS), {}.get, consumed(event()))
    assert plain.outputs[0].headers == ()  # no context, no headers


def test_the_trace_hook_sets_the_context_outputs_carry() -> None:
    seen: list[Event] = []
    child = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"

    def trace(ev: Event) -> Event:
        seen.append(ev)
        return ev._replace(traceparent=child, tracestate=None)

    ev = event(machine="relay", instance="r1", type="relay.go", data={})._replace(
        traceparent=PARENT
    )
    applied = apply_record(Rules(REG, TOPICS, trace=trace), {}.get, consumed(ev))
    assert [s.traceparent for s in seen] == [PARENT]
    change, emitted = applied.outputs
    assert change.headers == (("traceparent", child.encode()),)
    assert decode_event(emitted.value, fallback_time_ms=0).traceparent == child


def test_a_dead_letter_after_decoding_names_its_address() -> None:
    ev = event(data={"amount": "lots"})  # breaks the counter's contract
    applied = apply_record(Rules(REG, TOPICS), {}.get, consumed(ev))
    assert (applied.verdict, applied.stage, applied.address) == (
        "rejected",
        "contract",
        Address("acme", "counter", "c1"),
    )


def test_hot_settings_take_names_or_json_and_refuse_bad_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GARRISON_HOT_TENANTS", "big, huge")
    monkeypatch.setenv("GARRISON_HOT_MACHINES", '["click"]')
    settings = load_settings()
    assert settings.partitioning == Partitioning(frozenset({"big", "huge"}), frozenset({"click"}))
    monkeypatch.setenv("GARRISON_HOT_TENANTS", "a/b")
    with pytest.raises(InvalidSettings, match="GARRISON_HOT_TENANTS: .*contains '/'"):
        load_settings()
