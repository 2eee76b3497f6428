"""Reading xstate v5 machine configs exported as JSON.

The JSON dialect is the config one passes to ``createMachine``/``setup().createMachine``
(``id``, ``initial``, ``context``, ``states``, ``on``, ``always``, ``after``, ``entry``,
``exit``, ``type``, ``output``, ``onDone``, ``target`` as ``"sibling"``, ``".child"`` or
``"#id"``, ``guard`` as a name or ``{"type", "params"}``, actions as names,
``{"type", "params"}`` objects or arrays). The functions behind the names come from
Python: see :meth:`pipeline.statechart.Chart.from_xstate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from pipeline.errors import InvalidDefinition

__all__ = ["load_xstate"]


def load_xstate(source: Mapping[str, Any] | str | bytes) -> dict[str, Any]:
    """The machine config in ``source`` (JSON text or an already parsed dict), as a fresh
    dict; raises InvalidDefinition if it is not a JSON object.

    A parsed dict must hold JSON values only: a config with Python functions in it
    belongs in ``Chart(...)``, not in ``from_xstate``.
    """
    try:
        if isinstance(source, str | bytes):
            loaded = orjson.loads(source)
        else:
            loaded = orjson.loads(orjson.dumps(source))
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise InvalidDefinition(
            f"from_xstate expects a JSON machine config: {exc}; a config holding Python "
            "functions goes to Chart(...) instead"
        ) from exc
    if not isinstance(loaded, dict):
        raise InvalidDefinition(
            f"from_xstate expects a JSON object (the machine config), got {type(loaded).__name__}"
        )
    return loaded
