"""Which worker serves an address's HTTP reads: the owner of the address's partition.

An address's partition follows its Kafka key (``pipeline.partitioning``): the tenant,
or ``tenant/instance`` for hot tenants and machines. Faust's ``table_route`` hashes one
request parameter; :func:`route_to_instance` hashes the address's key instead, with the
same router (Faust's, which forwards the request with its headers to the worker that
owns the partition), so a hot tenant's instance is read where it lives.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from functools import wraps
from typing import TYPE_CHECKING, Any

from faust import web
from faust.exceptions import SameNode

from agents.kafka import partition_of
from pipeline.settings import Settings

if TYPE_CHECKING:
    from agents.app import GarrisonApp

__all__ = ["SPREAD", "instance_partition", "route_to_instance"]

View = Callable[..., Awaitable[web.Response]]

SPREAD = (
    "this tenant's instances (or this machine's) are keyed by instance (GARRISON_HOT_*) and "
    "spread over the partitions, so no one worker can list them; read them one at a time, "
    "or from the state-change topic or <app>.latest"
)
"""Why a listing of a hot tenant or machine is refused (409)."""


def instance_partition(settings: Settings) -> Callable[[str, str, str], int]:
    """``partition(tenant, machine, instance)``: the events (and state) partition."""
    key, partitions = settings.partitioning.key, settings.kafka.partitions

    def partition(tenant: str, machine: str, instance: str) -> int:
        return partition_of(key(tenant, machine, instance), partitions)

    return partition


def _path_address(info: Mapping[str, str]) -> tuple[str, str, str]:
    return info["tenant"], info["machine"], info["instance"]


def route_to_instance(
    app: GarrisonApp,
    address: Callable[[Mapping[str, str]], tuple[str, str, str]] = _path_address,
) -> Callable[[View], View]:
    """Decorate a view of one address: served here if this worker owns the address's
    partition, else forwarded to the worker that does. ``address(match_info)`` names it
    (default the path's ``{tenant}/{machine}/{instance}``)."""
    table = app.tables["state"]
    key_text = app.settings.partitioning.key_text

    def decorator(fun: View) -> View:
        @wraps(fun)
        async def get(view: web.View, request: web.Request, *args: Any, **kwargs: Any) -> Any:
            key = key_text(*address(request.match_info))
            try:
                return await app.router.route_req(table.name, key, view.web, request)
            except SameNode:
                return await fun(view, request, *args, **kwargs)

        return get

    return decorator
