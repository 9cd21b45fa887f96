"""`tkectl get kubeconfig CLUSTER [--admin] > ~/.kube/config`, as a user runs it: the real
tke-apiserver binary (static tokens, the policy centre, a file audit, debug logs), the real
tkectl, and the cluster's API (the stand-in, trusting client certificates of the cluster's CA,
as kube-apiserver's --client-ca-file does). The kubeconfig is read by lightkube's own
KubeConfig and client, nobody's code here: the API sees the platform user and groups, RBAC
lets the --admin user list nodes and the other one not; and neither the log nor the audit
file of the apiserver ever holds the kubeconfig or its key."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import lightkube
import pytest
import tomli_w
import yaml
from cryptography import x509
from grpc_health.v1 import health_pb2
from lightkube.codecs import from_dict
from lightkube.core.exceptions import ApiError
from lightkube.resources.authentication_v1 import SelfSubjectReview
from lightkube.resources.core_v1 import Node

from tests.support import LOOPBACK_NETWORKS
from tests.support.installed import cluster_api, install, masters
from tests.support.kube import objects
from tests.support.ports import free_port
from tests.support.rpc import health_check
from tke.auth.v1 import policy_pb2, policy_pb2_grpc
from tke.internal.provider.kube import pki
from tke.internal.storage.etcd import EtcdConfig
from tke.internal.tkectl.commands.kubeconfig import parse_validity
from tke.internal.tkectl.errors import CliError
from tke.platform.v1 import cluster_pb2_grpc, credential_pb2_grpc

pytestmark = pytest.mark.timeout(120)

BINARY = str(Path(sys.executable).parent / "tke-apiserver")
TKECTL = str(Path(sys.executable).parent / "tkectl")
TOKENS = """\
admin-t,platform,u0,tke:platform-admins,default
alice-t,alice,u1,dev|ops,team-a
ed-t,ed,u2,dev,team-a
vic-t,vic,u3,dev,team-a
"""
ROLES = {"alice": "admin", "ed": "editor", "vic": "viewer"}


@contextlib.asynccontextmanager
async def apiserver(etcd_config: EtcdConfig, tmp: Path) -> AsyncIterator[str]:
    """The binary with debug logs as JSON lines in tmp/apiserver.log, its audit in tmp/audit.jsonl."""
    (tmp / "tokens.csv").write_text(TOKENS)
    port = free_port()
    config = {
        "metrics_address": "",
        "log_level": "debug",
        "log_format": "json",
        "listen": {"address": f"127.0.0.1:{port}"},
        "etcd": {"endpoints": list(etcd_config.endpoints), "prefix": etcd_config.prefix},
        # The cluster's API server (the stand-in) is on loopback.
        "machines": {"allowed_networks": LOOPBACK_NETWORKS},
        "auth": {
            "authenticators": [{"plugin": "token-file", "options": {"path": str(tmp / "tokens.csv")}}],
            "authorizers": [{"plugin": "policy"}],
            "audit": [{"plugin": "jsonl-file", "options": {"path": str(tmp / "audit.jsonl")}}],
        },
    }
    (tmp / "apiserver.toml").write_text(tomli_w.dumps(config))
    with (tmp / "apiserver.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(BINARY, "--config", str(tmp / "apiserver.toml"), stderr=log)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await health_check(channel)(health_pb2.HealthCheckRequest(), timeout=30, wait_for_ready=True)
        yield f"127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def tkectl(home: Path, server: str, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TKECONFIG": str(home / "tke")}
    return subprocess.run(
        [TKECTL, "--server", server, "--token", token, *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


async def whoami(kubeconfig: Path) -> tuple[str, list[str], bool]:
    """(user, groups, may list nodes) as the cluster's API sees the kubeconfig's holder."""
    client = lightkube.AsyncClient(config=lightkube.KubeConfig.from_file(kubeconfig))
    try:
        review = await client.create(SelfSubjectReview())
        assert review.status is not None and review.status.userInfo is not None
        info = review.status.userInfo
        try:
            nodes = [n.metadata.name async for n in client.list(Node) if n.metadata]
            assert nodes == ["node-1"]
            allowed = True
        except ApiError as err:
            assert err.status.code == 403, err.status.message
            allowed = False
        return info.username or "", list(info.groups or []), allowed
    finally:
        await client.close()


def test_validity_is_a_duration() -> None:
    assert [parse_validity(t).total_seconds() for t in ("8h", "90m", "1h30m", "3600s", "600")] == [
        28800,
        5400,
        5400,
        3600,
        600,
    ]
    for bad in ("", "8x", "h", "1h 30m", "-1h"):
        with pytest.raises(CliError):
            parse_validity(bad)


async def test_tkectl_kubeconfigs_work_against_the_cluster_and_are_never_logged(
    etcd_config: EtcdConfig, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    cas = pki.ClusterCAs.generate()
    async with apiserver(etcd_config, tmp_path) as server, cluster_api(tmp_path / "kube", cas.ca) as cluster:
        channel = grpc.aio.secure_channel(
            server,
            grpc.composite_channel_credentials(
                grpc.local_channel_credentials(), grpc.access_token_call_credentials("admin-t")
            ),
        )
        async with channel:
            policies = policy_pb2_grpc.PolicyServiceStub(channel)
            for i, (user, role) in enumerate(ROLES.items()):
                binding = policy_pb2.RoleBinding()
                binding.metadata.name, binding.metadata.tenant_id = f"binding-{i}", "team-a"
                binding.spec.role = role
                binding.spec.subjects.add(kind="User", name=user)
                await policies.CreateRoleBinding(policy_pb2.CreateRoleBindingRequest(role_binding=binding))
            endpoint = cluster.url.removeprefix("https://")
            await install(
                cluster_pb2_grpc.ClusterServiceStub(channel),
                credential_pb2_grpc.ClusterCredentialServiceStub(channel),
                "prod", "team-a", endpoint=endpoint, cas=cas,
            )  # fmt: skip
        async with masters(cluster) as api:
            await api.client.create(from_dict(objects.node("node-1")))

        # An editor: a kubeconfig that the cluster authenticates, without rights in it yet.
        done = tkectl(home, server, "ed-t", "get", "kubeconfig", "prod", "--validity", "2h")
        assert done.returncode == 0, done.stderr
        assert "kubeconfig for cluster prod, valid until" in done.stderr and "Traceback" not in done.stderr
        (home / ".kube/config").write_text(done.stdout)
        assert await whoami(home / ".kube/config") == ("ed", ["dev", "system:authenticated"], False)
        cert = x509.load_pem_x509_certificate(
            base64.b64decode(yaml.safe_load(done.stdout)["users"][0]["user"]["client-certificate-data"])
        )
        lives = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
        assert datetime.timedelta(hours=2) - datetime.timedelta(minutes=1) < lives <= datetime.timedelta(hours=2)

        # The tenant's admin, with --admin: cluster-admin through the platform's group and binding.
        done = tkectl(home, server, "alice-t", "get", "kubeconfig", "prod", "--admin")
        assert done.returncode == 0, done.stderr
        (home / ".kube/config").write_text(done.stdout)
        groups = ["dev", "ops", "tke:kubeconfig:cluster-admins", "system:authenticated"]
        assert await whoami(home / ".kube/config") == ("alice", groups, True)
        kubeconfigs = [done.stdout]

        # A viewer gets nothing on stdout, a message and the exit code of a refusal.
        done = tkectl(home, server, "vic-t", "get", "kubeconfig", "prod")
        assert (done.returncode, done.stdout) == (5, "")
        assert done.stderr.startswith("tkectl: PERMISSION_DENIED: user 'vic' may not get-kubeconfig clusters/prod")
        done = tkectl(home, server, "ed-t", "get", "kubeconfig", "prod", "--validity", "soon")
        assert done.returncode == 2 and "--validity takes a duration such as 8h" in done.stderr
        done = tkectl(home, server, "ed-t", "get", "clusters", "--admin")
        assert done.returncode == 2 and "--admin and --validity are for `tkectl get kubeconfig CLUSTER`" in done.stderr

    # Stopped: the whole log and audit are on disk. The access log saw the calls; neither file
    # holds any part of a kubeconfig.
    log = (tmp_path / "apiserver.log").read_text()
    audit = (tmp_path / "audit.jsonl").read_text()
    assert log.count("GetKubeconfig") >= 3, log[-2000:]
    events = [json.loads(line) for line in audit.splitlines()]
    assert [(e["user"], e["verb"], e["code"]) for e in events if e["method"].endswith("/GetKubeconfig")] == [
        ("ed", "get-kubeconfig", "OK"),
        ("alice", "get-admin-kubeconfig", "OK"),
        ("vic", "get-kubeconfig", "PERMISSION_DENIED"),
    ]
    for text in kubeconfigs:
        user = yaml.safe_load(text)["users"][0]["user"]
        secrets = [user["client-key-data"], user["client-certificate-data"]]
        secrets += [base64.b64decode(s).decode().splitlines()[1] for s in secrets]  # a line of each PEM
        for secret in secrets:
            assert secret not in log and secret not in audit
    for marker in ("PRIVATE KEY", "BEGIN CERTIFICATE", "client-key-data"):
        assert marker not in log and marker not in audit
