"""``garrison history TENANT MACHINE INSTANCE``: an instance's applied changes, or its state
as of a seq or a time (registered on the ``garrison`` group in ``garrison.cli``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from garrison.history import fetch_history
from garrison.options import MOMENT
from pipeline.settings import Settings

__all__ = ["history"]


@click.command(help="Show an instance's applied changes (or its state as of a seq or time).")
@click.argument("tenant")
@click.argument("machine")
@click.argument("instance")
@click.option("--from-seq", type=int, help="first seq (default 1)")
@click.option("--to-seq", type=int, help="last seq")
@click.option("--since", type=MOMENT, help="changes dated at or after (RFC 3339 or epoch ms)")
@click.option("--until", type=MOMENT, help="changes dated at or before (RFC 3339 or epoch ms)")
@click.option("--limit", type=int, default=100, show_default=True, help="changes per page")
@click.option("--all", "every", is_flag=True, help="follow the pages to the end")
@click.option("--diff", is_flag=True, help="show each change as a JSON patch")
@click.option("--as-of-seq", type=int, help="only the state after this seq")
@click.option("--as-of", type=MOMENT, help="only the state at this time (RFC 3339 or epoch ms)")
@click.option("--url", help="a worker's base URL (any worker; default this machine's)")
@click.option("--token", envvar="GARRISON_TOKEN", help="bearer token, if reads need one")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def history(
    tenant: str,
    machine: str,
    instance: str,
    from_seq: int | None,
    to_seq: int | None,
    since: int | None,
    until: int | None,
    limit: int,
    every: bool,
    diff: bool,
    as_of_seq: int | None,
    as_of: int | None,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> int:
    settings = Settings()

    async def ask(**read: Any) -> dict[str, Any]:
        return await fetch_history(
            settings, tenant, machine, instance, url=url, token=token, **read
        )

    if as_of_seq is not None or as_of is not None:
        body = asyncio.run(ask(as_of_seq=as_of_seq, as_of=as_of))
        click.echo(json.dumps(body) if as_json else json.dumps(body, indent=2))
        return 0
    start = from_seq
    while True:
        page = asyncio.run(
            ask(from_seq=start, to_seq=to_seq, since=since, until=until, limit=limit, diff=diff)
        )
        for change in page["changes"]:
            if as_json:
                click.echo(json.dumps(change))
                continue
            what = json.dumps(change["diff"] if diff else change["state"])
            click.echo(
                f"{change['seq']:>6}  {change['time']}  {change['event_type']}  "
                f"{change['event_id']}  {what}"
            )
        start = page["next"]
        if start is None or not every:
            break
    if start is not None and not as_json:
        click.echo(f"(more: --from-seq {start}, or --all)", err=True)
    return 0
