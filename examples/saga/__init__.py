"""An order saga on garrison: reserve inventory, take payment, ship; on a failure (or a
payment that never answers) compensate in reverse order. See ``app.py`` and
``services.py``.
"""
