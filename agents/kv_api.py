"""The worker's key-value reads: scopes, keys and values of a tenant, from the state store.

- ``GET /kv/{tenant}``: the declared scopes in which the tenant has keys
  (``?count=true``: with the number of keys of each);
- ``GET /kv/{tenant}/{scope}?prefix=&limit=&cursor=&count=&values=``: a page of the
  scope's keys (storage order), those starting with ``prefix``; ``next`` is the cursor
  of the following page; ``count=true`` adds the number of matching keys, and
  ``values=true`` each key's value;
- ``GET /kv/{tenant}/{scope}/{key}?min_seq=``: one value, its seq, last write and
  expiry; with ``min_seq``, once the store has the key at that seq or later (a client
  reading its own write: the store is written just after the write's transaction
  commits), waiting up to 2 s, else 503.

Like ``agents.api`` (the same token check, ``agents.http.refusal``), a tenant's reads
are served by the worker that owns its partition (a hot key's own, ``agents.routing``)
and forwarded there by any other. A key whose TTL has passed is not
served even in the moment before its expiry is applied. 404 bodies say what is
missing (``"missing": "scope"`` or ``"key"``); a bad request is a 400 saying why.
Listing scans the scope's keys in the store: a page costs the keys it passes over,
``count`` and a rare ``prefix`` cost the whole scope (docs/kv.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from faust import web

from agents.http import error, next_cursor, page_cursor, page_limit, refusal
from agents.kafka import partition_of
from agents.routing import SPREAD, instance_partition, route_to_instance
from pipeline.address import check_id
from pipeline.kv import EXPIRE_TIMER, Scope, check_key, check_scope, scope_machine
from pipeline.record import Record, load_record
from tables.keys import encode_key, read_part, tenant_prefix

if TYPE_CHECKING:
    from agents.app import GarrisonApp

__all__ = ["add_kv_api"]
_CATCH_UP_S = 2.0  # how long a read waits for the store to reach a given seq


def _live(record: Record, now_ms: int) -> bool:
    """A key with a value whose TTL, if any, has not passed."""
    if record.state is None:
        return False
    timer = record.timers.get(EXPIRE_TIMER)
    return timer is None or timer.due_ms > now_ms


def _flag(raw: str | None, name: str) -> bool:
    if raw is None or raw in ("false", "0"):
        return False
    if raw in ("true", "1", ""):
        return True
    raise ValueError(f"{name} must be true or false, got {raw!r}")


def _min_seq(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"min_seq must be a whole number >= 1, got {raw!r}")
    return int(raw)


def add_kv_api(app: GarrisonApp) -> None:
    """Register the key-value routes on ``app``'s web server."""
    state_table = app.tables["state"]
    partitions = app.settings.kafka.partitions
    address_partition = instance_partition(app.settings)
    hot = app.settings.partitioning
    scopes = {
        m.scope: m for m in app.registry.machines.values() if isinstance(m, Scope)
    }  # the declared scopes, by name

    def no_scope(view: web.View, scope: str) -> web.Response:
        known = ", ".join(sorted(scopes)) or "none"
        return error(view, 404, f"no scope {scope!r}; this app declares: {known}", missing="scope")

    def keys(tenant: str, scope: str, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """The scope's stored records from ``start`` (default its first key), in key
        order, undecoded (a listing with a prefix decodes only the ones it keeps)."""
        prefix = tenant_prefix(tenant, scope_machine(scope))
        partition = partition_of(tenant.encode(), partitions)
        return app.state_store.scan_prefix(partition, prefix, start)

    def key_of(raw: bytes, tenant: str, scope: str) -> str:
        name, _ = read_part(raw, len(tenant_prefix(tenant, scope_machine(scope))))
        return name

    async def guarded(
        view: web.View, request: web.Request, tenant: str, fn: Callable[[], Awaitable[Any]]
    ) -> web.Response:
        if (no := refusal(view, app.settings.web, request, tenant)) is not None:
            return no
        try:
            check_id("tenant", tenant)
            result: web.Response = await fn()
            return result
        except ValueError as exc:  # InvalidAddress is a ValueError
            return error(view, 400, str(exc))

    @app.page("/kv/{tenant}")
    @app.table_route(table=state_table, match_info="tenant")
    async def kv_scopes(view: web.View, request: web.Request, tenant: str) -> web.Response:
        async def answer() -> web.Response:
            counting = _flag(request.query.get("count"), "count")
            if tenant in hot.hot_tenants:
                return error(view, 409, SPREAD)
            now = int(time.time() * 1000)
            out = []
            for name in sorted(scopes):
                if scope_machine(name) in hot.hot_machines:
                    continue  # keyed by key: its keys are not all here
                live = (k for k, v in keys(tenant, name) if _live(load_record(v), now))
                if counting:
                    n = sum(1 for _ in live)
                    if n:
                        out.append({"scope": name, "count": n})
                elif next(live, None) is not None:
                    out.append({"scope": name})
            return view.json({"tenant": tenant, "scopes": out})

        return await guarded(view, request, tenant, answer)

    @app.page("/kv/{tenant}/{scope}")
    @app.table_route(table=state_table, match_info="tenant")
    async def kv_keys(
        view: web.View, request: web.Request, tenant: str, scope: str
    ) -> web.Response:
        async def answer() -> web.Response:
            check_scope(scope)
            if scope not in scopes:
                return no_scope(view, scope)
            if hot.is_hot(tenant, scope_machine(scope)):
                return error(view, 409, SPREAD)
            q = request.query
            limit = page_limit(q.get("limit"))
            counting = _flag(q.get("count"), "count")
            with_values = _flag(q.get("values"), "values")
            prefix = q.get("prefix") or ""
            base = tenant_prefix(tenant, scope_machine(scope))
            after = page_cursor(q.get("cursor"), base)
            start = None if after is None else after + b"\x00"  # the first key after it
            now = int(time.time() * 1000)

            def matching(start: bytes | None) -> Iterator[tuple[bytes, str, Record]]:
                for raw, value in keys(tenant, scope, start):
                    name = key_of(raw, tenant, scope)
                    if name.startswith(prefix) and _live(rec := load_record(value), now):
                        yield raw, name, rec

            out: list[dict[str, Any]] = []
            last, more = None, False
            for raw, name, rec in matching(start):
                if len(out) == limit:
                    more = True
                    break
                item: dict[str, Any] = {"key": name, "seq": rec.seq}
                if with_values:
                    item["value"] = rec.state["value"]
                out.append(item)
                last = raw
            following = next_cursor(last) if more else None
            body: dict[str, Any] = {
                "tenant": tenant,
                "scope": scope,
                "keys": out,
                "next": following,
            }
            if counting:  # every matching key of the scope, whatever the page
                body["count"] = sum(1 for _ in matching(None))
            return view.json(body)

        return await guarded(view, request, tenant, answer)

    @app.page("/kv/{tenant}/{scope}/{key}")
    @route_to_instance(app, lambda p: (p["tenant"], scope_machine(p["scope"]), p["key"]))
    async def kv_entry(
        view: web.View, request: web.Request, tenant: str, scope: str, key: str
    ) -> web.Response:
        async def answer() -> web.Response:
            check_scope(scope)
            check_key(key)
            if scope not in scopes:
                return no_scope(view, scope)
            at_least = _min_seq(request.query.get("min_seq"))
            where = address_partition(tenant, scope_machine(scope), key)
            stored = encode_key(tenant, scope_machine(scope), key)

            def read() -> Record | None:
                raw = app.state_store.get(where, stored)
                return None if raw is None else load_record(raw)

            rec = read()
            if at_least is not None and (rec is None or rec.seq < at_least):
                # Read your writes: a lane writes its store just after its transaction
                # commits, so a client that saw its write's state change may ask a
                # moment before the store has it. Wait for that moment, boundedly.
                deadline = time.monotonic() + _CATCH_UP_S
                while (rec is None or rec.seq < at_least) and time.monotonic() < deadline:
                    await asyncio.sleep(0.002)
                    rec = read()
                if rec is None or rec.seq < at_least:
                    have = "nothing" if rec is None else f"seq {rec.seq}"
                    return error(
                        view,
                        503,
                        f"this worker has {have} for {key!r}, not yet seq {at_least}; retry "
                        "(it may be taking over the tenant's partition)",
                    )
            if rec is None or not _live(rec, int(time.time() * 1000)):
                return error(view, 404, f"no key {key!r} in scope {scope!r}", missing="key")
            timer = rec.timers.get(EXPIRE_TIMER)
            return view.json(
                {
                    "tenant": tenant,
                    "scope": scope,
                    "key": key,
                    "value": rec.state["value"],
                    "seq": rec.seq,
                    "updated_ms": rec.updated_ms,
                    "expires_ms": None if timer is None else timer.due_ms,
                }
            )

        return await guarded(view, request, tenant, answer)
