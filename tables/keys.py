"""The table key codec: the one place where addresses become bytes.

A state key is the three ids, each written as its UTF-8 length in decimal, ':' and its
bytes: ``4:acme7:counter3:o-1``. Length-prefixing makes the codec injective for any
strings whatever characters they hold (no separator can be forged), and keeps every
tenant's keys under one prefix, so listing a tenant or a tenant's machine is a prefix
scan. The same part codec (:func:`part`, :func:`read_part`) builds the timer index's
keys (``tables.timers``).

An instance's recent history (``tables.history``) lives in the state table too, under
:data:`HISTORY_PREFIX` + its state key + a 2-byte slot: outside every tenant prefix (an
encoded address starts with a digit), and an address's state key is self-delimiting,
so one instance's slots are exactly the keys under :func:`history_prefix`.
"""

from __future__ import annotations

from pipeline.address import Address

__all__ = [
    "HISTORY_PREFIX",
    "OFFSET_KEY",
    "SEAL_KEY",
    "WRITER_KEY",
    "decode_key",
    "encode_key",
    "history_key",
    "history_prefix",
    "part",
    "read_part",
    "tenant_prefix",
]

# The state table's one key that is not an address: the events offset its partition's
# records are applied up to. Every encoded address starts with a decimal digit, so a
# zero byte can never collide with one (nor fall under a tenant prefix).
OFFSET_KEY = b"\x00applied-offset"
# The partition's seal key (pipeline.seal): random, made by the partition's first owner,
# and kept with the state so every later owner seals and checks firings with it.
SEAL_KEY = b"\x00seal-key"
# The transactional id of the worker that committed the partition's batches since it
# took the partition: a new owner ends a transaction that worker left open, rather than
# wait for the broker's transaction timeout (agents.dispatch).
WRITER_KEY = b"\x00writer"
HISTORY_PREFIX = b"\x01h"


def history_prefix(state_key: bytes) -> bytes:
    """The prefix of every history slot of the instance at ``state_key``."""
    return HISTORY_PREFIX + state_key


def history_key(state_key: bytes, slot: int) -> bytes:
    """The key of history slot ``slot`` (0 to 65535) of the instance at ``state_key``."""
    return HISTORY_PREFIX + state_key + slot.to_bytes(2, "big")


def part(text: str) -> bytes:
    """One length-prefixed key part: ``b"4:acme"``."""
    raw = text.encode()
    return b"%d:%s" % (len(raw), raw)


def read_part(raw: bytes, pos: int) -> tuple[str, int]:
    """The key part starting at ``pos`` and the position after it; ValueError if the
    bytes there are not one."""
    colon = raw.index(b":", pos)
    size = int(raw[pos:colon])
    end = colon + 1 + size
    if end > len(raw) or size < 0:
        raise ValueError(f"truncated key part at {pos}")
    return raw[colon + 1 : end].decode(), end


def encode_key(tenant: str, machine: str, instance: str) -> bytes:
    """The state table key of an address."""
    return part(tenant) + part(machine) + part(instance)


def tenant_prefix(tenant: str, machine: str | None = None) -> bytes:
    """The prefix shared by all keys of ``tenant`` (and ``machine``, if given)."""
    return part(tenant) + (b"" if machine is None else part(machine))


def decode_key(raw: bytes, pos: int = 0) -> Address:
    """Inverse of :func:`encode_key` (of the key starting at ``pos``, to the end);
    raises ValueError on bytes it did not make."""
    tenant, pos = read_part(raw, pos)
    machine, pos = read_part(raw, pos)
    instance, pos = read_part(raw, pos)
    if pos != len(raw):
        raise ValueError("trailing bytes after key")
    return Address(tenant, machine, instance)
