"""Kafka plumbing in one place: client options, the partitioner, aiokafka's tuning.

Every garrison process that talks to Kafka builds its clients' connection options with
:func:`kafka_options` and finds a key's partition with :func:`partition_of`, the
default partitioner of the Java client and aiokafka (murmur2), which is what the
events topic's layout is defined by.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.partitioner import murmur2
from aiokafka.producer import sender as aiokafka_sender
from aiokafka.producer.transaction_manager import TransactionState
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential

from pipeline.address import Address
from pipeline.partitioning import Partitioning
from pipeline.settings import KafkaSettings

__all__ = [
    "MAX_BATCH_BYTES",
    "add_partitions",
    "TXN_RETRY_BACKOFF_S",
    "UnroutableTopic",
    "close_producer",
    "commit_transaction",
    "forget_failure",
    "home_of",
    "is_kafka_failure",
    "is_record_refused",
    "kafka_options",
    "open_transaction",
    "partition_of",
    "transaction_partitions",
    "transactional_producer",
    "tune_transaction_retries",
    "while_sending",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# A record batch the broker takes: its default max.message.bytes is 1,048,588 bytes per
# batch. The pipeline keeps every record under GARRISON_MAX_RECORD_BYTES (900,000 by
# default) so one record always fits a batch, with its headers.
MAX_BATCH_BYTES = 1_000_000

# A transaction's first AddPartitionsToTxn often meets the previous transaction's
# markers still being written and gets CONCURRENT_TRANSACTIONS; aiokafka retries it
# after a fixed 20 ms (Kafka's Java client, likewise). Measured on the local broker:
# back-to-back transactions took 39 ms at p50 with 20 ms, 13 ms with 2 ms. A group
# commit starts its transaction right after the previous one, every time.
TXN_RETRY_BACKOFF_S = 0.002


def kafka_options(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka connection options from settings (security included)."""
    opts: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism is not None:
        opts["sasl_mechanism"] = kafka.sasl_mechanism
        opts["sasl_plain_username"] = kafka.sasl_username
        opts["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        )
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        opts["ssl_context"] = create_ssl_context()
    return opts


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the default partitioner (murmur2, as Java's and aiokafka's) gives
    ``key`` in a topic of ``partitions`` partitions."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


def home_of(partitioning: Partitioning, partitions: int) -> Callable[[Address], int]:
    """``home(address)``: the events partition an address belongs to, by its key
    (``pipeline.partitioning``) and :func:`partition_of`; remembers the keys it saw."""
    homes: dict[str, int] = {}
    key_text, any_hot = partitioning.key_text, partitioning.any_hot

    def home(address: Address) -> int:
        # murmur2 in pure Python costs microseconds; keys repeat, so remember them.
        key = key_text(*address) if any_hot else address.tenant
        where = homes.get(key)
        if where is None:
            if len(homes) >= 100_000:
                homes.clear()
            where = homes[key] = partition_of(key.encode(), partitions)
        return where

    return home


def tune_transaction_retries() -> None:
    """Lower aiokafka's fixed retry delay for CONCURRENT_TRANSACTIONS (see
    :data:`TXN_RETRY_BACKOFF_S`). A module constant of aiokafka's sender: called by the
    worker at start, never at import."""
    if "BACKOFF_OVERRIDE" not in vars(aiokafka_sender):
        raise RuntimeError(
            "aiokafka.producer.sender.BACKOFF_OVERRIDE is gone; this "
            "aiokafka release needs a new way to tune transaction retries"
        )
    aiokafka_sender.BACKOFF_OVERRIDE = TXN_RETRY_BACKOFF_S


async def open_transaction(
    producer: AIOKafkaProducer, partitions: Iterable[TopicPartition] = ()
) -> bool:
    """Begin ``producer``'s transaction unless one is open already; True if it began one.
    ``partitions`` are added to it at once (AddPartitionsToTxn goes out now, not with the
    first records for them), so a transaction opened ahead of its records has that
    round trip, and its CONCURRENT_TRANSACTIONS retries, behind it when they come.

    A transaction opened ahead whose AddPartitionsToTxn failed raises that failure here
    (a Kafka error, which the lane recovers from by replacing the producer), not an
    invalid state transition. Reads aiokafka's transaction manager: its producer has no
    public way to add a partition or to ask whether a transaction is open."""
    txn = producer._txn_manager  # noqa: SLF001
    if txn is None or txn.transactional_id is None:
        raise kafka_errors.IllegalOperation("not a transactional producer")
    _raise_if_failed(producer)
    if txn.is_in_transaction():
        return False
    await producer.begin_transaction()
    add_partitions(producer, partitions)
    return True


def add_partitions(producer: AIOKafkaProducer, partitions: Iterable[TopicPartition]) -> None:
    """Add ``partitions`` to ``producer``'s open transaction now (AddPartitionsToTxn goes
    out at once, not with the first records for them)."""
    txn = producer._txn_manager  # noqa: SLF001
    for tp in partitions:
        txn.maybe_add_partition_to_txn(tp)


async def while_sending(producer: AIOKafkaProducer, step: Awaitable[T]) -> T:
    """``step`` (a send's delivery, a commit), failing as soon as ``producer``'s sender
    task ends instead of waiting for it for ever.

    aiokafka's sender ends on an error it does not expect, such as a connection lost
    while it looks up the transaction coordinator for AddPartitionsToTxn (a broker
    going away); nothing it was asked for completes after that. Without this, a lane
    waited out its whole commit timeout (60 s) after each broker outage."""
    sender = producer._sender.sender_task  # noqa: SLF001 - the task aiokafka runs it in
    waiting = asyncio.ensure_future(step)
    if sender is None:
        return await waiting
    try:
        await asyncio.wait({waiting, sender}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        waiting.cancel()
        raise
    if waiting.done():
        return waiting.result()
    waiting.cancel()
    cause = None if sender.cancelled() else sender.exception()
    raise kafka_errors.KafkaConnectionError(
        f"the producer's sender stopped ({cause!r}); it sends nothing more"
    )


def _raise_if_failed(producer: AIOKafkaProducer) -> None:
    """Raise a Kafka error if ``producer`` can do nothing more in a transaction: its
    sender task has ended, or its transaction manager failed (the error that failed it:
    FATAL_ERROR when the sender died or it was fenced, ABORTABLE_ERROR when a request
    of the open transaction was refused). aiokafka would assert on the next state
    transition instead."""
    sender = producer._sender.sender_task  # noqa: SLF001
    if sender is not None and sender.done():
        raise kafka_errors.KafkaConnectionError("the producer's sender stopped; replace it")
    txn = producer._txn_manager  # noqa: SLF001
    failed = (TransactionState.ABORTABLE_ERROR, TransactionState.FATAL_ERROR)
    if txn is None or txn.state not in failed:
        return
    waiter = txn.wait_for_transaction_end()
    if waiter.done() and not waiter.cancelled() and waiter.exception() is not None:
        raise waiter.exception()
    raise kafka_errors.KafkaConnectionError("the producer's transaction failed; replace it")


async def commit_transaction(producer: AIOKafkaProducer) -> None:
    """``producer.commit_transaction()``, failing with a Kafka error when the producer
    can commit nothing (:func:`_raise_if_failed`), and at once if its sender dies
    meanwhile (:func:`while_sending`).

    aiokafka asserts instead ("Invalid state transition FATAL_ERROR ->
    COMMITTING_TRANSACTION"): an AssertionError, which is no Kafka failure, so a lane
    took it for a bug. Seen after broker outages: the lane's task ended silently and
    its partition got no output until the worker restarted."""
    _raise_if_failed(producer)
    try:
        await while_sending(producer, producer.commit_transaction())
    except AssertionError:
        _raise_if_failed(producer)  # the sender failed it after the check above
        raise


def forget_failure(producer: AIOKafkaProducer) -> None:
    """Mark what failed ``producer``'s transaction as seen (it is reported by whoever
    replaces the producer), so asyncio does not log "Future exception was never
    retrieved" for it when the producer is dropped."""
    txn = producer._txn_manager  # noqa: SLF001
    if txn is None:
        return
    waiter = txn.wait_for_transaction_end()
    if waiter.done() and not waiter.cancelled():
        waiter.exception()


def transaction_partitions(producer: AIOKafkaProducer) -> frozenset[TopicPartition]:
    """The partitions added to ``producer``'s open transaction so far."""
    txn = producer._txn_manager  # noqa: SLF001
    return frozenset(() if txn is None else txn.txn_partitions)


class UnroutableTopic(Exception):
    """A record is for a topic the cluster does not have (while the cluster answers)."""


# Kafka refusing what was sent, for a reason in the records themselves: sending the same
# records again fails the same way, so the event that produced them must be set aside.
_REFUSED: tuple[type[BaseException], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.InvalidTopicError,
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.CorruptRecordException,
    UnroutableTopic,
)


def is_record_refused(exc: BaseException) -> bool:
    """Whether ``exc`` says Kafka refused the records themselves (not that it failed)."""
    return isinstance(exc, _REFUSED)


def is_kafka_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is Kafka or the network failing (worth retrying with backoff):
    connections, timeouts, coordinators moving, a producer fenced or in error."""
    if is_record_refused(exc):
        return False
    return isinstance(
        exc, kafka_errors.KafkaError | OSError | TimeoutError | kafka_errors.IllegalOperation
    )


async def transactional_producer(
    kafka: KafkaSettings, transactional_id: str, label: str, *, transaction_timeout_ms: int = 60_000
) -> AIOKafkaProducer:
    """A started transactional producer (its ``init_transactions`` fences whoever held
    ``transactional_id`` before). Waits for the broker as long as it takes, with
    backoff, saying once (for ``label``) that it waits and once that it is back."""
    waited = False

    def waiting(state: RetryCallState) -> None:
        nonlocal waited
        if not waited:
            waited = True
            error = state.outcome.exception() if state.outcome else None
            log.warning(
                "%s: waiting for the Kafka broker at %s (%s); retrying",
                label,
                kafka.bootstrap,
                error,
            )

    retrying = AsyncRetrying(
        wait=wait_exponential(multiplier=0.1, max=5.0),
        retry=retry_if_exception(is_kafka_failure),
        before_sleep=waiting,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            producer = AIOKafkaProducer(
                **kafka_options(kafka),
                transactional_id=transactional_id,
                transaction_timeout_ms=transaction_timeout_ms,
                enable_idempotence=True,
                acks="all",
                # The lanes' Outbox hands over whole record batches, once the batch is
                # complete: lingering only held the Produce back after AddPartitionsToTxn
                # returned (2 ms: 16.0 -> 13.1 ms at p50 from AddPartitionsToTxn's answer
                # to the records' delivery, at 200 client.update/s on the local broker).
                linger_ms=0,
                # A new transaction's AddPartitionsToTxn can meet the previous one's
                # markers still being written (CONCURRENT_TRANSACTIONS); retry soon, not
                # in 100 ms.
                retry_backoff_ms=10,
                max_batch_size=MAX_BATCH_BYTES,
                max_request_size=4 * 1024 * 1024,
            )
            try:
                await producer.start()
            except BaseException:
                await close_producer(producer)
                raise
    if waited:
        log.warning("%s: the Kafka broker answers again", label)
    return producer


async def close_producer(producer: AIOKafkaProducer) -> None:
    """Stop a producer within seconds, whatever state the broker is in."""
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(producer.stop(), 5.0)
