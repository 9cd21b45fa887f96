"""The demo's flow: machines and platform up, the SSH credential, a cluster of three
control-plane machines behind a managed VIP and two worker Machines created with tkectl, a
wait until all of them are Running, then `tkectl get clusters,machines` and what each machine
ran, and everything stopped and removed (also on Ctrl-C, SIGTERM or a failure).

A failure or a timeout ends the demo with DemoFailed: what the platform says about the
objects (`tkectl describe`), the stand-in calls that were refused, and the ends of the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import grpc
from lightkube.resources.core_v1 import Node

from tests.support.demo import sessions
from tests.support.demo.machines import CONTROL_PLANE, WORKER, Machines, machines, names
from tests.support.demo.network import Network, network
from tests.support.demo.platform import CREDENTIAL, Platform, platform
from tke.internal.provider.errors import StepError
from tke.internal.provider.kube import node_status
from tke.internal.provider.kube.access import from_kubeconfig
from tke.internal.provider.kube.api import ClusterAPI
from tke.internal.tkectl.output import table
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc, machine_pb2, machine_pb2_grpc

CLUSTER = "demo"
VERSION = "1.31.2"
WITHIN = 150.0  # seconds for the cluster and its machines to be Running


class DemoFailed(Exception):
    """The demo could not finish; the message says why, with the relevant logs."""


@dataclass
class Demo:
    directory: Path
    network: Network
    machines: Machines
    platform: Platform

    @property
    def kubeconfig(self) -> Path:
        """The operator's kubeconfig for the cluster, from `tkectl get kubeconfig --admin`."""
        return self.directory / "kubeconfig"


@contextlib.contextmanager
def started(directory: Path, masters: int = 3, workers: int = 2, subnet: int = 0) -> Iterator[Demo]:
    """The network, the machines and the platform; all stopped and removed on exit."""
    with (
        network(subnet) as net,
        machines(directory / "machines", net, names(masters, workers)) as ms,
        platform(directory / "platform", ms) as p,
    ):
        yield Demo(directory, net, ms, p)


def manifests(demo: Demo) -> str:
    """The cluster (its masters in spec.machines, the VIP on their eth0) and the worker
    Machines, as an operator writes them for `tkectl create -f`."""
    masters = "\n".join(
        f"    - {{ip: {m.address}, credentialRef: {CREDENTIAL}}}" for m in demo.machines.of_role(CONTROL_PLANE)
    )
    docs = [
        f"""\
kind: Cluster
metadata: {{name: {CLUSTER}}}
spec:
  type: baremetal
  version: {VERSION}
  network: {{podCidr: 10.244.0.0/16, serviceCidr: 10.96.0.0/12}}
  controlPlaneVip: {{address: {demo.network.vip}, interface: eth0}}
  machines:
{masters}
"""
    ]
    for m in demo.machines.of_role(WORKER):
        docs.append(
            f"""\
kind: Machine
metadata: {{name: {m.name}}}
spec:
  clusterName: {CLUSTER}
  type: baremetal
  ip: {m.address}
  credentialRef: {CREDENTIAL}
  role: MACHINE_ROLE_WORKER
"""
        )
    return "---\n".join(docs)


def create(demo: Demo) -> str:
    """`tkectl create -f` of the manifests; what it printed."""
    done = demo.platform.tkectl("create", "-f", "-", stdin=manifests(demo))
    if done.returncode != 0:
        raise DemoFailed(f"tkectl create failed: {done.stderr.strip()}")
    return done.stdout


def _phases(demo: Demo) -> tuple[int, dict[str, int]]:
    channel = demo.platform.channel()
    try:
        cluster = cluster_pb2_grpc.ClusterServiceStub(channel).Get(cluster_pb2.GetClusterRequest(name=CLUSTER))
        listed = machine_pb2_grpc.MachineServiceStub(channel).List(
            machine_pb2.ListMachinesRequest(cluster_name=CLUSTER)
        )
    finally:
        channel.close()
    return cluster.status.phase, {m.metadata.name: m.status.phase for m in listed.items}


def wait_running(demo: Demo, within: float = WITHIN) -> None:
    """Until the cluster and every worker Machine are Running; DemoFailed when one fails, a
    platform process exits, or `within` seconds pass."""
    deadline = time.monotonic() + within
    wanted = {m.name for m in demo.machines.of_role(WORKER)}
    while True:
        try:
            demo.platform.check()
            cluster, workers = _phases(demo)
        except (RuntimeError, grpc.RpcError) as err:
            raise DemoFailed(f"the platform stopped answering: {err}\n\n{diagnosis(demo)}") from None
        failed = [n for n, p in workers.items() if p == machine_pb2.MACHINE_PHASE_FAILED]
        if cluster == cluster_pb2.CLUSTER_PHASE_FAILED or failed:
            what = " and ".join([f"cluster {CLUSTER}"] * (cluster == cluster_pb2.CLUSTER_PHASE_FAILED) + failed)
            raise DemoFailed(f"{what} failed\n\n{diagnosis(demo)}")
        running = {n for n, p in workers.items() if p == machine_pb2.MACHINE_PHASE_RUNNING}
        if cluster == cluster_pb2.CLUSTER_PHASE_RUNNING and running >= wanted:
            return
        if time.monotonic() > deadline:
            raise DemoFailed(f"the cluster and its machines were not Running after {within:g}s\n\n{diagnosis(demo)}")
        time.sleep(0.5)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(none)"


def diagnosis(demo: Demo) -> str:
    """What to look at when the demo fails: the objects' conditions and events, the stand-in
    calls that were refused, the ends of the platform's logs and of the API stand-in's."""
    parts = []
    for args in (("describe", "cluster", CLUSTER), ("describe", "machines")):
        done = demo.platform.tkectl(*args)
        parts.append(f"$ tkectl {' '.join(args)}\n{done.stdout}{done.stderr}")
    refused = [c for c in demo.machines.world.calls() if not c["ok"]]
    if refused:
        parts.append(
            "stand-in calls refused:\n"
            + "\n".join(f"  {c['machine']} $ {' '.join(c['argv'])}: {c.get('error', '')}" for c in refused[-10:])
        )
    logs = [demo.platform.directory / "controller.log", demo.platform.directory / "apiserver.log"]
    logs += sorted((demo.machines.world.directory / "logs").glob("*/*.log"))
    parts += [f"== {path} (end)\n{_tail(path)}" for path in logs]
    return "\n\n".join(parts)


async def _nodes(kubeconfig: str) -> list[Node]:
    async with ClusterAPI(from_kubeconfig(kubeconfig)) as api:
        return await api.nodes()


def nodes(demo: Demo) -> str:
    """The cluster's Nodes as `kubectl get nodes -o wide` shows them, read through its API at
    the VIP with the kubeconfig the platform gives its user: what machines' status comes from."""
    got = demo.platform.tkectl("get", "kubeconfig", CLUSTER, "--admin")
    if got.returncode != 0:
        raise DemoFailed(f"tkectl get kubeconfig {CLUSTER} --admin failed: {got.stderr.strip()}")
    demo.kubeconfig.touch(mode=0o600)
    demo.kubeconfig.write_text(got.stdout)
    try:
        found = asyncio.run(_nodes(got.stdout))
    except StepError as err:  # what the platform's client says about the cluster's API
        raise DemoFailed(f"the cluster's API at the VIP: {err}") from None
    rows = []
    for node in found:
        r = node_status.report(node)
        info = node.status.nodeInfo if node.status else None
        rows.append(
            [
                r.name,
                "Ready" if r.ready else "NotReady",
                ",".join(r.roles) or "<none>",
                r.kubelet_version,
                r.internal_ip,
                (info.osImage if info else "") or "",
                (info.containerRuntimeVersion if info else "") or "",
            ]
        )
    headers = ["NAME", "STATUS", "ROLES", "VERSION", "INTERNAL-IP", "OS-IMAGE", "CONTAINER-RUNTIME"]
    return table(headers, rows)


def ran(demo: Demo) -> list[str]:
    """What each machine ran, in the order it started: `MACHINE (ROLE) $ COMMAND`."""
    width = max(len(f"{m.name} ({m.role})") for m in demo.machines.machines)
    runs = [sessions.read(m.sessions, m.name, m.role) for m in demo.machines.machines]
    roots = {m.name: str(demo.machines.world.root_of(m.address)) for m in demo.machines.machines}
    return [r.line(roots[r.machine], width) for r in sessions.merged(runs)]


def keep_running(demo: Demo, out: TextIO) -> None:
    """DEMO_KEEP=1: say how to reach everything, then wait for Ctrl-C."""
    first = demo.machines.of_role(CONTROL_PLANE)[0]
    p, m = demo.platform, demo.machines
    out.write(
        textwrap.dedent(f"""
        The demo keeps running until Ctrl-C. In another terminal:
          export PATH=$PWD/.venv/bin:$PATH TKECONFIG={p.tkeconfig}
          tkectl get clusters,machines; tkectl describe cluster {CLUSTER}
        The cluster's API (the Kubernetes API stand-in, through the VIP {demo.network.vip}:8443):
          KUBECONFIG={demo.kubeconfig}   (from tkectl get kubeconfig {CLUSTER} --admin; any Kubernetes client)
        A machine:
          ssh -i {m.key.private_key_file} -o UserKnownHostsFile={m.known_hosts} root@{first.address}
        Logs: {p.directory}/*.log, the API stand-in's in {m.world.directory}/logs/
        """)
    )
    out.flush()
    signal.pause()


def _interrupt(signum: int, frame: object) -> None:
    """Ctrl-C, SIGTERM or SIGHUP: stop. Once: another one must not cut the cleanup short."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


def run(
    out: TextIO,
    *,
    masters: int = 3,
    workers: int = 2,
    within: float = WITHIN,
    keep: bool = False,
    inspect: Callable[[Demo], None] | None = None,
) -> int:
    """The whole demo; its exit status. `inspect` (tests) sees the demo once it is Running."""
    began = time.monotonic()
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}

    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    directory = Path(tempfile.mkdtemp(prefix="tke-demo-"))
    status = 0
    try:
        say(f"make demo-cluster: {masters} control-plane and {workers} worker machines, state in {directory}")
        with started(directory, masters, workers) as demo:
            say(f"machines up in network namespaces on {demo.network.subnet} (VIP {demo.network.vip}); platform up")
            say(f"SSH credential {CREDENTIAL}: a key made for this run, authorized on every machine")
            say(create(demo).rstrip())
            wait_running(demo, within)
            say(f"cluster {CLUSTER} Running after {time.monotonic() - began:.1f}s\n")
            say("$ tkectl get clusters,machines")
            say(demo.platform.tkectl("get", "clusters,machines").stdout.rstrip())
            say(f"\n$ tkectl get kubeconfig {CLUSTER} --admin > kubeconfig   # the cluster's Nodes, read with it:")
            say(nodes(demo))
            say("\nWhat each machine ran (paths under each machine's root directory are shown from /):")
            for line in ran(demo):
                say(line)
            if inspect is not None:
                inspect(demo)
            if keep:
                keep_running(demo, out)
    except (DemoFailed, RuntimeError) as err:  # RuntimeError: what could not be set up
        say(f"\nmake demo-cluster FAILED: {err}")
        status = 1
    except KeyboardInterrupt:
        say("\ninterrupted: stopping everything")
        status = 130
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say(f"stopped and removed everything; {time.monotonic() - began:.1f}s in all")
    return status
