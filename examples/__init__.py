"""Example garrison apps.

Each example is a package with ``app.py``, whose module-level ``registry`` is what
``garrison worker examples.<name>.app`` loads; the orchestration examples also have
``services.py``, the services their machines command (run with :func:`agents.service.serve`).
"""
