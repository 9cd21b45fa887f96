"""The authenticator and authorizer seams: unions, adapters and the fail-closed zero value."""

from __future__ import annotations

import pytest

from tke.internal.auth import authn, authz
from tke.internal.auth.attributes import attributes_for, verb_and_resource
from tke.internal.auth.identity import Identity

ALICE = Identity(user="alice", tenant_id="team-a")


async def test_authenticator_union_first_claim_wins_and_errors_stop() -> None:
    async def nobody(token: str) -> Identity | None:
        return None

    async def alice(token: str) -> Identity | None:
        return ALICE if token == "a" else None

    async def broken(token: str) -> Identity | None:
        raise authn.AuthenticationError("expired")

    union = authn.Union([authn.TokenFunc(nobody), authn.TokenFunc(alice), authn.TokenFunc(broken)])
    assert await union.authenticate(authn.Credentials({"authorization": "Bearer a"})) == ALICE
    with pytest.raises(authn.AuthenticationError):
        await union.authenticate(authn.Credentials({"authorization": "Bearer other"}))
    assert await authn.Union([]).authenticate(authn.Credentials({})) is None
    assert authn.Credentials({"authorization": "Basic x"}).bearer_token == ""


async def test_authorizer_union_asks_on_no_opinion_and_denies_when_nobody_allows() -> None:
    def fixed(decision: authz.Decision, reason: str) -> authz.AuthorizerFunc:
        async def fn(attributes: authz.Attributes) -> tuple[authz.Decision, str]:
            return decision, reason

        return authz.AuthorizerFunc(fn)

    attrs = authz.Attributes(ALICE, "get", "clusters", "c1", "team-a")
    quiet = fixed(authz.Decision.NO_OPINION, "not mine")
    assert await authz.Union([quiet, fixed(authz.Decision.ALLOW, "ok")]).authorize(attrs) == (
        authz.Decision.ALLOW,
        "ok",
    )
    assert (await authz.Union([fixed(authz.Decision.DENY, "no"), fixed(authz.Decision.ALLOW, "ok")]).authorize(attrs))[
        0
    ] is authz.Decision.DENY
    decision, reason = await authz.Union([quiet]).authorize(attrs)
    assert decision is authz.Decision.DENY and "not mine" in reason
    assert authz.Decision(0) is authz.Decision.DENY


def test_calls_become_attributes() -> None:
    assert verb_and_resource("/tke.platform.v1.ClusterService/UpdateStatus") == ("update-status", "clusters")
    assert verb_and_resource("/tke.auth.v1.PolicyService/ListRoleBindings") == ("list", "rolebindings")
    assert verb_and_resource("/tke.ipam.v1.IPAMService/Allocate") == ("allocate", "ipam")
    from tke.auth.v1 import accounts_pb2
    from tke.platform.v1 import cluster_pb2

    create = cluster_pb2.CreateClusterRequest()
    create.cluster.metadata.name = "c1"
    a = attributes_for("/tke.platform.v1.ClusterService/Create", create, ALICE)
    assert (a.verb, a.resource, a.name, a.tenant) == ("create", "clusters", "c1", "team-a")
    own = attributes_for(
        "/tke.auth.v1.AuthService/DeleteAPIKey", accounts_pb2.DeleteAPIKeyRequest(id="alice.abc"), ALICE
    )
    assert (own.verb, own.resource, own.name) == ("delete", "apikeys", "alice")
    # A kubeconfig is its own verb on the cluster, and an admin one another.
    method = "/tke.platform.v1.ClusterService/GetKubeconfig"
    plain = attributes_for(method, cluster_pb2.GetKubeconfigRequest(name="prod", tenant_id="team-b"), ALICE)
    assert (plain.verb, plain.resource, plain.name, plain.tenant) == ("get-kubeconfig", "clusters", "prod", "team-b")
    admin = attributes_for(method, cluster_pb2.GetKubeconfigRequest(name="prod", admin=True), ALICE)
    assert (admin.verb, admin.resource, admin.tenant) == ("get-admin-kubeconfig", "clusters", "team-a")
