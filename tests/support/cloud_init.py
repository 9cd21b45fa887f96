"""The tests play what no VM in moto does: cloud-init on each instance, and the cluster's
kubelets and kubeadm, against the Kubernetes API stand-in (tests/support/kube).

CloudInit watches moto for running instances of the platform, reads each one's user data back
(DescribeInstanceAttribute userData) and checks it as cloud-init and kubeadm would: a
#cloud-config document whose files and commands are there, kubeadm documents of the reference
fields (tests/support/kubeadm_reference.py), a join's bootstrap token stored in the cluster
(unexpired) and its CA pin the cluster CA's, a control-plane member's CAs in place. Then it
does what kubeadm and the kubelet would: the first master's init brings up the stand-in API,
serving with a certificate of the cluster CA it was given, for the endpoint's names, and
stores the ClusterConfiguration in ConfigMap kube-system/kubeadm-config as kubeadm init does;
every node registers its Node through that API, NotReady ("container runtime network not
ready", as a kubelet reports with no CNI configuration) until the network add-on's DaemonSet
tke-cni exists (its pod installs the configuration on every node), Ready then. A control-plane
member (init, or a join, which makes its static pods from the stored ClusterConfiguration) is
refused when a file a component's extraVolumes mount with pathType File is not among its
files: the kubelet would not start that static pod. Once the API is up, it also plays the
DaemonSet and Deployment controllers' status (tests/support/kube/rollouts.py). What it refused
is in `refused`.

StandInAPIs is the controller's access to the clusters' APIs in these tests: the ClusterAPI
seam over the platform's lightkube layer, reaching the stand-in wherever the endpoint says the
API is (an address in the VPC, a load balancer's name): the stand-in listens on loopback, and
the TLS name checked is the endpoint's. An endpoint nobody brought up is refused, so nothing is
ever sent off loopback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from lightkube import codecs
from lightkube.resources.apps_v1 import DaemonSet
from lightkube.resources.core_v1 import ConfigMap, Node, Secret
from lightkube.types import PatchType

from tests.support import kubeadm_reference
from tests.support.kube import objects, rollouts
from tests.support.kube.running import StandIn, running
from tests.support.pki import TestCA
from tke.internal.provider import endpoint as endpoints
from tke.internal.provider.clusterapi import ClusterAPI, KubeClusterAPI
from tke.internal.provider.errors import StepError, TemporaryError
from tke.internal.provider.kube import access as kube_access
from tke.internal.provider.kube import config as kubecfg
from tke.internal.provider.kube import pki
from tke.internal.provider.kube.access import ClusterAccess
from tke.internal.provider.kube.api import ClusterAPI as KubeAPI
from tke.plugins.aws import tags, userdata


@dataclass
class StandInAPIs:
    """The ClusterAPIs seam: endpoint host -> the stand-in's loopback URL."""

    routes: dict[str, str] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def connect(self, access: ClusterAccess) -> AsyncIterator[ClusterAPI]:
        host = urlsplit(access.server).hostname or ""
        url = self.routes.get(host)
        if url is None:
            raise TemporaryError(f"{access.server}: connection refused (no API server there yet)")
        reach = kube_access.ClusterAccess(
            url,
            ca_pem=access.ca_pem,
            client_cert_pem=access.client_cert_pem,
            client_key_pem=access.client_key_pem,
            tls_server_name=host,
        )
        async with KubeAPI(reach, timeout=10.0) as api:
            yield KubeClusterAPI(api, drain_poll=0.2)


@dataclass
class Played:
    instance_id: str
    kubeadm: str  # "init" or "join"
    node: str
    control_plane: bool
    documents: dict[str, dict[str, Any]]
    files: dict[str, bytes]  # what cloud-init wrote (write_files)


class CloudInit:
    """Plays cloud-init, kubeadm and the kubelet for every platform instance moto runs."""

    def __init__(self, ec2: Any, apis: StandInAPIs, directory: Path, kubernetes_version: str = "1.30.2") -> None:
        self.ec2 = ec2
        self.apis = apis
        self.directory = directory
        self.kubernetes_version = kubernetes_version
        self.played: dict[str, Played] = {}
        self.refused: dict[str, str] = {}
        self.standin: StandIn | None = None
        self.admin: KubeAPI | None = None
        self.ca: pki.CertificateAuthority | None = None
        self.without_network: dict[str, dict[str, Any]] = {}  # NotReady Nodes: name -> Ready status
        self._stack = contextlib.ExitStack()

    def close(self) -> None:
        self._stack.close()

    async def run(self) -> None:
        try:
            while True:
                await self.step()
                await asyncio.sleep(0.2)
        finally:
            if self.admin is not None:
                await self.admin.aclose()

    async def step(self) -> None:
        found = await asyncio.to_thread(
            self.ec2.describe_instances,
            Filters=[
                {"Name": "tag:" + tags.PLATFORM, "Values": ["tke"]},
                {"Name": "instance-state-name", "Values": ["running"]},
            ],
        )
        for r in found["Reservations"]:
            for instance in r["Instances"]:
                iid = instance["InstanceId"]
                if iid in self.played or iid in self.refused:
                    continue
                try:
                    self.played[iid] = await self._boot(instance)
                except Refused as err:
                    self.refused[iid] = str(err)
                except Exception as err:  # a bug of the player, or a document it cannot read
                    self.refused[iid] = f"{type(err).__name__}: {err}"
        if self.admin is not None:
            await self._network_installed(self.admin)
            await rollouts.play(self.admin)

    async def _network_installed(self, admin: KubeAPI) -> None:
        """Once tke-cni's DaemonSet exists, its pod has written the CNI configuration on every
        node: each kubelet reports Ready."""
        if not self.without_network or await admin.get(DaemonSet, "tke-cni", namespace="kube-system") is None:
            return
        for name, status in list(self.without_network.items()):
            await admin.client.patch(Node.Status, name, {"status": status}, patch_type=PatchType.MERGE)
            del self.without_network[name]

    # -- one instance -------------------------------------------------------------------------

    async def _boot(self, instance: dict[str, Any]) -> Played:
        iid = instance["InstanceId"]
        answer = await asyncio.to_thread(self.ec2.describe_instance_attribute, InstanceId=iid, Attribute="userData")
        text = userdata.unpack(base64.b64decode(answer["UserData"]["Value"]))
        if not text.startswith("#cloud-config\n"):
            raise Refused("user data is not a #cloud-config document")
        doc = yaml.safe_load(text)
        files = {f["path"]: base64.b64decode(f["content"]) for f in doc.get("write_files", [])}
        (command,) = doc["runcmd"]
        script = command[2]
        config = files.get(userdata.KUBEADM_CONFIG)
        if config is None or command[:2] != ["/bin/sh", "-c"] or not script.startswith("set -eu\n"):
            raise Refused("no kubeadm configuration, or no script run by /bin/sh with set -eu")
        profile = (
            "/etc/containerd/config.toml",
            "/etc/modules-load.d/kubernetes.conf",
            "/etc/sysctl.d/99-kubernetes.conf",
        )
        for needed in profile:
            if needed not in files:
                raise Refused(f"the install profile's {needed} is missing")
        if "modprobe br_netfilter" not in script or "apt-get" not in script:
            raise Refused("the install profile's commands are missing")
        docs = {d["kind"]: d for d in yaml.safe_load_all(config)}
        for d in docs.values():
            if errors := kubeadm_reference.errors(d):
                raise Refused(f"{d['kind']}: {errors}")
        if f"kubeadm init --config {userdata.KUBEADM_CONFIG}" in script:
            return await self._init(iid, instance, files, docs)
        if f"kubeadm join --config {userdata.KUBEADM_CONFIG}" in script:
            return await self._join(iid, instance, files, docs)
        raise Refused("the script runs neither kubeadm init nor kubeadm join")

    def _pki(self, files: dict[str, bytes]) -> pki.CertificateAuthority:
        shared = ("ca.crt", "ca.key", "sa.key", "sa.pub", "etcd/ca.crt", "front-proxy-ca.crt")
        missing = [n for n in shared if f"{userdata.PKI_DIR}/{n}" not in files]
        if missing:
            raise Refused(f"a control-plane machine without the shared CAs: {missing} missing")
        return pki.CertificateAuthority(
            pki.KeyPair(files[f"{userdata.PKI_DIR}/ca.crt"], files[f"{userdata.PKI_DIR}/ca.key"])
        )

    async def _init(
        self, iid: str, instance: dict[str, Any], files: dict[str, bytes], docs: dict[str, dict[str, Any]]
    ) -> Played:
        if self.standin is not None:
            raise Refused("a second kubeadm init in one cluster")
        ca = self._pki(files)
        cc, ic = docs["ClusterConfiguration"], docs["InitConfiguration"]
        _static_pod_files(cc, files)
        endpoint = endpoints.parse(cc["controlPlaneEndpoint"])
        names = (*cc["apiServer"].get("certSANs", []), endpoint.host)
        d = self.directory / "apiserver"
        # Served with a certificate of the platform's own cluster CA, for the names kubeadm
        # would put in it; trusting client certificates of that CA.
        cluster_ca = TestCA.load(d / "pki", ca.pair.cert_pem, ca.pair.key_pem)
        # Started in a thread: it loads Kubernetes' schemas first, which must not stall the
        # event loop the controller under test shares with this player.
        self.standin = await asyncio.to_thread(
            self._stack.enter_context,
            running(d, kubernetes_version=self.kubernetes_version, ca=cluster_ca, server_names=names),
        )
        self.ca = ca
        admin = ca.issue("kubernetes-admin", orgs=("system:masters",), client=True)
        self.admin = KubeAPI(
            kube_access.ClusterAccess(
                self.standin.url,
                ca_pem=ca.pair.cert_pem,
                client_cert_pem=admin.cert_pem,
                client_key_pem=admin.key_pem,
                tls_server_name=endpoint.host,
            )
        )
        # What kubeadm init makes: the cluster-admins binding, the init's bootstrap tokens.
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "kubeadm:cluster-admins"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "kubeadm:cluster-admins"}],
        }
        tokens = [
            kubecfg.bootstrap_token_secret(t["token"], _seconds(t.get("ttl", "24h")), t.get("description", ""))
            for t in ic.get("bootstrapTokens", [])
        ]
        stored = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
            "data": {"ClusterConfiguration": yaml.safe_dump(cc)},
        }
        await self.admin.apply([binding, stored, *tokens])
        self.apis.routes[endpoint.host] = self.standin.url
        return await self._register(
            iid, instance, ic["nodeRegistration"], "init", docs, files=files, control_plane=True
        )

    async def _join(
        self, iid: str, instance: dict[str, Any], files: dict[str, bytes], docs: dict[str, dict[str, Any]]
    ) -> Played:
        jc = docs.get("JoinConfiguration")
        if jc is None or self.admin is None or self.ca is None:
            raise Refused("a join before the cluster's init, or without a JoinConfiguration")
        discovery = jc["discovery"]["bootstrapToken"]
        token_id, _, secret = discovery["token"].partition(".")
        stored = await self.admin.get(Secret, f"bootstrap-token-{token_id}", namespace="kube-system")
        data = {k: base64.b64decode(v).decode() for k, v in ((stored.data or {}) if stored else {}).items()}
        if data.get("token-secret") != secret:
            raise Refused(f"token {token_id}: unknown or wrong secret")
        expires = datetime.datetime.fromisoformat(data["expiration"].replace("Z", "+00:00"))
        if expires < datetime.datetime.now(datetime.UTC):
            raise Refused(f"token {token_id} expired")
        if pki.ca_cert_hash(self.ca.pair.cert_pem) not in discovery["caCertHashes"]:
            raise Refused("the CA pin is not the cluster CA's")
        control_plane = "controlPlane" in jc
        if control_plane and self._pki(files).pair.cert_pem != self.ca.pair.cert_pem:
            raise Refused("a control-plane member with another cluster's CA")
        if control_plane:
            kubeadm_config = await self.admin.get(ConfigMap, "kubeadm-config", namespace="kube-system")
            kept = (kubeadm_config.data or {}) if kubeadm_config is not None else {}
            if "ClusterConfiguration" not in kept:
                raise Refused("a control-plane join without the ClusterConfiguration kubeadm init stores")
            _static_pod_files(yaml.safe_load(kept["ClusterConfiguration"]), files)
        return await self._register(
            iid, instance, jc["nodeRegistration"], "join", docs, files=files, control_plane=control_plane
        )

    async def _register(
        self,
        iid: str,
        instance: dict[str, Any],
        registration: dict[str, Any],
        verb: str,
        docs: dict[str, dict[str, Any]],
        *,
        files: dict[str, bytes],
        control_plane: bool,
    ) -> Played:
        assert self.admin is not None
        name = registration["name"]
        given = registration.get("kubeletExtraArgs") or {}
        # v1beta4: a list of {name, value}; v1beta3: a map.
        args = {a["name"]: a["value"] for a in given} if isinstance(given, list) else dict(given)
        if args.get("node-ip") != instance["PrivateIpAddress"]:
            raise Refused(f"node-ip {args.get('node-ip')} is not the instance's {instance['PrivateIpAddress']}")
        role = "control-plane" if control_plane else ""
        ip, kubelet = instance["PrivateIpAddress"], f"v{self.kubernetes_version}"
        networked = await self.admin.get(DaemonSet, "tke-cni", namespace="kube-system") is not None
        manifest = objects.node(name, ready=networked, ip=ip, kubelet=kubelet, role=role)
        manifest["spec"] = {"providerID": f"aws:///{instance['Placement']['AvailabilityZone']}/{iid}"}
        for label in filter(None, args.get("node-labels", "").split(",")):
            key, _, value = label.partition("=")
            manifest["metadata"]["labels"][key] = value
        try:  # as the kubelet registers: a create with the Node's status
            async with self.admin.translated(f"register node {name}"):
                await self.admin.client.create(codecs.from_dict(manifest))
        except StepError as err:
            raise Refused(str(err)) from None
        if not networked:
            self.without_network[name] = objects.node(name, ip=ip, kubelet=kubelet, role=role)["status"]
        return Played(iid, verb, name, control_plane, docs, files)


class Refused(Exception):
    """What cloud-init, kubeadm or the kubelet would have failed with."""


def _static_pod_files(cc: dict[str, Any], files: dict[str, bytes]) -> None:
    """Refused unless every file the control-plane components mount (extraVolumes, pathType
    File) is one the machine's cloud-init writes."""
    for component in ("apiServer", "controllerManager", "scheduler"):
        for volume in (cc.get(component) or {}).get("extraVolumes") or []:
            if volume.get("pathType") == "File" and volume["hostPath"] not in files:
                raise Refused(f"{component} mounts {volume['hostPath']}, which this machine does not have")


def _seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(duration[:-1]) * units[duration[-1]]
