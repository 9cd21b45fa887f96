"""The IP provider contract: four operations on the environment's addresses.

tke-ipamd decides which address an owner gets (a compare-and-swap in the IP storage) and only
then tells the provider: reserve the address in the environment, bind it to the node. So a
slow or failing provider can delay or fail an allocation but never give one address to two
owners. Every operation is idempotent: a retry after a timeout is safe.

Errors: ProviderUnavailable (temporary: unreachable, timed out, 5xx; retry later) and
ProviderRefused (permanent: the environment says no, for example the address is in use
outside tke-ipamd).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class ProviderError(Exception):
    """Base of provider errors."""


class ProviderUnavailable(ProviderError):
    """The environment could not be reached or did not answer in time."""


class ProviderRefused(ProviderError):
    """The environment refused the operation."""


@dataclass(frozen=True)
class Subnet:
    """A subnet the environment offers: its id there, CIDR and gateway."""

    id: str
    cidr: str
    gateway: str = ""
    zone: str = ""


class IPProvider(Protocol):
    async def subnets(self) -> list[Subnet]:
        """The subnets addresses may come from."""
        ...

    async def reserve(self, subnet_id: str, ip: str, owner: str) -> None:
        """Reserve `ip` in the subnet for `owner` (a description for the environment's
        operators). Reserving it again for the same owner succeeds."""
        ...

    async def bind(self, subnet_id: str, ip: str, node: str) -> None:
        """Make the reserved `ip` reachable on `node` (for example attach it to the node's
        network interface); binding it again, or to another node, succeeds."""
        ...

    async def release(self, subnet_id: str, ip: str) -> None:
        """Unbind and give `ip` back; releasing an unknown address succeeds."""
        ...

    async def close(self) -> None: ...
