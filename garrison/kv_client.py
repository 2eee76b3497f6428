"""The key-value client: ``client.state.set/get/update/delete/list/scopes``.

Writes are events for the key's address ``(tenant, "kv.<scope>", key)`` (see
``pipeline.kv``), sent through the :class:`~garrison.client.Client`'s producer; by
default each waits for its answer (``Client.update``), so a write that returns is
applied, and a refused one raises :class:`~pipeline.errors.WriteRejected` with the
dead letter's stage and reason. Reads are HTTP requests to a worker's API
(``agents.kv_api``), which answers from its state store, forwarding to the worker that
owns the tenant's partition. Scope, key and operations are checked before anything is
sent: a mistake raises :class:`~pipeline.errors.InvalidAddress` or
:class:`~pipeline.errors.InvalidOperation` at once.

Example::

    async with Client(Settings()) as client:
        await client.state.set("acme", "users", "u1", {"name": "ann"})
        await client.state.update("acme", "users", "u1",
                                  [{"op": "increment", "path": "logins"}])
        entry = await client.state.get("acme", "users", "u1")  # entry.value
"""

from __future__ import annotations

import builtins
import urllib.parse
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import aiohttp

from garrison.worker_http import worker_base
from pipeline.answer import Answer
from pipeline.errors import GarrisonError, WriteRejected
from pipeline.kv import (
    DELETE,
    SET,
    UPDATE,
    check_key,
    check_scope,
    scope_machine,
    set_data,
    ttl_ms,
    update_data,
)
from pipeline.settings import Settings

if TYPE_CHECKING:
    from garrison.client import Client

__all__ = ["Entry", "KeyInfo", "KeyPage", "KvReader", "ReadFailed", "StateClient"]


class ReadFailed(GarrisonError):
    """A worker refused a read (``status``: 400 bad request, 401/403 token, 404 no such
    scope) or none answered."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Entry:
    """One key as read: its value, sequence number, last write and expiry (epoch ms)."""

    tenant: str
    scope: str
    key: str
    value: Any
    seq: int
    updated_ms: int
    expires_ms: int | None


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key in a listing (its value only when asked for)."""

    key: str
    seq: int
    value: Any = None


@dataclass(frozen=True, slots=True)
class KeyPage:
    """A page of keys; ``next`` is the cursor of the following page (None: the last);
    ``count`` the number of matching keys in the scope, when asked for."""

    keys: list[KeyInfo]
    next: str | None
    count: int | None = None


_REMEMBERED = 10_000  # keys whose last write's seq a client keeps


def _quote(*parts: str) -> str:
    return "/".join(urllib.parse.quote(p, safe="") for p in parts)


class KvReader:
    """Key-value reads over HTTP from a worker (no Kafka needed)."""

    def __init__(self, settings: Settings, *, url: str | None = None, token: str | None = None):
        self._base = (url or worker_base(settings)).rstrip("/")
        self._token = token
        self._session: aiohttp.ClientSession | None = None
        # The seq of this client's last answered write per key, so that a get after it
        # sees it (read your writes; see agents.kv_api), for the most recent keys.
        self._written: OrderedDict[tuple[str, str, str], int] = OrderedDict()

    def _wrote(self, tenant: str, scope: str, key: str, seq: int | None) -> None:
        if seq is None:
            return
        where = (tenant, scope, key)
        self._written[where] = max(seq, self._written.pop(where, 0))
        if len(self._written) > _REMEMBERED:
            self._written.popitem(last=False)

    async def close(self) -> None:
        """Close the HTTP connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _get(self, path: str, params: dict[str, str] | None = None) -> tuple[int, Any]:
        if self._session is None:
            headers = {"Accept": "application/json"}
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            self._session = aiohttp.ClientSession(
                headers=headers, timeout=aiohttp.ClientTimeout(total=10)
            )
        url = self._base + path
        try:
            async with self._session.get(url, params=params) as resp:
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = {"error": (await resp.text())[:500]}
                return resp.status, body
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ReadFailed(f"no worker answers at {url}: {exc}") from None

    def _failed(self, status: int, body: Any) -> ReadFailed:
        error = body.get("error", body) if isinstance(body, dict) else body
        return ReadFailed(f"{status}: {error}", status=status)

    async def get(self, tenant: str, scope: str, key: str) -> Entry | None:
        """The key's value, or None if it does not exist (or has expired). After a write
        of this client that waited for its answer, the value is that write's or later."""
        check_scope(scope)
        check_key(key)
        seq = self._written.get((tenant, scope, key))
        params = None if seq is None else {"min_seq": str(seq)}
        status, body = await self._get("/kv/" + _quote(tenant, scope, key), params)
        if status == 404 and isinstance(body, dict) and body.get("missing") == "key":
            return None
        if status != 200:
            raise self._failed(status, body)
        return Entry(
            tenant,
            scope,
            key,
            body["value"],
            body["seq"],
            body["updated_ms"],
            body.get("expires_ms"),
        )

    async def list(
        self,
        tenant: str,
        scope: str,
        *,
        prefix: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        count: bool = False,
        values: bool = False,
    ) -> KeyPage:
        """A page of the scope's keys (storage order; see docs/kv.md), those starting
        with ``prefix`` if given; pass the page's ``next`` as ``cursor`` for the next."""
        check_scope(scope)
        params = {"limit": str(limit)}
        if prefix:
            params["prefix"] = prefix
        if cursor:
            params["cursor"] = cursor
        if count:
            params["count"] = "true"
        if values:
            params["values"] = "true"
        status, body = await self._get("/kv/" + _quote(tenant, scope), params)
        if status != 200:
            raise self._failed(status, body)
        keys = [KeyInfo(k["key"], k["seq"], k.get("value")) for k in body["keys"]]
        return KeyPage(keys, body.get("next"), body.get("count"))

    async def scopes(self, tenant: str) -> builtins.list[str]:
        """The scopes in which ``tenant`` has at least one key."""
        status, body = await self._get("/kv/" + _quote(tenant))
        if status != 200:
            raise self._failed(status, body)
        return [s["scope"] for s in body["scopes"]]


class StateClient(KvReader):
    """Key-value writes (through a :class:`Client`'s producer) and reads (HTTP)."""

    def __init__(
        self, client: Client, settings: Settings, *, url: str | None, token: str | None
    ) -> None:
        super().__init__(settings, url=url, token=token)
        self._client = client

    async def set(
        self,
        tenant: str,
        scope: str,
        key: str,
        value: Any,
        *,
        ttl: timedelta | float | None = None,
        wait: bool = True,
        timeout: float = 10.0,
        id: str | None = None,
    ) -> Answer:
        """Store ``value`` (any JSON) under ``key``; with ``ttl`` (a timedelta or
        seconds) the key is deleted that long after this write. Every write waits for
        its answer unless ``wait=False``, which returns once the event is queued (an
        answer of status ``sent``; call ``client.flush()`` before relying on it)."""
        return await self._write(
            tenant, scope, key, SET, set_data(value, ttl_ms(ttl)), wait, timeout, id
        )

    async def update(
        self,
        tenant: str,
        scope: str,
        key: str,
        ops: Sequence[Mapping[str, Any]],
        *,
        wait: bool = True,
        timeout: float = 10.0,
        id: str | None = None,
    ) -> Answer:
        """Apply update operations (``pipeline.operation``) in one step, all or nothing;
        the answer's ``state["value"]`` is the new value."""
        data = update_data([dict(op) for op in ops])
        return await self._write(tenant, scope, key, UPDATE, data, wait, timeout, id)

    async def delete(
        self,
        tenant: str,
        scope: str,
        key: str,
        *,
        wait: bool = True,
        timeout: float = 10.0,
        id: str | None = None,
    ) -> Answer:
        """Delete ``key`` (deleting a key that does not exist changes nothing)."""
        return await self._write(tenant, scope, key, DELETE, None, wait, timeout, id)

    async def _write(
        self,
        tenant: str,
        scope: str,
        key: str,
        type: str,
        data: Any,
        wait: bool,
        timeout: float,
        id: str | None,
    ) -> Answer:
        from garrison.client import make_event

        machine = scope_machine(check_scope(scope))
        event = make_event(tenant, machine, check_key(key), type, data, id=id, source="garrison.kv")
        if not wait:
            await self._client.send_event(event, wait=False)
            return Answer.sent(event)
        answer = await self._client.update_event(event, timeout=timeout)
        self._wrote(tenant, scope, key, answer.seq)
        if answer.status == "rejected":
            raise WriteRejected(
                f"{type} of {tenant}/{scope}/{key} was rejected at stage {answer.stage}: "
                f"{answer.reason}",
                stage=answer.stage or "",
                reason=answer.reason or "",
                event_id=event.id,
            )
        return answer
