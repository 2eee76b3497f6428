"""``garrison query TENANT MACHINE INSTANCE NAME [--param k=v ...]``: a named query's answer
(registered on the ``garrison`` group in ``garrison.cli``)."""

from __future__ import annotations

import asyncio
import json

import click

from garrison.query import fetch_query
from pipeline.errors import GarrisonError
from pipeline.settings import load_settings

__all__ = ["query"]


def _params(given: tuple[str, ...]) -> dict[str, str | list[str]]:
    out: dict[str, str | list[str]] = {}
    for item in given:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise GarrisonError(f"--param {item!r} is not KEY=VALUE")
        if key in out:  # given twice: a list, as in a query string
            before = out[key]
            out[key] = [*before, value] if isinstance(before, list) else [before, value]
        else:
            out[key] = value
    return out


@click.command(help="Ask an instance's named query (any worker answers).")
@click.argument("tenant")
@click.argument("machine")
@click.argument("instance")
@click.argument("name")
@click.option("--param", "-p", "params", multiple=True, help="a parameter, KEY=VALUE (repeatable)")
@click.option("--url", help="a worker's base URL (any worker; default this machine's)")
@click.option("--token", envvar="GARRISON_TOKEN", help="bearer token, if reads need one")
@click.option("--full", is_flag=True, help="the whole answer (seq, version), not only the result")
def query(
    tenant: str,
    machine: str,
    instance: str,
    name: str,
    params: tuple[str, ...],
    url: str | None,
    token: str | None,
    full: bool,
) -> int:
    body = asyncio.run(
        fetch_query(
            load_settings(), tenant, machine, instance, name, _params(params), url=url, token=token
        )
    )
    click.echo(json.dumps(body if full else body["result"], indent=2))
    return 0
