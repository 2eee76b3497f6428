"""Mermaid diagrams of chart and reducer machines, and ``garrison diagram``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel

from garrison.cli import main
from pipeline import ChartMachine, Contract, Machine, mermaid
from pipeline.statechart import to_mermaid
from tests.pipeline.statechart.charts import order
from tests.samples import counter_machine


class Pong(BaseModel):
    n: int


def test_a_chart_machine_is_drawn_by_the_statechart() -> None:
    chart = order()
    machine = ChartMachine(
        chart,
        Contract(init="open", accepts={"open": None, "add": None, "checkout": None, "paid": None}),
    )
    text = mermaid(machine)
    assert text == to_mermaid(chart)
    assert "order_cart --> order_paying : checkout [hasItems]" in text


def test_a_reducer_machine_is_one_state_with_a_loop_per_event_type() -> None:
    text = mermaid(counter_machine())
    lines = text.splitlines()
    assert lines[:3] == [
        "stateDiagram-v2",
        '    state "counter v1" as counter',
        "    [*] --> counter : first event",
    ]
    assert "    counter --> counter : counter.added" in lines
    assert sum(line.startswith("    counter --> counter") for line in lines) == 8
    assert text.endswith("\n")


def test_emits_and_ttl_show_on_a_reducer_diagram() -> None:
    m: Machine[dict[str, object]] = Machine(
        "pinger-2", ttl=timedelta(seconds=30), emits={"pinged": Pong}
    )

    @m.on("ping")
    def ping(config: object, state: dict[str, object], ev: object) -> dict[str, object]:
        return state

    text = mermaid(m)
    assert 'state "pinger-2 v1" as pinger_2' in text
    assert "note right of pinger_2 : emits pinged" in text
    assert "pinger_2 --> [*] : garrison.expired after 30000 ms idle" in text


def test_the_cli_prints_a_diagram(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diagram", "examples.orchestrator.app", "counter"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("stateDiagram-v2\n    [*] --> counter_incrementing")
    assert main(["diagram", "tests.sample_app", "counter", "--version", "1"]) == 0
    assert 'state "counter v1"' in capsys.readouterr().out


def test_the_cli_names_the_registered_versions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diagram", "tests.sample_app", "counter", "--version", "7"]) != 0
    assert "has no version 7; registered: v1" in capsys.readouterr().err
    assert main(["diagram", "tests.sample_app", "ghost"]) != 0
    assert "no machine named 'ghost'" in capsys.readouterr().err


def test_version_and_module_entry_point(capsys: pytest.CaptureFixture[str]) -> None:
    import subprocess
    import sys

    from garrison import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"garrison, version {__version__}"
    done = subprocess.run(
        [sys.executable, "-m", "garrison", "--help"], capture_output=True, text=True, check=True
    )
    assert "kafka" in done.stdout
    assert "worker" in done.stdout
