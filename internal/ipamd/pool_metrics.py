"""Pool fill as Prometheus gauges (tke_ipam_pool_addresses{pool, state=capacity|allocated|
cooling}), refreshed in the background: a scrape never waits for etcd. Allocation latency is
tke_grpc_server_handling_seconds{method="Allocate"} of the request metrics."""

from __future__ import annotations

import asyncio
import logging

from tke.internal.ipamd.ipam import IPAM
from tke.internal.metrics import IPAM_POOL_ADDRESSES

log = logging.getLogger(__name__)


async def refresh_pool_gauges(ipam: IPAM, interval: float = 15.0) -> None:
    known: set[str] = set()
    while True:
        try:
            pools = await ipam.list_pools()
        except Exception as err:
            log.warning("pool metrics: cannot list pools: %s", err)
        else:
            names = set()
            for pool in pools:
                names.add(pool.name)
                IPAM_POOL_ADDRESSES.labels(pool.name, "capacity").set(pool.status.capacity)
                IPAM_POOL_ADDRESSES.labels(pool.name, "allocated").set(pool.status.allocated)
                IPAM_POOL_ADDRESSES.labels(pool.name, "cooling").set(pool.status.cooling)
            for gone in known - names:
                for state in ("capacity", "allocated", "cooling"):
                    IPAM_POOL_ADDRESSES.remove(gone, state)
            known = names
        await asyncio.sleep(interval)
