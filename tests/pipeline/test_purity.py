"""The core is pure: nothing in ``pipeline/`` imports Kafka, Faust, RocksDB or the
packages above it (``tables``, ``agents``, ``garrison``), with no exemption; and the
floors above only point down: ``garrison -> agents -> tables -> pipeline``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLOORS = ["pipeline", "tables", "agents", "garrison"]
IO = {"faust", "aiokafka", "rocksdict", "mode"}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _modules(package: str) -> list[Path]:
    paths = sorted((ROOT / package).rglob("*.py"))
    assert len(paths) >= 5, f"the walk found too few modules in {package}/"
    return paths


def test_the_core_imports_no_io_library_and_nothing_above_it() -> None:
    forbidden = IO | set(FLOORS[1:])
    for path in _modules("pipeline"):
        bad = _imports(path) & forbidden
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("package", FLOORS)
def test_no_floor_imports_a_floor_above_it(package: str) -> None:
    above = set(FLOORS[FLOORS.index(package) + 1 :])
    for path in _modules(package):
        bad = _imports(path) & above
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}, a floor above it"
