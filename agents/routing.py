"""Which worker serves an address's HTTP reads: the owner of the address's partition.

An address's partition follows its Kafka key (``pipeline.partitioning``): the tenant,
or ``tenant/instance`` for hot tenants and machines. Faust's ``table_route`` hashes one
request parameter; :func:`route_to_instance` hashes the address's key instead, with the
same router (Faust's, which forwards the request with its headers to the worker that
owns the partition), so a hot tenant's instance is read where it lives.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import TYPE_CHECKING, Any

from faust import web
from faust.exceptions import SameNode

from agents.kafka import partition_of
from pipeline.settings import Settings

if TYPE_CHECKING:
    from agents.app import GarrisonApp

__all__ = ["instance_partition", "route_to_instance"]

View = Callable[..., Awaitable[web.Response]]


def instance_partition(settings: Settings) -> Callable[[str, str, str], int]:
    """``partition(tenant, machine, instance)``: the events (and state) partition."""
    key, partitions = settings.partitioning.key, settings.kafka.partitions

    def partition(tenant: str, machine: str, instance: str) -> int:
        return partition_of(key(tenant, machine, instance), partitions)

    return partition


def route_to_instance(app: GarrisonApp) -> Callable[[View], View]:
    """Decorate a view of ``/.../{tenant}/{machine}/{instance}...``: served here if this
    worker owns the address's partition, else forwarded to the worker that does."""
    table = app.tables["state"]
    key_text = app.settings.partitioning.key_text

    def decorator(fun: View) -> View:
        @wraps(fun)
        async def get(view: web.View, request: web.Request, *args: Any, **kwargs: Any) -> Any:
            info = request.match_info
            key = key_text(info["tenant"], info["machine"], info["instance"])
            try:
                return await app.router.route_req(table.name, key, view.web, request)
            except SameNode:
                return await fun(view, request, *args, **kwargs)

        return get

    return decorator
