"""Start-up and throughput of the node's CNI plugins, measured the way a runtime sees them.

    python -m bench.cni [--rounds 30] [--concurrent 100]

Prints the median and p95 of: VERSION of each binary; ADD+DEL of Debian's bridge + host-local
(the baseline); ADD+DEL through cni-switch -> bridge + host-local; ADD+DEL through cni-switch ->
bridge -> tke-ipamc -> tke-ipamd (a real ipamd over a real etcd, both started here); each as a
ratio of the baseline measured in the same run; then the wall time of `--concurrent` ADDs at
once through the ipamd path. Everything happens in network namespaces created here (root
needed) and removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tests.support.cni import (
    DEBIAN_CNI,
    IpamdDaemon,
    Runtime,
    bridge_network,
    ipamc_network,
    launchers,
    netns,
    netns_path,
    switch_config,
    unique,
)


def timed(runtime: Runtime, command: str, config: Any, **kw: Any) -> float:
    start = time.perf_counter()
    runtime.run(command, config, **kw).ok()
    return time.perf_counter() - start


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def add_del(
    runtime: Runtime, config: Any, namespace: str, rounds: int, args: str = ""
) -> tuple[list[float], list[float]]:
    """(ADD samples, ADD+DEL samples)."""
    adds, pairs = [], []
    for _ in range(rounds):
        cid = unique("b")
        start = time.perf_counter()
        runtime.run("ADD", config, container_id=cid, netns=netns_path(namespace), args=args).ok()
        added = time.perf_counter()
        runtime.run("DEL", config, container_id=cid, netns=netns_path(namespace), args=args).ok()
        adds.append(added - start)
        pairs.append(time.perf_counter() - start)
    return adds, pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--concurrent", type=int, default=100)
    parser.add_argument("--without-ipamd", action="store_true", help="only the paths that need no ipamd")
    parser.add_argument(
        "--plugin-python",
        default="",
        help="interpreter of the plugins' launchers (for example a non-editable install's); default: this one",
    )
    parser.add_argument("--inside", help=argparse.SUPPRESS)  # re-executed in the node namespace
    opts = parser.parse_args()
    if not opts.inside:
        # Run the measurements from inside the node namespace, so every plugin is started
        # directly (as a runtime does), not through `ip netns exec`.
        with netns("tbn") as node:
            argv = [sys.executable, "-m", "bench.cni", *sys.argv[1:], "--inside", node]
            sys.exit(subprocess.run(["ip", "netns", "exec", node, *argv], check=False).returncode)

    from tests.support.etcd import EtcdProcess

    _compile()
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="cni-bench-", dir="/tmp"))
        stack.callback(shutil.rmtree, work, True)
        ipamd = None
        if not opts.without_ipamd:
            etcd = EtcdProcess(work / "etcd")
            etcd.start()
            stack.callback(etcd.stop)
            ipamd = IpamdDaemon(work, endpoints=[etcd.endpoint], prefix="/bench")
            ipamd.start()
            stack.callback(ipamd.stop)
            _create_pool(ipamd.socket)

        node = ""
        pod = stack.enter_context(netns("tbc"))
        folder = launchers(work / "bin", opts.plugin_python)
        path = [folder, DEBIAN_CNI]
        switch = Runtime(f"{folder}/cni-switch", node, path)
        ipamc = Runtime(f"{folder}/tke-ipamc", node, path)
        bridge = Runtime(f"{DEBIAN_CNI}/bridge", node, path)

        baseline_net = bridge_network(work, "10.90.0.0/16", name="baseline")
        baseline = {"cniVersion": "1.0.0", "name": "baseline", **baseline_net["plugins"][0]}
        networks = {"pods": bridge_network(work, "10.91.0.0/16", name="pods")}
        if ipamd is not None:
            networks["fixed"] = ipamc_network("fixed", unique("tb"), ipamd.socket, work, pool="bench")
        conf = switch_config(work, networks, "pods")
        fixed_args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=p;TKE_NETWORK=fixed"

        rows: list[tuple[str, list[float]]] = []
        rows.append(
            ("VERSION cni-switch", [timed(switch, "VERSION", {"cniVersion": "1.1.0"}) for _ in range(opts.rounds)])
        )
        rows.append(
            ("VERSION tke-ipamc", [timed(ipamc, "VERSION", {"cniVersion": "1.1.0"}) for _ in range(opts.rounds)])
        )
        rows.append(
            ("VERSION bridge (Go)", [timed(bridge, "VERSION", {"cniVersion": "1.0.0"}) for _ in range(opts.rounds)])
        )
        host_local = Runtime(f"{DEBIAN_CNI}/host-local", node, path)
        hl_add, hl_pair = add_del(host_local, baseline, pod, opts.rounds)
        rows += [("ADD host-local alone", hl_add), ("ADD+DEL host-local alone", hl_pair)]
        if ipamd is not None:
            ipam_conf = {"cniVersion": "1.0.0", "name": "fixed", **networks["fixed"]["plugins"][0]}
            ic_add, ic_pair = add_del(ipamc, ipam_conf, pod, opts.rounds, "K8S_POD_NAME=p")
            rows += [("ADD tke-ipamc -> ipamd alone", ic_add), ("ADD+DEL tke-ipamc -> ipamd alone", ic_pair)]
        base_add, base = add_del(bridge, baseline, pod, opts.rounds)
        rows += [("ADD bridge+host-local", base_add), ("ADD+DEL bridge+host-local (baseline)", base)]
        sw_add, sw_pair = add_del(switch, conf, pod, opts.rounds)
        rows += [("ADD cni-switch -> bridge+host-local", sw_add), ("ADD+DEL cni-switch -> bridge+host-local", sw_pair)]
        if ipamd is not None:
            fx_add, fx_pair = add_del(switch, conf, pod, opts.rounds, fixed_args)
            rows += [
                ("ADD cni-switch -> bridge -> tke-ipamc -> ipamd", fx_add),
                ("ADD+DEL cni-switch -> bridge -> tke-ipamc -> ipamd", fx_pair),
            ]

        base_median = summary(base)[0]
        print(f"{'what':52} {'median ms':>10} {'p95 ms':>8} {'x baseline':>11}")
        for name, samples in rows:
            median, p95 = summary(samples)
            print(f"{name:52} {median * 1e3:10.1f} {p95 * 1e3:8.1f} {median / base_median:11.2f}")

        if ipamd is None:
            return
        pods = [stack.enter_context(netns("tbp")) for _ in range(opts.concurrent)]
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=opts.concurrent) as pool:
            outcomes = list(
                pool.map(
                    lambda ns: switch.run(
                        "ADD",
                        conf,
                        container_id=unique("k"),
                        netns=netns_path(ns),
                        args=fixed_args.replace("=p;", f"={ns};"),
                    ),
                    pods,
                )
            )
        wall = time.perf_counter() - start
        failed = [o for o in outcomes if o.code != 0]
        print(f"{opts.concurrent} concurrent ADDs through ipamd: {wall:.2f} s wall, {len(failed)} failed")
        addresses = [ip["address"] for o in outcomes if o.code == 0 for ip in o.json.get("ips", [])]
        print(f"  {len(addresses) - len(set(addresses))} duplicate addresses among {len(addresses)}")
        for o in failed[:3]:
            print("  ", json.dumps(o.json))


def _compile() -> None:
    """Byte-compile the plugins' modules, as an installed package is: a node never compiles
    them per invocation (this environment may set PYTHONDONTWRITEBYTECODE)."""
    import compileall
    import importlib.util

    for package in ("tke", "tke.cmd", "tke.internal"):
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            compileall.compile_dir(folder, quiet=1)


def _create_pool(socket: str) -> None:
    import grpc

    from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc

    with grpc.insecure_channel(f"unix:{socket}") as channel:
        ipam_pb2_grpc.IPAMServiceStub(channel).CreatePool(
            ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="bench", cidr="10.92.0.0/16")), timeout=10
        )


if __name__ == "__main__":
    main()
