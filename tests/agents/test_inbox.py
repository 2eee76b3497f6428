"""A lane's inbox never makes the fetch loop wait: full, it says so, and it tells the lane
when it has room again (pure asyncio, no broker)."""

from __future__ import annotations

import asyncio

import pytest

from agents.inbox import Inbox

pytestmark = pytest.mark.asyncio(loop_scope="function")


async def test_full_at_the_limit_and_room_again_at_half() -> None:
    told: list[int] = []
    inbox = Inbox(10, on_room=lambda: told.append(inbox.queued))
    assert inbox.add([1, 2, 3, 4]) is False
    assert inbox.add([5, 6, 7, 8, 9, 10]) is True  # at the limit: full
    assert inbox.add([11, 12]) is True  # still taken, never refused or waited on
    taken = [await inbox.next(), await inbox.next()]
    assert taken == [[1, 2, 3, 4], [5, 6, 7, 8, 9, 10]]
    assert told == [2]  # room again once at most half is queued, told once
    assert inbox.full is False
    assert inbox.add([13]) is False


async def test_given_back_records_come_first_and_a_closed_inbox_drops() -> None:
    inbox = Inbox(100)
    inbox.add([1, 2])
    inbox.add([3])
    first = await inbox.next()
    assert first is not None
    inbox.give_back(first)
    assert await inbox.next() == [1, 2]
    assert await inbox.next() == [3]
    assert await inbox.next(timeout=0.01) is None
    inbox.close()
    assert inbox.add([4]) is False
    assert await inbox.next(timeout=0.01) is None


async def test_next_returns_when_the_transaction_in_flight_ends() -> None:
    inbox = Inbox(100)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.01, done.set_result, None)
    assert await inbox.next(until=done) is None
    inbox.add([1])
    assert await inbox.next(until=done) == [1]
