"""Kubeconfigs for the users of the clusters the platform installed (ClusterService/
GetKubeconfig), TKE's way: a short-lived client certificate signed by the cluster's CA, whose
common name is the platform user and whose organizations are the user's groups, so that
Kubernetes RBAC in the cluster sees the platform identity. The server is the cluster's
control-plane endpoint, the CA data the cluster's CA.

Invariants:
- Authorization is the interceptor chain's: the verb get-kubeconfig on the cluster, or
  get-admin-kubeconfig with `admin` (tke.internal.auth.attributes). Tenancy is Get's: another
  tenant's cluster is NOT_FOUND.
- The CA comes from the cluster's ClusterCredential, read here from the store, never through
  the public API (which answers platform administrators only).
- The kubeconfig and its key exist only in the response: nothing here stores, logs, audits or
  puts them in an error message.
- No certificate carries a name Kubernetes gives power to by itself: a user name in the
  reserved "system:" namespace is refused, and groups under "system:" (system:masters skips
  RBAC) or "kubeadm:" (kubeadm binds kubeadm:cluster-admins to cluster-admin) are left out.
- `admin` makes the certificate cluster-admin through RBAC, never system:masters: it carries the
  platform's group ADMIN_GROUP, which the ClusterRoleBinding ADMIN_BINDING (labelled as the
  platform's, applied with the platform's own access; server-side apply, so asking again
  changes nothing) binds to cluster-admin. Never the user's name: a name outlives its rights
  (a demoted admin, a deleted user and a new one of the same name), and a binding of the name
  made every later plain kubeconfig of that name cluster-admin for good. Admin lasts as long
  as the admin certificate (at most kubeconfig.max_validity). No user's groups can bring
  ADMIN_GROUP (or anything under RESERVED_PLATFORM_PREFIX) into a certificate. The per-user
  bindings of earlier versions (LEGACY_BINDING_PREFIX, the platform's label) are deleted when
  the next admin kubeconfig of the cluster is issued.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, replace
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding

from tke.internal.apiserver.api import ResourceAPI
from tke.internal.apiserver.registry import Registry
from tke.internal.auth.identity import Identity, current_identity
from tke.internal.config.loader import ConfigError
from tke.internal.provider import cluster_credentials
from tke.internal.provider.addresses import AddressPolicy
from tke.internal.provider.clusterapi import admin_access
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.kube import api as kube_api
from tke.internal.provider.kube import pki
from tke.internal.provider.kube.kubeconfig import kubeconfig
from tke.internal.rpc import errors
from tke.meta.v1 import meta_pb2
from tke.platform.v1 import cluster_pb2, credential_pb2

MANAGED_BY = {"app.kubernetes.io/managed-by": "tke-platform"}
# The group of admin certificates, and its binding to cluster-admin in every cluster.
RESERVED_PLATFORM_PREFIX = "tke:kubeconfig:"
ADMIN_GROUP = RESERVED_PLATFORM_PREFIX + "cluster-admins"
ADMIN_BINDING = ADMIN_GROUP
# Earlier versions bound each user's name: "tke:cluster-admin:USER".
LEGACY_BINDING_PREFIX = "tke:cluster-admin:"
# Names Kubernetes gives power to by themselves (system:masters skips RBAC; kubeadm binds
# kubeadm:cluster-admins to cluster-admin), and the platform's own admin group: never in a
# certificate because of a user's groups.
RESERVED_GROUP_PREFIXES = ("system:", "kubeadm:", RESERVED_PLATFORM_PREFIX)
RESERVED_USER_PREFIX = "system:"
MIN_VALIDITY = 60.0
MAX_COMMON_NAME = 64  # X.509's upper bound on a common name


@dataclass(frozen=True)
class KubeconfigConfig:
    # Seconds a kubeconfig's certificate is valid when the request names no validity.
    default_validity: float = 8 * 3600.0
    # The longest validity a request may ask for.
    max_validity: float = 24 * 3600.0
    # Seconds a call to a cluster's API may take (applying an admin binding).
    api_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not MIN_VALIDITY <= self.default_validity <= self.max_validity:
            raise ConfigError(
                f"kubeconfig.default_validity must be between {MIN_VALIDITY:g} and kubeconfig.max_validity "
                f"({self.max_validity:g}) seconds"
            )
        if self.api_timeout <= 0:
            raise ConfigError("kubeconfig.api_timeout must be positive")


def admin_binding() -> dict[str, Any]:
    """The ClusterRoleBinding that makes admin certificates (group ADMIN_GROUP) cluster-admin."""
    rbac = "rbac.authorization.k8s.io"
    return {
        "apiVersion": f"{rbac}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": ADMIN_BINDING, "labels": dict(MANAGED_BY)},
        "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": rbac, "kind": "Group", "name": ADMIN_GROUP}],
    }


def subject(identity: Identity) -> tuple[str, tuple[str, ...]]:
    """The certificate's common name and organizations for `identity`."""
    user = identity.user
    if user.startswith(RESERVED_USER_PREFIX) or not user:
        raise errors.permission_denied(
            f"user {user!r} cannot get a kubeconfig: names under {RESERVED_USER_PREFIX!r} are Kubernetes' own"
        )
    if len(user) > MAX_COMMON_NAME:
        raise errors.precondition(
            "USER_NAME", f"users/{user[:MAX_COMMON_NAME]}...",
            f"user names longer than {MAX_COMMON_NAME} characters cannot be a certificate's common name",
            grpc.StatusCode.FAILED_PRECONDITION,
        )  # fmt: skip
    groups = tuple(g for g in dict.fromkeys(identity.groups) if g and not g.startswith(RESERVED_GROUP_PREFIXES))
    return user, groups


def _timestamp(when: datetime.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when)
    return ts


class KubeconfigIssuer:
    def __init__(
        self,
        clusters: ResourceAPI[cluster_pb2.Cluster],
        credentials: Registry[credential_pb2.ClusterCredential],
        config: KubeconfigConfig,
        addresses: AddressPolicy,
    ) -> None:
        self.clusters = clusters
        self.credentials = credentials
        self.config = config
        # The endpoint comes from a tenant's spec (a name the tenant's DNS answers): the admin
        # binding connects only to an address this policy admits, as tke-controller does.
        self.addresses = addresses

    def _validity(self, request: cluster_pb2.GetKubeconfigRequest) -> datetime.timedelta:
        if not request.HasField("validity"):
            return datetime.timedelta(seconds=self.config.default_validity)
        # Compared as numbers before any timedelta is made: a client's Duration may be far
        # beyond what a timedelta holds (ToTimedelta raises OverflowError there).
        seconds = request.validity.seconds + request.validity.nanos / 1e9
        if not MIN_VALIDITY <= seconds <= self.config.max_validity:
            raise errors.invalid_field(
                "validity", f"must be between {MIN_VALIDITY:g} and {self.config.max_validity:g} seconds"
            )
        return datetime.timedelta(seconds=seconds)

    async def _cas(self, cluster: cluster_pb2.Cluster) -> pki.ClusterCAs:
        """The cluster's CAs, once the platform installed it."""
        meta, status = cluster.metadata, cluster.status
        name = meta.name
        if meta.HasField("deletion_timestamp"):
            raise self._not_ready(name, f'cluster "{name}" is being deleted')
        try:
            credential = await self.credentials.get(meta.tenant_id, name)
        except errors.ApiError as err:
            if err.code != grpc.StatusCode.NOT_FOUND:
                raise
            credential = None
        if credential is None or credential.spec.cluster_uid != meta.uid:
            if cluster.spec.type == "imported":
                why = "it is imported: the platform does not hold its CA; use the credentials it came with"
            else:
                why = "the platform has not made its CA yet (its install has not started)"
            raise self._not_ready(name, f'cluster "{name}" has no kubeconfig to give: {why}')
        ready = next((c for c in status.conditions if c.type == "Ready"), None)
        installed = ready is not None and ready.status == meta_pb2.CONDITION_STATUS_TRUE
        if not installed or not status.control_plane_endpoint:
            phase = cluster_pb2.ClusterPhase.Name(status.phase).removeprefix("CLUSTER_PHASE_").capitalize()
            raise self._not_ready(
                name, f'cluster "{name}" is not installed yet (phase {phase}): ask again once it is Running'
            )
        return cluster_credentials.from_credential(credential)

    @staticmethod
    def _not_ready(name: str, message: str) -> errors.ApiError:
        return errors.precondition(
            "CLUSTER_INSTALLED", f"clusters/{name}", message, grpc.StatusCode.FAILED_PRECONDITION
        )

    async def _bind_admin(
        self, cluster: cluster_pb2.Cluster, server: str, ca: pki.CertificateAuthority, user: str
    ) -> None:
        version = cluster.status.version or cluster.spec.version
        name = cluster.metadata.name
        try:
            access = replace(admin_access(server, ca, version), addresses=self.addresses)
            async with kube_api.ClusterAPI(access, timeout=self.config.api_timeout) as api:
                await api.apply([admin_binding()])
                # Earlier versions' bindings of users' names: each made that name cluster-admin for good.
                labels = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
                found, _ = await api.list_objects(ClusterRoleBinding, labels=labels)
                legacy = [
                    {
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": "ClusterRoleBinding",
                        "metadata": {"name": n},
                    }
                    for b in found
                    if b.metadata is not None and (n := b.metadata.name or "").startswith(LEGACY_BINDING_PREFIX)
                ]
                if legacy:
                    await api.delete(legacy)
        except TemporaryError as err:
            raise errors.unavailable(f'cluster "{name}": cannot make {user!r} cluster-admin now: {err}') from None
        except PermanentError as err:
            raise errors.precondition(
                "CLUSTER_API", f"clusters/{name}", f'cluster "{name}" refused the admin binding: {err}',
                grpc.StatusCode.FAILED_PRECONDITION,
            ) from None  # fmt: skip

    async def issue(self, request: cluster_pb2.GetKubeconfigRequest) -> cluster_pb2.GetKubeconfigResponse:
        validity = self._validity(request)
        user, groups = subject(current_identity.get())
        cluster = await self.clusters.get(request.name, request.tenant_id)
        ca = (await self._cas(cluster)).ca
        server = f"https://{cluster.status.control_plane_endpoint}"
        if request.admin:
            await self._bind_admin(cluster, server, ca, user)
            groups = (*groups, ADMIN_GROUP)
        client = ca.issue(user, orgs=groups, client=True, lifetime=validity)
        return cluster_pb2.GetKubeconfigResponse(
            kubeconfig=kubeconfig(cluster.metadata.name, server, ca.pair.cert_pem, user, client),
            expire_time=_timestamp(client.cert.not_valid_after_utc),
        )
