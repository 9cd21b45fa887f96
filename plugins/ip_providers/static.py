"""The static-CIDR IP provider (private clouds): the pool's CIDR is the whole truth, so
reserving, binding and releasing call nothing outside tke-ipamd."""

from __future__ import annotations

from typing import Any

from tke.internal.ipamd.provider import Subnet


class StaticProvider:
    """Options: `subnets`, a list of {id, cidr, gateway} tables, only listed for operators."""

    def __init__(self, subnets: list[dict[str, Any]] | None = None) -> None:
        self._subnets = [
            Subnet(id=str(s.get("id", "")), cidr=str(s["cidr"]), gateway=str(s.get("gateway", "")))
            for s in subnets or []
        ]

    async def subnets(self) -> list[Subnet]:
        return list(self._subnets)

    async def reserve(self, subnet_id: str, ip: str, owner: str) -> None:
        return None

    async def bind(self, subnet_id: str, ip: str, node: str, owner: str) -> None:
        return None

    async def release(self, subnet_id: str, ip: str, owner: str) -> None:
        return None

    async def close(self) -> None:
        return None
