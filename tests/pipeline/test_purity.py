"""The core of pipeline/ never imports Kafka, Faust or RocksDB; only its entry points do."""

from __future__ import annotations

import ast
from pathlib import Path

import pipeline

FORBIDDEN = {"faust", "aiokafka", "rocksdict", "mode"}
ENTRY_POINTS = {"cli.py", "cli_app.py", "client.py", "broker.py"}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_core_modules_import_no_io_library() -> None:
    root = Path(pipeline.__file__).parent
    checked = 0
    for path in root.rglob("*.py"):
        if path.name in ENTRY_POINTS and path.parent == root:
            continue
        bad = _imports(path) & FORBIDDEN
        assert not bad, f"{path.relative_to(root)} imports {sorted(bad)}"
        checked += 1
    assert checked >= 10, "the walk found too few modules; is the package where we think?"
