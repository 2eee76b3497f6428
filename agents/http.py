"""What the worker's HTTP routes share: the token check, error bodies and paging.

Every read of a tenant's data goes through :func:`refusal` before anything is looked up,
so a refused answer never says whether the data exists. Errors are
``{"error": message}`` with what to fix. Listings page by ``limit`` (1 to
:data:`MAX_LIMIT`, default 100) and an opaque ``cursor`` (the base64 of the last key
returned; only a key under the listing's own prefix is accepted back).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any

from faust import web

from pipeline.settings import WebSettings

__all__ = ["MAX_LIMIT", "authorize", "error", "next_cursor", "page_cursor", "page_limit", "refusal"]

MAX_LIMIT = 1000

_REFUSED = {401: "a bearer token is needed (Authorization: Bearer <token>)", 403: "forbidden"}


def authorize(settings: WebSettings, header: str | None, tenant: str) -> int | None:
    """None if a request with this ``Authorization`` header may read ``tenant``'s data,
    else the status to refuse it with (401: no or unknown token; 403: another tenant's)."""
    if not settings.guarded:
        return None
    if not header or not header.startswith("Bearer "):
        return 401
    given = header[len("Bearer ") :].encode()
    operator = settings.operator_token
    if operator is not None and hmac.compare_digest(given, operator.get_secret_value().encode()):
        return None
    known = False
    for owner, token in settings.tokens.items():
        if hmac.compare_digest(given, token.get_secret_value().encode()):
            if owner == tenant:
                return None
            known = True
    return 403 if known else 401


def error(view: web.View, status: int, message: str, **extra: Any) -> web.Response:
    """An error answer: ``{"error": message, **extra}`` with ``status``."""
    return view.json({"error": message, **extra}, status=status)


def refusal(
    view: web.View, settings: WebSettings, request: web.Request, tenant: str
) -> web.Response | None:
    """The answer refusing ``request`` a read of ``tenant``'s data, or None if allowed."""
    status = authorize(settings, request.headers.get("Authorization"), tenant)
    return None if status is None else error(view, status, _REFUSED[status])


def page_limit(raw: str | None) -> int:
    """A listing's ``limit`` parameter (default 100); ValueError says what is allowed."""
    if raw is None:
        return 100
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {raw!r}")
    return int(raw)


def page_cursor(raw: str | None, prefix: bytes) -> bytes | None:
    """The key a listing's ``cursor`` names (None: from the start). Only a key under
    ``prefix`` is one the listing returned; anything else is a ValueError."""
    if raw is None:
        return None
    try:
        key = base64.urlsafe_b64decode(raw.encode() + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        key = b""
    if not key.startswith(prefix) or key == prefix:
        raise ValueError("cursor is not one this listing returned; start without it")
    return key


def next_cursor(last: bytes | None) -> str | None:
    """The ``cursor`` for the page after the one that ended at key ``last`` (None: the
    listing is complete)."""
    return None if last is None else base64.urlsafe_b64encode(last).decode().rstrip("=")
