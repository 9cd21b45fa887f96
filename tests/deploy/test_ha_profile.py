"""The HA test profile (deploy/ha/run.sh) started for real: a three-member etcd and two of each
server. Objects written through one apiserver are read and watched through the other, both
ipamds allocate from one pool without a duplicate, an etcd member dies without anyone
noticing, and stopping the script stops everything it started.

The script runs with deploy/ha's configurations moved onto free ports and into this test's
directory (through the environment run.sh reads), so it runs beside anything else, a
developer's own HA profile included."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import grpc
import tomli_w

from tests.support.apiserver import cluster
from tests.support.etcd import etcd_binary, metric
from tests.support.ports import free_port
from tests.support.rpc import next_message
from tests.support.waiting import wait_for
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc
from tke.meta.v1 import meta_pb2
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
TOKEN = [("authorization", "Bearer ha-admin-token")]


def busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def load(name: str) -> dict[str, Any]:
    with open(ROOT / "deploy" / "ha" / name, "rb") as f:
        return tomllib.load(f)


def moved_profile(config: Path, run: Path, etcd_ports: list[int]) -> dict[str, Any]:
    """deploy/ha's configurations with every port free and every path in `run`; what runs
    (plugins, leader election, tokens) stays as the profile has it. Returns the addresses."""
    config.mkdir()
    endpoints = [f"127.0.0.1:{p}" for p in etcd_ports[0::2]]
    apiservers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    sockets = [str(run / f"ipamd-{i}.sock") for i in (1, 2)]
    ports = list(etcd_ports)
    for i in (1, 2):
        metrics = [free_port() for _ in range(3)]
        ports += [int(apiservers[i - 1].rsplit(":", 1)[1]), *metrics]
        api = load(f"apiserver-{i}.toml")
        api["metrics_address"] = f"127.0.0.1:{metrics[0]}"
        api["listen"]["address"] = apiservers[i - 1]
        api["etcd"]["endpoints"] = endpoints
        api["auth"]["authenticators"][0]["options"]["path"] = str(ROOT / "deploy/ha/tokens.csv")
        api["auth"]["audit"][0]["options"]["path"] = str(run / f"audit-{i}.jsonl")
        ctl = load(f"controller-{i}.toml")
        ctl["metrics_address"] = f"127.0.0.1:{metrics[1]}"
        ctl["apiserver"]["address"] = apiservers[i - 1]
        ctl["etcd"]["endpoints"] = endpoints
        ipamd = load(f"ipamd-{i}.toml")
        ipamd["socket"] = sockets[i - 1]
        ipamd["metrics_address"] = f"127.0.0.1:{metrics[2]}"
        ipamd["storage"]["options"]["endpoints"] = endpoints
        for name, table in ((f"apiserver-{i}", api), (f"controller-{i}", ctl), (f"ipamd-{i}", ipamd)):
            (config / f"{name}.toml").write_text(tomli_w.dumps(table))
    return {"apiservers": apiservers, "sockets": sockets, "ports": ports}


def session_processes(sid: int) -> list[str]:
    """What still runs in the script's session (it and everything it started)."""
    found = subprocess.run(["pgrep", "-s", str(sid)], capture_output=True, text=True, check=False)
    return found.stdout.split()


async def test_ha_profile(tmp_path: Path) -> None:
    etcd_binary()
    run = tmp_path / "run"
    etcd_ports = [free_port() for _ in range(6)]
    profile = moved_profile(tmp_path / "config", run, etcd_ports)
    env = {
        **os.environ,
        "TKE_HA_CONFIG": str(tmp_path / "config"),
        "TKE_HA_RUN": str(run),
        "TKE_HA_ETCD_PORTS": " ".join(map(str, etcd_ports)),
    }
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / "deploy/ha/run.sh"), cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, start_new_session=True
    )
    channels: list[grpc.aio.Channel] = []
    try:
        assert proc.stdout is not None
        banner = await asyncio.wait_for(proc.stdout.readline(), 120)
        assert b"HA profile running" in banner
        # Every member runs with deploy/etcd/etcd.env's quota (NOSPACE beyond, not a full disk).
        for port in etcd_ports[0::2]:
            assert metric(f"http://127.0.0.1:{port}", "etcd_server_quota_backend_bytes") == 8 * 1024**3
        one, two = (grpc.aio.insecure_channel(a) for a in profile["apiservers"])
        channels += [one, two]
        c1, c2 = cluster_pb2_grpc.ClusterServiceStub(one), cluster_pb2_grpc.ClusterServiceStub(two)
        watch = c2.Watch(cluster_pb2.WatchClustersRequest(), metadata=TOKEN, wait_for_ready=True, timeout=120)
        assert (await next_message(watch)).type == meta_pb2.WATCH_EVENT_TYPE_BOOKMARK
        await c1.Create(
            cluster_pb2.CreateClusterRequest(cluster=cluster("ha-1")), metadata=TOKEN, wait_for_ready=True, timeout=60
        )
        event = await asyncio.wait_for(next_message(watch), 30)
        assert event.object.metadata.name == "ha-1"
        got = await c2.Get(cluster_pb2.GetClusterRequest(name="ha-1"), metadata=TOKEN)
        assert got.metadata.uid
        # Both ipamds, one pool: no address twice.
        ipam_channels = [grpc.aio.insecure_channel(f"unix:{s}") for s in profile["sockets"]]
        channels += ipam_channels
        ipams = [ipam_pb2_grpc.IPAMServiceStub(ch) for ch in ipam_channels]
        pool = ipam_pb2.Pool(name="ha-pool", cidr="10.77.0.0/24")
        await ipams[0].CreatePool(ipam_pb2.CreatePoolRequest(pool=pool), wait_for_ready=True, timeout=60)

        async def allocate(i: int) -> str:
            owner = ipam_pb2.Owner(namespace="ha", pod_name=f"p{i}", pod_uid=f"u{i}")
            req = ipam_pb2.AllocateRequest(owner=owner, container_id=f"c{i}", ifname="eth0", node="n1", pool="ha-pool")
            resp = await ipams[i % 2].Allocate(req, wait_for_ready=True, timeout=60)
            return str(resp.allocation.address)

        addresses = await asyncio.gather(*(allocate(i) for i in range(40)))
        assert len(set(addresses)) == 40
        # An etcd member dies (this script's, found in its session): both apiservers carry on.
        finder = await asyncio.create_subprocess_exec(
            "pgrep", "-s", str(proc.pid), "-f", "etcd --name m1 ", stdout=asyncio.subprocess.PIPE
        )
        pids, _ = await finder.communicate()
        assert pids.split(), "etcd member m1 is not running"
        for pid in pids.split():
            os.kill(int(pid), signal.SIGKILL)
        for i, stub in enumerate((c1, c2)):
            await stub.Create(
                cluster_pb2.CreateClusterRequest(cluster=cluster(f"after-kill-{i}")), metadata=TOKEN, timeout=60
            )
        watch.cancel()
    finally:
        for ch in channels:
            await ch.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
    try:
        await wait_for(lambda: not session_processes(proc.pid), what="everything the script started exiting")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # what outlived the script, when this test fails
    leftovers = [p for p in profile["ports"] if busy(p)]
    assert not leftovers, f"still listening after the script stopped: {leftovers}"
