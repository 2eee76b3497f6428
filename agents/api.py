"""The worker's HTTP API: instance reads, health and readiness; none of Faust's own routes.

- ``GET /state/{tenant}/{machine}/{instance}``: one instance (seq, version, state, times);
- ``GET /state/{tenant}?machine=&limit=&cursor=``: a tenant's instances, a page at a time
  (``next`` is the cursor of the following page);
- ``GET /health``: the process serves HTTP; ``GET /ready``: it has joined its group,
  recovered its tables and is not rebalancing (503 until then).

A tenant's reads are served by the worker that owns the tenant's partition; any other
worker forwards the request there (Faust's table router, which keeps the headers). Bad
requests are 400 with what to fix. With tokens configured (``GARRISON_WEB_TOKENS``,
``GARRISON_WEB_OPERATOR_TOKEN``), a read needs ``Authorization: Bearer <token>``: a
tenant's token reads that tenant only, the operator token every tenant; another
tenant's data is refused (403) before anything is looked up, so the answer never says
whether it exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faust import web

from agents.http import error, next_cursor, page_cursor, page_limit, refusal
from agents.kafka import partition_of
from agents.kv_api import add_kv_api
from agents.routing import SPREAD, instance_partition, route_to_instance
from pipeline.address import Address, check_id
from pipeline.errors import InvalidAddress
from pipeline.record import load_record
from pipeline.settings import WebSettings
from tables.keys import decode_key, encode_key, tenant_prefix

if TYPE_CHECKING:
    from agents.app import GarrisonApp

__all__ = ["add_api", "faust_web_options"]


def faust_web_options(web_settings: WebSettings) -> dict[str, Any]:
    """Faust's web settings: garrison's server, with Faust's own routes off (its
    ``/table/`` views serve raw records of any tenant, ``/router/`` the topology)."""
    host = web_settings.advertised_host
    options: dict[str, Any] = {
        "web_enabled": web_settings.enabled,
        "web_bind": web_settings.bind,
        "web_port": web_settings.port,
        "web_tables_enabled": False,
        "web_router_enabled": False,
        "web_stats_enabled": False,
        "web_graph_enabled": False,
        "web_metrics_enabled": False,
    }
    if host is not None:  # else Faust advertises this machine's hostname
        options["web_host"] = host
    return options


def add_api(app: GarrisonApp) -> None:
    """Register the routes on ``app``'s web server."""
    state_table = app.tables["state"]
    web_settings = app.settings.web
    partitions = app.settings.kafka.partitions

    def partition(tenant: str) -> int:
        return partition_of(tenant.encode(), partitions)

    address_partition = instance_partition(app.settings)
    hot = app.settings.partitioning

    @app.page("/")
    async def index(view: web.View, request: web.Request) -> web.Response:
        return error(view, 404, "not found; see /state/{tenant}, /health and /ready")

    @app.page("/health")
    async def health(view: web.View, request: web.Request) -> web.Response:
        return view.json({"status": "ok", "app": app.settings.app})

    @app.page("/ready")
    async def ready(view: web.View, request: web.Request) -> web.Response:
        if app.serving:
            return view.json({"ready": True, "app": app.settings.app})
        waiting = (
            "joining the group"
            if app.rebalancing_count == 0
            else "rebalancing"
            if app.rebalancing
            else "recovering tables"
            if app.tables.recovery.in_recovery  # type: ignore[attr-defined]
            else "starting its lanes"
        )
        return view.json({"ready": False, "waiting": waiting}, status=503)

    @app.page("/state/{tenant}/{machine}/{instance}")
    @route_to_instance(app)
    async def get_instance(
        view: web.View, request: web.Request, tenant: str, machine: str, instance: str
    ) -> web.Response:
        if (no := refusal(view, web_settings, request, tenant)) is not None:
            return no
        try:
            key = encode_key(*Address.checked(tenant, machine, instance))
        except InvalidAddress as exc:
            return error(view, 400, str(exc))
        raw = app.state_store.get(address_partition(tenant, machine, instance), key)
        rec = None if raw is None else load_record(raw)
        if rec is None or rec.state is None:  # never was, or ended (a tombstone)
            return error(view, 404, f"no instance {tenant}/{machine}/{instance}")
        body = {
            "tenant": tenant,
            "machine": machine,
            "instance": instance,
            "seq": rec.seq,
            "version": rec.version,
            "state": rec.state,
            "updated_ms": rec.updated_ms,
            "expires_ms": rec.expires_ms,
        }
        return view.json(with_computed(app.registry, machine, rec, body))

    @app.page("/state/{tenant}")
    @app.table_route(table=state_table, match_info="tenant")
    async def list_tenant(view: web.View, request: web.Request, tenant: str) -> web.Response:
        if (no := refusal(view, web_settings, request, tenant)) is not None:
            return no
        machine = request.query.get("machine")
        try:
            check_id("tenant", tenant)
            if machine is not None:
                check_id("machine", machine)
            limit = page_limit(request.query.get("limit"))
            prefix = tenant_prefix(tenant, machine)
            after = page_cursor(request.query.get("cursor"), prefix)
        except ValueError as exc:  # InvalidAddress is a ValueError
            return error(view, 400, str(exc))
        if tenant in hot.hot_tenants or (machine is not None and machine in hot.hot_machines):
            return error(view, 409, SPREAD)
        out: list[dict[str, Any]] = []
        last = None
        start = None if after is None else after + b"\x00"  # the first key after it
        for key, value in app.state_store.scan_prefix(partition(tenant), prefix, start):
            rec = load_record(value)
            if rec.state is None:
                continue  # an ended instance's tombstone
            address = decode_key(key)
            if address.machine in hot.hot_machines:
                continue  # keyed by instance: its instances are not all here
            if len(out) == limit:
                break
            out.append({"machine": address.machine, "instance": address.instance, "seq": rec.seq})
            last = key
        else:
            last = None  # the scan ended: no further page
        return view.json({"tenant": tenant, "instances": out, "next": next_cursor(last)})

    from agents.history_api import add_history_api
    from agents.query_api import add_query_api, with_computed

    add_history_api(app)
    add_kv_api(app)  # /kv/...: key-value scopes
    add_query_api(app)
