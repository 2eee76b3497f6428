"""The README's Python examples run as written and type-check with ``mypy --strict``.

The blocks are one app, in the order the README shows them; they are joined into one
module, type-checked, then imported (which defines the machine and registers the
listener, so a definition error would fail here too).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

from mypy import api

README = Path(__file__).resolve().parents[1] / "README.md"


def _module(tmp_path: Path) -> Path:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 3, "README has fewer Python examples than expected"
    path = tmp_path / "readme_app.py"
    path.write_text("\n\n".join(blocks))
    return path


def test_readme_examples_type_check_strictly(tmp_path: Path) -> None:
    path = _module(tmp_path)
    out, err, status = api.run(
        ["--strict", "--no-incremental", "--follow-imports=silent", "--config-file=", str(path)]
    )
    assert status == 0, f"mypy --strict on the README's examples:\n{out}{err}"


def test_readme_examples_define_a_working_app(tmp_path: Path) -> None:
    path = _module(tmp_path)
    spec = importlib.util.spec_from_file_location("readme_app", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["readme_app"] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["readme_app"]
    from pipeline import step
    from tests.samples import event

    out = step(module.registry, None, event("counter.added", {"amount": 2}, machine="counter"))
    assert out.record is not None
    assert out.record.state == {"count": 2}
    assert [lst.name for lst in module.registry.listeners] == ["email_support"]
    assert [t.name for t in module.kv.listeners] == ["welcome", "reload_flags", "count_expiry"]
    assert sorted(module.kv.machines) == ["kv.cache", "kv.config", "kv.users"]
