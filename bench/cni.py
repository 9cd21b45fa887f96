"""Start-up and throughput of the node's CNI plugins, measured the way a runtime sees them.

    python -m bench.cni [--rounds 30] [--concurrent 100] [--json FILE]

Prints the median and p95 of: VERSION of each binary; ADD+DEL of Debian's bridge + host-local
(the baseline); ADD+DEL through cni-switch -> bridge + host-local; ADD+DEL through cni-switch ->
bridge -> tke-ipamc -> tke-ipamd (a real ipamd over a real etcd, both started here); each as a
ratio of the baseline measured in the same run, with the mean CPU time per call (user + system of
the plugin and every process it ran, and tke-ipamd's during the call: the steadier number on a
shared machine) and its ratio to the baseline's; then the wall time of `--concurrent` ADDs at
once through the ipamd path. `--json FILE` also writes the same figures as one JSON object.
Everything happens in network namespaces created here (root needed) and removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import resource
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


class Cpu:
    """CPU seconds of this process's waited-for children (a plugin and every process it ran),
    and of tke-ipamd when its pid is known."""

    ipamd_pid = 0

    @classmethod
    def now(cls) -> float:
        from bench.procs import cpu_seconds

        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime + (cpu_seconds(cls.ipamd_pid) if cls.ipamd_pid else 0.0)


CPU: dict[str, float] = {}  # row -> mean CPU seconds per call


def timed(runtime: Runtime, command: str, config: Any, **kw: Any) -> float:
    start = time.perf_counter()
    runtime.run(command, config, **kw).ok()
    return time.perf_counter() - start


def versions(name: str, runtime: Runtime, version: str, rounds: int) -> tuple[str, list[float]]:
    cpu = Cpu.now()
    samples = [timed(runtime, "VERSION", {"cniVersion": version}) for _ in range(rounds)]
    CPU[name] = (Cpu.now() - cpu) / rounds
    return name, samples


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def add_del(
    name: str, runtime: Runtime, config: Any, namespace: str, *, rounds: int, args: str = ""
) -> list[tuple[str, list[float]]]:
    """The rows "ADD <name>" and "ADD+DEL <name>" (samples; their CPU per call into CPU)."""
    adds, pairs = [], []
    add_cpu = pair_cpu = 0.0
    for _ in range(rounds):
        cid = unique("b")
        cpu = Cpu.now()
        start = time.perf_counter()
        runtime.run("ADD", config, container_id=cid, netns=netns_path(namespace), args=args).ok()
        added = time.perf_counter()
        added_cpu = Cpu.now()
        runtime.run("DEL", config, container_id=cid, netns=netns_path(namespace), args=args).ok()
        adds.append(added - start)
        pairs.append(time.perf_counter() - start)
        add_cpu += added_cpu - cpu
        pair_cpu += Cpu.now() - cpu
    CPU[f"ADD {name}"] = add_cpu / rounds
    CPU[f"ADD+DEL {name}"] = pair_cpu / rounds
    return [(f"ADD {name}", adds), (f"ADD+DEL {name}", pairs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--concurrent", type=int, default=100)
    parser.add_argument("--without-ipamd", action="store_true", help="only the paths that need no ipamd")
    parser.add_argument("--json", default="", help="also write the figures to this file, as one JSON object")
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
            assert ipamd.process is not None
            Cpu.ipamd_pid = ipamd.process.pid
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
        # cni-switch with `ipamd`, as deploy/cni configures it on a node: it then runs the fixed
        # network's tke-ipamc itself and hands bridge the `static` IPAM plugin (docs/cni.md).
        conf = switch_config(
            work, networks, "pods", **({"ipamd": {"address": ipamd.socket, "timeout": 10}} if ipamd else {})
        )
        fixed_args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=p;TKE_NETWORK=fixed"

        rows: list[tuple[str, list[float]]] = []
        rows.append(versions("VERSION cni-switch", switch, "1.1.0", opts.rounds))
        rows.append(versions("VERSION tke-ipamc", ipamc, "1.1.0", opts.rounds))
        rows.append(versions("VERSION bridge (Go)", bridge, "1.0.0", opts.rounds))
        host_local = Runtime(f"{DEBIAN_CNI}/host-local", node, path)
        rows += add_del("host-local alone", host_local, baseline, pod, rounds=opts.rounds)
        if ipamd is not None:
            ipam_conf = {"cniVersion": "1.0.0", "name": "fixed", **networks["fixed"]["plugins"][0]}
            rows += add_del(
                "tke-ipamc -> ipamd alone", ipamc, ipam_conf, pod, rounds=opts.rounds, args="K8S_POD_NAME=p"
            )
        rows += add_del("bridge+host-local", bridge, baseline, pod, rounds=opts.rounds)
        rows += add_del("cni-switch -> bridge+host-local", switch, conf, pod, rounds=opts.rounds)
        if ipamd is not None:
            rows += add_del(
                "cni-switch -> bridge -> tke-ipamc -> ipamd", switch, conf, pod, rounds=opts.rounds, args=fixed_args
            )

        base = dict(rows)["ADD+DEL bridge+host-local"]
        base_median, base_cpu = summary(base)[0], CPU["ADD+DEL bridge+host-local"]
        print(f"{'what':52} {'median ms':>10} {'p95 ms':>8} {'x baseline':>11} {'CPU ms':>7} {'x base CPU':>11}")
        figures: dict[str, Any] = {"rows": {}}
        for name, samples in rows:
            median, p95 = summary(samples)
            label = f"{name} (baseline)" if name == "ADD+DEL bridge+host-local" else name
            cpu = CPU[name]
            print(
                f"{label:52} {median * 1e3:10.1f} {p95 * 1e3:8.1f} {median / base_median:11.2f} "
                f"{cpu * 1e3:7.1f} {cpu / base_cpu:11.2f}"
            )
            figures["rows"][name] = {
                "median_ms": median * 1e3,
                "p95_ms": p95 * 1e3,
                "x_baseline": median / base_median,
                "cpu_ms": cpu * 1e3,
                "x_baseline_cpu": cpu / base_cpu,
            }

        if ipamd is None:
            _write(opts.json, figures)
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
        duplicates = len(addresses) - len(set(addresses))
        print(f"  {duplicates} duplicate addresses among {len(addresses)}")
        for o in failed[:3]:
            print("  ", json.dumps(o.json))
        figures |= {
            "concurrent_adds": opts.concurrent,
            "concurrent_wall_s": wall,
            "concurrent_failed": len(failed),
            "concurrent_duplicates": duplicates,
        }
        _write(opts.json, figures)


def _write(path: str, figures: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(figures))


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
