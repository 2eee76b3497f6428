"""State at rest: key codecs, table definitions, the timer index and the read side."""

from tables.keys import (
    decode_key,
    decode_timer_key,
    encode_key,
    tenant_prefix,
    timer_key,
    timer_key_due,
)

__all__ = ["decode_key", "decode_timer_key", "encode_key", "tenant_prefix", "timer_key",
           "timer_key_due"]
