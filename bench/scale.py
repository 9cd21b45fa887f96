"""Figure 4: scale of the store. `clusters` clusters and `machines` machines across `tenants`
tenants, written straight into etcd in the apiserver's encoding (Registry.encode) in bulk
transactions, then:

- a paginated List of everything (tenant "*", as a platform administrator, default page size)
  of clusters and of machines, timed through the full chain;
- a tenant's list (its clusters and machines);
- a tenant's List of its 1,000 machines in one page, timed and with the apiserver's CPU per
  call, from the watch cache and from an apiserver reading etcd (watch_cache = false);
- the apiserver's RSS after those lists;
- tke-controller's full resync with a no-op provider: a real controller process (leader
  election off, RecordingProvider for both kinds) started over the whole store; timed until its
  informers have listed everything (its "leading: N clusters, M machines" log line) and until
  its workers have looked at every object once (its CPU falls idle), with its RSS.

The objects are in the state the controller leaves them in (Running, every step done, its
finalizer): one cluster and one machine are first created through the apiserver and brought to
Running by a controller, and become the templates of the bulk write, so the resync measures
the controller's look at each object, not 110,000 provisionings."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import grpc
from aetcd import rpc

from bench.procs import ADMIN_TOKEN, PREFIX, ApiserverProcess, Processes, cpu_seconds, rss_bytes
from bench.stats import rounds
from tests.support.apiserver import cluster, machine
from tests.support.controller import ControllerProcess
from tke.internal.apiserver.kinds import CLUSTERS, machine_kind
from tke.internal.apiserver.registry import Registry
from tke.internal.storage.etcd import EtcdConfig, EtcdStore
from tke.internal.storage.etcd.connection import EtcdConnection
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc, machine_pb2, machine_pb2_grpc

TOKEN_ENV = "TKE_BENCH_CONTROLLER_TOKEN"
BIG_LIST_ROUNDS = 20
TXN_OPS = 128  # etcd's default --max-txn-ops
BIG_TENANT = "t-1k"
BIG_TENANT_MACHINES = 1000


def _metadata() -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {ADMIN_TOKEN}"),)


def controller_config(work: Path, address: str, etcd_endpoint: str) -> dict[str, Any]:
    provider = {
        "plugin": "tests.support.controller:RecordingProvider",
        "options": {"log_file": str(work / "scale-steps.jsonl"), "steps": 1},
    }
    return {
        "workers": 4,
        "resync": 3600.0,
        "health_interval": 3600.0,
        "log_level": "info",
        "apiserver": {"address": address, "token_env": TOKEN_ENV, "timeout": 60.0},
        "etcd": {"endpoints": [etcd_endpoint], "prefix": PREFIX},
        "leader": {"enabled": False},
        "cluster_providers": {"recording": provider},
        "machine_providers": {"recording": provider},
    }


async def _templates(
    work: Path, procs: Processes, api: ApiserverProcess, etcd_endpoint: str
) -> tuple[cluster_pb2.Cluster, machine_pb2.Machine]:
    """A cluster and a machine as the controller leaves them: Running."""
    channel = grpc.aio.insecure_channel(api.address)
    clusters = cluster_pb2_grpc.ClusterServiceStub(channel)
    machines = machine_pb2_grpc.MachineServiceStub(channel)
    c = cluster("template", type="recording")
    c.metadata.tenant_id = "template"
    await clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c), metadata=_metadata())
    m = machine("template-m", "template")
    m.spec.type = "recording"
    m.metadata.tenant_id = "template"
    await machines.Create(machine_pb2.CreateMachineRequest(machine=m), metadata=_metadata())
    ctl = ControllerProcess(work, "controller-template", controller_config(work, api.address, etcd_endpoint))
    os.environ[TOKEN_ENV] = ADMIN_TOKEN
    ctl.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            got_c = await clusters.Get(
                cluster_pb2.GetClusterRequest(name="template", tenant_id="template"), metadata=_metadata()
            )
            got_m = await machines.Get(
                machine_pb2.GetMachineRequest(name="template-m", tenant_id="template"), metadata=_metadata()
            )
            if got_c.status.phase == cluster_pb2.CLUSTER_PHASE_RUNNING and got_m.status.phase == (
                machine_pb2.MACHINE_PHASE_RUNNING
            ):
                await asyncio.sleep(1.0)  # let the controller finish its last writes
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the template objects did not become Running; see {ctl.log_path}")
            await asyncio.sleep(0.3)
    finally:
        ctl.stop()
        await channel.close()
    got_c = await _get_raw(etcd_endpoint, cluster_pb2.Cluster, "clusters", "template", "template")
    got_m = await _get_raw(etcd_endpoint, machine_pb2.Machine, "machines", "template", "template-m")
    return got_c, got_m


async def _get_raw(endpoint: str, cls: Any, plural: str, tenant: str, name: str) -> Any:
    store = EtcdStore(EtcdConfig(endpoints=[endpoint], prefix=PREFIX))
    try:
        item = await store.get(f"{PREFIX}/{plural}/{tenant}/{name}")
    finally:
        await store.close()
    obj = cls()
    obj.ParseFromString(item.value)
    return obj


async def _bulk_write(
    endpoint: str, template_c: cluster_pb2.Cluster, template_m: machine_pb2.Machine, *, n_clusters: int,
    n_machines: int, tenants: int,
) -> float:  # fmt: skip
    store = EtcdStore(EtcdConfig(endpoints=[endpoint], prefix=PREFIX))
    clusters = Registry(CLUSTERS, store, PREFIX)
    machines = Registry(machine_kind(clusters), store, PREFIX)
    conn = EtcdConnection(EtcdConfig(endpoints=[endpoint]))
    started = time.monotonic()
    puts: list[rpc.RequestOp] = []
    per_cluster = max(1, n_machines // n_clusters)
    c, m = cluster_pb2.Cluster(), machine_pb2.Machine()
    for i in range(n_clusters):
        tenant = f"t-{i % tenants:03d}"
        c.CopyFrom(template_c)
        c.metadata.name, c.metadata.tenant_id, c.metadata.uid = f"c-{i:05d}", tenant, f"uid-c-{i}"
        c.metadata.labels["index"] = str(i % 10)
        puts.append(_put(clusters.key(tenant, c.metadata.name), clusters.encode(c)))
        for j in range(per_cluster):
            m.CopyFrom(template_m)
            m.metadata.name, m.metadata.tenant_id = f"c-{i:05d}-m{j}", tenant
            m.metadata.uid = f"uid-m-{i}-{j}"
            m.spec.cluster_name = c.metadata.name
            m.spec.ip = f"10.{(i >> 8) & 255}.{i & 255}.{j + 1}"
            puts.append(_put(machines.key(tenant, m.metadata.name), machines.encode(m)))
    # One more tenant with one cluster of BIG_TENANT_MACHINES machines: a tenant's List of 1,000
    # machines in one page (the watch cache's List target).
    c.CopyFrom(template_c)
    c.metadata.name, c.metadata.tenant_id, c.metadata.uid = "big", BIG_TENANT, "uid-big"
    puts.append(_put(clusters.key(BIG_TENANT, "big"), clusters.encode(c)))
    for j in range(BIG_TENANT_MACHINES):
        m.CopyFrom(template_m)
        m.metadata.name, m.metadata.tenant_id, m.metadata.uid = f"big-m{j:04d}", BIG_TENANT, f"uid-big-{j}"
        m.spec.cluster_name = "big"
        m.spec.ip = f"10.254.{j >> 8}.{j & 255}"
        puts.append(_put(machines.key(BIG_TENANT, m.metadata.name), machines.encode(m)))
    batches = [puts[i : i + TXN_OPS] for i in range(0, len(puts), TXN_OPS)]
    queue: asyncio.Queue[list[rpc.RequestOp]] = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)

    async def writer() -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            await conn.call(conn.kv.Txn, rpc.TxnRequest(success=batch), idempotent=False)

    try:
        await asyncio.gather(*(writer() for _ in range(8)))
    finally:
        await conn.close()
        await store.close()
    return time.monotonic() - started


def _put(key: str, value: bytes) -> rpc.RequestOp:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key.encode(), value=value))


async def _tenant_lists(address: str, n: int) -> list[float]:
    """Seconds of each of `n` Lists of the big tenant's machines, in one page, on one channel."""
    channel = grpc.aio.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 * 2**20)])
    stub = machine_pb2_grpc.MachineServiceStub(channel)
    request = machine_pb2.ListMachinesRequest(tenant_id=BIG_TENANT, page_size=BIG_TENANT_MACHINES)
    out: list[float] = []
    try:
        await stub.List(request, metadata=_metadata(), timeout=120)  # the channel's connection
        for _ in range(n):
            started = time.perf_counter()
            page = await stub.List(request, metadata=_metadata(), timeout=120)
            out.append(time.perf_counter() - started)
            assert len(page.items) == BIG_TENANT_MACHINES, f"the tenant's List returned {len(page.items)} machines"
    finally:
        await channel.close()
    return out


async def _list_all(address: str, service: str, tenant: str) -> tuple[float, int, int]:
    """(seconds, items, pages) of a full paginated List."""
    channel = grpc.aio.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 * 2**20)])
    stub: Any
    request_type: Any
    if service == "clusters":
        stub, request_type = cluster_pb2_grpc.ClusterServiceStub(channel), cluster_pb2.ListClustersRequest
    else:
        stub, request_type = machine_pb2_grpc.MachineServiceStub(channel), machine_pb2.ListMachinesRequest
    started = time.perf_counter()
    items = pages = 0
    token = ""
    try:
        while True:
            page = await stub.List(
                request_type(tenant_id=tenant, continue_token=token), metadata=_metadata(), timeout=120
            )
            items += len(page.items)
            pages += 1
            token = page.metadata.continue_token
            if not token:
                break
    finally:
        await channel.close()
    return time.perf_counter() - started, items, pages


def _controller_resync(work: Path, address: str, etcd_endpoint: str, timeout: float) -> dict[str, Any]:
    os.environ[TOKEN_ENV] = ADMIN_TOKEN
    ctl = ControllerProcess(work, "controller-scale", controller_config(work, address, etcd_endpoint))
    started = time.monotonic()
    ctl.start()
    out: dict[str, Any] = {"informers_synced_s": None, "resync_done_s": None, "rss_bytes": 0, "log_line": ""}
    try:
        deadline = started + timeout
        while time.monotonic() < deadline and ctl.alive():
            lines = [line for line in ctl.log().splitlines() if "leading:" in line]
            if lines:
                out["informers_synced_s"] = time.monotonic() - started
                out["log_line"] = lines[0].split("tke.controller: ", 1)[-1]
                break
            time.sleep(0.2)
        # Then the workers' pass over every object: done when the process falls idle.
        idle_since = None
        last_cpu = cpu_seconds(ctl.pid) if ctl.alive() else 0.0
        while out["informers_synced_s"] is not None and time.monotonic() < deadline and ctl.alive():
            time.sleep(0.5)
            cpu = cpu_seconds(ctl.pid)
            busy = (cpu - last_cpu) / 0.5
            last_cpu = cpu
            if busy < 0.05:
                idle_since = idle_since or time.monotonic() - 0.5
                if time.monotonic() - idle_since >= 1.5:
                    out["resync_done_s"] = idle_since - started
                    break
            else:
                idle_since = None
        out["rss_bytes"] = rss_bytes(ctl.pid) if ctl.alive() else 0
        out["alive"] = ctl.alive()
        out["cpu_seconds"] = cpu_seconds(ctl.pid) if ctl.alive() else 0.0
        errors = [line for line in ctl.log().splitlines() if " ERROR " in line or "Traceback" in line]
        out["log_errors"] = errors[:5]
    finally:
        ctl.stop()
    return out


def measure(
    work: Path,
    procs: Processes,
    etcd_endpoint: str,
    *,
    clusters: int = 10_000,
    machines: int = 100_000,
    tenants: int = 100,
    list_rounds: int = 2,
    controller_timeout: float = 240.0,
) -> dict[str, Any]:
    api = ApiserverProcess(work, "apiserver-scale-setup", etcd_endpoint, chain=True)
    api.start(procs)
    template_c, template_m = asyncio.run(_templates(work, procs, api, etcd_endpoint))
    if api.child is not None:
        procs.stop(api.child)
    write_s = asyncio.run(
        _bulk_write(etcd_endpoint, template_c, template_m, n_clusters=clusters, n_machines=machines, tenants=tenants)
    )
    print(f"  wrote {clusters} clusters + {machines} machines in {write_s:.1f}s", flush=True)
    # A fresh apiserver over the full store: its RSS is what holding and serving them costs.
    api = ApiserverProcess(work, "apiserver-scale", etcd_endpoint, chain=True)
    api.start(procs)
    rss_idle = rss_bytes(api.pid)
    full: dict[str, list[float]] = {"clusters": [], "machines": [], "total": []}
    counts: dict[str, int] = {}
    for _ in range(list_rounds):
        c_s, c_n, c_pages = asyncio.run(_list_all(api.address, "clusters", "*"))
        m_s, m_n, m_pages = asyncio.run(_list_all(api.address, "machines", "*"))
        full["clusters"].append(c_s)
        full["machines"].append(m_s)
        full["total"].append(c_s + m_s)
        counts = {"clusters": c_n, "machines": m_n, "cluster_pages": c_pages, "machine_pages": m_pages}
    tenant_runs: dict[str, list[float]] = {"clusters": [], "machines": []}
    tenant_counts: dict[str, int] = {}
    for _ in range(5):
        c_s, c_n, _p = asyncio.run(_list_all(api.address, "clusters", "t-042"))
        m_s, m_n, _p = asyncio.run(_list_all(api.address, "machines", "t-042"))
        tenant_runs["clusters"].append(c_s)
        tenant_runs["machines"].append(m_s)
        tenant_counts = {"clusters": c_n, "machines": m_n}
    # A tenant's List of its 1,000 machines, one page; the CPU per call is the steadier number.
    cpu_before = cpu_seconds(api.pid)
    big_runs = asyncio.run(_tenant_lists(api.address, BIG_LIST_ROUNDS))
    big_cpu_ms = (cpu_seconds(api.pid) - cpu_before) / BIG_LIST_ROUNDS * 1000
    rss_after_lists = rss_bytes(api.pid)
    # The same List read from etcd (watch_cache = false), in the same run.
    etcd_api = ApiserverProcess(work, "apiserver-scale-etcd-reads", etcd_endpoint, chain=True, watch_cache=False)
    etcd_api.start(procs)
    cpu_before = cpu_seconds(etcd_api.pid)
    etcd_runs = asyncio.run(_tenant_lists(etcd_api.address, BIG_LIST_ROUNDS))
    etcd_cpu_ms = (cpu_seconds(etcd_api.pid) - cpu_before) / BIG_LIST_ROUNDS * 1000
    if etcd_api.child is not None:
        procs.stop(etcd_api.child)
    print(f"  full list {rounds(full['total'])['median']:.1f}s, apiserver RSS {rss_after_lists / 2**20:.0f} MiB",
          flush=True)  # fmt: skip
    controller = _controller_resync(work, api.address, etcd_endpoint, controller_timeout)
    rss_after_controller = rss_bytes(api.pid)
    if api.child is not None:
        procs.stop(api.child)
    return {
        "clusters": clusters,
        "machines": machines,
        "tenants": tenants,
        "bulk_write_s": round(write_s, 2),
        "full_list_s": {k: rounds(v) for k, v in full.items()},
        "full_list_counts": counts,
        "tenant_list_s": {k: rounds(v) for k, v in tenant_runs.items()},
        "tenant_list_counts": tenant_counts,
        "tenant_1k_machines_list_s": rounds(big_runs),
        "tenant_1k_machines_list_cpu_ms": round(big_cpu_ms, 2),
        "tenant_1k_machines_list_etcd_reads_s": rounds(etcd_runs),
        "tenant_1k_machines_list_etcd_reads_cpu_ms": round(etcd_cpu_ms, 2),
        "apiserver_rss_bytes_idle": rss_idle,
        "apiserver_rss_bytes_after_lists": rss_after_lists,
        "apiserver_rss_bytes_after_controller": rss_after_controller,
        "controller": controller,
    }
