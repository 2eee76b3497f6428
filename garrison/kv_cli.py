"""``garrison kv set|get|update|delete|list|scopes``: key-value scopes from the shell.

Writes go through Kafka and, unless ``--no-wait``, print the answer as JSON once a
worker applied them (exit 0), or the rejection (exit 1); no answer within
``--timeout`` is exit 3. Reads ask a worker's HTTP API (``--host``/``--port``, else
this machine's worker; ``--token`` or ``GARRISON_TOKEN`` when reads need one): ``get``
prints the entry (exit 1 if there is no such key). Bad input (an invalid scope or key,
a value that is not JSON, an unknown operation) is exit 2 with what to fix, before
anything is sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from garrison.kv_client import KvReader
from garrison.worker_http import worker_base
from pipeline.answer import Answer
from pipeline.errors import AnswerTimeout, GarrisonError, WriteRejected
from pipeline.settings import load_settings

__all__ = ["echo_answer", "kv"]

R = TypeVar("R")


def echo_answer(answer: Answer) -> int:
    """Print an answer as JSON; the exit status it means (1: rejected)."""
    click.echo(json.dumps(answer.to_dict()))
    return 1 if answer.status == "rejected" else 0


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise GarrisonError(f"{what} is not JSON: {exc}; quote a string as '\"text\"'") from None


def _write(fn: Callable[[Any], Awaitable[Answer]]) -> int:
    """Run one write with a client; print its answer; the exit status."""
    from garrison.client import Client

    async def go() -> Answer:
        async with Client(load_settings(), source="garrison.cli", connect_timeout_s=5) as client:
            answer = await fn(client)
            await client.flush()
            return answer

    try:
        answer = asyncio.run(go())
    except WriteRejected as exc:
        click.echo(
            json.dumps(
                {
                    "status": "rejected",
                    "event_id": exc.event_id,
                    "stage": exc.stage,
                    "reason": exc.reason,
                }
            )
        )
        click.echo(f"garrison: {exc}", err=True)
        return 1
    except AnswerTimeout as exc:
        click.echo(f"garrison: {exc}", err=True)
        return 3
    return echo_answer(answer)


def _read(
    host: str | None, port: int | None, token: str | None, fn: Callable[[KvReader], Awaitable[R]]
) -> R:
    settings = load_settings()

    async def go() -> R:
        reader = KvReader(settings, url=worker_base(settings, host, port), token=token)
        try:
            return await fn(reader)
        finally:
            await reader.close()

    return asyncio.run(go())


_write_options = [
    click.option("--timeout", type=float, default=10.0, show_default=True, help="seconds"),
    click.option("--no-wait", is_flag=True, help="return once sent, without the answer"),
    click.option("--id", "event_id", help="event id (idempotency key); default a new uuid"),
]
_read_options = [
    click.option("--host", help="a worker's host (any worker: it forwards to the owner)"),
    click.option("--port", type=int),
    click.option("--token", envvar="GARRISON_TOKEN", help="bearer token, if reads need one"),
]


def _options(options: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def apply(fn: Any) -> Any:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


@click.group(help="Key-value scopes: set, get, update, delete, list, scopes.")
def kv() -> None:
    """The ``garrison kv`` command group."""


@kv.command("set", help="Set KEY of TENANT's SCOPE to VALUE (JSON).")
@click.argument("tenant")
@click.argument("scope")
@click.argument("key")
@click.argument("value")
@click.option("--ttl", type=float, help="seconds until the key is deleted")
@_options(_write_options)
def set_(
    tenant: str,
    scope: str,
    key: str,
    value: str,
    ttl: float | None,
    timeout: float,
    no_wait: bool,
    event_id: str | None,
) -> int:
    data = _json(value, "VALUE")
    return _write(
        lambda c: c.state.set(
            tenant, scope, key, data, ttl=ttl, wait=not no_wait, timeout=timeout, id=event_id
        )
    )


@kv.command(help="Apply OPS (a JSON list of operations) to KEY, all or nothing.")
@click.argument("tenant")
@click.argument("scope")
@click.argument("key")
@click.argument("ops")
@_options(_write_options)
def update(
    tenant: str,
    scope: str,
    key: str,
    ops: str,
    timeout: float,
    no_wait: bool,
    event_id: str | None,
) -> int:
    parsed = _json(ops, "OPS")
    if not isinstance(parsed, list):
        raise GarrisonError(
            'OPS must be a JSON list, e.g. \'[{"op": "increment", "path": "visits"}]\''
        )
    return _write(
        lambda c: c.state.update(
            tenant, scope, key, parsed, wait=not no_wait, timeout=timeout, id=event_id
        )
    )


@kv.command(help="Delete KEY of TENANT's SCOPE.")
@click.argument("tenant")
@click.argument("scope")
@click.argument("key")
@_options(_write_options)
def delete(
    tenant: str, scope: str, key: str, timeout: float, no_wait: bool, event_id: str | None
) -> int:
    return _write(
        lambda c: c.state.delete(tenant, scope, key, wait=not no_wait, timeout=timeout, id=event_id)
    )


@kv.command(help="Print KEY of TENANT's SCOPE (exit 1 if there is none).")
@click.argument("tenant")
@click.argument("scope")
@click.argument("key")
@_options(_read_options)
def get(
    tenant: str, scope: str, key: str, host: str | None, port: int | None, token: str | None
) -> int:
    entry = _read(host, port, token, lambda r: r.get(tenant, scope, key))
    if entry is None:
        click.echo(f"garrison: no key {key!r} in scope {scope!r} of {tenant!r}", err=True)
        return 1
    click.echo(
        json.dumps(
            {
                "key": entry.key,
                "value": entry.value,
                "seq": entry.seq,
                "updated_ms": entry.updated_ms,
                "expires_ms": entry.expires_ms,
            }
        )
    )
    return 0


@kv.command("list", help="List keys of TENANT's SCOPE, a page at a time.")
@click.argument("tenant")
@click.argument("scope")
@click.option("--prefix", help="only keys starting with this")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--cursor", help="the 'next' of the previous page")
@click.option("--count", is_flag=True, help="also count the matching keys")
@click.option("--values", is_flag=True, help="with each key's value")
@_options(_read_options)
def list_(
    tenant: str,
    scope: str,
    prefix: str | None,
    limit: int,
    cursor: str | None,
    count: bool,
    values: bool,
    host: str | None,
    port: int | None,
    token: str | None,
) -> int:
    page = _read(
        host,
        port,
        token,
        lambda r: r.list(
            tenant, scope, prefix=prefix, limit=limit, cursor=cursor, count=count, values=values
        ),
    )
    out: dict[str, Any] = {
        "keys": [
            {"key": k.key, "seq": k.seq, **({"value": k.value} if values else {})}
            for k in page.keys
        ],
        "next": page.next,
    }
    if count:
        out["count"] = page.count
    click.echo(json.dumps(out))
    return 0


@kv.command(help="List the scopes in which TENANT has keys.")
@click.argument("tenant")
@_options(_read_options)
def scopes(tenant: str, host: str | None, port: int | None, token: str | None) -> int:
    click.echo(json.dumps(_read(host, port, token, lambda r: r.scopes(tenant))))
    return 0
