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

import grpc

from tests.security.platform import Platform
from tests.support.rpc import bad_request_fields, expect_error
from tests.support.waiting import wait_for
from tke.auth.v1 import accounts_pb2, accounts_pb2_grpc
from tke.platform.v1 import cluster_pb2

Code = grpc.StatusCode
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
