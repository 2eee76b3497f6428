"""An instance's history from any worker: what ``Client.history`` and ``garrison history``
ask, over the worker's HTTP API (``GET /state/{tenant}/{machine}/{instance}/history``).

Any worker answers: the one that owns the tenant serves it from its store and the
state-change topic, the others forward the request there. The worker is the one the
settings describe (``GARRISON_WEB_HOST``/``GARRISON_WEB_PORT``) unless ``url`` names one.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any

from garrison.worker_http import get_json, worker_base
from pipeline.address import Address
from pipeline.errors import GarrisonError
from pipeline.settings import Settings

__all__ = ["Moment", "fetch_history", "history_url"]

Moment = datetime | int | str
"""A time: an aware datetime, epoch milliseconds, or RFC 3339 text."""


def _moment(name: str, value: Moment) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise GarrisonError(f"{name} must be timezone-aware (e.g. datetime.now(UTC))")
        return str(round(value.timestamp() * 1000))
    return str(value)


def history_url(
    base: str,
    tenant: str,
    machine: str,
    instance: str,
    *,
    from_seq: int | None = None,
    to_seq: int | None = None,
    since: Moment | None = None,
    until: Moment | None = None,
    limit: int | None = None,
    diff: bool = False,
    as_of_seq: int | None = None,
    as_of: Moment | None = None,
) -> str:
    """The URL of a history read (ids checked first, so a bad one fails here)."""
    address = Address.checked(tenant, machine, instance)
    path = "/state/" + "/".join(urllib.parse.quote(p, safe="") for p in address) + "/history"
    params: dict[str, str] = {}
    for name, value in (
        ("from_seq", from_seq),
        ("to_seq", to_seq),
        ("limit", limit),
        ("as_of_seq", as_of_seq),
    ):
        if value is not None:
            params[name] = str(value)
    for name, moment in (("since", since), ("until", until), ("as_of", as_of)):
        if moment is not None:
            params[name] = _moment(name, moment)
    if diff:
        params["diff"] = "true"
    query = urllib.parse.urlencode(params)
    return base.rstrip("/") + path + (f"?{query}" if query else "")


async def fetch_history(
    settings: Settings,
    tenant: str,
    machine: str,
    instance: str,
    *,
    url: str | None = None,
    token: str | None = None,
    **read: Any,
) -> dict[str, Any]:
    """One history page (or, with ``as_of_seq``/``as_of``, one state) as the worker
    answers it; raises :class:`GarrisonError` with the worker's reason when it refuses
    (a bad parameter, no such instance, no token)."""
    target = history_url(url or worker_base(settings), tenant, machine, instance, **read)
    status, body = await asyncio.to_thread(get_json, target, token, timeout=60)
    if status != 200:
        message = body.get("error", body) if isinstance(body, dict) else body
        raise GarrisonError(f"history of {tenant}/{machine}/{instance}: {status}: {message}")
    result: dict[str, Any] = body
    return result
