"""arvo's counter orchestrator on garrison: a statechart (xstate JSON) that sends
commands to an increment and a decrement service, handles their ``sys.*.error``
answers, and sends a notification when it finishes. See ``app.py`` and ``services.py``.
"""
