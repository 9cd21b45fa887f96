"""A network partition: one etcd member cut off from the two others with iptables rules (added
by the test, removed even when it fails). The member runs as another user and on its own
loopback address, so that rules can tell its packets apart: its own outgoing packets to the
peers are dropped (owner match), and so is everything sent to its peer port. The minority side
stops accepting writes with UNAVAILABLE while the majority goes on; healing converges."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.support.apiserver import cluster, local_config, start, stop
from tests.support.etcd import EtcdCluster, EtcdProcess
from tests.support.tools import require_root, tool
from tests.support.waiting import wait_for
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2

UID = 65534  # nobody


class Partition:
    """DROP rules that cut one member (`alone`) off the other members' peer ports."""

    def __init__(self, alone: EtcdProcess, others: list[EtcdProcess]) -> None:
        self.rules = [
            ["INPUT", "-p", "tcp", "-d", alone.host, "--dport", str(alone.peer_port), "-j", "DROP"],
            *(
                ["OUTPUT", "-p", "tcp", "-m", "owner", "--uid-owner", str(UID), "-d", o.host,
                 "--dport", str(o.peer_port), "-j", "DROP"]
                for o in others
            ),
        ]  # fmt: skip
        self.added: list[list[str]] = []

    def cut(self) -> None:
        iptables = tool("iptables", "iptables")
        for rule in self.rules:
            subprocess.run([iptables, "-I", *rule], check=True)
            self.added.append(rule)

    def heal(self) -> None:
        while self.added:
            subprocess.run(["iptables", "-D", *self.added.pop()], check=False)


@pytest.fixture
def members() -> Iterator[EtcdCluster]:
    require_root("iptables rules, and an etcd member run as another user")
    # pytest's tmp_path is private to root; the member running as nobody needs a way in.
    root = Path(tempfile.mkdtemp(prefix="tke-partition-", dir="/tmp"))
    root.chmod(0o755)
    group = EtcdCluster(root, distinct_hosts=True)
    group.members[0].uid = UID
    try:
        group.start()
        yield group
    finally:
        group.stop()
        shutil.rmtree(root, ignore_errors=True)


async def test_minority_refuses_writes_and_healing_converges(members: EtcdCluster) -> None:
    alone, *rest = members.members
    quick = {"request_timeout": 1.0, "retry_budget": 4.0}
    minority = await start(local_config(EtcdConfig(endpoints=[alone.endpoint], prefix="/part", **quick)))  # type: ignore[arg-type]
    majority = await start(local_config(EtcdConfig(endpoints=[m.endpoint for m in rest], prefix="/part")))
    partition = Partition(alone, rest)
    try:
        await majority.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("before")))
        partition.cut()
        await asyncio.sleep(2.5)  # the cut-off member's leader lease runs out (writes fail either way)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await minority.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("minority")), timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        for i in range(5):
            await majority.clusters.Create(
                cluster_pb2.CreateClusterRequest(cluster=cluster(f"majority-{i}")), timeout=30
            )
        partition.heal()
        expected = {"before", *(f"majority-{i}" for i in range(5))}

        async def converged() -> bool:
            try:
                listed = await minority.clusters.List(cluster_pb2.ListClustersRequest(), timeout=5)
            except grpc.aio.AioRpcError:
                return False
            return {c.metadata.name for c in listed.items} == expected

        await wait_for(converged, within=60, what="the healed member catching up")
        await minority.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("healed")), timeout=30)
    finally:
        partition.heal()
        await stop(minority)
        await stop(majority)
