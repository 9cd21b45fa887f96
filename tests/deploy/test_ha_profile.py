"""The HA test profile (deploy/ha/run.sh) started for real: a three-member etcd and two of each
server. Objects written through one apiserver are read and watched through the other, both
ipamds allocate from one pool without a duplicate, an etcd member dies without anyone
noticing, and stopping the script stops everything it started."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
from pathlib import Path

import grpc
import pytest

from tests.support.apiserver import cluster
from tests.support.etcd import etcd_binary
from tests.support.rpc import next_message
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc
from tke.meta.v1 import meta_pb2
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
PORTS = [22379, 22380, 22381, 22382, 22383, 22384, 50061, 50062, 9461, 9462, 9471, 9472, 9481, 9482]
TOKEN = [("authorization", "Bearer ha-admin-token")]


def busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_ha_profile(tmp_path: Path) -> None:
    etcd_binary()
    if any(busy(p) for p in PORTS):
        pytest.skip(f"the HA profile's fixed ports are in use: {[p for p in PORTS if busy(p)]}")
    run = ROOT / ".run" / "ha"
    for child in run.glob("etcd-*") if run.exists() else []:
        if child.is_dir():
            shutil.rmtree(child)  # a new cluster each time
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / "deploy/ha/run.sh"), cwd=ROOT, stdout=asyncio.subprocess.PIPE, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        banner = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert b"HA profile running" in banner
        one = grpc.aio.insecure_channel("127.0.0.1:50061")
        two = grpc.aio.insecure_channel("127.0.0.1:50062")
        c1, c2 = cluster_pb2_grpc.ClusterServiceStub(one), cluster_pb2_grpc.ClusterServiceStub(two)
        watch = c2.Watch(cluster_pb2.WatchClustersRequest(), metadata=TOKEN)
        assert (await next_message(watch)).type == meta_pb2.WATCH_EVENT_TYPE_BOOKMARK
        await c1.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("ha-1")), metadata=TOKEN)
        event = await asyncio.wait_for(next_message(watch), 10)
        assert event.object.metadata.name == "ha-1"
        got = await c2.Get(cluster_pb2.GetClusterRequest(name="ha-1"), metadata=TOKEN)
        assert got.metadata.uid
        # Both ipamds, one pool: no address twice.
        sockets = [f"unix:{run}/ipamd-1.sock", f"unix:{run}/ipamd-2.sock"]
        ipams = [ipam_pb2_grpc.IPAMServiceStub(grpc.aio.insecure_channel(s)) for s in sockets]
        pool = ipam_pb2.Pool(name="ha-pool", cidr="10.77.0.0/24")
        await ipams[0].CreatePool(ipam_pb2.CreatePoolRequest(pool=pool))

        async def allocate(i: int) -> str:
            owner = ipam_pb2.Owner(namespace="ha", pod_name=f"p{i}", pod_uid=f"u{i}")
            req = ipam_pb2.AllocateRequest(owner=owner, container_id=f"c{i}", ifname="eth0", node="n1", pool="ha-pool")
            resp = await ipams[i % 2].Allocate(req, timeout=20)
            return str(resp.allocation.address)

        addresses = await asyncio.gather(*(allocate(i) for i in range(40)))
        assert len(set(addresses)) == 40
        # An etcd member dies: both apiservers carry on.
        finder = await asyncio.create_subprocess_exec("pgrep", "-f", "etcd --name m1 ", stdout=asyncio.subprocess.PIPE)
        pids, _ = await finder.communicate()
        assert pids.split(), "etcd member m1 is not running"
        for pid in pids.split():
            os.kill(int(pid), signal.SIGKILL)
        for i, stub in enumerate((c1, c2)):
            await stub.Create(
                cluster_pb2.CreateClusterRequest(cluster=cluster(f"after-kill-{i}")), metadata=TOKEN, timeout=30
            )
        watch.cancel()
        for ch in (one, two):
            await ch.close()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
    await asyncio.sleep(1)
    leftovers = [p for p in PORTS if busy(p)]
    assert not leftovers, f"still listening after the script stopped: {leftovers}"
