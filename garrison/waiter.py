"""Waiting for a state: ``Client.wait_for`` and the follower of state changes it uses.

:func:`wait_for` returns the first state of an instance for which a condition holds:

1. it takes its position in ``<app>.state-changes`` (the instance's partition: its
   tenant's, or its own for a hot one; the last committed offset, read_committed)
   *before* anything else;
2. it reads the instance over HTTP (any worker): if the condition holds already, that
   state is the answer, at once;
3. else it follows the changes from that position, evaluating the condition on each
   new state of the instance, until one holds or the timeout passes
   (:class:`WaitTimedOut`).

Nothing between the read and the follow is missed: every change the read did not see
comes after the position. (A read served in the instant between a transaction's commit
and the worker's own store write could see the state before a change the position is
already past; the follower notices the gap in the sequence and reads the changes it
skipped from the instance's history.) Inside a machine, waiting is a state plus a
timer: see docs/queries.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.kafka import kafka_options, partition_of
from garrison.history import fetch_history
from garrison.query import fetch_state
from pipeline.address import Address
from pipeline.errors import GarrisonError
from pipeline.history import change_prefix
from pipeline.outcome import StateChange
from pipeline.settings import Settings

__all__ = ["ChangeFollower", "Seen", "WaitTimedOut", "wait_for"]

Condition = Callable[[Any], bool]


class WaitTimedOut(GarrisonError, TimeoutError):
    """No state of the instance met the condition within the timeout."""


class Seen(NamedTuple):
    """The state a wait ended on: ``seq``, ``state``, its ``computed`` values (when it
    was read over HTTP, or the machine publishes them with its changes), and the
    ``event_id``/``event_type`` that made it (None when it was read, already true)."""

    seq: int
    state: Any
    computed: dict[str, Any] | None = None
    event_id: str | None = None
    event_type: str | None = None

    @classmethod
    def of(cls, change: StateChange) -> Seen:
        """The state a published change made."""
        return cls(change.seq, change.state, change.computed, change.event_id, change.event_type)


class ChangeFollower:
    """Follows the state changes of the partition an instance's changes go to (its
    tenant's; its own key's for a hot tenant or machine, ``pipeline.partitioning``) from
    the position taken when it starts (``async with``): what was committed after that,
    read_committed."""

    def __init__(self, settings: Settings, tenant: str, machine: str, instance: str) -> None:
        self._settings = settings
        self.tenant = tenant
        key = settings.partitioning.key(tenant, machine, instance)
        self._tp = TopicPartition(
            settings.topics.state_changes, partition_of(key, settings.kafka.partitions)
        )
        self._consumer: AIOKafkaConsumer | None = None
        self.position = -1

    async def __aenter__(self) -> ChangeFollower:
        consumer = AIOKafkaConsumer(
            **kafka_options(self._settings.kafka),
            isolation_level="read_committed",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            consumer.assign([self._tp])
            # With read_committed, the end is the last stable offset: what is committed.
            self.position = (await consumer.end_offsets([self._tp]))[self._tp]
            consumer.seek(self._tp, self.position)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def changes(self, timeout_s: float, *, prefix: bytes = b"") -> AsyncIterator[StateChange]:
        """Changes in the partition's order, those whose JSON starts with ``prefix``
        (``pipeline.history.change_prefix``: one instance's), until ``timeout_s`` passes."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("ChangeFollower is not started; use `async with`")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (left := deadline - loop.time()) > 0:
            batch = await consumer.getmany(self._tp, timeout_ms=int(min(left, 0.5) * 1000) + 1)
            for rec in batch.get(self._tp, ()):
                if rec.value is not None and rec.value.startswith(prefix):
                    yield StateChange.from_json(rec.value)


async def wait_for(
    settings: Settings,
    tenant: str,
    machine: str,
    instance: str,
    condition: Condition,
    timeout: float,
    *,
    after_seq: int = 0,
    url: str | None = None,
    token: str | None = None,
) -> Seen:
    """The first state of the instance (past ``after_seq``) for which ``condition(state)``
    holds: the current one if it does already, else the first later one; raises
    :class:`WaitTimedOut` after ``timeout`` seconds. An instance that does not exist yet
    is waited for; an ended one's final change (``state`` None) is not a state."""
    Address.checked(tenant, machine, instance)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: int | None = None  # the seq seen last (None: unknown)
    async with ChangeFollower(settings, tenant, machine, instance) as follower:
        read = await fetch_state(settings, tenant, machine, instance, url=url, token=token)
        if read is not None:
            last = read["seq"]
            seen = Seen(read["seq"], read["state"], read.get("computed"))
            if seen.seq > after_seq and condition(seen.state):
                return seen
        prefix = change_prefix(tenant, machine, instance)
        async for change in follower.changes(max(0.0, deadline - loop.time()), prefix=prefix):
            if change.seq == 1:
                last = 0  # a new life of the address (or its first)
            if last is not None and change.seq <= last:
                continue  # the read had it
            if last is not None and change.seq > last + 1:
                missed = await fetch_history(
                    settings,
                    tenant,
                    machine,
                    instance,
                    url=url,
                    token=token,
                    from_seq=last + 1,
                    to_seq=change.seq - 1,
                    limit=1000,
                )
                for old in missed["changes"]:
                    if old["state"] is not None and old["seq"] > after_seq:
                        if condition(old["state"]):
                            return Seen(
                                old["seq"], old["state"], None, old["event_id"], old["event_type"]
                            )
            last = change.seq
            if change.state is not None and change.seq > after_seq and condition(change.state):
                return Seen.of(change)
    where = "no state yet" if last is None else f"last seen seq {last}"
    raise WaitTimedOut(
        f"no state of {tenant}/{machine}/{instance} met the condition within {timeout:g} s "
        f"({where})"
    )
