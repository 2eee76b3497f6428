"""The seal: how a timer firing on the events topic proves it is garrison's own.

Timer firings travel on the events topic, in the instance's own partition, so the log
holds their order for replay. Any producer can write to that topic, though, and a
firing is powerful (a forged ``timer="__ttl__"`` would delete an instance early). So
garrison's timer delivery seals each firing: a ``garrison.seal`` header holding an
HMAC-SHA256 of the record's value under a random key that belongs to the partition
(kept in the partition's state table, so it moves with the partition and survives
restarts; only principals that may read the changelog topics can learn it). A record
that claims to be a firing without a valid seal is a dead letter of stage ``origin``.
"""

from __future__ import annotations

import hashlib
import hmac

from pipeline.envelope import Headers

__all__ = ["SEAL_HEADER", "SEAL_KEY_BYTES", "is_sealed", "seal"]

SEAL_HEADER = "garrison.seal"
SEAL_KEY_BYTES = 32
_LENGTH = 16  # 128 bits of the MAC: forging one is as hard as guessing the key


def seal(key: bytes, value: bytes) -> bytes:
    """The seal of ``value`` under ``key``."""
    return hmac.new(key, value, hashlib.sha256).digest()[:_LENGTH]


def is_sealed(key: bytes | None, value: bytes | None, headers: Headers | None) -> bool:
    """Whether a record carries a valid seal of its value under ``key``."""
    if key is None or value is None or not headers:
        return False
    expected = seal(key, value)
    return any(name == SEAL_HEADER and hmac.compare_digest(raw, expected) for name, raw in headers)
