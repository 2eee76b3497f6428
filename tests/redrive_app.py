"""Apps for the re-drive test: ``strict`` is the sample counter (an ``amount`` over 1000
breaks its contract); ``relaxed`` is the same machine with the contract relaxed, as its
owner would deploy to accept what was dead-lettered. Both have the ``audit`` listener,
which fails on ``counter.reset`` while :data:`BROKEN` holds."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from pipeline import Machine, Registry, StateChange
from tests.samples import Counter, counter_machine, pinger_machine

BROKEN = {"audit": True}
AUDITED: list[tuple[str, int]] = []


class LooseAdded(BaseModel):
    """``counter.added`` with any amount."""

    model_config = ConfigDict(extra="forbid")
    amount: int
    note: str = ""


def _relaxed_counter() -> Machine[Counter]:
    m: Machine[Counter] = Machine("counter", state=Counter)

    @m.on("counter.added", payload=LooseAdded)
    def added(config: Any, state: Counter, event: Any) -> Counter:
        return Counter(count=state.count + 1, total=state.total + event.data.amount, last=event.id)

    @m.on("counter.reset")
    def reset(config: Any, state: Counter, event: Any) -> Counter:
        return Counter(last=event.id)

    return m


def _with_audit(registry: Registry) -> Registry:
    @registry.listener(name="audit", machine="counter", on="counter.reset", retries=0, backoff_s=0)
    def audit(change: StateChange, ctx: Any) -> None:
        if BROKEN["audit"]:
            raise ConnectionError("the audit store is down")
        AUDITED.append((change.instance, change.seq))

    return registry


strict = _with_audit(Registry([counter_machine(), pinger_machine()]))
relaxed = _with_audit(Registry([_relaxed_counter(), pinger_machine()]))
