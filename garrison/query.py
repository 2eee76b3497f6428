"""Instance reads from any worker: what ``Client.query``, ``Client.wait_for`` and
``garrison query`` ask, over the worker's HTTP API.

- ``GET /state/{tenant}/{machine}/{instance}``: the instance (seq, state, computed);
- ``GET /state/{tenant}/{machine}/{instance}/query/{name}?k=v``: a named query's answer.

Any worker answers (the one that owns the tenant, or one that forwards there); it is the
one the settings describe (``GARRISON_WEB_HOST``/``GARRISON_WEB_PORT``) unless ``url``
names one. A refusal raises :class:`QueryRefused` with the worker's reason and status.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from garrison.worker_http import get_json, worker_base
from pipeline.address import Address
from pipeline.errors import GarrisonError
from pipeline.settings import Settings

__all__ = ["QueryRefused", "fetch_query", "fetch_state", "query_params", "query_url"]


class QueryRefused(GarrisonError):
    """The worker refused a read; ``status`` is its HTTP status (400: bad parameters,
    401/403: the token, 404: no such instance, machine or query, 500: the query failed)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _path(tenant: str, machine: str, instance: str) -> str:
    address = Address.checked(tenant, machine, instance)
    return "/state/" + "/".join(urllib.parse.quote(p, safe="") for p in address)


def query_params(params: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """Query parameters as the query string carries them: a list is the key repeated,
    a bool ``true``/``false``, None left out, anything else its text."""
    out: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        for one in value if isinstance(value, list | tuple) else [value]:
            if one is None:
                continue
            out.append((key, ("true" if one else "false") if isinstance(one, bool) else str(one)))
    return out


def query_url(
    base: str,
    tenant: str,
    machine: str,
    instance: str,
    name: str,
    params: Mapping[str, Any] | None = None,
) -> str:
    """The URL of query ``name`` of an instance (ids checked first: a bad one fails here)."""
    if not name:
        raise GarrisonError("a query needs a name")
    path = _path(tenant, machine, instance) + "/query/" + urllib.parse.quote(name, safe="")
    query = urllib.parse.urlencode(query_params(params))
    return base.rstrip("/") + path + (f"?{query}" if query else "")


def _refused(what: str, status: int, body: Any) -> QueryRefused:
    message = body.get("error", body) if isinstance(body, dict) else body
    return QueryRefused(f"{what}: {status}: {message}", status)


async def fetch_query(
    settings: Settings,
    tenant: str,
    machine: str,
    instance: str,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    url: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """The worker's answer to query ``name``: ``{..., seq, version, result}``."""
    target = query_url(url or worker_base(settings), tenant, machine, instance, name, params)
    status, body = await asyncio.to_thread(get_json, target, token)
    if status != 200:
        raise _refused(f"query {name!r} of {tenant}/{machine}/{instance}", status, body)
    result: dict[str, Any] = body
    return result


async def fetch_state(
    settings: Settings,
    tenant: str,
    machine: str,
    instance: str,
    *,
    url: str | None = None,
    token: str | None = None,
) -> dict[str, Any] | None:
    """The instance as the worker reads it (``seq``, ``state``, ``computed``...), or
    None when there is no such instance (or it has ended)."""
    target = (url or worker_base(settings)).rstrip("/") + _path(tenant, machine, instance)
    status, body = await asyncio.to_thread(get_json, target, token)
    if status == 404:
        return None
    if status != 200:
        raise _refused(f"state of {tenant}/{machine}/{instance}", status, body)
    result: dict[str, Any] = body
    return result
