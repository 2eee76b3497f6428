"""The benchmark workload: one definition that every system under test reads and applies.

Input, on ``<bench-app>.events`` (key = tenant id): garrison CloudEvents JSON, made by
:func:`pipeline.envelope.encode_event`, for machine ``counter`` and event type
``counter.added``::

    {"specversion": "1.0", "id": "e17", "source": "bench", "type": "counter.added",
     "time": "2026-01-01T00:00:00.017Z", "tenant": "t12", "machine": "counter",
     "instance": "i40", "datacontenttype": "application/json",
     "data": {"amount": 3, "note": "n17"}}

Work per event, the same in every system: decode the JSON; read the instance's entry
``{"seq": n, "state": {...}}`` by (tenant, machine, instance) from the state store
(a missing entry is ``seq`` 0 and :data:`INITIAL`); apply :func:`apply`; write the
entry back (with a changelog where the system has one); produce one state change,
:func:`change`, to the output topic with the tenant id as key::

    {"tenant": "t12", "machine": "counter", "instance": "i40", "seq": 2,
     "event_id": "e17", "event_type": "counter.added", "time": "...",
     "prev": {"count": 1, "total": 5, "last": "e3"},
     "state": {"count": 2, "total": 8, "last": "e17"}}

Event ``i`` goes to slot ``(i * stride) % slots`` of ``tenants * instances`` slots, so
consecutive events touch different tenants, every slot gets an event in each run of
``slots`` events, and the final state of any instance is known without replaying the
log (:meth:`Workload.expected`).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BASE_TIME_MS",
    "INITIAL",
    "MACHINE",
    "EVENT_TYPE",
    "SOURCE",
    "Workload",
    "Expected",
    "apply",
    "change",
    "store_key",
    "baseline_args",
]

MACHINE = "counter"
EVENT_TYPE = "counter.added"
SOURCE = "bench"
BASE_TIME_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z; event i happens at + i ms
INITIAL: dict[str, Any] = {"count": 0, "total": 0, "last": ""}
_GOLDEN = 0.6180339887  # a stride of slots / phi spreads consecutive events evenly


def apply(state: dict[str, Any], event_id: str, amount: int) -> dict[str, Any]:
    """The reducer every system runs: count += 1, total += amount, last = event id."""
    return {"count": state["count"] + 1, "total": state["total"] + amount, "last": event_id}


def change(
    event: dict[str, Any], seq: int, prev: dict[str, Any] | None, state: dict[str, Any]
) -> dict[str, Any]:
    """The state-change record the baselines publish for ``event`` (decoded JSON)."""
    return {
        "tenant": event["tenant"],
        "machine": event["machine"],
        "instance": event["instance"],
        "seq": seq,
        "event_id": event["id"],
        "event_type": event["type"],
        "time": event.get("time"),
        "prev": prev,
        "state": state,
    }


def store_key(event: dict[str, Any]) -> bytes:
    """The baselines' state key: ids cannot hold '/', so the join is unambiguous."""
    return f"{event['tenant']}/{event['machine']}/{event['instance']}".encode()


def baseline_args(argv: Sequence[str] | None = None, description: str = "") -> argparse.Namespace:
    """The command line every baseline process takes (the harness starts it so)::

        CMD --bootstrap HOST:PORT --input TOPIC --output TOPIC --group GROUP \\
            --state-dir DIR --partitions P

    It consumes ``--input`` from the start in consumer group ``--group``, writes its
    state changes to ``--output`` (created by the harness with P partitions), keeps its
    local state under ``--state-dir``, and runs until SIGTERM (SIGKILL 10 s later).
    """
    p = argparse.ArgumentParser(description=description)
    for name in ("bootstrap", "input", "output", "group", "state-dir"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--partitions", type=int, required=True)
    return p.parse_args(argv)


@dataclass(frozen=True, slots=True)
class Expected:
    """What an instance looks like after the whole workload."""

    tenant: str
    instance: str
    seq: int
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Workload:
    """``events`` events over ``tenants`` x ``instances`` counter instances."""

    tenants: int
    instances: int
    events: int

    @property
    def slots(self) -> int:
        """How many instances exist in all."""
        return self.tenants * self.instances

    @property
    def stride(self) -> int:
        """The step between the slots of consecutive events (coprime with ``slots``)."""
        stride = max(1, int(self.slots * _GOLDEN))
        while math.gcd(stride, self.slots) != 1:
            stride += 1
        return stride

    def address(self, i: int) -> tuple[str, str]:
        """(tenant id, instance id) of event ``i``."""
        slot = (i * self.stride) % self.slots
        return f"t{slot % self.tenants}", f"i{slot // self.tenants}"

    @staticmethod
    def amount(i: int) -> int:
        """The ``amount`` of event ``i``: 1 to 7."""
        return i % 7 + 1

    def records(
        self,
        start: int = 0,
        stop: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of events ``start`` to ``stop``, encoded as garrison CloudEvents."""
        from pipeline.envelope import Event, encode_event

        stride, slots, tenants = self.stride, self.slots, self.tenants
        for i in range(start, self.events if stop is None else stop):
            slot = (i * stride) % slots
            tenant = f"t{slot % tenants}"
            event = Event(
                f"e{i}",
                EVENT_TYPE,
                SOURCE,
                tenant,
                MACHINE,
                f"i{slot // tenants}",
                BASE_TIME_MS + i,
                {"amount": i % 7 + 1, "note": f"n{i % 100}"},
            )
            yield tenant.encode(), encode_event(event)

    def expected(self, slot: int) -> Expected:
        """The final state of the instance in ``slot``, computed without a replay."""
        slots = self.slots
        first = slot * pow(self.stride, -1, slots) % slots if slots > 1 else 0
        indices = range(first, self.events, slots)
        state = dict(INITIAL)
        for i in indices:
            state = apply(state, f"e{i}", self.amount(i))
        return Expected(f"t{slot % self.tenants}", f"i{slot // self.tenants}", len(indices), state)

    def sample(self, n: int) -> list[Expected]:
        """The expected final states of ``n`` instances that the workload touches."""
        touched = min(self.events, self.slots)  # events 0..touched-1 hit distinct slots
        count = min(n, touched)
        stride, slots = self.stride, self.slots
        return [
            self.expected((k * touched // count + k) % touched * stride % slots)
            for k in range(count)
        ]
