"""The key codec is injective and keeps each tenant under one prefix, for any input."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tables.keys import decode_key, encode_key, tenant_prefix

anything = st.text(max_size=12)
addresses = st.tuples(anything, anything, anything)


@given(addresses, addresses)
def test_two_addresses_never_share_a_key(a: tuple[str, str, str], b: tuple[str, str, str]) -> None:
    assert (encode_key(*a) == encode_key(*b)) == (a == b)


@given(addresses)
def test_decode_inverts_encode(a: tuple[str, str, str]) -> None:
    assert tuple(decode_key(encode_key(*a))) == a


@given(addresses, anything)
def test_a_tenant_prefix_never_covers_another_tenant(a: tuple[str, str, str], other: str) -> None:
    key = encode_key(*a)
    assert key.startswith(tenant_prefix(a[0]))
    assert key.startswith(tenant_prefix(a[0], a[1]))
    assert key.startswith(tenant_prefix(other)) == (other == a[0])


def test_forged_separators_do_not_collide() -> None:
    assert encode_key("a:1", "b", "c") != encode_key("a", "1:b", "c")
    assert encode_key("1:a", "", "") != encode_key("", "1:a", "")
