"""Figures 1 and 2: unary Get and Create through the apiserver, against baselines.

Figure 1: ClusterService/Get and ClusterService/Create QPS and p50/p99 at 1, 32 and 256 calls
in flight through the full chain (token-file authentication, policy-centre authorization with a
binding in each of 101 tenants, jsonl-file audit), as ratios of (a) a bare grpc.aio server
answering an empty call and (b) the same operation done directly against etcd.
Figure 2: the same Get with the auth chain on and off (a second apiserver on the same etcd
without authenticators: request id, access log, metrics and error mapping stay). With its audit
sink the chain's server logs successful calls at DEBUG and the other at INFO, as each runs by
default; at 32 in flight both are also compared without access-log lines (the chain's own cost).
Also, Get x32 through the full chain on one process and on `tke-apiserver --workers 2`
(throughput and CPU per call of all the server's processes).

A third Get baseline splits the cost: a bare grpc.aio server whose handler reads the key from
etcd with the platform's etcd client (one inbound and one outbound call, no other code). Create
has the same: the bare server's Create relay puts the request under a new key with the
apiserver's create transaction and answers empty, the floor of a Create in this design.

Generators: h2load for Get, the empty call and etcd's Range (the same framed request every
time); several load-client processes (loadclient.py) for Create and the raw etcd create
transaction (names must differ). Each round measures a figure and its baselines back to back,
so a machine that other work loads slows both; the ratios are computed per round."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import h2load
from bench.procs import (
    PREFIX,
    TENANT,
    USER_TOKEN,
    ApiserverProcess,
    Processes,
    python,
    rss_bytes,
    tree_cpu_seconds,
    wait_port,
)
from bench.stats import percentile, ratio, rounds
from tests.support.apiserver import cluster
from tests.support.ports import free_port
from tke.internal.apiserver.kinds import CLUSTERS
from tke.internal.apiserver.registry import Registry
from tke.internal.storage.etcd import EtcdConfig, EtcdStore
from tke.platform.v1 import cluster_pb2
from tke.plugins.authz.policy import BINDINGS

GET_NAME = "bench-get"
GET_PATH = "/tke.platform.v1.ClusterService/Get"
RANGE_PATH = "/etcdserverpb.KV/Range"
TENANTS = 100
LAYERS = 4  # the apiserver's call chain: request, metrics, in-flight limit, auth (authn + authz + audit)


async def seed(endpoint: str) -> None:
    """The object Get reads, and role bindings: the bench user is an editor of its tenant, and
    each of 100 other tenants has a binding of its own (the policy centre looks at them all)."""
    from tke.auth.v1 import policy_pb2

    store = EtcdStore(EtcdConfig(endpoints=[endpoint], prefix=PREFIX))
    try:
        bindings = Registry(BINDINGS, store, PREFIX)
        for tenant, user in [*((f"t-{i:03d}", f"user-{i:03d}") for i in range(TENANTS)), (TENANT, "bench-user")]:
            binding = policy_pb2.RoleBinding()
            binding.metadata.name = "editors"
            binding.spec.role = "editor"
            binding.spec.subjects.add(kind="User", name=user)
            await bindings.create(tenant, binding)
        await Registry(CLUSTERS, store, PREFIX).create(TENANT, cluster(GET_NAME))
    finally:
        await store.close()


def get_request() -> bytes:
    return cluster_pb2.GetClusterRequest(name=GET_NAME, tenant_id=TENANT).SerializeToString()


RANGE_KEY = f"{PREFIX}/clusters/{TENANT}/{GET_NAME}".encode()


def _range_request() -> bytes:
    from aetcd import rpc

    request = rpc.RangeRequest(key=RANGE_KEY)
    return bytes(request.SerializeToString())


def create_run(
    procs: Processes,
    target: str,
    address: str,
    in_flight: int,
    seconds: float,
    *,
    tag: str,
    token: str = "",
    pid: int = 0,
) -> dict[str, Any]:
    """`in_flight` Create calls from one (1 in flight) or four client processes."""
    count = 1 if in_flight == 1 else 4
    per = max(1, in_flight // count)
    start_at = time.time() + 2.5  # every client imported and connected by then
    children = []
    for i in range(count):
        argv = [*python(), "-m", "bench.loadclient", "--target", target, "--address", address,
                "--tag", f"{tag}p{i}", "--in-flight", str(per), "--seconds", str(seconds),
                "--start-at", str(start_at), "--tenant", TENANT]  # fmt: skip
        if token:
            argv += ["--token", token]
        children.append(procs.start(argv, stdout=subprocess.PIPE))
    cpu = tree_cpu_seconds(pid) if pid else 0.0
    results = []
    for child in children:
        out, _ = child.communicate(timeout=seconds + 60)
        procs.stop(child)
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    latencies = [x for r in results for x in r["latencies_ms"]]
    calls = sum(int(r["calls"]) for r in results)
    extra = {"cpu_us_per_call": (tree_cpu_seconds(pid) - cpu) / calls * 1e6} if pid and calls else {}
    return {
        **extra,
        "qps": calls / seconds,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "calls": calls,
        "errors": sum(int(r["errors"]) for r in results),
        "error_codes": sorted({c for r in results for c in r["error_codes"]}),
    }


def h2(
    address: str,
    path: str,
    body: bytes,
    in_flight: int,
    seconds: float,
    *,
    token: str = "",
    pid: int = 0,
    connections: int = 0,
) -> dict[str, Any]:
    """One h2load run; with `pid`, also the server's CPU time per call (user + system of the
    process and its children, the workers of --workers, over the whole run including warm-up):
    unlike throughput, it hardly moves when other work on the machine takes CPU away from the
    server."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    cpu = tree_cpu_seconds(pid) if pid else 0.0
    r = h2load.run(address, path, body, in_flight, seconds, headers=headers, connections=connections)
    out: dict[str, Any] = {"qps": r.qps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "calls": r.calls, "errors": r.errors}
    if pid and r.calls:
        # h2load's log covers the measured phase; the warm-up's calls ran at about the same rate.
        out["cpu_us_per_call"] = (tree_cpu_seconds(pid) - cpu) / (r.qps * (seconds + 0.5)) * 1e6
    return out


WORKER_CONNECTIONS = 16  # the kernel spreads connections over the workers: enough of them to spread evenly


def measure_workers(
    work: Path, procs: Processes, etcd_endpoint: str, one: ApiserverProcess, *, n_rounds: int, seconds: float
) -> dict[str, Any]:
    """Get x32 through the full chain on one apiserver process and on `--workers 2`, rounds
    interleaved, the calls on 16 connections (2 streams each) for both: throughput and the
    CPU per call of all the server's processes."""
    two = ApiserverProcess(work, "apiserver-2-workers", etcd_endpoint, chain=True, workers=2)
    two.start(procs)
    get = get_request()
    runs: dict[str, list[dict[str, Any]]] = {"1": [], "2": []}
    try:
        h2(two.address, GET_PATH, get, 32, 1.0, token=USER_TOKEN, connections=WORKER_CONNECTIONS)  # warm both workers
        for _ in range(n_rounds):
            for n, server in (("1", one), ("2", two)):
                run = h2(server.address, GET_PATH, get, 32, seconds, token=USER_TOKEN, pid=server.pid,
                         connections=WORKER_CONNECTIONS)  # fmt: skip
                runs[n].append(run)
    finally:
        if two.child is not None:
            procs.stop(two.child)
    return {
        "in_flight": 32,
        "connections": WORKER_CONNECTIONS,
        "workers": {n: _summary(r) for n, r in runs.items()},
        "throughput_2_over_1": rounds([ratio(b["qps"], a["qps"]) for a, b in zip(runs["1"], runs["2"], strict=True)]),
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    cpu = [r["cpu_us_per_call"] for r in runs if "cpu_us_per_call" in r]
    return {
        "qps": rounds([r["qps"] for r in runs]),
        **({"cpu_us_per_call": rounds(cpu)} if cpu else {}),
        "p50_ms": rounds([r["p50_ms"] for r in runs])["median"],
        "p99_ms": rounds([r["p99_ms"] for r in runs])["median"],
        "errors": sum(r["errors"] for r in runs),
    }


def measure(
    work: Path, procs: Processes, etcd_endpoint: str, *, in_flights: list[int], n_rounds: int, seconds: float
) -> dict[str, Any]:
    asyncio.run(seed(etcd_endpoint))
    bare_port = free_port()
    bare = procs.start([*python(), "-m", "bench.baseline", "--port", str(bare_port), "--etcd", etcd_endpoint])
    wait_port(bare_port, bare)
    layered_port = free_port()
    layered = procs.start([*python(), "-m", "bench.baseline", "--port", str(layered_port), "--layers", str(LAYERS)])
    wait_port(layered_port, layered)
    layer_runs: list[dict[str, Any]] = []
    chain = ApiserverProcess(work, "apiserver-chain", etcd_endpoint, chain=True)
    chain.start(procs)
    plain = ApiserverProcess(work, "apiserver-nochain", etcd_endpoint, chain=False)
    plain.start(procs)
    # With an audit sink the access log has successful calls at DEBUG; without the chain there is
    # no audit, and they are at INFO. So figure 2 also compares both servers without access-log
    # lines (the chain's own cost), and splits it with the chain without its audit sink
    # (authentication and authorization only), also without access-log lines.
    quiet = "warning"
    unaudited = ApiserverProcess(work, "apiserver-noaudit", etcd_endpoint, chain=True, audit=False, log_level=quiet)
    unaudited.start(procs)
    plain_quiet = ApiserverProcess(work, "apiserver-nochain-quiet", etcd_endpoint, chain=False, log_level=quiet)
    plain_quiet.start(procs)
    noaudit_runs: list[dict[str, Any]] = []
    quiet_runs: list[dict[str, Any]] = []
    bare_address = f"127.0.0.1:{bare_port}"
    get, range_ = get_request(), _range_request()
    out: dict[str, Any] = {"get": {}, "create": {}, "chain_overhead": {}}
    before = chain.handled("ClusterService/Get")
    for n in in_flights:
        runs: dict[str, list[dict[str, Any]]] = {"bare": [], "bare_range": [], "etcd": [], "chain": [], "nochain": []}
        for _ in range(n_rounds):
            runs["bare"].append(h2(bare_address, "/bench.Bare/Empty", b"", n, seconds, pid=bare.pid))
            runs["bare_range"].append(h2(bare_address, "/bench.Bare/Range", RANGE_KEY, n, seconds, pid=bare.pid))
            runs["etcd"].append(h2(etcd_endpoint, RANGE_PATH, range_, n, seconds))
            runs["chain"].append(h2(chain.address, GET_PATH, get, n, seconds, token=USER_TOKEN, pid=chain.pid))
            runs["nochain"].append(h2(plain.address, GET_PATH, get, n, seconds, pid=plain.pid))
            if n == 32:
                noaudit_runs.append(
                    h2(unaudited.address, GET_PATH, get, n, seconds, token=USER_TOKEN, pid=unaudited.pid)
                )
                quiet_runs.append(h2(plain_quiet.address, GET_PATH, get, n, seconds, pid=plain_quiet.pid))
                layered_address = f"127.0.0.1:{layered_port}"
                layer_runs.append(h2(layered_address, "/bench.Bare/Empty", b"", n, seconds, pid=layered.pid))
        out["get"][str(n)] = {
            "apiserver": _summary(runs["chain"]),
            "bare_empty_call": _summary(runs["bare"]),
            "etcd_range": _summary(runs["etcd"]),
            # A bare server whose handler reads the key from etcd: the two gRPC calls a Get needs.
            "bare_plus_etcd_read": _summary(runs["bare_range"]),
            "ratio_to_bare": rounds(
                [ratio(a["qps"], b["qps"]) for a, b in zip(runs["chain"], runs["bare"], strict=True)]
            ),
            "ratio_to_etcd": rounds(
                [ratio(a["qps"], b["qps"]) for a, b in zip(runs["chain"], runs["etcd"], strict=True)]
            ),
        }
        out["chain_overhead"][str(n)] = {
            "chain_on": _summary(runs["chain"]),
            "chain_off": _summary(runs["nochain"]),
            "overhead": rounds(
                [1 - ratio(a["qps"], b["qps"]) for a, b in zip(runs["chain"], runs["nochain"], strict=True)]
            ),
            # The chain's cost as CPU per call: on / off - 1.
            "cpu_overhead": rounds(
                [
                    ratio(a.get("cpu_us_per_call", 0), b.get("cpu_us_per_call", 0)) - 1
                    for a, b in zip(runs["chain"], runs["nochain"], strict=True)
                ]
            ),
        }
        print(f"  get x{n}: chain {out['get'][str(n)]['apiserver']['qps']['median']:.0f}/s, "
              f"bare {out['get'][str(n)]['bare_empty_call']['qps']['median']:.0f}/s", flush=True)  # fmt: skip
    if noaudit_runs and "32" in out["chain_overhead"]:
        split = out["chain_overhead"]["32"]
        split["chain_without_audit"] = _summary(noaudit_runs)
        split["chain_off_no_access_log"] = _summary(quiet_runs)
        on = split["chain_on"].get("cpu_us_per_call", {}).get("median", 0.0)
        off_quiet = split["chain_off_no_access_log"].get("cpu_us_per_call", {}).get("median", 0.0)
        unaudited_cpu = split["chain_without_audit"].get("cpu_us_per_call", {}).get("median", 0.0)
        split["cpu_overhead_no_access_log"] = ratio(on, off_quiet) - 1
        split["cpu_us_authn_authz"] = unaudited_cpu - off_quiet
        split["cpu_us_audit"] = on - unaudited_cpu
    if layer_runs:
        with_layers = _summary(layer_runs)
        bare_cpu = out["get"]["32"]["bare_empty_call"].get("cpu_us_per_call", {}).get("median", 0.0)
        layered_cpu = with_layers.get("cpu_us_per_call", {}).get("median", 0.0)
        out["interceptor_layers"] = {
            "layers": LAYERS,
            "bare_with_layers": with_layers,
            "per_layer_cpu_us": (layered_cpu - bare_cpu) / LAYERS,
            "per_layer_share_of_bare_call": ratio(layered_cpu - bare_cpu, bare_cpu * LAYERS),
        }
    after = chain.handled("ClusterService/Get")
    out["get_status_codes"] = {code: after.get(code, 0) - before.get(code, 0) for code in after}
    for n in in_flights:
        runs = {"apiserver": [], "etcd": [], "relay": []}
        for r in range(n_rounds):
            tag = f"r{r}n{n}"
            runs["etcd"].append(create_run(procs, "etcd", etcd_endpoint, n, seconds, tag=tag))
            runs["relay"].append(create_run(procs, "apiserver", bare_address, n, seconds, tag=tag, pid=bare.pid))
            runs["apiserver"].append(
                create_run(procs, "apiserver", chain.address, n, seconds, tag=tag, token=USER_TOKEN, pid=chain.pid)
            )
        out["create"][str(n)] = {
            "apiserver": _summary(runs["apiserver"]),
            "etcd_txn": _summary(runs["etcd"]),
            # The bare server's Create relay: one inbound call, one create transaction, no other code.
            "bare_relay": _summary(runs["relay"]),
            "relay_ratio_to_etcd": rounds(
                [ratio(a["qps"], b["qps"]) for a, b in zip(runs["relay"], runs["etcd"], strict=True)]
            ),
            "error_codes": sorted({c for r in runs["apiserver"] for c in r["error_codes"]}),
            "ratio_to_etcd": rounds(
                [ratio(a["qps"], b["qps"]) for a, b in zip(runs["apiserver"], runs["etcd"], strict=True)]
            ),
        }
        print(f"  create x{n}: apiserver {out['create'][str(n)]['apiserver']['qps']['median']:.0f}/s, "
              f"etcd {out['create'][str(n)]['etcd_txn']['qps']['median']:.0f}/s", flush=True)  # fmt: skip
    # Ratios of Create to the bare empty call, from the Get rounds' bare numbers.
    for n in in_flights:
        bare_qps = out["get"][str(n)]["bare_empty_call"]["qps"]["median"]
        out["create"][str(n)]["ratio_to_bare"] = ratio(out["create"][str(n)]["apiserver"]["qps"]["median"], bare_qps)
    out["workers"] = measure_workers(work, procs, etcd_endpoint, chain, n_rounds=n_rounds, seconds=seconds)
    print(f"  get x32 with 1 and 2 workers: {out['workers']['workers']['1']['qps']['median']:.0f}/s, "
          f"{out['workers']['workers']['2']['qps']['median']:.0f}/s", flush=True)  # fmt: skip
    out["apiserver_rss_bytes"] = rss_bytes(chain.pid)
    out["note"] = (
        "cpu_us_per_call: CPU time of the server process per call over a run; the chain's CPU overhead is "
        "on/off - 1 of it. Throughput ratios move with whatever else the machine runs; CPU per call hardly does."
    )
    for child in (plain.child, plain_quiet.child, unaudited.child, chain.child, bare, layered):
        if child is not None:
            procs.stop(child)
    return out
