"""Telling the environment: the pool's IP provider reserves, binds and releases the addresses
the storage already decided. Provider errors become ApiErrors for clients (UNAVAILABLE for
temporary ones, FAILED_PRECONDITION for refusals); their text goes to the log."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping

from tke.internal.ipamd import errors
from tke.internal.ipamd.provider import IPProvider, ProviderError, ProviderRefused
from tke.internal.rpc.errors import ApiError, invalid_field
from tke.ipam.v1 import ipam_pb2

log = logging.getLogger(__name__)


def provider_owner(a: ipam_pb2.Allocation) -> str:
    """The fencing token of an allocation at the IP provider: the pod and the moment the
    address was first allocated to it, so a later allocation of the same address differs."""
    return f"{a.owner.namespace}/{a.owner.pod_name}@{a.allocate_timestamp.ToNanoseconds()}"


def _mapped(pool: str, what: str, err: ProviderError) -> ApiError:
    if isinstance(err, ProviderRefused):
        return errors.provider_refused(pool, str(err))
    log.warning("IP provider of pool %s: %s failed: %s", pool, what, err)
    return errors.provider_unavailable(pool)


class Provisioner:
    def __init__(self, providers: Mapping[str, IPProvider]) -> None:
        self.providers = dict(providers)

    def names(self) -> set[str]:
        return set(self.providers)

    @staticmethod
    def is_static(pool: ipam_pb2.Pool) -> bool:
        return (pool.provider.name or "static") == "static"

    def of(self, pool: ipam_pb2.Pool) -> IPProvider:
        name = pool.provider.name or "static"
        provider = self.providers.get(name)
        if provider is None:
            raise errors.provider_refused(pool.name, f"IP provider {name!r} of pool {pool.name} is not configured")
        return provider

    async def check_subnet(self, pool: ipam_pb2.Pool) -> None:
        """INVALID_ARGUMENT unless the provider offers the pool's subnet with its CIDR."""
        if self.is_static(pool):
            return
        try:
            subnets = await self.of(pool).subnets()
        except ProviderError as err:
            raise _mapped(pool.name, "listing subnets", err) from None
        name = pool.provider.name
        match = [s for s in subnets if s.id == pool.provider.subnet_id]
        if not match:
            raise invalid_field("pool.provider.subnet_id", f"provider {name} has no subnet {pool.provider.subnet_id!r}")
        if ipaddress.IPv4Network(match[0].cidr, strict=False) != ipaddress.IPv4Network(pool.cidr):
            raise invalid_field("pool.cidr", f"subnet {match[0].id} of provider {name} is {match[0].cidr}")

    async def provide(self, pool: ipam_pb2.Pool, a: ipam_pb2.Allocation) -> None:
        """Reserve and bind (both idempotent for the same allocation)."""
        provider, subnet, token = self.of(pool), pool.provider.subnet_id, provider_owner(a)
        try:
            await provider.reserve(subnet, a.ip, token)
            await provider.bind(subnet, a.ip, a.node, token)
        except ProviderError as err:
            raise _mapped(pool.name, f"reserving and binding {a.ip} to {a.node}", err) from None

    async def release(self, pool: ipam_pb2.Pool, a: ipam_pb2.Allocation) -> None:
        try:
            await self.of(pool).release(pool.provider.subnet_id, a.ip, provider_owner(a))
        except ProviderError as err:
            raise _mapped(pool.name, f"releasing {a.ip}", err) from None

    async def close(self) -> None:
        for provider in self.providers.values():
            await provider.close()
