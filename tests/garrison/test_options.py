"""The shared command-line time type: epoch ms and RFC 3339 alike, bad text named."""

import click
import pytest
from click.testing import CliRunner

from garrison.options import MOMENT


@click.command()
@click.option("--since", type=MOMENT)
def _show(since: int | None) -> None:
    click.echo(repr(since))


@pytest.mark.parametrize(
    ("given", "printed"),
    [
        ("1764547200000", "1764547200000"),
        ("2025-12-01T00:00:00Z", "1764547200000"),
        ("2025-12-01T01:00:00+01:00", "1764547200000"),
    ],
)
def test_moment_reads_epoch_ms_and_rfc3339(given: str, printed: str) -> None:
    result = CliRunner().invoke(_show, ["--since", given])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == printed


def test_moment_rejects_other_text_with_what_it_wants() -> None:
    result = CliRunner().invoke(_show, ["--since", "yesterday"])
    assert result.exit_code == 2
    assert "must be RFC 3339 or epoch ms, got 'yesterday'" in result.output
