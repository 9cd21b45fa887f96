"""Rule: what a tenant (or anyone, before authentication) writes as a string is only text where
it lands outside the apiserver: one line of printable characters in the audit log and the JSON
process log, never a second record or a terminal control.

Probed as an attacker would: a Login with a user name, and a tenant's Get with a cluster name,
holding a line separator (U+2028), NEL (U+0085), a forged JSON record, a bidirectional override
(U+202E) and CSI (U+009B). JSON escapes only C0 controls: before, these went into the audit file
as they came, and a reader splitting lines as Python's `splitlines` does read a second record
`{"level":"error","msg":"forged"}` (6 lines by newline were 8 by splitlines)."""

from __future__ import annotations

import json
from pathlib import Path

import grpc

from tests.security.platform import Platform
from tests.support.apiserver import cluster, machine
from tests.support.rpc import bad_request_fields, expect_error
from tests.support.sshd import LAB_ADDRESSES, ssh_machines
from tests.support.waiting import wait_for
from tke.auth.v1 import accounts_pb2, accounts_pb2_grpc
from tke.internal.provider import nodes
from tke.internal.provider.credentials import ConfiguredCredentials, CredentialConfig
from tke.internal.provider.ssh import SSHDialer, SSHOptions, Target
from tke.platform.v1 import cluster_pb2, machine_pb2

Code = grpc.StatusCode
MAX_COMPONENT_ARGS_BYTES = 16 * 1024  # the rule's bound (validation.MAX_COMPONENT_ARGS_BYTES)
HOSTILE = 'x\u2028{"level":"error","msg":"forged"}\x85y\u202ez\x9b2J'


async def test_a_callers_strings_are_one_printable_audit_line(platform: Platform) -> None:
    alice = await platform.member("alice", "team-a", "admin")
    await expect_error(alice.clusters.Get(cluster_pb2.GetClusterRequest(name=HOSTILE)), Code.NOT_FOUND)
    anyone = accounts_pb2_grpc.AuthServiceStub(platform.api.channel)
    await expect_error(
        anyone.Login(accounts_pb2.LoginRequest(username=HOSTILE, password="wrong")), Code.UNAUTHENTICATED
    )

    def written() -> str | None:
        text = platform.audit.read_text(encoding="utf-8")
        done = '"code":"UNAUTHENTICATED"' in text and "ClusterService/Get" in text
        return text if done else None

    text = await wait_for(written, what="both calls in the audit file")
    lines = text.split("\n")[:-1]
    assert text.splitlines() == lines, "a string split an audit line"
    assert all(line.isprintable() for line in lines)
    events = [json.loads(line) for line in lines]
    # The strings are all there, as the caller sent them, for whoever parses the JSON.
    assert any(e["name"] == HOSTILE and e["method"].endswith("ClusterService/Get") for e in events)
    assert any(e["name"] == HOSTILE and e["method"].endswith("AuthService/Login") for e in events)


async def test_a_hosted_clusters_fixed_flags_are_refused_however_spelled(platform: Platform) -> None:
    # kube-apiserver reads "_" as "-" in a flag's name: etcd_servers_overrides is
    # --etcd-servers-overrides, which would point the tenant's API server at other etcd servers
    # in the meta cluster every tenant shares. It passed the check of the name as written.
    alice = await platform.member("alice", "team-a", "admin")
    c = cluster_pb2.Cluster()
    c.metadata.name = "shop"
    c.spec.type, c.spec.version = "hosted", "1.31.2"
    c.spec.network.pod_cidr, c.spec.network.service_cidr = "10.244.0.0/16", "10.96.0.0/12"
    c.spec.extra_args["kube-apiserver"].args["etcd_servers_overrides"] = "/secrets#https://etcd.tke-other.svc:2379"
    err = await expect_error(alice.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c)), Code.INVALID_ARGUMENT)
    assert bad_request_fields(err) == ["cluster.spec.extra_args[kube-apiserver]"]
    assert "etcd_servers_overrides: set by the platform" in (err.details() or "")
    del c.spec.extra_args["kube-apiserver"].args["etcd_servers_overrides"]
    c.spec.extra_args["kube-apiserver"].args["audit_log_maxage"] = "30"  # any other flag, spelled so, is the tenant's
    await alice.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c))


def with_proxy_args(c: cluster_pb2.Cluster, size: int) -> cluster_pb2.Cluster:
    """`c` with kube-proxy extra args of `size` bytes as --flag=value, values within 4096."""
    args = c.spec.extra_args["kube-proxy"].args
    while size > 0:
        name = f"f{len(args):03d}"
        value = "v" * min(4000, size - len(f"--{name}="))
        args[name] = value
        size -= len(f"--{name}={value}")
    return c


async def test_a_components_extra_args_fit_every_command_they_reach(platform: Platform, tmp_path: Path) -> None:
    # kube-proxy's extra args reach every command on every machine of the cluster as one
    # variable, and Linux takes at most 128 KiB in one: 40 flags of 4 KiB (a 164 KB cluster)
    # made every command "Argument list too long" until the cluster went Failed.
    alice = await platform.member("alice", "team-a", "admin")
    big = with_proxy_args(cluster("big"), 40 * 4096)
    err = await expect_error(
        alice.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=big)), Code.INVALID_ARGUMENT
    )
    assert bad_request_fields(err) == ["cluster.spec.extra_args['kube-proxy']"]
    assert "at most 16384 per component" in (err.details() or "")
    # At the bound, shell characters and all, it is one value in a command on a real machine.
    edge = with_proxy_args(cluster("edge"), MAX_COMPONENT_ARGS_BYTES - 100)
    args = edge.spec.extra_args["kube-proxy"].args
    shell = "$(touch pwned)`touch pwned`'\"; touch pwned #"
    args["x"] = shell + "v" * (
        MAX_COMPONENT_ARGS_BYTES - sum(len(f"--{k}={v}") for k, v in args.items()) - 4 - len(shell)
    )
    assert sum(len(f"--{k}={v}") for k, v in args.items()) == MAX_COMPONENT_ARGS_BYTES
    created = await alice.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=edge))
    created.status.control_plane_endpoint = "203.0.113.10:6443"  # as once installed
    env = nodes.environment(created, nodes.Paths(), node_ip="192.0.2.10", node_name="n1", role="master")
    with ssh_machines(tmp_path / "ssh", 1) as machine:
        creds = ConfiguredCredentials({"t1/key": CredentialConfig(private_key_file=str(machine.key.private_key_file))})
        dialer = SSHDialer(creds, SSHOptions(known_hosts_file=str(machine.known_hosts)), LAB_ADDRESSES)
        server = machine.servers[0]
        async with dialer.connect(Target(server.host, server.port, "root", "key", "t1")) as channel:
            printed = await channel.run(f'cd {tmp_path} && printf %s "$TKE_KUBE_PROXY_ARGS"', env=env)
    assert printed == env["TKE_KUBE_PROXY_ARGS"] and len(printed) == MAX_COMPONENT_ARGS_BYTES + len(args) - 1
    assert not (tmp_path / "pwned").exists()


async def test_a_machine_label_its_kubelet_would_refuse_is_refused(platform: Platform) -> None:
    # A machine's labels are its kubelet's --node-labels, and a kubelet refuses to start with one
    # under kubernetes.io or k8s.io it may not set on itself (NodeRestriction: no node names itself
    # a control-plane node); node-role.kubernetes.io/worker failed every join of the machine.
    alice = await platform.member("alice", "team-a", "admin")
    await alice.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("c1")))
    refused = machine("w1", "c1")
    refused.spec.labels.update({"node-role.kubernetes.io/worker": "", "app.kubernetes.io/name": "x", "pool": "a"})
    err = await expect_error(
        alice.machines.Create(machine_pb2.CreateMachineRequest(machine=refused)), Code.INVALID_ARGUMENT
    )
    assert sorted(bad_request_fields(err)) == [
        "machine.spec.labels['app.kubernetes.io/name']",
        "machine.spec.labels['node-role.kubernetes.io/worker']",
    ]
    assert "a kubelet may not set this label on its Node" in (err.details() or "")
    master = cluster("c2")
    master.spec.machines.add(ip="192.0.2.77", labels={"node-role.kubernetes.io/infra": ""})
    err = await expect_error(
        alice.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=master)), Code.INVALID_ARGUMENT
    )
    assert bad_request_fields(err) == ["cluster.spec.machines[0].labels['node-role.kubernetes.io/infra']"]
    # What a kubelet may set is the tenant's to choose.
    fine = machine("w1", "c1")
    fine.spec.labels.update({"node.kubernetes.io/pool": "a", "topology.kubernetes.io/zone": "z1", "example.com/x": "y"})
    await alice.machines.Create(machine_pb2.CreateMachineRequest(machine=fine))


async def test_digits_and_names_are_ascii(platform: Platform) -> None:
    # Python's \d is any Unicode digit: a version with a full-width 2 and a region with an
    # Arabic-Indic 1 passed, and failed only where they landed (apt-get, kubeadm, image tags,
    # botocore).
    alice = await platform.member("alice", "team-a", "admin")
    versioned = cluster("v1")
    versioned.spec.version = "1.30.\uff12"
    err = await expect_error(
        alice.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=versioned)), Code.INVALID_ARGUMENT
    )
    assert bad_request_fields(err) == ["cluster.spec.version"]
    regional = cluster("r1")
    regional.spec.type = "aws"
    regional.spec.ClearField("machines")
    regional.spec.aws.region = "eu-west-\u0661"
    regional.spec.aws.vpc_cidr = "10.60.0.0/16"
    regional.spec.aws.subnets.add(zone="eu-west-1a", cidr="10.60.1.0/24")
    regional.spec.aws.control_plane.count = 1
    regional.spec.aws.control_plane.machine.instance_type = "t3.large"
    regional.spec.aws.control_plane.machine.image_id = "ami-0123456789abcdef0"
    err = await expect_error(
        alice.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=regional)), Code.INVALID_ARGUMENT
    )
    assert bad_request_fields(err) == ["cluster.spec.aws.region"]
    regional.spec.aws.region = "eu-west-1"
    await alice.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=regional))
    # A VIP's interface name goes into keepalived's configuration, and Linux's into 15 bytes.
    named = cluster("n1")
    named.spec.machines.add(ip="192.0.2.71")
    named.spec.control_plane_vip.address = "192.0.2.72"
    named.spec.control_plane_vip.interface = "eth\u0660"  # an Arabic-Indic 0
    err = await expect_error(
        alice.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=named)), Code.INVALID_ARGUMENT
    )
    assert "cluster.spec.control_plane_vip.interface" in bad_request_fields(err)


async def test_a_version_is_short_and_a_hosted_one_an_image_tag(platform: Platform) -> None:
    # A version goes into every command's environment, package names and image tags: its suffix
    # had no bound (a 200 KB version broke every command as 32 flags of 4 KiB did), and a hosted
    # control plane's images are tagged v<version>, where "+" is no tag (no pod could pull).
    alice = await platform.member("alice", "team-a", "admin")
    long = cluster("long")
    long.spec.version = "1.30.2-" + "a" * 200_000
    err = await expect_error(
        alice.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=long)), Code.INVALID_ARGUMENT
    )
    assert bad_request_fields(err) == ["cluster.spec.version"]
    assert "at most 64 characters" in (err.details() or "")
    hosted = cluster("shop")
    hosted.spec.type, hosted.spec.version = "hosted", "1.31.2+build.1"
    err = await expect_error(
        alice.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=hosted)), Code.INVALID_ARGUMENT
    )
    assert bad_request_fields(err) == ["cluster.spec.version"]
    assert "cannot be part of an image tag" in (err.details() or "")
    hosted.spec.version = "1.31.2-rc.1"
    await alice.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=hosted))
