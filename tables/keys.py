"""The table key codec: the one place where addresses become bytes.

A state key is the three ids, each written as its UTF-8 length in decimal, ':' and its
bytes: ``4:acme7:counter3:o-1``. Length-prefixing makes the codec injective for any
strings whatever characters they hold (no separator can be forged), and keeps every
tenant's keys under one prefix, so listing a tenant or a tenant's machine is a prefix
scan. A timer index key is the due time as 8 big-endian bytes, then the state key and
the timer name, so RocksDB's byte order is due-time order.
"""

from __future__ import annotations

from pipeline.address import Address

__all__ = ["OFFSET_KEY", "encode_key", "decode_key", "tenant_prefix", "timer_key",
           "timer_key_due", "decode_timer_key"]

# The state table's one key that is not an address: the events offset its partition's
# records are applied up to. Every encoded address starts with a decimal digit, so a
# zero byte can never collide with one (nor fall under a tenant prefix).
OFFSET_KEY = b"\x00applied-offset"


def _part(text: str) -> bytes:
    raw = text.encode()
    return b"%d:%s" % (len(raw), raw)


def encode_key(tenant: str, machine: str, instance: str) -> bytes:
    """The state table key of an address."""
    return _part(tenant) + _part(machine) + _part(instance)


def tenant_prefix(tenant: str, machine: str | None = None) -> bytes:
    """The prefix shared by all keys of ``tenant`` (and ``machine``, if given)."""
    return _part(tenant) + (b"" if machine is None else _part(machine))


def _take(raw: bytes, pos: int) -> tuple[str, int]:
    colon = raw.index(b":", pos)
    size = int(raw[pos:colon])
    end = colon + 1 + size
    if end > len(raw) or size < 0:
        raise ValueError(f"truncated key part at {pos}")
    return raw[colon + 1:end].decode(), end


def decode_key(raw: bytes) -> Address:
    """Inverse of :func:`encode_key`; raises ValueError on bytes it did not make."""
    tenant, pos = _take(raw, 0)
    machine, pos = _take(raw, pos)
    instance, pos = _take(raw, pos)
    if pos != len(raw):
        raise ValueError("trailing bytes after key")
    return Address(tenant, machine, instance)


def timer_key(due_ms: int, state_key: bytes, name: str) -> bytes:
    """The timer index key: due time first, so a range scan finds what is due."""
    # Times before 1970 sort first; the firing carries its exact due time in the value.
    return max(due_ms, 0).to_bytes(8, "big", signed=False) + state_key + _part(name)


def timer_key_due(raw: bytes) -> int:
    """The due time of a timer index key."""
    return int.from_bytes(raw[:8], "big")


def decode_timer_key(raw: bytes) -> tuple[int, Address, str]:
    """Due time, address and timer name of a timer index key."""
    tenant, pos = _take(raw, 8)
    machine, pos = _take(raw, pos)
    instance, pos = _take(raw, pos)
    name, pos = _take(raw, pos)
    if pos != len(raw):
        raise ValueError("trailing bytes after timer key")
    return timer_key_due(raw), Address(tenant, machine, instance), name
