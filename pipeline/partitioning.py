"""Which Kafka key an address has: its tenant, or its tenant and instance when hot.

garrison keys every record of an instance by its tenant id, so one tenant's events keep
their order and all its instances live in one partition (``GET /state/{tenant}`` lists
them from one store). A tenant that sends a
large share of all events then loads one partition, and every other tenant there waits
behind it. Operators can name such tenants, or machines, as *hot*
(``GARRISON_HOT_TENANTS``, ``GARRISON_HOT_MACHINES``): their instances are keyed by
``tenant/instance`` and spread over the partitions. What that gives up:

- order is per instance, not per tenant (two instances of a hot tenant are applied in
  whatever order their partitions get to them);
- a hot tenant's instances are in many partitions, so listing the tenant from one
  worker's store is refused, and a tenant listing leaves out its hot machines'
  instances (read them one by one, or from ``<app>.latest`` / the state changes).

Every place that picks a partition for an address uses :meth:`Partitioning.key`: the
producer client, the lane's home partition (``pipeline.decision.Rules.home``), the
records the lane forwards and emits, service replies, listener sends and the query
API's routing. The partition is the default partitioner's ``murmur2(key) % partitions``
(``agents.kafka.partition_of``). Tenant and instance ids cannot contain ``/``, so a hot
key never equals a tenant key.

Changing the hot set moves existing instances' homes, and their stored state does not
follow (an instance whose home moved would start again at its new one): name tenants
and machines hot before they send, or on a fresh app (see docs/operations.md).

Example::

    rules = Partitioning(hot_tenants=frozenset({"big"}))
    assert rules.key("acme", "order", "o-1") == b"acme"
    assert rules.key("big", "order", "o-1") == b"big/o-1"
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NOT_HOT", "Partitioning"]


@dataclass(frozen=True, slots=True)
class Partitioning:
    """The hot-tenant rules of an app: tenants and machines keyed by tenant and instance."""

    hot_tenants: frozenset[str] = frozenset()
    hot_machines: frozenset[str] = frozenset()

    @property
    def any_hot(self) -> bool:
        """Whether any address is keyed by instance."""
        return bool(self.hot_tenants or self.hot_machines)

    def is_hot(self, tenant: str, machine: str) -> bool:
        """Whether ``tenant``'s instances of ``machine`` are keyed by instance."""
        return tenant in self.hot_tenants or machine in self.hot_machines

    def key_text(self, tenant: str, machine: str, instance: str) -> str:
        """The Kafka key of the address, as text: ``tenant`` or ``tenant/instance``."""
        if tenant in self.hot_tenants or machine in self.hot_machines:
            return f"{tenant}/{instance}"
        return tenant

    def key(self, tenant: str, machine: str, instance: str) -> bytes:
        """The Kafka key of the address: ``tenant`` or, when hot, ``tenant/instance``.

        >>> Partitioning(hot_machines=frozenset({"click"})).key("acme", "click", "c1")
        b'acme/c1'
        """
        return self.key_text(tenant, machine, instance).encode()

    def spread(self, tenant: str) -> bool:
        """Whether some of ``tenant``'s instances may live outside its tenant partition
        (it is hot, or some machine is)."""
        return tenant in self.hot_tenants or bool(self.hot_machines)


NOT_HOT = Partitioning()
"""No hot tenants or machines: every address is keyed by its tenant (the default)."""
