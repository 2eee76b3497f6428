"""The aiokafka knob the worker turns exists, and is turned.

``agents.kafka.tune_transaction_retries`` lowers aiokafka's fixed retry delay for a
transaction that meets the previous one still completing. It is a module constant of
aiokafka's sender; if an aiokafka release renames it, this fails instead of the worker
silently slowing down.
"""

from __future__ import annotations

from aiokafka.producer import sender

from agents.kafka import TXN_RETRY_BACKOFF_S, tune_transaction_retries


def test_transaction_retry_backoff_is_lowered() -> None:
    assert "BACKOFF_OVERRIDE" in vars(sender)
    before = sender.BACKOFF_OVERRIDE
    try:
        tune_transaction_retries()
        assert sender.BACKOFF_OVERRIDE == TXN_RETRY_BACKOFF_S < 0.02
    finally:
        sender.BACKOFF_OVERRIDE = before
