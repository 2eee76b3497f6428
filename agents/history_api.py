"""The history route: ``GET /state/{tenant}/{machine}/{instance}/history``.

An instance's applied changes, oldest first, a page at a time: ``from_seq``, ``to_seq``,
``since``, ``until`` (RFC 3339 or epoch ms, on the change's time), ``limit`` (1 to
1000, default 100), ``diff=true`` (each change's RFC 6902 patch from ``prev`` to
``state``); ``next`` is the ``from_seq`` of the following page. Time travel:
``as_of_seq=N`` or ``as_of=TIME`` answers one state (:mod:`pipeline.history`).

The worker's store answers from the instance's last ``GARRISON_HISTORY_KEEP`` changes;
what is older is read from ``<app>.state-changes`` in the tenant's partition, streamed
and filtered, from a time's offset when the read has one (``read`` in the answer says
how many changes came from where, ``scanned`` how many topic records were read). Like
every read, it is served by the worker that owns the tenant (Faust's table router
forwards it there) and needs the tenant's token when tokens are configured
(:func:`agents.http.authorize`).
"""

from __future__ import annotations

from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from faust import web

from agents.changes import partition_records
from agents.http import error, refusal
from agents.kafka import kafka_options
from agents.routing import instance_partition, route_to_instance
from pipeline.address import Address
from pipeline.envelope import format_time
from pipeline.history import (
    AsOf,
    HistoryQuery,
    Window,
    as_of,
    change_prefix,
    entry,
    parse_query,
    plan,
    select,
)
from pipeline.outcome import StateChange
from pipeline.record import load_record
from tables.history import stored_changes
from tables.keys import encode_key

if TYPE_CHECKING:
    from agents.app import GarrisonApp

__all__ = ["add_history_api", "older_changes"]


async def older_changes(
    app: GarrisonApp,
    tenant: str,
    machine: str,
    instance: str,
    window: Window,
    start_ms: int | None,
) -> int:
    """Feed ``window`` the instance's changes from the state-change topic, from
    ``start_ms`` (None: the partition's start) until it reaches the stored ones; the
    number of records scanned."""
    settings = app.settings
    prefix = change_prefix(tenant, machine, instance)
    partition = instance_partition(settings)(tenant, machine, instance)
    records = partition_records(
        kafka_options(settings.kafka), settings.topics.state_changes, partition, start_ms=start_ms
    )
    scanned = 0
    async with aclosing(records) as chunks:
        async for chunk in chunks:
            for rec in chunk:
                scanned += 1
                value = rec.value
                if value is not None and value.startswith(prefix):
                    if window.feed(StateChange.from_json(value)):
                        return scanned
    return scanned


def add_history_api(app: GarrisonApp) -> None:
    """Register the history route on ``app``'s web server."""
    settings = app.settings
    address_partition = instance_partition(settings)

    @app.page("/state/{tenant}/{machine}/{instance}/history")
    @route_to_instance(app)
    async def get_history(
        view: web.View, request: web.Request, tenant: str, machine: str, instance: str
    ) -> web.Response:
        if (no := refusal(view, settings.web, request, tenant)) is not None:
            return no
        try:
            key = encode_key(*Address.checked(tenant, machine, instance))
            read = parse_query(dict(request.query))
        except ValueError as exc:  # InvalidAddress and InvalidQuery are ValueErrors
            return error(view, 400, str(exc))
        partition = address_partition(tenant, machine, instance)
        raw = app.state_store.get(partition, key)
        rec = None if raw is None else load_record(raw)
        name = f"{tenant}/{machine}/{instance}"
        if rec is None:
            return error(view, 404, f"no instance {name}")
        keep = settings.history.keep
        stored = stored_changes(app.state_store.scan_prefix, partition, key, rec.seq, keep)
        need = plan(read, stored, settings.history.clock_skew_ms)
        address: dict[str, Any] = {"tenant": tenant, "machine": machine, "instance": instance}
        if isinstance(read, AsOf):
            if read.seq is not None and read.seq > rec.seq:
                return error(view, 404, f"{name} is at seq {rec.seq}; it has no seq {read.seq}")
            older: list[StateChange] = []
            scanned = 0
            if need.topic:
                wanted = read.seq
                found = Window(
                    stored,
                    (lambda c: c.seq == wanted)
                    if wanted is not None
                    else (lambda c: c.time_ms > (read.time_ms or 0)),
                    1,
                )
                scanned = await older_changes(app, tenant, machine, instance, found, need.start_ms)
                older = found.changes
            state = as_of(read, older, stored, (rec.seq, rec.state))
            asked = (
                {"seq": read.seq}
                if read.seq is not None
                else {"time": format_time(read.time_ms or 0), "time_ms": read.time_ms}
            )
            if state is None:
                what = f"seq {read.seq}" if read.seq is not None else f"time {asked['time']}"
                return error(view, 404, f"{name} has no state as of {what}")
            return view.json(
                {**address, "as_of": asked, "seq": state[0], "state": state[1], "scanned": scanned}
            )
        assert isinstance(read, HistoryQuery)
        older = []
        scanned = 0
        if need.topic:
            window = Window(stored, read.wants, read.limit + 1)
            scanned = await older_changes(app, tenant, machine, instance, window, need.start_ms)
            older = window.changes
        page, following = select(older, stored, read)
        first_stored = stored[0].seq if stored else rec.seq + 1
        from_topic = sum(1 for c in page if c.seq < first_stored)
        return view.json(
            {
                **address,
                "seq": rec.seq,
                "changes": [entry(c, diff=read.diff) for c in page],
                "next": following,
                "read": {"store": len(page) - from_topic, "topic": from_topic},
                "scanned": scanned,
            }
        )
