"""Rule: a call naming an object or tenant longer than any that exists (ATTRIBUTE_CHARS,
tke.internal.auth.attributes) is INVALID_ARGUMENT naming the field, before any authorizer sees it.

The authorizers keep decisions keyed by the name and tenant a call names (the policy centre up
to 10,000 of them until roles or bindings change), and the name reached them unvalidated: 300
Gets of a tenant admin naming distinct 1 MB clusters grew the apiserver by 700 MiB, and at
10,000 kept decisions of up to 4 MiB (the request limit) it would hold tens of GiB. Now nothing
of such a call is kept, and its audit event carries the name cut to ATTRIBUTE_CHARS.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import field_mask_pb2

from tests.security.platform import Platform
from tests.support.apiserver import cluster
from tests.support.rpc import bad_request_fields, expect_error
from tests.support.waiting import wait_for
from tke.auth.v1 import accounts_pb2, policy_pb2
from tke.internal.auth.attributes import ATTRIBUTE_CHARS
from tke.platform.v1 import cluster_pb2, event_pb2, machine_pb2, quota_pb2
from tke.plugins.authz.policy import PolicyCentre

LONG = "x" * (ATTRIBUTE_CHARS + 1)
HUGE = "y" * 1_000_000


def kept_names(platform: Platform) -> list[str]:
    """The object names of every decision the policy centre keeps."""
    centre = next(p for p in platform.api.apiserver.auth.plugins if isinstance(p, PolicyCentre))
    return [key[4] for kept in centre._decisions.values() for key in kept]


async def test_names_and_tenants_longer_than_any_are_refused_before_authorization(platform: Platform) -> None:
    alice = await platform.member("alice", "team-a", "admin")
    await alice.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("c1")))
    long_cluster = cluster(LONG)
    calls: list[tuple[Any, str]] = [
        (alice.clusters.Get(cluster_pb2.GetClusterRequest(name=HUGE)), "name"),
        (alice.clusters.Get(cluster_pb2.GetClusterRequest(name=LONG)), "name"),
        (alice.clusters.Get(cluster_pb2.GetClusterRequest(name="c1", tenant_id=LONG)), "tenant_id"),
        (alice.clusters.Delete(cluster_pb2.DeleteClusterRequest(name=HUGE)), "name"),
        (alice.clusters.GetKubeconfig(cluster_pb2.GetKubeconfigRequest(name=HUGE)), "name"),
        (alice.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=long_cluster)), "cluster.metadata.name"),
        (
            alice.clusters.Update(
                cluster_pb2.UpdateClusterRequest(
                    cluster=long_cluster, update_mask=field_mask_pb2.FieldMask(paths=["metadata.labels"])
                )
            ),
            "cluster.metadata.name",
        ),
        (alice.clusters.List(cluster_pb2.ListClustersRequest(tenant_id=LONG)), "tenant_id"),
        (alice.machines.Get(machine_pb2.GetMachineRequest(name=HUGE)), "name"),
        (alice.events.Get(event_pb2.GetEventRequest(name=HUGE)), "name"),
        (alice.quotas.Get(quota_pb2.GetQuotaRequest(tenant_id=LONG)), "tenant_id"),
        (alice.policy.GetRole(policy_pb2.GetRoleRequest(name=HUGE)), "name"),
        (alice.policy.DeleteRoleBinding(policy_pb2.DeleteRoleBindingRequest(name=HUGE)), "name"),
        (alice.auth.DeleteUser(accounts_pb2.DeleteUserRequest(name=HUGE)), "name"),
        (alice.auth.ListAPIKeys(accounts_pb2.ListAPIKeysRequest(user=HUGE)), "user"),
    ]
    for call, field in calls:
        err = await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT)
        assert bad_request_fields(err) == [field], err.details()
        assert f"no {'tenant' if field.endswith('tenant_id') else 'name'} is longer than" in (err.details() or "")
    stream = alice.clusters.Watch(cluster_pb2.WatchClustersRequest(tenant_id=LONG))
    err = await expect_error(stream.read(), grpc.StatusCode.INVALID_ARGUMENT)
    assert bad_request_fields(err) == ["tenant_id"]

    assert all(len(name) <= ATTRIBUTE_CHARS for name in kept_names(platform))

    def refused() -> list[dict[str, Any]]:
        events = [e for e in platform.audit_events() if e.get("code") == "INVALID_ARGUMENT"]
        return events if len(events) == len(calls) + 1 else []

    audited = await wait_for(refused, what="an audit event for every refused call")
    assert all(len(str(e.get("name", ""))) <= ATTRIBUTE_CHARS for e in audited)

    # Names as long as may exist are still the authorizer's and the handler's to judge.
    assert (await alice.clusters.Get(cluster_pb2.GetClusterRequest(name="c1"))).metadata.name == "c1"
    await expect_error(
        alice.clusters.Get(cluster_pb2.GetClusterRequest(name="z" * ATTRIBUTE_CHARS)), grpc.StatusCode.NOT_FOUND
    )
