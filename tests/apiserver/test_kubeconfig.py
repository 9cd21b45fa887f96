"""ClusterService/GetKubeconfig through a real apiserver (static tokens, the policy centre, a file
audit) and a cluster's API (the stand-in with the cluster's CA): who may have a kubeconfig, and
an admin one; what its certificate says; how long it lives; the admin binding, applied once;
and clusters that have no kubeconfig to give."""

from __future__ import annotations

import base64
import datetime
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf import duration_pb2
from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding

from tests.support.apiserver import Running, local_config, start, stop
from tests.support.controller import publish_credentials
from tests.support.installed import cluster_api, install, masters
from tests.support.kube.running import StandIn
from tests.support.ports import free_port
from tests.support.resolver import ScriptedResolver
from tests.support.waiting import wait_for
from tke.auth.v1 import policy_pb2, policy_pb2_grpc
from tke.internal.apiserver.kubeconfigs import ADMIN_BINDING, KubeconfigConfig, admin_binding, subject
from tke.internal.auth.chain import AuthConfig, PluginConfig
from tke.internal.auth.identity import Identity
from tke.internal.provider.addresses import AddressConfig
from tke.internal.provider.errors import PermanentError
from tke.internal.provider.kube import pki
from tke.internal.provider.kube.access import from_kubeconfig
from tke.internal.provider.kube.api import ClusterAPI
from tke.internal.rpc.errors import ApiError
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc, credential_pb2_grpc

pytestmark = pytest.mark.timeout(60)
Code = grpc.StatusCode

# alice claims system:masters and kubeadm's admin group: neither may reach a certificate.
TOKENS = """\
admin-t,platform,u0,tke:platform-admins,default
alice-t,alice,u1,dev|system:masters|kubeadm:cluster-admins,team-a
ed-t,ed,u2,dev|qa,team-a
vic-t,vic,u3,dev,team-a
bob-t,bob,u4,dev,team-b
sys-t,system:kube-scheduler,u5,dev,team-a
"""
ROLES = {("team-a", "alice"): "admin", ("team-a", "ed"): "editor", ("team-a", "vic"): "viewer",
         ("team-b", "bob"): "editor", ("team-a", "system:kube-scheduler"): "editor"}  # fmt: skip


@dataclass
class Setup:
    api: Running
    cluster: StandIn
    cas: pki.ClusterCAs
    audit: Path

    def clusters(self, token: str) -> cluster_pb2_grpc.ClusterServiceAsyncStub:
        return self.api.channel_with(token)[0]


@pytest.fixture
async def setup(etcd_config: EtcdConfig, tmp_path: Path) -> AsyncIterator[Setup]:
    tokens, audit = tmp_path / "tokens.csv", tmp_path / "audit.jsonl"
    tokens.write_text(TOKENS)
    auth = AuthConfig(
        authenticators=[PluginConfig("token-file", {"path": str(tokens)})],
        authorizers=[PluginConfig("policy")],
        audit=[PluginConfig("jsonl-file", {"path": str(audit)})],
    )
    api = await start(local_config(etcd_config, auth=auth, kubeconfig=KubeconfigConfig(api_timeout=5.0)))
    try:
        # The credential the imported cluster names, as a controller would publish it.
        await publish_credentials(etcd_config, "team-a/k")
        cas = pki.ClusterCAs.generate()
        async with cluster_api(tmp_path / "kube", cas.ca) as standin:
            admin = api.channel_of("admin-t")
            clusters = cluster_pb2_grpc.ClusterServiceStub(admin)
            credentials = credential_pb2_grpc.ClusterCredentialServiceStub(admin)
            policies = policy_pb2_grpc.PolicyServiceStub(admin)
            for i, ((tenant, user), role) in enumerate(ROLES.items()):
                binding = policy_pb2.RoleBinding()
                binding.metadata.name, binding.metadata.tenant_id = f"binding-{i}", tenant
                binding.spec.role = role
                binding.spec.subjects.add(kind="User", name=user)
                await policies.CreateRoleBinding(policy_pb2.CreateRoleBindingRequest(role_binding=binding))
            endpoint = standin.url.removeprefix("https://")
            await install(clusters, credentials, "prod", "team-a", endpoint=endpoint, cas=cas)
            yield Setup(api, standin, cas, audit)
    finally:
        await stop(api)


def request(name: str = "prod", **fields: object) -> cluster_pb2.GetKubeconfigRequest:
    return cluster_pb2.GetKubeconfigRequest(name=name, **fields)  # type: ignore[arg-type]


async def refused(call: object, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    assert err.value.code() == code, err.value.details()
    assert "BEGIN" not in (err.value.details() or "")
    return err.value


def certificate_of(text: str) -> tuple[dict[str, object], x509.Certificate]:
    doc = yaml.safe_load(text)
    user = doc["users"][0]["user"]
    return doc, x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))


async def test_who_may_have_a_kubeconfig_and_an_admin_one(setup: Setup) -> None:
    # Another tenant's cluster does not exist for bob, in his tenant or naming hers.
    await refused(setup.clusters("bob-t").GetKubeconfig(request()), Code.NOT_FOUND)
    await refused(setup.clusters("bob-t").GetKubeconfig(request(tenant_id="team-a")), Code.NOT_FOUND)
    # A viewer reads clusters, and gets no kubeconfig.
    err = await refused(setup.clusters("vic-t").GetKubeconfig(request()), Code.PERMISSION_DENIED)
    assert "may not get-kubeconfig clusters" in (err.details() or "")
    # An editor gets one, not an admin one; the tenant's admin and a platform admin do.
    assert (await setup.clusters("ed-t").GetKubeconfig(request())).kubeconfig
    err = await refused(setup.clusters("ed-t").GetKubeconfig(request(admin=True)), Code.PERMISSION_DENIED)
    assert "may not get-admin-kubeconfig clusters" in (err.details() or "")
    assert (await setup.clusters("alice-t").GetKubeconfig(request(admin=True))).kubeconfig
    assert (await setup.clusters("admin-t").GetKubeconfig(request(tenant_id="team-a", admin=True))).kubeconfig
    # Names Kubernetes keeps for itself are never handed out.
    err = await refused(setup.clusters("sys-t").GetKubeconfig(request()), Code.PERMISSION_DENIED)
    assert "Kubernetes' own" in (err.details() or "")

    # Every call is audited: who, which verb on which cluster, and the outcome; never the key.
    def audited() -> list[dict[str, str]] | None:
        text = setup.audit.read_text() if setup.audit.exists() else ""
        events = [json.loads(line) for line in text.splitlines()]
        found = [e for e in events if e["method"].endswith("/GetKubeconfig")]
        return found if len(found) == 8 else None

    events = await wait_for(audited)
    assert [(e["user"], e["verb"], e["code"]) for e in events] == [
        ("bob", "get-kubeconfig", "NOT_FOUND"),
        ("bob", "get-kubeconfig", "NOT_FOUND"),
        ("vic", "get-kubeconfig", "PERMISSION_DENIED"),
        ("ed", "get-kubeconfig", "OK"),
        ("ed", "get-admin-kubeconfig", "PERMISSION_DENIED"),
        ("alice", "get-admin-kubeconfig", "OK"),
        ("platform", "get-admin-kubeconfig", "OK"),
        ("system:kube-scheduler", "get-kubeconfig", "PERMISSION_DENIED"),
    ]
    assert all(e["resource"] == "clusters" and e["name"] == "prod" for e in events)
    assert "PRIVATE KEY" not in setup.audit.read_text() and "client-key-data" not in setup.audit.read_text()


async def test_the_certificate_is_the_platform_identity_signed_by_the_clusters_ca(setup: Setup) -> None:
    before = datetime.datetime.now(datetime.UTC)
    got = await setup.clusters("alice-t").GetKubeconfig(request())
    doc, cert = certificate_of(got.kubeconfig)
    # CN is the platform user, O its groups without the ones Kubernetes gives power to.
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["dev"]
    assert cert.issuer == setup.cas.ca.cert.subject
    cert.verify_directly_issued_by(setup.cas.ca.cert)
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # Eight hours by default, and the expiry the response reports is the certificate's.
    lives = cert.not_valid_after_utc - before
    assert datetime.timedelta(hours=8) - datetime.timedelta(minutes=1) < lives <= datetime.timedelta(hours=8)
    assert got.expire_time.ToDatetime(datetime.UTC) == cert.not_valid_after_utc
    # The cluster is the control-plane endpoint, trusted through the cluster's CA.
    assert doc["clusters"] == [
        {
            "name": "prod",
            "cluster": {
                "server": setup.cluster.url,
                "certificate-authority-data": base64.b64encode(setup.cas.ca.pair.cert_pem).decode(),
            },
        }
    ]
    assert doc["current-context"] == "alice@prod"


@pytest.mark.parametrize(
    ("seconds", "ok"),
    # Durations no timedelta holds (2**62 seconds, and protobuf's own limit) are refused like any other.
    [
        (3600, True),
        (24 * 3600, True),
        (24 * 3600 + 1, False),
        (59, False),
        (-60, False),
        (2**62, False),
        (-(2**62), False),
    ],
)
async def test_validity_is_bounded(setup: Setup, seconds: int, ok: bool) -> None:
    call = setup.clusters("ed-t").GetKubeconfig(request(validity=duration_pb2.Duration(seconds=seconds)))
    if not ok:
        err = await refused(call, Code.INVALID_ARGUMENT)
        assert "invalid validity: must be between 60 and 86400 seconds" in (err.details() or "")
        return
    before = datetime.datetime.now(datetime.UTC)
    _, cert = certificate_of((await call).kubeconfig)
    lives = cert.not_valid_after_utc - before
    assert datetime.timedelta(seconds=seconds - 60) < lives <= datetime.timedelta(seconds=seconds)


async def test_the_admin_binding_is_applied_once(setup: Setup) -> None:
    # A binding an earlier version made of a user's name goes with the next admin kubeconfig.
    legacy = admin_binding()
    legacy["metadata"]["name"], legacy["subjects"][0] = "tke:cluster-admin:ed", {"kind": "User", "name": "ed"}
    async with masters(setup.cluster) as api:
        await api.apply([legacy])
    first = await setup.clusters("alice-t").GetKubeconfig(request(admin=True))
    async with masters(setup.cluster) as api:
        binding = await api.get(ClusterRoleBinding, ADMIN_BINDING)
        assert binding is not None and binding.metadata is not None and binding.subjects is not None
        assert binding.roleRef.name == "cluster-admin" and binding.roleRef.kind == "ClusterRole"
        assert [(s.kind, s.name) for s in binding.subjects] == [("Group", "tke:kubeconfig:cluster-admins")]
        assert binding.metadata.labels == {"app.kubernetes.io/managed-by": "tke-platform"}
        version = binding.metadata.resourceVersion
        second = await setup.clusters("alice-t").GetKubeconfig(request(admin=True))
        again = await api.get(ClusterRoleBinding, ADMIN_BINDING)
        assert again is not None and again.metadata is not None
        assert again.metadata.resourceVersion == version  # applied again: nothing changed
        bindings, _ = await api.list_objects(ClusterRoleBinding, labels="app.kubernetes.io/managed-by=tke-platform")
        assert [b.metadata.name for b in bindings if b.metadata] == [ADMIN_BINDING]
    # The certificate is the user's with the admin group: never system:masters.
    for got in (first, second):
        _, cert = certificate_of(got.kubeconfig)
        orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        assert orgs == ["dev", "tke:kubeconfig:cluster-admins"]


async def test_cluster_admin_lasts_as_long_as_an_admin_certificate_not_as_the_name(setup: Setup) -> None:
    """Rule: an admin kubeconfig makes its certificate cluster-admin, not the user's name. Before,
    the platform bound the name ("tke:cluster-admin:alice") in the cluster for good: once alice
    stopped being the tenant's admin (demoted, or deleted and another alice created as an
    editor), every plain kubeconfig an editor may ask for was still cluster-admin there."""
    admin = await setup.clusters("alice-t").GetKubeconfig(request(admin=True))
    async with ClusterAPI(from_kubeconfig(admin.kubeconfig)) as api:
        assert await api.get(ClusterRoleBinding, "kubeadm:cluster-admins") is not None
    # alice is an editor now: the name "alice" is all the platform and the cluster know of her.
    policies = policy_pb2_grpc.PolicyServiceStub(setup.api.channel_of("admin-t"))
    demoted = policy_pb2.RoleBinding()
    demoted.metadata.name, demoted.metadata.tenant_id, demoted.spec.role = "binding-0", "team-a", "editor"
    demoted.spec.subjects.add(kind="User", name="alice")
    await policies.UpdateRoleBinding(policy_pb2.UpdateRoleBindingRequest(role_binding=demoted))
    await refused(setup.clusters("alice-t").GetKubeconfig(request(admin=True)), Code.PERMISSION_DENIED)
    plain = await setup.clusters("alice-t").GetKubeconfig(request())
    async with ClusterAPI(from_kubeconfig(plain.kubeconfig)) as api:
        with pytest.raises(PermanentError, match="403"):
            await api.get(ClusterRoleBinding, "kubeadm:cluster-admins")
    # The admin certificate she was given works until it expires (at most kubeconfig.max_validity).
    async with ClusterAPI(from_kubeconfig(admin.kubeconfig)) as api:
        assert await api.get(ClusterRoleBinding, "kubeadm:cluster-admins") is not None


async def test_clusters_without_a_kubeconfig_to_give_say_why(setup: Setup) -> None:
    admin = setup.clusters("admin-t")
    # Created, not installed yet: no credential.
    fresh = cluster_pb2.Cluster()
    fresh.metadata.name, fresh.metadata.tenant_id = "later", "team-a"
    fresh.spec.type, fresh.spec.version = "baremetal", "1.30.2"
    fresh.spec.network.pod_cidr, fresh.spec.network.service_cidr = "10.244.0.0/16", "10.96.0.0/12"
    await admin.Create(cluster_pb2.CreateClusterRequest(cluster=fresh))
    err = await refused(setup.clusters("ed-t").GetKubeconfig(request("later")), Code.FAILED_PRECONDITION)
    assert 'cluster "later" has no kubeconfig to give: the platform has not made its CA yet' in (err.details() or "")
    # Imported: the platform never holds its CA.
    imported = cluster_pb2.Cluster()
    imported.metadata.name, imported.metadata.tenant_id = "elsewhere", "team-a"
    imported.spec.type, imported.spec.api_server_url, imported.spec.credential_ref = "imported", "https://h:6443", "k"
    await admin.Create(cluster_pb2.CreateClusterRequest(cluster=imported))
    err = await refused(setup.clusters("ed-t").GetKubeconfig(request("elsewhere")), Code.FAILED_PRECONDITION)
    assert "it is imported" in (err.details() or "")


async def test_an_unreachable_cluster_gives_no_admin_binding_but_a_kubeconfig(setup: Setup) -> None:
    channel = setup.api.channel_of("admin-t")
    admin = cluster_pb2_grpc.ClusterServiceStub(channel)
    credentials = credential_pb2_grpc.ClusterCredentialServiceStub(channel)
    port = free_port()  # nothing listens there
    await install(admin, credentials, "dark", "team-a", endpoint=f"127.0.0.1:{port}", cas=pki.ClusterCAs.generate())
    err = await refused(setup.clusters("alice-t").GetKubeconfig(request("dark", admin=True)), Code.UNAVAILABLE)
    assert "cannot make 'alice' cluster-admin now" in (err.details() or "")
    got = await setup.clusters("alice-t").GetKubeconfig(request("dark"))
    assert yaml.safe_load(got.kubeconfig)["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{port}"


def test_names_that_cannot_be_in_a_certificate() -> None:
    claimed = ("dev", "system:masters", "dev", "kubeadm:x", "tke:kubeconfig:cluster-admins", "ops")
    user, groups = subject(Identity("ann", groups=claimed))
    assert (user, groups) == ("ann", ("dev", "ops"))
    with pytest.raises(ApiError) as err:
        subject(Identity("a" * 65))
    assert err.value.code == Code.FAILED_PRECONDITION and "longer than 64 characters" in err.value.message
    with pytest.raises(ApiError) as err:
        subject(Identity("system:node:n1"))
    assert err.value.code == Code.PERMISSION_DENIED


async def test_the_admin_binding_goes_only_to_an_address_the_policy_admits(
    etcd_config: EtcdConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The endpoint is a name from the tenant's spec, answered by a DNS the tenant may control:
    the apiserver connects for the admin binding only to an address `[machines]` admits, from
    the lookup it checked, as tke-controller does (security.md, "DNS rebinding")."""
    tokens = tmp_path / "tokens.csv"
    tokens.write_text(TOKENS)
    auth = AuthConfig(
        authenticators=[PluginConfig("token-file", {"path": str(tokens)})], authorizers=[PluginConfig("policy")]
    )
    # Loopback is not admitted (the default policy): the name below answers 127.0.0.1.
    api = await start(local_config(etcd_config, auth=auth, machines=AddressConfig()))
    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen(8)
    trap.setblocking(False)
    port = trap.getsockname()[1]
    try:
        with ScriptedResolver({"api.rebind.example": ["127.0.0.1"]}).patched(monkeypatch):
            channel = api.channel_of("admin-t")
            admin = cluster_pb2_grpc.ClusterServiceStub(channel)
            credentials = credential_pb2_grpc.ClusterCredentialServiceStub(channel)
            endpoint = f"api.rebind.example:{port}"
            await install(admin, credentials, "rebound", "team-a", endpoint=endpoint, cas=pki.ClusterCAs.generate())
            err = await refused(admin.GetKubeconfig(request("rebound", tenant_id="team-a", admin=True)),
                                Code.FAILED_PRECONDITION)  # fmt: skip
            assert "127.0.0.1 is a loopback address" in (err.details() or ""), err.details()
        with pytest.raises(BlockingIOError):
            trap.accept()  # nothing connected to 127.0.0.1
    finally:
        trap.close()
        await stop(api)
