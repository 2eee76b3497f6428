"""Reading a worker's HTTP API from the shell and the client: where the worker is, and
one GET of JSON (standard library only: the commands that use it need no event loop).

Any worker answers any tenant (it forwards to the owner), so "where" is the one the
settings describe (``GARRISON_WEB_HOST``, else the bind address unless it is a wildcard,
else this machine, on ``GARRISON_WEB_PORT``) unless a command's ``--host``/``--port``
or a client's ``url`` names one.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from pipeline.errors import GarrisonError
from pipeline.settings import Settings

__all__ = ["get_json", "worker_base"]


def worker_base(settings: Settings, host: str | None = None, port: int | None = None) -> str:
    """``http://host:port`` of a worker: ``host``/``port``, else this machine's worker as
    the settings describe it."""
    web = settings.web
    where = host or web.host or (web.bind if web.bind not in ("0.0.0.0", "::") else "127.0.0.1")
    return f"http://{where}:{port or web.port}"


def get_json(url: str, token: str | None, *, timeout: float = 30) -> tuple[int, Any]:
    """GET ``url`` (with a bearer token, if any): the status and the decoded body; a
    refusal's body that is not JSON comes back as ``{"error": text}``. Raises
    :class:`GarrisonError` when no worker answers."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - our API
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, {"error": body.decode(errors="replace")}
    except urllib.error.URLError as exc:
        raise GarrisonError(f"no worker answers at {url}: {exc.reason}") from None
