"""An instance's history from any worker: what ``Client.history`` and ``garrison history``
ask, over the worker's HTTP API (``GET /state/{tenant}/{machine}/{instance}/history``).

Any worker answers: the one that owns the tenant serves it from its store and the
state-change topic, the others forward the request there. The worker is the one the
settings describe (``GARRISON_WEB_HOST``/``GARRISON_WEB_PORT``) unless ``url`` names one.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any

from pipeline.address import Address
from pipeline.errors import GarrisonError
from pipeline.settings import Settings

__all__ = ["Moment", "fetch_history", "history_url", "worker_base"]

Moment = datetime | int | str
"""A time: an aware datetime, epoch milliseconds, or RFC 3339 text."""


def worker_base(settings: Settings) -> str:
    """``http://host:port`` of this machine's worker, as the settings describe it."""
    web = settings.web
    host = web.host or (web.bind if web.bind not in ("0.0.0.0", "::") else "127.0.0.1")
    return f"http://{host}:{web.port}"


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


def _get(url: str, token: str | None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310 - our own API
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, {"error": body.decode(errors="replace")}
    except urllib.error.URLError as exc:
        raise GarrisonError(f"no worker answers at {url}: {exc.reason}") from None


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
    status, body = await asyncio.to_thread(_get, target, token)
    if status != 200:
        message = body.get("error", body) if isinstance(body, dict) else body
        raise GarrisonError(f"history of {tenant}/{machine}/{instance}: {status}: {message}")
    result: dict[str, Any] = body
    return result
