"""The stand-in machines' Kubernetes when their world is live (kubeadm_world.World.live: the
demo's machines, each in a network namespace of its own): what kubeadm and the kubelet do to
and through a cluster's API, with the Kubernetes API stand-in (tests/support/kube) as the
cluster's kube-apiserver. The stand-in kubeadm (standins.py) calls these.

- kubeadm's certs and kubeconfig phases: the API server's serving certificate from the
  cluster CA in place, with kubeadm's names (the node name, kubernetes.default..., the first
  service IP, the advertise address, the certSANs and the endpoint's host); admin.conf
  (group kubeadm:cluster-admins), super-admin.conf (system:masters) and kubelet.conf
  (system:node:NAME in system:nodes), pointing at the control-plane endpoint.
- The kubelet's static pods, as far as they can run here: kube-apiserver is the API stand-in
  on the machine of `kubeadm init` only (its objects live in its memory: a second one would be
  another cluster, so the other masters' manifests stay files, like etcd's and the
  scheduler's); kube-controller-manager, on the same machine, keeps the DaemonSets' and
  Deployments' status (tests/support/kube/controller_manager.py); haproxy is standin_haproxy.py reading the platform's
  haproxy.cfg; keepalived's MASTER adds the VIP to the interface its keepalived.conf names
  (no VRRP: the VIP never moves).
- kubeadm init's bootstrap through the API: cluster-info in kube-public, readable
  anonymously; the kubeadm:cluster-admins binding to cluster-admin; and a binding that lets
  the group system:nodes manage Nodes, standing in for the Node authorizer.
- kubeadm join's token discovery: cluster-info fetched without trusting the server, its CA
  checked against caCertHashes, then the server checked against that CA.
- The kubelet registers its Node (labels and taints of nodeRegistration; status Ready with
  nodeInfo: its package's kubelet version, containerd's, this host's kernel and OS image)
  and reports again when it is restarted or stopped. TLS bootstrap is not imitated: a
  worker's kubelet certificate is signed with the CA that kubeadm init kept in the world
  (kube-controller-manager's CSR signer holds the same CA).
Every failure is `standins.Refused`, with kubeadm's wording where it has one.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import ipaddress
import json
import os
import platform
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support import REPO
from tests.support.standins import Machine, Refused, spki_hash
from tke.internal.provider.kube import pki

API_PORT = 6443
READY_WITHIN = 60.0
SUPER_ADMIN = "/etc/kubernetes/super-admin.conf"
NODE_RIGHTS = "tke-standin:node-authorizer"
CLUSTER_INFO = "/api/v1/namespaces/kube-public/configmaps/cluster-info"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


# -- a small client: kubeadm's and the kubelet's calls --------------------------------------


@dataclass(frozen=True)
class Credentials:
    server: str
    ca_pem: bytes = b""
    cert_pem: bytes = b""
    key_pem: bytes = b""

    def context(self, *, verify: bool = True) -> ssl.SSLContext:
        if not verify:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context = ssl.create_default_context(cadata=self.ca_pem.decode())
        if self.cert_pem:
            with tempfile.TemporaryDirectory() as directory:
                cert, key = Path(directory, "c.pem"), Path(directory, "k.pem")
                cert.write_bytes(self.cert_pem)
                key.write_bytes(self.key_pem)
                context.load_cert_chain(str(cert), str(key))
        return context


def request(
    creds: Credentials,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    content_type: str = "application/json",
    verify: bool = True,
    timeout: float = 10.0,
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body). Raises OSError when the server cannot be reached."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(creds.server + path, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", content_type)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=creds.context(verify=verify))
    )
    try:
        with opener.open(req, timeout=timeout) as response:
            return response.status, _body(response.read())
    except urllib.error.HTTPError as err:
        return err.code, _body(err.read())
    except urllib.error.URLError as err:
        raise OSError(str(err.reason)) from None


def _body(data: bytes) -> dict[str, Any]:
    """A JSON object, or {"message": TEXT} for a plain-text answer (/readyz says "ok")."""
    try:
        body = json.loads(data or b"{}")
    except ValueError:
        return {"message": data.decode(errors="replace")}
    return body if isinstance(body, dict) else {"message": str(body)}


def create(creds: Credentials, path: str, obj: dict[str, Any]) -> None:
    """POST `obj`; one that exists already is fine (kubeadm's create-or-keep)."""
    status, body = request(creds, "POST", path, obj)
    if status not in (200, 201, 409):
        raise Refused(f"POST {path}: HTTP {status}: {body.get('message', body)}")


# -- kubeconfigs and certificates -------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(creds: Credentials, user: str, cluster: str = "kubernetes") -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": cluster, "cluster": {"server": creds.server, "certificate-authority-data": _b64(creds.ca_pem)}}
            ],
            "users": [
                {
                    "name": user,
                    "user": {"client-certificate-data": _b64(creds.cert_pem), "client-key-data": _b64(creds.key_pem)},
                }
            ],
            "contexts": [{"name": f"{user}@{cluster}", "context": {"cluster": cluster, "user": user}}],
            "current-context": f"{user}@{cluster}",
        }
    )


def load_kubeconfig(path: Path) -> Credentials:
    try:
        doc = yaml.safe_load(path.read_text())
        cluster, user = doc["clusters"][0]["cluster"], doc["users"][0]["user"]
        return Credentials(
            cluster["server"],
            base64.b64decode(cluster["certificate-authority-data"]),
            base64.b64decode(user["client-certificate-data"]),
            base64.b64decode(user["client-key-data"]),
        )
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError, ValueError) as err:
        raise Refused(f"failed to load kubeconfig {path}: {err}") from None


def cluster_ca(m: Machine, pki_dir: str) -> pki.CertificateAuthority:
    d = m.path(pki_dir)
    try:
        return pki.CertificateAuthority(pki.KeyPair((d / "ca.crt").read_bytes(), (d / "ca.key").read_bytes()))
    except (OSError, ValueError) as err:
        raise Refused(f"failure loading ca certificate authority: {err}") from None


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def apiserver_certificate(m: Machine, ca: pki.CertificateAuthority, cc: dict[str, Any], node: str) -> None:
    """pki/apiserver.crt and .key, with the names kubeadm gives them."""
    networking = cc.get("networking", {})
    domain = networking.get("dnsDomain", "cluster.local")
    dns = [node, "kubernetes", "kubernetes.default", "kubernetes.default.svc", f"kubernetes.default.svc.{domain}"]
    ips: list[pki.IPAddress] = [pki.first_service_ip(networking.get("serviceSubnet", "10.96.0.0/12")), _ip(m.ip)]
    endpoint_host = cc.get("controlPlaneEndpoint", "").rpartition(":")[0].strip("[]")
    for name in [*cc.get("apiServer", {}).get("certSANs", []), endpoint_host]:
        try:
            ips.append(_ip(name))
        except ValueError:
            dns.append(name)
    pair = ca.issue("kube-apiserver", dns=dns, ips=ips, server=True)
    directory = m.path(cc.get("certificatesDir", "/etc/kubernetes/pki"))
    _write(directory / "apiserver.crt", pair.cert_pem, 0o644)
    _write(directory / "apiserver.key", pair.key_pem, 0o600)


def _ip(value: str) -> pki.IPAddress:
    return ipaddress.ip_address(value)


def client(ca: pki.CertificateAuthority, server: str, user: str, group: str) -> Credentials:
    pair = ca.issue(user, orgs=(group,), client=True)
    return Credentials(server, ca.pair.cert_pem, pair.cert_pem, pair.key_pem)


def write_kubeconfigs(m: Machine, ca: pki.CertificateAuthority, endpoint: str, node: str, *, admin: bool) -> None:
    """kubelet.conf, and on a control-plane machine admin.conf and super-admin.conf."""
    server = f"https://{endpoint}"
    files = {
        "kubelet.conf": kubeconfig(client(ca, server, f"system:node:{node}", "system:nodes"), f"system:node:{node}")
    }
    if admin:
        files["admin.conf"] = kubeconfig(
            client(ca, server, "kubernetes-admin", "kubeadm:cluster-admins"), "kubernetes-admin"
        )
        files["super-admin.conf"] = kubeconfig(
            client(ca, server, "kubernetes-super-admin", "system:masters"), "kubernetes-super-admin"
        )
    for name, text in files.items():
        _write(m.path(f"/etc/kubernetes/{name}"), text.encode(), 0o600)


# -- static pods ------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    """Whether a static pod's process runs (started by an earlier call, so not our child)."""
    if pid <= 0:  # never started (kill(0) would signal our own process group)
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _spawn(m: Machine, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    """A static pod's process: its own session (the kubeadm call that starts it ends before it),
    its output in the world's logs/IP/NAME.log; it keeps the environment of the machine's
    sshd, by which stopping the machine finds and ends it."""
    logs = m.world.directory / "logs" / m.ip
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as log:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, cwd=REPO
        )


def _keepalived(m: Machine) -> str:
    """The VIP on this machine when its keepalived.conf says MASTER ("" when BACKUP)."""
    try:
        text = m.path("/etc/keepalived/keepalived.conf").read_text()
    except OSError:
        return ""
    words = text.split()
    try:
        state = words[words.index("state") + 1]
        interface = words[words.index("interface") + 1]
        vip = words[words.index("virtual_ipaddress") + 2]  # after its "{"
    except (ValueError, IndexError):
        raise Refused("keepalived: keepalived.conf names no state, interface or virtual_ipaddress") from None
    if state != "MASTER":
        return ""
    add = ["ip", "addr", "replace", f"{vip}/32", "dev", interface]
    done = subprocess.run(add, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise Refused(f"keepalived: cannot add {vip} to {interface}: {done.stderr.strip()}")
    return f"{vip}/32 dev {interface}"


@contextlib.contextmanager
def static_pods(m: Machine, state: dict[str, Any]) -> Iterator[None]:
    """run_static_pods for the block; stopped again when it fails: the failed kubeadm call
    keeps no state, and a kube-apiserver it left would hold port 6443 against the next try."""
    try:
        run_static_pods(m, state)
        yield
    except BaseException:
        stop_static_pods(m, state)
        raise


def run_static_pods(m: Machine, state: dict[str, Any]) -> None:
    """What the kubelet starts from /etc/kubernetes/manifests (a pod still running stays)."""
    mine = state["machines"][m.ip]
    pods: dict[str, int] = mine.setdefault("pods", {})
    manifests = m.path("/etc/kubernetes/manifests")
    names = {p.stem for p in manifests.glob("*.yaml")} if manifests.exists() else set()
    if "keepalived" in names and not mine.get("vip"):
        mine["vip"] = _keepalived(m)
    if "haproxy" in names and not _alive(pods.get("haproxy", 0)):
        cfg = m.path("/etc/haproxy/haproxy.cfg")
        pods["haproxy"] = _spawn(m, "haproxy", [sys.executable, "-m", "tests.support.standin_haproxy", str(cfg)]).pid
    cluster = state["cluster"]
    if "kube-apiserver" in names and cluster["init_machine"] == m.ip and not _alive(pods.get("kube-apiserver", 0)):
        pods["kube-apiserver"] = _start_apiserver(m, cluster)
    manager = "kube-controller-manager"
    if manager in names and cluster["init_machine"] == m.ip and not _alive(pods.get(manager, 0)):
        # With super-admin.conf rather than its own controller-manager.conf: the stand-in API's
        # RBAC has no kube-controller-manager roles.
        argv = [sys.executable, "-m", "tests.support.kube.controller_manager", str(m.path(SUPER_ADMIN))]
        pods[manager] = _spawn(m, manager, argv).pid


def _start_apiserver(m: Machine, cluster: dict[str, Any]) -> int:
    d = m.path(cluster["pki_dir"])
    ready = m.world.directory / "logs" / m.ip / "kube-apiserver.ready"
    ready.unlink(missing_ok=True)
    argv = [
        sys.executable, "-m", "tests.support.kube",
        "--bind-address", m.ip, "--secure-port", str(API_PORT),
        "--tls-cert-file", str(d / "apiserver.crt"), "--tls-private-key-file", str(d / "apiserver.key"),
        "--client-ca-file", str(d / "ca.crt"),
        "--kubernetes-version", cluster["version"], "--service-cluster-ip-range", cluster["service_subnet"],
        "--ready-file", str(ready),
    ]  # fmt: skip
    child = _spawn(m, "kube-apiserver", argv)
    deadline = time.monotonic() + READY_WITHIN
    # kubeadm's wait-control-plane phase: this API server serving (it writes the ready file once
    # it listens; another one left on the port would answer a probe, this one could not bind).
    while not ready.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            log = m.world.directory / "logs" / m.ip / "kube-apiserver.log"
            raise Refused(f"[wait-control-plane] the API server did not start: {log.read_text()[-1000:]}")
        time.sleep(0.05)
    return child.pid


def stop_static_pods(m: Machine, state: dict[str, Any]) -> None:
    """kubeadm reset: the static pods go with their manifests."""
    mine = state["machines"].get(m.ip, {})
    for pid in mine.pop("pods", {}).values():
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
    vip = mine.pop("vip", "")
    if vip:
        subprocess.run(["ip", "addr", "del", *vip.split()], check=False, capture_output=True)


# -- kubeadm init's bootstrap, kubeadm join's discovery -------------------------------------


def _meta(name: str, namespace: str = "") -> dict[str, str]:
    return {"name": name, "namespace": namespace} if namespace else {"name": name}


def _role(kind: str, name: str, rules: list[dict[str, list[str]]], namespace: str = "") -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": _meta(name, namespace),
        "rules": rules,
    }


def _binding(
    kind: str, name: str, role: tuple[str, str], subject: tuple[str, str], namespace: str = ""
) -> dict[str, Any]:
    """A (Cluster)RoleBinding of `role` (kind, name) to `subject` (kind, name)."""
    group = "rbac.authorization.k8s.io"
    return {
        "apiVersion": f"{group}/v1",
        "kind": kind,
        "metadata": _meta(name, namespace),
        "roleRef": {"apiGroup": group, "kind": role[0], "name": role[1]},
        "subjects": [{"apiGroup": group, "kind": subject[0], "name": subject[1]}],
    }


def bootstrap(m: Machine) -> None:
    """kubeadm init's objects, through super-admin.conf: cluster-info for discovery (read
    anonymously), kubeadm's admin binding, and the nodes' rights."""
    creds = load_kubeconfig(m.path("/etc/kubernetes/super-admin.conf"))
    # kubeadm's cluster-info: a kubeconfig with the cluster only (server and CA), no user.
    server = {"server": creds.server, "certificate-authority-data": _b64(creds.ca_pem)}
    info = {"apiVersion": "v1", "kind": "Config", "clusters": [{"name": "", "cluster": server}], "users": [],
            "contexts": [], "current-context": ""}  # fmt: skip
    cluster_info = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta("cluster-info", "kube-public"),
        "data": {"kubeconfig": yaml.safe_dump(info)},
    }
    signer = "kubeadm:bootstrap-signer-clusterinfo"
    read_info = [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cluster-info"], "verbs": ["get"]}]
    node_rights = [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "create", "patch"]},
        {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["get", "patch", "update"]},
    ]
    admins = "kubeadm:cluster-admins"
    for path, obj in (
        ("/api/v1/namespaces/kube-public/configmaps", cluster_info),
        (f"{RBAC}/namespaces/kube-public/roles", _role("Role", signer, read_info, "kube-public")),
        (
            f"{RBAC}/namespaces/kube-public/rolebindings",
            _binding("RoleBinding", signer, ("Role", signer), ("User", "system:anonymous"), "kube-public"),
        ),
        (
            f"{RBAC}/clusterrolebindings",
            _binding("ClusterRoleBinding", admins, ("ClusterRole", "cluster-admin"), ("Group", admins)),
        ),
        (f"{RBAC}/clusterroles", _role("ClusterRole", NODE_RIGHTS, node_rights)),
        (
            f"{RBAC}/clusterrolebindings",
            _binding("ClusterRoleBinding", NODE_RIGHTS, ("ClusterRole", NODE_RIGHTS), ("Group", "system:nodes")),
        ),
    ):
        create(creds, path, obj)


def discover(endpoint: str, ca_cert_hashes: list[str]) -> bytes:
    """The cluster CA from cluster-info, trusted only when its key is pinned."""
    unverified = Credentials(f"https://{endpoint}")
    why = "couldn't validate the identity of the API Server"
    try:
        status, body = request(unverified, "GET", CLUSTER_INFO, verify=False)
    except OSError as err:
        raise Refused(f"{why}: Get https://{endpoint}: {err}") from None
    if status != 200:
        raise Refused(f"{why}: cluster-info: HTTP {status}: {body.get('message', '')}")
    try:
        info = yaml.safe_load(body["data"]["kubeconfig"])
        ca = base64.b64decode(info["clusters"][0]["cluster"]["certificate-authority-data"])
    except (KeyError, IndexError, TypeError, ValueError, yaml.YAMLError):
        raise Refused(f"{why}: the cluster-info ConfigMap holds no usable kubeconfig") from None
    if spki_hash(ca) not in ca_cert_hashes:
        raise Refused("cluster CA found in cluster-info ConfigMap is invalid: none of the public keys match")
    try:
        request(Credentials(f"https://{endpoint}", ca), "GET", "/version")
    except OSError as err:  # ssl's errors too
        raise Refused(f"{why}: the server at {endpoint} is not the cluster CA's: {err}") from None
    return ca


# -- the kubelet's Node -----------------------------------------------------------------------


def _node_labels(registration: dict[str, Any]) -> dict[str, str]:
    args = registration.get("kubeletExtraArgs", {})
    if isinstance(args, list):  # v1beta4: [{name, value}]
        args = {a["name"]: a["value"] for a in args}
    pairs = [p.split("=", 1) for p in str(args.get("node-labels", "")).split(",") if "=" in p]
    return dict(pairs)


def _os_image() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "Linux"


def _condition(kind: str, status: str, reason: str, message: str, now: str) -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": now}  # fmt: skip


def node_status(m: Machine, mine: dict[str, Any], name: str) -> dict[str, Any]:
    """What the kubelet reports: Ready while its service runs, nodeInfo from the machine."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    kubelet = "v" + mine.get("packages", {}).get("kubelet", "")
    if mine.get("services", {}).get("kubelet") == "active":
        ready = _condition("Ready", "True", "KubeletReady", "kubelet is posting ready status", now)
    else:
        ready = _condition("Ready", "False", "KubeletNotReady", "the kubelet service is not running", now)
    conditions = [
        _condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory", now),
        _condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure", now),
        _condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available", now),
        ready,
    ]
    machine_id = hashlib.sha256(f"{m.ip}/{name}".encode()).hexdigest()[:32]
    capacity = {"cpu": str(os.cpu_count() or 1), "memory": "4Gi", "pods": "110", "ephemeral-storage": "20Gi"}
    return {
        "conditions": conditions,
        "addresses": [{"type": "InternalIP", "address": m.ip}, {"type": "Hostname", "address": name}],
        "nodeInfo": {
            "machineID": machine_id,
            "systemUUID": str(uuid.UUID(machine_id)),
            "bootID": mine.setdefault("boot_id", str(uuid.uuid4())),
            "kernelVersion": os.uname().release,
            "osImage": _os_image(),
            "containerRuntimeVersion": "containerd://" + mine.get("packages", {}).get("containerd", ""),
            "kubeletVersion": kubelet,
            "kubeProxyVersion": kubelet,
            "operatingSystem": "linux",
            "architecture": ARCH,
        },
        "capacity": capacity,
        "allocatable": capacity,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
    }


def register_node(m: Machine, mine: dict[str, Any], registration: dict[str, Any], *, control_plane: bool) -> None:
    """The kubelet's first start: its Node, then its status."""
    if m.world.fault(f"register-{m.ip}").exists():
        raise Refused("[kubelet-start] the kubelet did not register its Node (fault injected)")
    name = registration.get("name", m.ip)
    creds = load_kubeconfig(m.path("/etc/kubernetes/kubelet.conf"))
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": ARCH}
    labels |= _node_labels(registration)
    if control_plane:  # kubeadm's mark-control-plane phase
        labels["node-role.kubernetes.io/control-plane"] = ""
        labels["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
    taints = [{k: v for k, v in t.items() if k in ("key", "value", "effect")} for t in registration.get("taints", [])]
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": _meta(name) | {"labels": labels},
        "spec": {"taints": taints},
    }
    try:
        create(creds, "/api/v1/nodes", node)
    except OSError as err:
        raise Refused(f"[kubelet-start] the kubelet cannot reach {creds.server}: {err}") from None
    report(m, mine, name, creds)


def report(m: Machine, mine: dict[str, Any], name: str, creds: Credentials | None = None) -> None:
    """The kubelet posts its status."""
    creds = creds or load_kubeconfig(m.path("/etc/kubernetes/kubelet.conf"))
    body = {"status": node_status(m, mine, name)}
    try:
        status, answer = request(
            creds, "PATCH", f"/api/v1/nodes/{name}/status", body, content_type="application/merge-patch+json"
        )
    except OSError as err:
        raise Refused(f"kubelet: cannot reach {creds.server}: {err}") from None
    if status != 200:
        raise Refused(f"kubelet: updating node {name} status: HTTP {status}: {answer.get('message', answer)}")
