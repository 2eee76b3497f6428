"""The aiokafka knob the dispatcher turns exists, and is turned.

``agents.dispatch`` lowers aiokafka's fixed retry delay for a transaction that meets
the previous one still completing. It is a module constant of aiokafka's sender; if an
aiokafka release renames it, this fails instead of the worker silently slowing down.
"""

from __future__ import annotations

from aiokafka.producer import sender


def test_transaction_retry_backoff_is_lowered() -> None:
    import agents.dispatch as dispatch

    assert "BACKOFF_OVERRIDE" in vars(sender)
    assert sender.BACKOFF_OVERRIDE == dispatch.TXN_RETRY_BACKOFF_S < 0.02
