"""``garrison dlq list|show|redrive``: the dead letters of an app, chosen by what failed and
whose they were, shown whole, and sent back as they were or fixed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from garrison.options import MOMENT
from pipeline.errors import GarrisonError
from pipeline.redrive import Fix, Letter, LetterFilter, parse_patch
from pipeline.settings import Settings

__all__ = ["dlq"]

F = TypeVar("F", bound=Callable[..., Any])


def _place(raw: str) -> tuple[int, int]:
    partition, sep, offset = raw.replace("/", ":").partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise GarrisonError(f"--at takes PARTITION:OFFSET of the dead-letter topic, got {raw!r}")
    return int(partition), int(offset)


def _filters(fn: F) -> F:
    """The options every subcommand chooses letters with."""
    for option in reversed(
        [
            click.option(
                "--stage", "stages", multiple=True, help="decode, contract, listener, ..."
            ),
            click.option("--reason", help="text the reason contains (any case)"),
            click.option("--tenant"),
            click.option("--machine"),
            click.option("--instance"),
            click.option("--listener", help="a listener's dead letters"),
            click.option(
                "--since", type=MOMENT, help="dead-lettered at or after (RFC 3339 or epoch ms)"
            ),
            click.option("--until", type=MOMENT, help="dead-lettered at or before"),
            click.option("--at", "at", multiple=True, help="PARTITION:OFFSET in the dlq"),
        ]
    ):
        fn = option(fn)
    return fn


def _chosen(kw: dict[str, Any]) -> LetterFilter:
    return LetterFilter(
        stages=frozenset(kw.pop("stages")),
        reason=kw.pop("reason"),
        tenant=kw.pop("tenant"),
        machine=kw.pop("machine"),
        instance=kw.pop("instance"),
        listener=kw.pop("listener"),
        since_ms=kw.pop("since"),
        until_ms=kw.pop("until"),
        at=frozenset(_place(a) for a in kw.pop("at")),
    )


async def _letters(settings: Settings, flt: LetterFilter, limit: int | None) -> list[Letter]:
    from garrison.dlq import read_letters

    out: list[Letter] = []
    async for letter in read_letters(settings, flt):
        out.append(letter)
        if limit is not None and len(out) >= limit:
            break
    return out


@click.group(help="List, show and re-drive dead letters (of GARRISON_APP).")
def dlq() -> None:
    """The ``garrison dlq`` group."""


@dlq.command("list", help="One line per chosen dead letter (--json: one object per line).")
@_filters
@click.option("--limit", type=int, default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def list_letters(limit: int, as_json: bool, **kw: Any) -> int:
    letters = asyncio.run(_letters(Settings(), _chosen(kw), limit))
    for letter in letters:
        s = letter.summary()
        if as_json:
            click.echo(json.dumps(s))
            continue
        who = "/".join(x or "?" for x in (s["tenant"], s["machine"], s["instance"]))
        label = f"{s['stage']}" + (f"[{s['listener']}]" if s["listener"] else "")
        click.echo(
            f"{s['at']:>10}  {s['dead_lettered']}  {label:<12} {who}  "
            f"{s['event_type'] or '-'} {s['event_id'] or '-'}  {s['reason'][:120]}"
        )
    if not as_json:
        click.echo(f"{len(letters)} dead letter(s)", err=True)
    return 0


@dlq.command(help="Chosen dead letters whole: what failed, the original headers and value.")
@_filters
@click.option("--limit", type=int, default=20, show_default=True)
def show(limit: int, **kw: Any) -> int:
    for letter in asyncio.run(_letters(Settings(), _chosen(kw), limit)):
        click.echo(json.dumps(letter.details(), indent=2))
    return 0


@dlq.command(
    help="Send chosen dead letters back: events to the events topic, listener "
    "letters to their listener; as they were, or fixed."
)
@_filters
@click.option("--patch", "patch", help="an RFC 6902 JSON patch to apply to each value")
@click.option("--patch-file", type=click.Path(exists=True, path_type=Path))
@click.option("--fix", "fix_spec", help="module:function taking and returning the decoded value")
@click.option("--by", help="who re-drives, for the audit header (default user@host)")
@click.option("--dry-run", is_flag=True, help="show what would be sent, send nothing")
@click.option("--force", is_flag=True, help="send listener letters re-driven already again")
def redrive(
    patch: str | None,
    patch_file: Path | None,
    fix_spec: str | None,
    by: str | None,
    dry_run: bool,
    force: bool,
    **kw: Any,
) -> int:
    from garrison.dlq import load_fix
    from garrison.dlq import redrive as run

    flt = _chosen(kw)
    if flt == LetterFilter():
        raise GarrisonError("choose the letters to re-drive (--stage, --reason, --at, ...)")
    given = [x for x in (patch, patch_file, fix_spec) if x is not None]
    if len(given) > 1:
        raise GarrisonError("give one fix: --patch, --patch-file or --fix")
    fix: Fix | None = None
    label = ""
    if patch is not None or patch_file is not None:
        text = patch if patch is not None else Path(str(patch_file)).read_text()
        fix, label = parse_patch(text), "json-patch " + " ".join(text.split())[:200]
    elif fix_spec is not None:
        fix, label = load_fix(fix_spec), fix_spec
    report = asyncio.run(
        run(Settings(), flt, fix=fix, fix_label=label, by=by, dry_run=dry_run, force=force)
    )
    for o in report.outcomes:
        click.echo(f"{o.where}  {o.kind:<8} -> {o.to}  {o.result}")
    click.echo(
        f"{report.sent} sent, {report.failed} failed, {len(report.outcomes)} chosen", err=True
    )
    return 1 if report.failed else 0
