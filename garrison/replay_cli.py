"""``garrison replay APP``: prove APP's current machines replay the log as the pipeline
applied it (exit 0), or show the instances that part and where (exit 1)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from garrison.options import MOMENT
from pipeline.replay import AddressFilter
from pipeline.settings import Settings

__all__ = ["replay"]


@click.command(help="Replay APP's events topic with APP's current machines and compare.")
@click.argument("app")
@click.option("--tenant", help="only this tenant (and only its partition is read)")
@click.option("--machine", help="only this machine")
@click.option("--instance", help="only this instance id")
@click.option(
    "--since", type=MOMENT, help="start at the events recorded at or after (RFC 3339 or epoch ms)"
)
@click.option("--until", type=MOMENT, help="stop after the events recorded at or before")
@click.option("--from-offset", type=int, help="start at this offset of every partition read")
@click.option("--to-offset", type=int, help="stop before this offset")
@click.option(
    "--scratch",
    type=click.Choice(["memory", "disk"]),
    default="memory",
    show_default=True,
    help="where the replayed records live (disk: a temporary RocksDB)",
)
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=60.0,
    show_default=True,
    help="seconds to wait for the worker to apply what the replay reads",
)
@click.option(
    "--jobs",
    type=int,
    default=1,
    show_default=True,
    help="processes sharing the partitions (0: one per CPU it may run on)",
)
@click.option("--show", type=int, default=20, show_default=True, help="differences printed")
@click.option("--json", "as_json", is_flag=True, help="the result as one JSON document")
def replay(
    app: str,
    tenant: str | None,
    machine: str | None,
    instance: str | None,
    since: int | None,
    until: int | None,
    from_offset: int | None,
    to_offset: int | None,
    scratch: str,
    wait_s: float,
    jobs: int,
    show: int,
    as_json: bool,
) -> int:
    from garrison.cli import load_registry
    from garrison.progress import Progress
    from garrison.replay import ReplayOptions
    from garrison.replay import replay as run

    settings = Settings()
    opts = ReplayOptions(
        AddressFilter(tenant, machine, instance),
        since,
        until,
        from_offset,
        to_offset,
        scratch,
        wait_s,
        jobs=jobs,
        spec=app,
    )
    bar = Progress("replay")
    try:
        result = asyncio.run(
            run(
                settings,
                load_registry(app),
                opts,
                progress=lambda done, differ: bar.update(done, f"{differ} differ"),
                on_total=bar.set_total,
            )
        )
    finally:
        bar.close()
    s = result.stats
    diffs = result.divergences
    if as_json:
        doc: dict[str, Any] = {
            "identical": result.identical,
            "seconds": round(result.seconds, 3),
            "stats": vars(s),
            "differ": [d.to_dict() for d in diffs],
        }
        click.echo(json.dumps(doc))
        return 0 if result.identical else 1
    rate = s.events / result.seconds if result.seconds else 0.0
    click.echo(
        f"replayed {s.events:,} events of {len(result.partitions)} partition(s) in "
        f"{result.seconds:.1f} s ({rate:,.0f} events/s): {s.applied:,} applied, "
        f"{s.duplicate:,} duplicates, {s.stale:,} stale timers, {s.rejected:,} dead letters, "
        f"{s.refused_firings:,} firings the pipeline refused"
    )
    click.echo(
        f"compared {s.compared:,} changes with the {s.live_changes:,} published: "
        f"{s.identical:,} identical; {s.diverged:,} instance(s) differ"
        + (f"; {s.began_before:,} began before the range (not compared)" if s.began_before else "")
    )
    for d in diffs[:show]:
        click.echo(f"{d.tenant}/{d.machine}/{d.instance} parts at seq {d.seq}: {d.why}")
        click.echo(f"  live:   {json.dumps(d.live)}")
        click.echo(f"  replay: {json.dumps(d.replayed)}")
    if len(diffs) > show:
        click.echo(f"... and {s.diverged - show:,} more (--show N, or --json)")
    return 0 if result.identical else 1
