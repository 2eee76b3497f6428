"""Mermaid export."""

from __future__ import annotations

from pipeline.statechart import Chart, to_mermaid
from tests.pipeline.statechart.charts import order, parallel


def test_flat_chart_with_guard_after_and_final() -> None:
    text = to_mermaid(order())
    lines = text.splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert "    [*] --> order_cart" in lines
    assert "    order_cart --> order_paying : checkout [hasItems]" in lines
    assert "    order_cart --> order_cart : checkout" in lines  # targetless fallback
    assert "    order_paying --> order_paying : after reminder" in lines
    assert "    order_paying --> order_cart : after 60s" in lines
    assert "    order_paying --> order_done : paid [covers]" in lines
    assert "    order_done --> [*]" in lines
    assert text.endswith("\n")


def test_parallel_regions_are_nested_blocks_separated_by_dashes() -> None:
    lines = to_mermaid(parallel()).splitlines()
    start = lines.index("    state m_p {")
    end = lines.index("    }", start)
    block = lines[start:end]
    assert "        state m_p_r1 {" in block
    assert "        --" in block
    assert block.index("        --") > block.index("        state m_p_r1 {")
    assert block.index("        --") < block.index("        state m_p_r2 {")
    assert "            [*] --> m_p_r1_a" in block
    assert "    m_p --> m_q : G" in lines
    assert "    [*] --> m_p" in lines


def test_always_and_on_done_labels_and_wrapped_root_transitions() -> None:
    chart = Chart(
        {
            "id": "w",
            "initial": "job",
            "on": {"reset": ".job"},
            "states": {
                "job": {
                    "initial": "run",
                    "onDone": "idle",
                    "states": {
                        "run": {"always": {"target": "fin", "guard": {"type": "ready"}}},
                        "fin": {"type": "final"},
                    },
                },
                "idle": {},
            },
        },
        guards={"ready": lambda c, e: True},
    )
    lines = to_mermaid(chart).splitlines()
    assert "    [*] --> w" in lines  # the root has transitions of its own: drawn as a state
    assert "            w_job_run --> w_job_fin : always [ready]" in lines
    assert "        w_job --> w_idle : onDone" in lines
    assert "    w --> w_job : reset" in lines
