"""The query route: ``GET /state/{tenant}/{machine}/{instance}/query/{name}?k=v&...``.

Answers a named query (or a computed value, by name) of one instance from the worker's
store (``pipeline.query``): the parameters are the query string (a key given twice is a
list), validated against the query's ``params`` model. The answer is
``{tenant, machine, instance, query, seq, version, result}``; 400 when the parameters do
not fit (with what to fix), 404 for no such instance, machine or query, 500 when the
query itself fails. Like every read, it is served by the worker that owns the
instance's partition (``agents.routing`` forwards it there) and needs the tenant's
token when tokens are configured (:func:`agents.http.authorize`). Nothing is written: a
query only reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faust import web

from agents.http import error, refusal
from agents.routing import instance_partition, route_to_instance
from pipeline.address import Address
from pipeline.errors import InvalidAddress
from pipeline.query import QueryError, answer, computed_of
from pipeline.record import Record, load_record
from pipeline.registry import Registry
from tables.keys import encode_key

if TYPE_CHECKING:
    from agents.app import GarrisonApp

__all__ = ["add_query_api", "with_computed"]


def with_computed(
    registry: Registry, machine: str, record: Record, body: dict[str, Any]
) -> dict[str, Any]:
    """``body`` (an instance read) with the machine's computed values of ``record``
    (``computed``; ``computed_errors`` for those that failed), when it declares any."""
    found = computed_of(registry, machine, record)
    if found is not None:
        body["computed"], errors = found
        if errors:
            body["computed_errors"] = errors
    return body


def add_query_api(app: GarrisonApp) -> None:
    """Register the query route on ``app``'s web server."""
    settings = app.settings
    address_partition = instance_partition(settings)

    @app.page("/state/{tenant}/{machine}/{instance}/query/{name}")
    @route_to_instance(app)
    async def get_query(
        view: web.View, request: web.Request, tenant: str, machine: str, instance: str, name: str
    ) -> web.Response:
        if (no := refusal(view, settings.web, request, tenant)) is not None:
            return no
        try:
            key = encode_key(*Address.checked(tenant, machine, instance))
        except InvalidAddress as exc:
            return error(view, 400, str(exc))
        query: Any = request.query  # aiohttp's MultiDictProxy: a key may come twice
        params: dict[str, Any] = {}
        for k in query:
            values = query.getall(k)
            params[k] = values[0] if len(values) == 1 else list(values)
        raw = app.state_store.get(address_partition(tenant, machine, instance), key)
        rec = None if raw is None else load_record(raw)
        if rec is None or rec.state is None:  # never was, or ended (a tombstone)
            return error(view, 404, f"no instance {tenant}/{machine}/{instance}")
        try:
            got = answer(app.registry, machine, rec, name, params)
        except QueryError as exc:
            return error(view, exc.status, str(exc))
        return view.json(
            {
                "tenant": tenant,
                "machine": machine,
                "instance": instance,
                "query": name,
                "seq": got.seq,
                "version": got.version,
                "result": got.result,
            }
        )
