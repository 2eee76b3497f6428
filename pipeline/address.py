"""Who an event is for: ``(tenant, machine, instance)``, validated at the edge.

Ids are 1 to 128 characters of letters, digits, '.', '_', ':' and '-'. Validation
happens once, where bytes enter garrison; everything past the edge trusts it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from pipeline.errors import InvalidAddress

__all__ = ["Address", "MAX_ID_LENGTH", "check_id"]

MAX_ID_LENGTH = 128
_ALLOWED = re.compile(r"[A-Za-z0-9._:\-]+")
_ALLOWED_TEXT = "letters, digits, '.', '_', ':', '-'"
# Ids repeat (a tenant sends many events): remember the valid ones, within bounds.
_VALID: set[str] = set()
_VALID_MAX = 200_000


def check_id(kind: str, value: object) -> str:
    """Return ``value`` if it is a valid id, else raise :class:`InvalidAddress` saying why.

    >>> check_id("tenant", "acme-1")
    'acme-1'
    """
    if type(value) is str and value in _VALID:
        return value
    if not isinstance(value, str):
        raise InvalidAddress(f"{kind} id must be a string, got {type(value).__name__}")
    if _ALLOWED.fullmatch(value) is not None and len(value) <= MAX_ID_LENGTH:
        if len(_VALID) >= _VALID_MAX:
            _VALID.clear()
        _VALID.add(value)
        return value
    if not value:
        raise InvalidAddress(f"{kind} id is empty; give 1 to {MAX_ID_LENGTH} characters")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidAddress(
            f"{kind} id is {len(value)} characters long; the limit is {MAX_ID_LENGTH}"
        )
    bad = next(ch for ch in value if _ALLOWED.fullmatch(ch) is None)
    raise InvalidAddress(f"{kind} id {value!r} contains {bad!r}; allowed: {_ALLOWED_TEXT}")


class Address(NamedTuple):
    """One machine instance of one tenant."""

    tenant: str
    machine: str
    instance: str

    @classmethod
    def checked(cls, tenant: object, machine: object, instance: object) -> Address:
        """Build an address, validating all three ids."""
        return cls(
            check_id("tenant", tenant), check_id("machine", machine), check_id("instance", instance)
        )
