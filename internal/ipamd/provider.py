"""The IP provider contract: four operations on the environment's addresses.

tke-ipamd decides which address an owner gets (a compare-and-swap in the IP storage) and only
then tells the provider: reserve the address in the environment, bind it to the node. So a
slow or failing provider can delay or fail an allocation but never give one address to two
owners. Every operation is idempotent: a retry after a timeout is safe.

`owner` is a fencing token unique to one allocation (it names the pod and when the address was
first allocated to it). bind and release act only while the address is still reserved for that
token, so a late bind or release of an allocation that was rolled back, arriving after the
address went to someone else, changes nothing: it can neither move nor free the winner's
address.

A provider may also offer `reconcile(subnet_id, allocations)` (Reconciling): tke-ipamd calls it
when it starts, for each pool the provider backs, so that the environment's state is made to
agree with the storage's after a crash (addresses still bound for owners that are gone,
allocations whose binding is missing). `allocations` reads the pool's allocations when called:
the provider reads the environment first and the storage after, since the storage decides
first, an address the environment holds and the later read of the storage lacks has been given
back (or is being), never just taken.

Errors: ProviderUnavailable (temporary: unreachable, timed out, 5xx; retry later) and
ProviderRefused (permanent: the environment says no, for example the address is in use
outside tke-ipamd).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


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
        """Reserve `ip` in the subnet for `owner`. Reserving it again for the same owner
        succeeds; ProviderRefused when another owner has it."""
        ...

    async def bind(self, subnet_id: str, ip: str, node: str, owner: str) -> None:
        """Make `ip`, reserved for `owner`, reachable on `node` (for example attach it to the
        node's network interface); binding it again, or to another node, succeeds.
        ProviderRefused when it is not reserved for `owner`."""
        ...

    async def release(self, subnet_id: str, ip: str, owner: str) -> None:
        """Unbind and give back `ip` if it is reserved for `owner`; an address that is unknown
        or someone else's is left alone, and that is a success."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Assignment:
    """An allocation as a provider sees it: the address, its node and its owner token."""

    ip: str
    node: str
    owner: str


@runtime_checkable
class Reconciling(Protocol):
    async def reconcile(self, subnet_id: str, allocations: Callable[[], Awaitable[Sequence[Assignment]]]) -> list[str]:
        """Make the subnet agree with the pool's allocations (read by calling `allocations`
        after reading the environment); returns what was changed, for the log."""
        ...
