"""The consumer group's offsets inside the worker's transactions, fenced by the group
generation (KIP-447), and the stable read of them that a new owner makes first.

One transactional producer serves every partition of a worker (``agents.transactions``),
so its transactional id no longer names a partition, and a new owner of a partition can
no longer fence the old one by initialising that partition's id. Fencing moves to the
consumer group, as Kafka Streams' exactly_once_v2 does it:

- every transaction carries the group offsets of the events partitions it applies, in
  a ``TxnOffsetCommit`` of version 3, which names the group generation and member the
  worker applied them in. The group coordinator refuses it from a member of an older
  generation (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID), and the
  transaction, its state and output with it, can then only abort: a zombie worker (one
  the group has dropped without its knowing) commits nothing.
- a new owner, before it reads a partition's changelog, fetches the partition's group
  offset with ``require_stable`` (``OffsetFetch`` version 7): the coordinator answers
  UNSTABLE_OFFSET_COMMIT while a transaction that committed offsets for it is still
  open, so a transaction the old owner committed offsets in before the generation moved
  has ended, committed or aborted, before the new owner reads what it wrote.

- a new owner that finds a transaction of the previous owner still open on its
  changelogs ends it at once if that worker is no longer in the group (``DescribeGroups``
  version 4, which names each member's group.instance.id): it died, or is a zombie.

aiokafka 0.14 sends ``TxnOffsetCommit`` version 0 only (no generation: nothing is
fenced), fetches offsets without ``require_stable`` and describes groups without the
members' instance ids. These requests are declared here with aiokafka's own protocol
types, and the producer's sender is given a handler that sends version 3
(:func:`fence_offsets_by_generation`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.producer import sender as aiokafka_sender
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Array,
    Boolean,
    Bytes,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    String,
    TaggedFields,
)
from aiokafka.structs import OffsetAndMetadata

__all__ = [
    "GroupMember",
    "GroupInstancesRequest",
    "OffsetsRefused",
    "add_group",
    "group_instances",
    "StableOffsetFetchRequest",
    "TxnOffsetCommitV3Request",
    "fence_offsets_by_generation",
    "send_offsets",
    "stable_offsets",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GroupMember:
    """Who the worker was in the group when it applied what a transaction carries."""

    group_id: str
    generation: int
    member_id: str
    instance_id: str | None  # the static member's group.instance.id


class OffsetsRefused(kafka_errors.KafkaError):  # type: ignore[misc]
    """The group refused a transaction's offsets: the member they name is not in the
    group's generation any more (the partition has another owner)."""


def _topics(*partition_fields: tuple[str, Any]) -> tuple[str, Any]:
    """The flexible ``topics`` field these requests and answers share: each topic's name
    and its partitions with ``partition_fields``, each level ending in tagged fields."""
    return (
        "topics",
        CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(*partition_fields, ("tags", TaggedFields))),
            ("tags", TaggedFields),
        ),
    )


# -- TxnOffsetCommit v3 (KIP-447) ------------------------------------------------------


class TxnOffsetCommitResponse_v3(Response):  # type: ignore[misc] # noqa: N801 - aiokafka's naming
    API_KEY = 28
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        _topics(("partition_index", Int32), ("error_code", Int16)),
        ("tags", TaggedFields),
    )


class TxnOffsetCommitRequest_v3(RequestStruct):  # type: ignore[misc] # noqa: N801
    FLEXIBLE_VERSION = True
    API_KEY = 28
    API_VERSION = 3
    RESPONSE_TYPE = TxnOffsetCommitResponse_v3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("group_id", CompactString("utf-8")),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("generation_id", Int32),
        ("member_id", CompactString("utf-8")),
        ("group_instance_id", CompactString("utf-8")),  # null when not static
        _topics(
            ("partition_index", Int32),
            ("committed_offset", Int64),
            ("committed_leader_epoch", Int32),
            ("committed_metadata", CompactString("utf-8")),
        ),
        ("tags", TaggedFields),
    )


TxnOffsetCommitV3Struct: TypeAlias = TxnOffsetCommitRequest_v3


class TxnOffsetCommitV3Request(Request[TxnOffsetCommitV3Struct]):  # type: ignore[misc]
    """TxnOffsetCommit naming the group member; only version 3 (a broker without it,
    older than Kafka 2.5, cannot fence by generation, and the request fails)."""

    API_KEY = 28

    def __init__(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        member: GroupMember,
        offsets: dict[TopicPartition, OffsetAndMetadata],
    ) -> None:
        self._args = (transactional_id, producer_id, producer_epoch, member, offsets)

    def build(self, request_struct_class: type[TxnOffsetCommitV3Struct]) -> TxnOffsetCommitV3Struct:
        transactional_id, producer_id, producer_epoch, member, offsets = self._args
        by_topic: dict[str, list[tuple[Any, ...]]] = collections.defaultdict(list)
        for tp, meta in sorted(offsets.items()):
            by_topic[tp.topic].append((tp.partition, meta.offset, -1, meta.metadata, {}))
        return request_struct_class(
            transactional_id,
            member.group_id,
            producer_id,
            producer_epoch,
            member.generation,
            member.member_id,
            member.instance_id,
            [(topic, parts, {}) for topic, parts in by_topic.items()],
            {},
        )


# Kafka's error codes that aiokafka 0.14 has no class for (it maps them to UnknownError).
# The group no longer has this member in this generation, so the transaction must abort:
_FENCED = {22: "ILLEGAL_GENERATION", 25: "UNKNOWN_MEMBER_ID", 82: "FENCED_INSTANCE_ID"}
# An open transaction holds offsets of the partition (OffsetFetch with require_stable):
_UNSTABLE_OFFSET_COMMIT = 88


class _TxnOffsetCommitV3Handler(aiokafka_sender.TxnOffsetCommitHandler):  # type: ignore[misc]
    """aiokafka's handler, sending version 3 with the member that applied the offsets,
    and failing the transaction (abortable) when the group has fenced that member."""

    def __init__(self, sender: Any, offsets: Any, group_id: str, member: GroupMember) -> None:
        super().__init__(sender, offsets, group_id)
        self._member = member

    def create_request(self) -> TxnOffsetCommitV3Request:
        txn = self._sender._txn_manager  # noqa: SLF001
        return TxnOffsetCommitV3Request(
            txn.transactional_id, txn.producer_id, txn.producer_epoch, self._member, self._offsets
        )

    def handle_response(self, resp: Any) -> float | None:
        for topic, partitions, _ in resp.topics:
            for partition, error_code, _ in partitions:
                if error_code in _FENCED:
                    member = self._member
                    self._sender._txn_manager.error_transaction(  # noqa: SLF001
                        OffsetsRefused(
                            f"the group refused offsets of {topic}[{partition}] from "
                            f"member {member.member_id} of generation {member.generation} "
                            f"({_FENCED[error_code]}): the partition has another owner"
                        )
                    )
                    return None
        # aiokafka's handling of the rest reads `resp.errors` as (topic, [(partition,
        # error)]): the same answer in version 0's shape.
        shaped = types.SimpleNamespace(
            errors=[(t, [(p, e) for p, e, _ in ps]) for t, ps, _ in resp.topics]
        )
        result: float | None = super().handle_response(shaped)
        return result


def fence_offsets_by_generation(
    producer: AIOKafkaProducer, member: Callable[[], GroupMember]
) -> None:
    """Make ``producer`` send its transactions' offsets as TxnOffsetCommit v3, naming
    ``member()`` (asked when each request is built: the member of the transaction being
    committed, see :func:`send_offsets`)."""
    sender = producer._sender  # noqa: SLF001

    async def do_txn_offset_commit(self: Any, offsets: Any, group_id: str) -> None:
        if not offsets:
            # add_group's entry: the group is added, and there is nothing to commit.
            _, _, done = self._txn_manager._pending_txn_offsets.popleft()  # noqa: SLF001
            if not done.done():
                done.set_result(None)
            return
        try:
            node_id = await self._find_coordinator(aiokafka_sender.CoordinationType.GROUP, group_id)
        except kafka_errors.GroupAuthorizationFailedError as exc:
            self._txn_manager.error_transaction(exc)
            return
        await _TxnOffsetCommitV3Handler(self, offsets, group_id, member()).do(node_id)

    if not hasattr(sender, "_do_txn_offset_commit"):
        raise RuntimeError(
            "aiokafka's Sender._do_txn_offset_commit is gone; this aiokafka release needs "
            "a new way to send TxnOffsetCommit v3"
        )
    sender._do_txn_offset_commit = types.MethodType(do_txn_offset_commit, sender)  # noqa: SLF001


def add_group(producer: AIOKafkaProducer, group_id: str) -> None:
    """Add the consumer group to ``producer``'s open transaction now (AddOffsetsToTxn),
    ahead of its offsets, so the TxnOffsetCommit that carries them is the only request
    they wait for. aiokafka adds the group only with the first offsets: it queues
    AddOffsetsToTxn and then TxnOffsetCommit, one after the other, before EndTxn."""
    txn = producer._txn_manager  # noqa: SLF001
    if txn._txn_consumer_group is not None or not txn.is_in_transaction():  # noqa: SLF001
        return
    # An entry with no offsets: the sender adds the group for it, and then hands it to
    # fence_offsets_by_generation's commit, which completes it.
    done = txn.add_offsets_to_txn({}, group_id)
    # Failed with the transaction (error_transaction), which reports it otherwise.
    done.add_done_callback(lambda f: f.cancelled() or f.exception())


async def send_offsets(
    producer: AIOKafkaProducer, offsets: dict[TopicPartition, int], group_id: str
) -> None:
    """Add ``offsets`` (partition -> the next offset to read) to the open transaction:
    AddOffsetsToTxn unless the group is in it already (:func:`add_group`), then the
    TxnOffsetCommit of :func:`fence_offsets_by_generation`. As aiokafka's
    ``send_offsets_to_transaction``, except that a failure after the wait was given up
    (a timeout, the sender gone) is not logged as never retrieved."""
    txn = producer._txn_manager  # noqa: SLF001
    if not txn.is_in_transaction():
        raise kafka_errors.IllegalOperation("not in the middle of a transaction")
    done = txn.add_offsets_to_txn(
        {tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()}, group_id
    )
    done.add_done_callback(lambda f: f.cancelled() or f.exception())
    await asyncio.shield(done)


# -- OffsetFetch v7, require_stable (KIP-447) ------------------------------------------


class OffsetFetchResponse_v7(Response):  # type: ignore[misc] # noqa: N801
    API_KEY = 9
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        _topics(
            ("partition_index", Int32),
            ("committed_offset", Int64),
            ("committed_leader_epoch", Int32),
            ("metadata", CompactString("utf-8")),
            ("error_code", Int16),
        ),
        ("error_code", Int16),
        ("tags", TaggedFields),
    )


class OffsetFetchRequest_v7(RequestStruct):  # type: ignore[misc] # noqa: N801
    FLEXIBLE_VERSION = True
    API_KEY = 9
    API_VERSION = 7
    RESPONSE_TYPE = OffsetFetchResponse_v7
    SCHEMA = Schema(
        ("group_id", CompactString("utf-8")),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("partition_indexes", CompactArray(Int32)),
                ("tags", TaggedFields),
            ),
        ),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )


OffsetFetchV7Struct: TypeAlias = OffsetFetchRequest_v7


class StableOffsetFetchRequest(Request[OffsetFetchV7Struct]):  # type: ignore[misc]
    """OffsetFetch with ``require_stable``: refused (UNSTABLE_OFFSET_COMMIT) while an open
    transaction holds offsets of a partition asked for."""

    API_KEY = 9

    def __init__(self, group_id: str, topic: str, partitions: Iterable[int]) -> None:
        self._args = (group_id, topic, sorted(partitions))

    def build(self, request_struct_class: type[OffsetFetchV7Struct]) -> OffsetFetchV7Struct:
        group_id, topic, partitions = self._args
        return request_struct_class(group_id, [(topic, partitions, {})], True, {})


def stable_offsets(resp: Any) -> dict[int, int] | None:
    """The committed offsets (partition -> offset, -1 for none) an OffsetFetch v7 answer
    gives; None while some are unstable (an open transaction holds them). Raises the
    Kafka error of any other failure."""
    if resp.error_code == _UNSTABLE_OFFSET_COMMIT:
        return None
    if resp.error_code:
        top = kafka_errors.for_code(resp.error_code)
        raise top(f"fetching the group's committed offsets failed (error {resp.error_code})")
    found: dict[int, int] = {}
    for _topic, partitions, _ in resp.topics:
        for partition, offset, _epoch, _meta, error_code, _ in partitions:
            if error_code == _UNSTABLE_OFFSET_COMMIT:
                return None
            if error_code:
                error_type = kafka_errors.for_code(error_code)
                raise error_type(
                    f"fetching the committed offset of partition {partition} (error {error_code})"
                )
            found[partition] = offset
    return found


# -- DescribeGroups v4: the members' group.instance.id ---------------------------------


class DescribeGroupsResponse_v4(Response):  # type: ignore[misc] # noqa: N801
    API_KEY = 15
    API_VERSION = 4
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "groups",
            Array(
                ("error_code", Int16),
                ("group", String("utf-8")),
                ("state", String("utf-8")),
                ("protocol_type", String("utf-8")),
                ("protocol", String("utf-8")),
                (
                    "members",
                    Array(
                        ("member_id", String("utf-8")),
                        ("group_instance_id", String("utf-8")),  # null when not static
                        ("client_id", String("utf-8")),
                        ("client_host", String("utf-8")),
                        ("member_metadata", Bytes),
                        ("member_assignment", Bytes),
                    ),
                ),
                ("authorized_operations", Int32),
            ),
        ),
    )


class DescribeGroupsRequest_v4(RequestStruct):  # type: ignore[misc] # noqa: N801
    API_KEY = 15
    API_VERSION = 4
    RESPONSE_TYPE = DescribeGroupsResponse_v4
    SCHEMA = Schema(("groups", Array(String("utf-8"))), ("include_authorized_operations", Boolean))


DescribeGroupsV4Struct: TypeAlias = DescribeGroupsRequest_v4


class GroupInstancesRequest(Request[DescribeGroupsV4Struct]):  # type: ignore[misc]
    """DescribeGroups of one group, version 4: the first to name the members'
    group.instance.id (Kafka 2.4)."""

    API_KEY = 15

    def __init__(self, group_id: str) -> None:
        self._group_id = group_id

    def build(self, request_struct_class: type[DescribeGroupsV4Struct]) -> DescribeGroupsV4Struct:
        return request_struct_class([self._group_id], False)


def group_instances(resp: Any) -> set[str]:
    """The group.instance.id of every static member a DescribeGroups v4 answer lists.
    Raises the Kafka error of a failure."""
    [(error_code, group, _state, _type, _protocol, members, _ops)] = resp.groups
    if error_code:
        error_type = kafka_errors.for_code(error_code)
        raise error_type(f"describing group {group} failed (error {error_code})")
    return {instance for _, instance, *_ in members if instance is not None}
