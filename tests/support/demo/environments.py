"""`make demo-environments`: one control plane, three environments. The platform (etcd and
tke-apiserver as processes, tke-controller in this process) creates, in two tenants, a
baremetal cluster on a simulated machine, an aws cluster in moto's EC2, and a hosted cluster
whose control plane runs in a meta cluster with a baremetal worker; waits until all are
Running; prints `tkectl get clusters,machines -A` and, from boto3, the EC2 instances with their
tags; then stops everything it started. `DEMO_KEEP=1` keeps it running until Ctrl-C.

What stands in for what (the tests' machinery, tests/support/):
- the machines: loopback sshd servers whose kubeadm, kubelet, apt-get... are the stand-ins
  (standins.py, kubeadm_world.py); the baremetal cluster's API is the Kubernetes API stand-in,
  up once its `kubeadm init` ran (world_api.py);
- AWS: moto's server (aws.py); no VM boots there, so cloud-init, kubeadm and the kubelets of
  the instances are played (cloud_init.py), with the API stand-in as the aws cluster's API;
- the meta cluster: the API stand-in, its controllers played (hosted.py): the hosted
  kube-apiserver is a second stand-in serving with the certificates the provider put in Secrets.
The controller runs in this process because it reaches the clusters' APIs where the stand-ins
listen (a master's address in the VPC is not routable here); everything else is the platform's
own code, unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from tests.support import aws
from tests.support.cloud_init import CloudInit, StandInAPIs
from tests.support.controller import controller_config, credentials_published
from tests.support.demo.platform import APISERVER_TOML, BIN, Process, _start, _wait_serving
from tests.support.etcd import EtcdProcess
from tests.support.hosted import META_NETWORKS, meta_cluster, meta_controllers
from tests.support.kubeadm_world import kubeadm_machines
from tests.support.ports import free_port
from tests.support.world_api import Routed, world_api
from tke.internal.controller.client import ApiserverConfig
from tke.internal.controller.manager import Controller
from tke.internal.plugin.loader import ProviderConfig
from tke.internal.provider.clusterapi import ClusterAPI, KubeClusterAPIs
from tke.internal.provider.credentials import CredentialConfig
from tke.internal.provider.kube.access import ClusterAccess
from tke.internal.provider.ssh import SSHOptions
from tke.internal.storage.etcd import EtcdConfig
from tke.internal.tkectl import config as configfile
from tke.internal.tkectl.commands import configure

VERSION = "1.31.2"
WITHIN = 240.0
TENANTS = ("team-a", "team-b")
SSH_CREDENTIAL = "ssh-key"
TOKEN_ENV = "TKE_DEMO_CONTROLLER_TOKEN"
NODE_NAME = 'echo "node-$(echo "$SSH_CONNECTION" | cut -d" " -f3 | tr . -)"'


class DemoFailed(Exception):
    """The demo could not finish; the message says why."""


class ClusterAPIsByHost:
    """The controller's way to the clusters' APIs: a loopback endpoint (the hosted cluster's)
    directly; any other (an address in moto's VPC) to the stand-in the cloud-init player brought
    up for it, refused while there is none: nothing is ever sent off this host."""

    def __init__(self, aws_apis: StandInAPIs) -> None:
        self.aws_apis = aws_apis
        self.direct = KubeClusterAPIs(drain_poll=0.2)

    def connect(self, access: ClusterAccess) -> contextlib.AbstractAsyncContextManager[ClusterAPI]:
        if ipaddress.ip_address(urlsplit(access.server).hostname or "0.0.0.0").is_loopback:
            return self.direct.connect(access)
        return self.aws_apis.connect(access)


@dataclass
class Environments:
    directory: Path
    tkeconfig: Path
    api: str  # tke-apiserver's host:port
    moto_url: str
    ec2: Any
    processes: list[Process]
    # The baremetal cluster's master and the hosted cluster's worker (sshd machines).
    master: Any
    worker: Any

    def tkectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "TKECONFIG": str(self.tkeconfig)}
        return subprocess.run(
            [str(BIN / "tkectl"), *args], input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False
        )


def manifests(master: Any, worker: Any, image: str) -> dict[str, str]:
    """Each tenant's objects, as an operator writes them for `tkectl -n TENANT create -f`."""
    onprem = f"""\
kind: Cluster
metadata: {{name: onprem}}
spec:
  type: baremetal
  version: {VERSION}
  network: {{podCidr: 10.244.0.0/16, serviceCidr: 10.96.0.0/12}}
  machines:
    - {{ip: {master.host}, sshPort: {master.port}, credentialRef: {SSH_CREDENTIAL}}}
"""
    cloud = f"""\
kind: Cluster
metadata: {{name: cloud}}
spec:
  type: aws
  version: {VERSION}
  network: {{podCidr: 10.244.0.0/16, serviceCidr: 10.96.0.0/12}}
  aws:
    vpcCidr: 10.60.0.0/16
    subnets: [{{zone: us-east-1a, cidr: 10.60.1.0/24}}]
    controlPlane: {{count: 1, machine: {{instanceType: m5.large, imageId: {image}}}}}
"""
    managed = f"""\
kind: Cluster
metadata: {{name: managed}}
spec:
  type: hosted
  version: {VERSION}
  network: {{podCidr: 10.244.0.0/16, serviceCidr: 10.96.0.0/12}}
---
kind: Machine
metadata: {{name: managed-worker-1}}
spec:
  clusterName: managed
  type: baremetal
  ip: {worker.host}
  sshPort: {worker.port}
  credentialRef: {SSH_CREDENTIAL}
  role: MACHINE_ROLE_WORKER
"""
    return {"team-a": onprem, "team-b": cloud + "---\n" + managed}


def phases(env: Environments) -> dict[str, str]:
    """ "Kind tenant/name" -> phase of every cluster and machine, from `tkectl get -o json`."""
    done = env.tkectl("get", "clusters,machines", "-A", "-o", "json")
    if done.returncode != 0:
        raise DemoFailed(f"tkectl get failed: {done.stderr.strip()}")
    doc = json.loads(done.stdout or "{}")
    items = doc.get("items", []) if isinstance(doc, dict) else doc
    out = {}
    for obj in items:
        meta = obj.get("metadata", {})
        kind = "machine" if "clusterName" in obj.get("spec", {}) else "cluster"
        out[f"{kind} {meta.get('tenantId', '')}/{meta.get('name', '')}"] = str(obj.get("status", {}).get("phase", ""))
    return out


async def wait_running(env: Environments, within: float) -> None:
    deadline = time.monotonic() + within
    wanted = {
        "cluster team-a/onprem",
        "cluster team-b/cloud",
        "cluster team-b/managed",
        "machine team-b/managed-worker-1",
    }
    while True:
        for p in env.processes:
            if not p.alive():
                raise DemoFailed(f"{p.name} exited; its log is {p.log}")
        now = await asyncio.to_thread(phases, env)
        failed = sorted(k for k, v in now.items() if v.endswith("FAILED"))
        if failed:
            described = await asyncio.to_thread(env.tkectl, "describe", "clusters", "-A")
            raise DemoFailed(f"{', '.join(failed)} failed\n{described.stdout}")
        if all(now.get(k, "").endswith("RUNNING") for k in wanted):
            return
        if time.monotonic() > deadline:
            raise DemoFailed(f"not all Running after {within:g}s: {now}")
        await asyncio.sleep(1.0)


def instances(ec2: Any) -> str:
    """The EC2 instances moto holds, with their tags, as a table."""
    rows = []
    for reservation in ec2.describe_instances()["Reservations"]:
        for i in reservation["Instances"]:
            tags = ", ".join(f"{t['Key']}={t['Value']}" for t in sorted(i.get("Tags", []), key=lambda t: t["Key"]))
            rows.append(f"{i['InstanceId']}  {i['State']['Name']:<10} {i.get('PrivateIpAddress', ''):<12} {tags}")
    return "\n".join(rows) or "(none)"


@contextlib.asynccontextmanager
async def started(directory: Path) -> AsyncIterator[Environments]:
    """Everything the demo runs, stopped and removed on exit."""
    # The platform's own AWS identity (moto's test account) and the controller's token, for
    # the length of the demo.
    saved = {k: os.environ.get(k) for k in [*aws.ENV, TOKEN_ENV]}
    os.environ.update(aws.ENV)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    with contextlib.ExitStack() as stack:
        stack.callback(_restore, saved)
        moto = stack.enter_context(aws.moto_server())
        ec2 = moto.client("ec2")
        etcd = EtcdProcess(directory / "etcd", name="tke-environments")
        etcd.start(timeout=60)
        stack.callback(etcd.stop)
        processes: list[Process] = []
        stack.callback(_stop_all, processes)
        admin, controller_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        tokens = directory / "tokens.csv"
        tokens.write_text(
            f"{admin},demo-admin,u-demo-admin,tke:platform-admins,default\n"
            f"{controller_token},tke-controller,u-controller,tke:platform-admins,default\n"
        )
        tokens.chmod(0o600)
        api = f"127.0.0.1:{free_port()}"
        (directory / "apiserver.toml").write_text(
            APISERVER_TOML.format(address=api, etcd=etcd.endpoint, tokens=tokens, audit=directory / "audit.jsonl")
        )
        apiserver = _start(
            "tke-apiserver",
            [sys.executable, "-m", "tke.cmd.apiserver", "--config", str(directory / "apiserver.toml")],
            directory / "apiserver.log",
        )
        processes.append(apiserver)
        _wait_serving(apiserver, api)

        machines, world = stack.enter_context(kubeadm_machines(directory / "machines", 2))
        meta, meta_kubeconfig = stack.enter_context(meta_cluster(directory / "meta"))
        master = machines.servers[0]
        async with contextlib.AsyncExitStack() as tasks:
            onprem_api = await tasks.enter_async_context(
                world_api(world, directory / "onprem-api", port=free_port(), server_names=(master.host,))
            )
            await tasks.enter_async_context(meta_controllers(meta, directory / "meta-controllers", world=world))
            aws_apis = StandInAPIs()
            player = CloudInit(ec2, aws_apis, directory / "cloud-init", kubernetes_version=VERSION)
            stack.callback(player.close)
            await tasks.enter_async_context(_task(player.run()))
            apis = Routed(ClusterAPIsByHost(aws_apis), {f"https://{master.host}:6443": onprem_api.url})
            baremetal = {"root_dir": machines.root_dir, "node_name_command": NODE_NAME, "command_timeout": 120.0}
            key = CredentialConfig(private_key_file=str(machines.key.private_key_file))
            etcd_config = EtcdConfig([etcd.endpoint], "/tke")
            config = controller_config(
                api,
                etcd_config,
                credentials={f"{t}/{SSH_CREDENTIAL}": key for t in TENANTS},
                ssh=SSHOptions(known_hosts_file=str(machines.known_hosts), connect_timeout=10),
                cluster_providers={
                    "baremetal": ProviderConfig(options=baremetal),
                    "aws": ProviderConfig(options={"endpoint_url": moto.url, "region": aws.REGION}),
                    "hosted": ProviderConfig(
                        options={"kubeconfig_file": str(meta_kubeconfig), "port": free_port(), **META_NETWORKS}
                    ),
                },
                machine_providers={
                    "baremetal": ProviderConfig(options=baremetal),
                    "aws": ProviderConfig(options={"endpoint_url": moto.url, "region": aws.REGION}),
                },
            )
            config = replace(config, apiserver=ApiserverConfig(address=api, token_env=TOKEN_ENV), workers=4)
            os.environ[TOKEN_ENV] = controller_token
            await tasks.enter_async_context(_task(Controller(config, cluster_apis=apis).run()))
            await credentials_published(etcd_config, *(f"{t}/{SSH_CREDENTIAL}" for t in TENANTS))
            tkeconfig = directory / "tkeconfig"
            configure.set_context(configfile.load(tkeconfig), "demo", {"server": api, "token": admin}, True)
            yield Environments(directory, tkeconfig, api, moto.url, ec2, processes, master, machines.servers[1])


def _restore(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _stop_all(processes: list[Process]) -> None:
    for p in reversed(processes):
        p.stop()


@contextlib.asynccontextmanager
async def _task(coroutine: Any) -> AsyncIterator[None]:
    task = asyncio.create_task(coroutine)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def flow(out: TextIO, directory: Path, *, within: float = WITHIN, keep: bool = False) -> int:
    began = time.monotonic()

    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    say(f"make demo-environments: state in {directory}")
    try:
        async with started(directory) as env:
            say(f"platform up: tke-apiserver at {env.api}; moto's EC2 at {env.moto_url} (AWS_ACCESS_KEY_ID=testing, "
                f"region {aws.REGION})")  # fmt: skip
            image = aws.an_image(env.ec2)
            for tenant, text in manifests(env.master, env.worker, image).items():
                done = await asyncio.to_thread(env.tkectl, "-n", tenant, "create", "-f", "-", stdin=text)
                if done.returncode != 0:
                    raise DemoFailed(f"tkectl -n {tenant} create failed: {done.stderr.strip()}")
                say(f"$ tkectl -n {tenant} create -f -\n{done.stdout.rstrip()}")
            await wait_running(env, within)
            say(f"\nall Running after {time.monotonic() - began:.1f}s")
            for tenant in TENANTS:
                say(f"\n$ tkectl -n {tenant} get clusters,machines")
                got = await asyncio.to_thread(env.tkectl, "-n", tenant, "get", "clusters,machines")
                say(got.stdout.rstrip())
            say(f"\nEC2 instances in moto ({env.moto_url}), from boto3:")
            say(await asyncio.to_thread(instances, env.ec2))
            if keep:
                say(
                    f"\nKept running until Ctrl-C. In another terminal:\n"
                    f"  TKECONFIG={env.tkeconfig} .venv/bin/tkectl get clusters,machines -A\n"
                    f"  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing aws --endpoint-url {env.moto_url} "
                    f"--region {aws.REGION} ec2 describe-instances"
                )
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                await stop.wait()
        status = 0
    except (DemoFailed, RuntimeError, AssertionError) as err:
        say(f"\nmake demo-environments FAILED: {err}")
        status = 1
    say(f"stopped everything it started; {time.monotonic() - began:.1f}s in all")
    return status


def main() -> int:
    if os.geteuid() != 0:
        print("make demo-environments needs root: it runs sshd", file=sys.stderr)
        return 2
    keep = os.environ.get("DEMO_KEEP", "") not in ("", "0")
    with tempfile.TemporaryDirectory(prefix="tke-environments-") as directory:
        return asyncio.run(flow(sys.stdout, Path(directory), keep=keep))


if __name__ == "__main__":
    sys.exit(main())
