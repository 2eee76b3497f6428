"""The compacted latest-state topic: off by default; when on, one record per change, in
the same decision, keyed by the address, a tombstone when the instance ends."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson

from pipeline.address import Address
from pipeline.decision import Rules, apply_record
from pipeline.latest import latest_key
from pipeline.record import Record
from pipeline.settings import Settings, Topics
from pipeline.step import TTL_TIMER, timer_firing
from tests.samples import SEAL_KEY, consumed, event, sample_registry, sealed


def _run(topics: Topics, *events: Any, ttl: timedelta | None = None) -> list[Any]:
    rules = Rules(sample_registry(ttl=ttl), topics)
    records: dict[Address, Record | None] = {}
    outputs = []
    for n, ev in enumerate(events):
        applied = apply_record(rules, records.get, consumed(ev, offset=n))
        if applied.outcome is not None:
            assert applied.address is not None
            records[applied.address] = applied.outcome.record
        outputs.append(applied.outputs)
    return outputs


def test_off_by_default() -> None:
    assert Settings().topics.latest is None
    (out,) = _run(Topics.of("app"), event(id="e1"))
    assert [o.topic for o in out] == ["app.state-changes"]


def test_each_change_gives_the_latest_state_keyed_by_address() -> None:
    topics = Topics.of("app", latest=True)
    first, second, dup = _run(
        topics, event(id="e1"), event(id="e2", data={"amount": 4}), event(id="e2")
    )
    assert [o.topic for o in second] == ["app.state-changes", "app.latest"]
    latest = second[1]
    assert latest.key == latest_key("acme", "counter", "c1") == b"acme/counter/c1"
    assert latest.partition is None  # the lane's partition: the tenant's, as the change
    body = orjson.loads(latest.value or b"")
    assert (body["seq"], body["state"], body["event_id"]) == (
        2,
        {"count": 2, "total": 5, "last": "e2"},
        "e2",
    )
    assert dup == ()  # a duplicate publishes nothing, there either


def test_an_instance_that_ends_leaves_a_tombstone() -> None:
    topics = Topics.of("app", latest=True)
    start = event(id="e1", time_ms=0)
    (out,) = _run(topics, start, ttl=timedelta(seconds=1))[:1]
    rules = Rules(sample_registry(ttl=timedelta(seconds=1)), topics, seal_key=SEAL_KEY)
    applied = apply_record(rules, lambda a: None, consumed(start))
    assert applied.outcome is not None
    record = applied.outcome.record
    assert record is not None
    ttl = record.timers[TTL_TIMER]
    expired = apply_record(rules, lambda a: record, sealed(timer_firing(start, TTL_TIMER, ttl)))
    assert expired.verdict == "expired"
    latest = [o for o in expired.outputs if o.topic == "app.latest"]
    assert [(o.key, o.value) for o in latest] == [(b"acme/counter/c1", None)]
    assert [o.topic for o in out] == ["app.state-changes", "app.latest"]
