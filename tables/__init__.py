"""State at rest: the key codec, the timer index, the batched store and its recovery."""

from tables.keys import OFFSET_KEY, decode_key, encode_key, tenant_prefix

__all__ = ["OFFSET_KEY", "decode_key", "encode_key", "tenant_prefix"]
