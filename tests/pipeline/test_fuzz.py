"""Whatever bytes, JSON or headers arrive, the decision returns a verdict: nothing but a
rejection (a dead letter) ever comes out of bad input, and nothing escapes as an error.

Also used by the broker test that feeds a real worker (``tests/agents/test_fuzz_worker.py``):
:func:`bad_records` makes its mix of hostile input, reproducibly from a seed.
"""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.address import Address
from pipeline.decision import Rules, apply_record
from pipeline.record import Record
from pipeline.settings import Topics
from tests.samples import consumed, event, sample_registry

RULES = Rules(sample_registry(), Topics.of("fuzz"), seal_key=b"s" * 32, max_record_bytes=100_000)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "specversion",
    "id",
    "source",
    "type",
    "tenant",
    "machine",
    "instance",
    "time",
    "data",
    "timer",
    "parentid",
    "data_base64",
    "traceparent",
]
headers = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "ce_id",
                "ce_specversion",
                "ce_type",
                "content-type",
                "garrison.seal",
                "ce_tenant",
                "x",
            ]
        ),
        st.binary(max_size=20),
    ),
    max_size=5,
)


def _valid() -> dict[str, Any]:
    return orjson.loads(consumed(event(data={"amount": 3})).value or b"{}")


mutated = st.builds(
    lambda drop, changes: {**{k: v for k, v in _valid().items() if k not in drop}, **changes},
    st.sets(st.sampled_from(FIELDS), max_size=3),
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=3),
)


def _decide(
    value: bytes | None, hdrs: list[tuple[str, bytes]], store: dict[Address, Record | None]
) -> None:
    applied = apply_record(RULES, store.get, consumed(value, headers=tuple(hdrs)))
    assert applied.verdict in {
        "applied",
        "duplicate",
        "stale",
        "rearmed",
        "expired",
        "purged",
        "rejected",
        "forwarded",
    }
    if applied.verdict == "rejected":
        assert [o.topic for o in applied.outputs] == ["fuzz.dlq"]
        assert applied.stage
        assert applied.reason
    if applied.outcome is not None and applied.address is not None:
        store[applied.address] = applied.outcome.record


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | st.none(), headers)
def test_arbitrary_bytes_are_decided(value: bytes | None, hdrs: list[tuple[str, bytes]]) -> None:
    _decide(value, hdrs, {})


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, headers)
def test_arbitrary_json_is_decided(value: Any, hdrs: list[tuple[str, bytes]]) -> None:
    _decide(json.dumps(value).encode(), hdrs, {})


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated, min_size=1, max_size=6), headers)
def test_mutated_events_are_decided_one_after_another(
    objs: list[dict[str, Any]], hdrs: Any
) -> None:
    store: dict[Address, Record | None] = {}
    for obj in objs:
        raw = json.dumps(obj).encode()  # any JSON text, big integers too
        _decide(raw, hdrs, store)
        _decide(raw, [], store)


def bad_records(seed: int, count: int) -> list[tuple[bytes | None, bytes | None]]:
    """``count`` hostile ``(key, value)`` records for tenant ``fuzz-bad``: random bytes,
    random JSON, and valid events broken one way or another (each must be rejected)."""
    rng = random.Random(seed)
    out: list[tuple[bytes | None, bytes | None]] = []
    base = orjson.loads(consumed(event(tenant="fuzz-bad", data={"amount": 1})).value or b"{}")

    def drop(obj: dict[str, Any]) -> dict[str, Any]:
        gone = rng.choice(["id", "type", "tenant", "instance"])
        return {k: v for k, v in obj.items() if k != gone}

    breakers = [
        drop,
        lambda o: {**o, "specversion": rng.choice(["0.3", 1, None, ""])},
        lambda o: {**o, "instance": rng.choice(["a/b", "", "x" * 200, 7])},
        lambda o: {**o, "data": {"amount": rng.choice(["many", 10**9, None])}},
        lambda o: {**o, "time": rng.choice(["yesterday", "2026-01-01T00:00:00", 5])},
        lambda o: {**o, "timer": "__ttl__"},
        lambda o: {**o, "type": rng.choice(["counter.nope", "garrison.expired", "counter.broken"])},
        lambda o: {**o, "machine": "ghost"},
    ]
    for n in range(count):
        kind = n % 3
        if kind == 0:
            value = rng.randbytes(rng.randrange(0, 60))
        elif kind == 1:
            value = orjson.dumps(rng.choice([[1, 2], "text", 3.5, {"a": {"b": None}}, None]))
        else:
            obj = rng.choice(breakers)({**base, "id": f"bad-{seed}-{n}"})
            value = orjson.dumps(obj)
        out.append((b"fuzz-bad", value))
    return out


def test_every_generated_bad_record_is_rejected() -> None:
    store: dict[Address, Record | None] = {}
    for _, value in bad_records(7, 300):
        applied = apply_record(RULES, store.get, consumed(value, key=b"fuzz-bad"))
        assert applied.verdict == "rejected", (value, applied)
