"""Applying an add-on and following it until it runs: the shared body of a provider's
`AddonsReady` step.

The objects are server-side applied as the platform's field manager (idempotent: applying them
again changes no resource version or generation); then each DaemonSet and Deployment among them
must report, through its status, that its controller saw the current spec and that every pod it
wants runs that spec and is ready. The step looks every `poll` seconds for up to `patience`
seconds (a rollout usually takes that long); then it fails with a TemporaryError naming what it
waits for, and the framework tries it again (its retry budget bounds the wait).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tke.internal.provider.addons import network
from tke.internal.provider.clusterapi import ClusterAPI
from tke.internal.provider.errors import TemporaryError
from tke.platform.v1 import cluster_pb2

RECHECK = 5.0  # seconds before the framework tries a step whose rollout was not done


async def ensure(
    api: ClusterAPI, objects: Sequence[Mapping[str, Any]], what: str, *, poll: float = 1.0, patience: float = 20.0
) -> str:
    """Apply `objects` and return a summary once their workloads are rolled out; TemporaryError
    when they are not within `patience` seconds."""
    await api.apply(objects)
    deadline = time.monotonic() + patience
    while True:
        waiting, done = await _rollouts(api, objects)
        if not waiting:
            return f"{what}: " + ", ".join(done)
        if time.monotonic() >= deadline:
            raise TemporaryError(f"{what} applied; waiting for " + "; ".join(waiting), delay=RECHECK)
        await asyncio.sleep(poll)


async def _rollouts(api: ClusterAPI, objects: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    waiting, done = [], []
    for kind, namespace, name in network.workloads(objects):
        rollout = await api.rollout(kind, namespace, name)
        if rollout is None:
            waiting.append(f"{kind} {namespace}/{name}: not found after apply")
        elif not rollout.done:
            waiting.append(f"{kind} {namespace}/{name}: {rollout.summary}")
        else:
            done.append(f"{kind} {name} {rollout.ready}/{rollout.desired}")
    return waiting, done


async def ensure_network(api: ClusterAPI, cluster: cluster_pb2.Cluster, options: network.NetworkAddonOptions) -> str:
    """The cluster's network add-on, applied and rolled out."""
    return await ensure(api, network.render(cluster, options), "the network add-on")
