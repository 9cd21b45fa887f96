"""Stand-ins for the programs the platform runs on machines: kubeadm, kubelet, systemctl,
apt-get, apt-mark, modprobe, sysctl, swapoff, curl, gpg and crictl. No Kubernetes binaries
can run here, so these record what they were asked (one JSON line per call in the world's
calls.jsonl, tests/support/kubeadm_world.py) and check it the way the real programs would:

- kubeadm reads its --config file and refuses a document that does not match the reference
  field lists (tests/support/kubeadm_reference.py), an API version that is not the one of the
  cluster's Kubernetes version, a second init on a machine, a join --control-plane without
  the shared CAs in place, a malformed, unknown or expired bootstrap token, a CA pin that is
  not the cluster CA's, and its preflight checks (swap, br_netfilter, the sysctls, containerd
  and the kubelet enabled, /etc/kubernetes/manifests empty unless that check is ignored). A
  kubeadm of another minor version than the cluster's refuses init, join and upgrade.
  A worker's join to an endpoint no stand-in kubeadm init made (a hosted control plane) does token
  discovery over HTTPS against the API at the endpoint, as kubeadm does: cluster-info from
  kube-public read anonymously, its JWS for the token checked (bootstrapsigner's, see
  tests/support/jws.py; until it is there, asked again up to the discovery timeout, 5 minutes
  unless the JoinConfiguration says) and its CA checked against the pin; then, as the bootstrap token,
  kubeadm-config and kubelet-config from kube-system (their documents checked against the
  reference field lists) and the Node of its name (kubeadm's RBAC must let it). The node is
  recorded in the world's "hosted" section for the test's kubelets.
- apt-get installs "name=VERSION-*" only from a repository of that minor version, and not a
  held package; the keyring must be there first.
- curl prints (or writes with -o) a stand-in key; gpg --dearmor reads its input file, or
  stdin when it names none. Neither takes the world's lock, so `curl | gpg` cannot deadlock;
  no stand-in reads stdin unless it is its input, and every other one waits for the lock a
  bounded time (kubeadm_world.WorldBusy), so none can hang a test.
Each call is logged with its arguments, whether it succeeded (and why not), the kind and
apiVersion of every document kubeadm was given, and the id of the bootstrap token a join used.
In a live world (kubeadm_world.World.live: the demo's machines in network namespaces) kubeadm
and the kubelet also do their part through the cluster's API, with the Kubernetes API
stand-in as kube-apiserver (tests/support/standin_kube.py).
`install(bin_dir)` puts one executable per program in `bin_dir` (for the machines' PATH).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROGRAMS = (
    "kubeadm", "kubelet", "systemctl", "apt-get", "apt-mark", "modprobe", "sysctl", "swapoff", "curl", "gpg", "crictl",
)  # fmt: skip
CA_FILES = (
    "ca.crt", "ca.key", "sa.key", "sa.pub", "front-proxy-ca.crt", "front-proxy-ca.key", "etcd/ca.crt", "etcd/ca.key",
)  # fmt: skip
TOKEN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")


class Refused(Exception):
    """The program fails with this message (exit status 1)."""


class NotYetSigned(Refused):
    """cluster-info has no JWS for the join's token yet. kubeadm's token discovery asks again
    (every 5 s, jittered) until its discovery timeout; main() does too, without the world's lock
    meanwhile (the test's bootstrapsigner may need it), and fails with this message at the end."""

    def __init__(self, token_id: str, timeout: float) -> None:
        super().__init__(
            "couldn't validate the identity of the API Server: could not find a JWS signature in the cluster-info "
            f"ConfigMap for token ID {token_id!r}"
        )
        self.timeout = timeout


# How long a join waits before asking again for an unsigned cluster-info: kubeadm waits 5 s
# (jittered); the stand-in asks more often, which changes how soon it notices, not what it accepts.
DISCOVERY_RETRY = 0.2


def install(bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    repo = Path(__file__).resolve().parents[2]
    for program in PROGRAMS:
        path = bin_dir / program
        path.write_text(
            f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(repo)!r})\n"
            "from tests.support.standins import main\nsys.exit(main(sys.argv))\n"
        )
        path.chmod(0o755)


class Machine:
    """The machine this process runs on: its address, root directory and world state."""

    def __init__(self, world: Any, ip: str) -> None:
        self.world = world
        self.ip = ip
        self.root = world.root_of(ip)
        # The documents this call was given, kind -> apiVersion (recorded with the call).
        self.documents: dict[str, str] = {}
        # The id (not the secret) of the bootstrap token a join used (recorded with the call).
        self.token_id = ""

    def path(self, p: str) -> Path:
        """A path of this machine: an absolute machine path, or one under any machine's root
        (kubeadm writes the init machine's certificatesDir into the cluster's configuration)."""
        prefix = str(self.world.machines_root) + "/"
        if p.startswith(prefix):
            p = "/" + p[len(prefix) :].split("/", 1)[1]
        return Path(str(self.root) + p)


def _minor(version: str) -> str:
    return ".".join(version.lstrip("v").split(".")[:2])


def spki_hash(cert_pem: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = x509.load_pem_x509_certificate(cert_pem).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([hms])", duration))


def _flag(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


# -- kubeadm ------------------------------------------------------------------------------


def _documents(m: Machine, argv: list[str]) -> dict[str, dict[str, Any]]:
    import yaml

    from tests.support import kubeadm_reference

    config = _flag(argv, "--config")
    if config is None:
        raise Refused("this stand-in only takes its configuration from --config")
    try:
        docs = [d for d in yaml.safe_load_all(Path(config).read_text()) if d]
    except (OSError, yaml.YAMLError) as err:
        raise Refused(f"unable to read config from {config!r}: {err}") from None
    out: dict[str, dict[str, Any]] = {}
    for doc in docs:
        problems = kubeadm_reference.errors(doc)
        if problems:
            raise Refused(f"{config}: {doc.get('kind')}: " + "; ".join(problems))
        out[doc["kind"]] = doc
        m.documents[doc["kind"]] = doc["apiVersion"]
    return out


def _check_api(doc: dict[str, Any], version: str) -> None:
    want = (
        "kubeadm.k8s.io/v1beta4"
        if tuple(int(x) for x in _minor(version).split(".")) >= (1, 31)
        else ("kubeadm.k8s.io/v1beta3")
    )
    if doc["apiVersion"] != want:
        raise Refused(f"{doc['kind']}: Kubernetes {version} wants {want}, not {doc['apiVersion']}")


def _preflight(m: Machine, mine: dict[str, Any], ignored: list[str], *, control_plane: bool) -> None:
    errors = []
    if mine.get("swap", True) and "Swap" not in ignored:
        errors.append("[ERROR Swap]: running with swap on is not supported. Please disable swap")
    if "br_netfilter" not in mine.get("modules", []):
        errors.append("[ERROR FileContent--proc-sys-net-bridge-bridge-nf-call-iptables]: br_netfilter is not loaded")
    for key in ("net.bridge.bridge-nf-call-iptables", "net.ipv4.ip_forward"):
        if mine.get("sysctl", {}).get(key) != "1":
            errors.append(f"[ERROR FileContent--proc-sys-{key.replace('.', '-')}]: {key} is not set to 1")
    services = mine.get("services", {})
    if services.get("containerd") != "active":
        errors.append("[ERROR CRI]: container runtime is not running")
    if not services.get("kubelet", "").startswith(("active", "enabled")):
        errors.append("[WARNING Service-Kubelet]: kubelet service is not enabled")
    manifests = m.path("/etc/kubernetes/manifests")
    crowded = control_plane and manifests.exists() and any(manifests.iterdir())
    if crowded and "DirAvailable--etc-kubernetes-manifests" not in ignored:
        errors.append("[ERROR DirAvailable--etc-kubernetes-manifests]: /etc/kubernetes/manifests is not empty")
    if errors:
        raise Refused("[preflight] Some fatal errors occurred:\n\t" + "\n\t".join(errors))


def _kubeadm_minor_matches(mine: dict[str, Any], version: str) -> None:
    have = mine.get("packages", {}).get("kubeadm")
    if have is None:
        raise Refused("kubeadm: command not found (the kubeadm package is not installed)")
    if _minor(have) != _minor(version):
        raise Refused(f"this kubeadm is v{have}; it cannot act on a v{version.lstrip('v')} control plane")


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _static_pod_mounts(m: Machine, configuration: dict[str, Any]) -> None:
    """The host files the control-plane static pods mount (a component's extraVolumes with
    pathType File): missing, the kubelet does not start the pod, and kubeadm times out."""
    for component in ("apiServer", "controllerManager", "scheduler"):
        for volume in configuration.get(component, {}).get("extraVolumes", []):
            if volume.get("pathType") == "File" and not m.path(volume["hostPath"]).is_file():
                raise Refused(
                    f"[wait-control-plane] the {component} static pod did not start: "
                    f"hostPath {volume['hostPath']} is not a file (timed out waiting for the condition)"
                )


def _control_plane_files(m: Machine, endpoint: str, version: str) -> None:
    for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"):
        _write(m.path(f"/etc/kubernetes/manifests/{component}.yaml"), f"# stand-in static pod {component} {version}\n")
    _write(m.path("/etc/kubernetes/admin.conf"), f"# stand-in admin.conf for https://{endpoint}\n", 0o600)


def _join_node(state: dict[str, Any], m: Machine, name: str, *, control_plane: bool) -> None:
    cluster = state["cluster"]
    mine = state["machines"][m.ip]
    cluster["nodes"][name] = {
        "ip": m.ip,
        "control_plane": control_plane,
        "version": cluster["version"] if control_plane else "",
        "unschedulable": False,
    }
    if control_plane:
        cluster["etcd"][name] = random.randrange(1 << 40, 1 << 63)
    mine["member"] = name
    mine["control_plane"] = control_plane
    _write(m.path("/etc/kubernetes/kubelet.conf"), f"# stand-in kubelet.conf of {name}\n", 0o600)


def kubeadm(m: Machine, argv: list[str], state: dict[str, Any]) -> str:
    mine = state["machines"].setdefault(m.ip, {})
    verb = argv[1] if len(argv) > 1 else ""
    if verb == "init":
        docs = _documents(m, argv)
        if not {"InitConfiguration", "ClusterConfiguration"} <= set(docs):
            raise Refused("init needs an InitConfiguration and a ClusterConfiguration")
        cc, ic = docs["ClusterConfiguration"], docs["InitConfiguration"]
        version = cc["kubernetesVersion"]
        _check_api(cc, version)
        _check_api(ic, version)
        if mine.get("member") or m.path("/etc/kubernetes/manifests/kube-apiserver.yaml").exists():
            raise Refused("[ERROR FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml]: already exists")
        if state["cluster"] is not None:
            raise Refused(f"a control plane was initialized already on {state['cluster']['init_machine']}")
        _kubeadm_minor_matches(mine, version)
        reg = ic.get("nodeRegistration", {})
        _preflight(m, mine, reg.get("ignorePreflightErrors", []), control_plane=True)
        pki = m.path(cc.get("certificatesDir", "/etc/kubernetes/pki"))
        missing = [f for f in CA_FILES if not (pki / f).exists()]
        if missing:
            raise Refused(f"this stand-in expects the pre-distributed CAs; missing {missing}")
        _static_pod_mounts(m, cc)
        now = time.time()
        cluster: dict[str, Any] = {
            "init_machine": m.ip,
            "endpoint": cc.get("controlPlaneEndpoint", ""),
            "version": version.lstrip("v"),
            "ca_pem": (pki / "ca.crt").read_text(),
            "nodes": {},
            "etcd": {},
            "tokens": {
                t["token"].split(".")[0]: {"secret": t["token"].split(".")[1], "expires": now + _seconds(t["ttl"])}
                for t in ic.get("bootstrapTokens", [])
            },
            # What kubeadm keeps in the kubeadm-config ConfigMap, and every control-plane join uses.
            "configuration": cc,
        }
        state["cluster"] = cluster
        _control_plane_files(m, cluster["endpoint"], version)
        _join_node(state, m, reg.get("name", m.ip), control_plane=True)
        if m.world.live:
            _live_init(m, state, cc, reg)
        return "Your Kubernetes control-plane has initialized successfully!\n"
    if verb == "join":
        docs = _documents(m, argv)
        if set(docs) != {"JoinConfiguration"}:
            raise Refused(f"join takes a JoinConfiguration only, got {sorted(docs)}")
        jc = docs["JoinConfiguration"]
        cluster = state["cluster"]
        endpoint = (jc["discovery"].get("bootstrapToken") or {}).get("apiServerEndpoint")
        if cluster is None or (endpoint != cluster["endpoint"] and "controlPlane" not in jc):
            return _join_hosted(m, jc, state)  # an endpoint no stand-in kubeadm init made
        _check_api(jc, cluster["version"])
        if mine.get("member"):
            raise Refused("[ERROR FileAvailable--etc-kubernetes-kubelet.conf]: this machine already joined")
        _kubeadm_minor_matches(mine, cluster["version"])
        bootstrap = jc["discovery"].get("bootstrapToken")
        if bootstrap is None:
            raise Refused("this stand-in only does token discovery")
        if bootstrap.get("apiServerEndpoint") != cluster["endpoint"]:
            raise Refused(
                f"no API server at {bootstrap.get('apiServerEndpoint')!r} (the cluster's is {cluster['endpoint']})"
            )
        match = TOKEN.match(bootstrap["token"])
        if match is None:
            raise Refused("the bootstrap token is malformed: want [a-z0-9]{6}.[a-z0-9]{16}")
        known = cluster["tokens"].get(match.group(1))
        if known is None or known["secret"] != match.group(2) or known["expires"] < time.time():
            raise Refused("the bootstrap token is unknown or expired: cluster-info is not signed for it")
        m.token_id = match.group(1)
        if spki_hash(cluster["ca_pem"].encode()) not in bootstrap.get("caCertHashes", []):
            raise Refused("cluster CA found in cluster-info ConfigMap is invalid: none of the public keys match")
        if m.world.live:
            from tests.support import standin_kube

            standin_kube.discover(bootstrap["apiServerEndpoint"], bootstrap["caCertHashes"])
        reg = jc.get("nodeRegistration", {})
        control_plane = "controlPlane" in jc
        _preflight(m, mine, reg.get("ignorePreflightErrors", []), control_plane=control_plane)
        if control_plane:
            pki = m.path(str(Path(jc.get("caCertPath", "/etc/kubernetes/pki/ca.crt")).parent))
            missing = [f for f in CA_FILES if not (pki / f).exists()]
            if missing:
                raise Refused(
                    "One or more conditions for hosting a new control plane instance is not satisfied. "
                    f"[failure loading certificate authority: missing {missing}]"
                )
            if (pki / "ca.crt").read_text() != cluster["ca_pem"]:
                raise Refused("the CA in place is not the cluster's")
            _static_pod_mounts(m, cluster.get("configuration", {}))
            _control_plane_files(m, cluster["endpoint"], cluster["version"])
        _join_node(state, m, reg.get("name", m.ip), control_plane=control_plane)
        if m.world.live:
            _live_join(m, state, reg, control_plane=control_plane)
        return "This node has joined the cluster.\n"
    if verb == "token" and argv[2:3] == ["create"]:
        cluster = state["cluster"]
        if cluster is None or not mine.get("control_plane"):
            raise Refused("failed to load admin kubeconfig: this is not a control-plane machine")
        kubeconfig = _flag(argv, "--kubeconfig") or "/etc/kubernetes/admin.conf"
        if not m.path(kubeconfig).exists():
            raise Refused(f"failed to load admin kubeconfig: open {kubeconfig}: no such file or directory")
        match = TOKEN.match(argv[3] if len(argv) > 3 else "")
        if match is None:
            raise Refused("the token does not match the format [a-z0-9]{6}.[a-z0-9]{16}")
        ttl = _seconds(_flag(argv, "--ttl") or "24h")
        cluster["tokens"][match.group(1)] = {"secret": match.group(2), "expires": time.time() + ttl}
        return argv[3] + "\n"
    if verb == "upgrade" and argv[2:3] == ["apply"]:
        cluster = state["cluster"]
        target = argv[3].lstrip("v") if len(argv) > 3 else ""
        if cluster is None or not mine.get("control_plane"):
            raise Refused("upgrade apply runs on a control-plane machine")
        if "-y" not in argv and "--yes" not in argv:
            raise Refused("Are you sure you want to proceed? [y/N]: no answer")
        _kubeadm_minor_matches(mine, target)
        have, want = (tuple(int(x) for x in _minor(v).split(".")) for v in (cluster["version"], target))
        if not (have <= want <= (have[0], have[1] + 1)):
            raise Refused(
                f"specified version to upgrade to v{target} is not one minor version above v{cluster['version']}"
            )
        cluster["version"] = target
        cluster["nodes"][mine["member"]]["version"] = target
        return f'[upgrade/successful] SUCCESS! Your cluster was upgraded to "v{target}".\n'
    if verb == "upgrade" and argv[2:3] == ["node"]:
        cluster = state["cluster"]
        if cluster is None or not mine.get("member"):
            raise Refused("upgrade node runs on a machine of the cluster")
        _kubeadm_minor_matches(mine, cluster["version"])
        if mine.get("control_plane"):
            cluster["nodes"][mine["member"]]["version"] = cluster["version"]
        return "[upgrade] The configuration for this node was successfully updated!\n"
    if verb == "reset":
        if "-f" not in argv and "--force" not in argv:
            raise Refused("Are you sure you want to proceed? [y/N]: no answer")
        cluster = state["cluster"]
        name = mine.get("member")
        if m.world.live:
            from tests.support import standin_kube

            standin_kube.stop_static_pods(m, state)
        for path in (m.path("/etc/kubernetes/manifests"),):
            for f in path.glob("*.yaml") if path.exists() else []:
                if f.name in (
                    "kube-apiserver.yaml",
                    "kube-controller-manager.yaml",
                    "kube-scheduler.yaml",
                    "etcd.yaml",
                ):
                    f.unlink()
        if m.world.fault(f"reset-{m.ip}").exists():
            raise Refused("[reset] failed to remove etcd member: etcd cluster is not healthy (fault injected)")
        if cluster is not None and name and mine.get("control_plane"):
            cluster["etcd"].pop(name, None)
            if not cluster["etcd"]:
                # reset wipes the local etcd's data (/var/lib/etcd): with its last member gone
                # the cluster is gone, and a new kubeadm init may start another.
                state["cluster"] = None
        for conf in ("admin.conf", "kubelet.conf"):
            m.path(f"/etc/kubernetes/{conf}").unlink(missing_ok=True)
        hosted = (state.get("hosted") or {}).get(mine.pop("endpoint", None) or "")
        if hosted is not None and name:
            hosted["nodes"].pop(name, None)
        mine.pop("member", None)
        mine.pop("control_plane", None)
        return "[reset] done\n"
    raise Refused(f"this stand-in does not do `kubeadm {' '.join(argv[1:3])}`")


def _https(url: str, *, ca_pem: str = "", token: str = "") -> tuple[int, Any]:
    """GET `url`: (HTTP status, JSON body). Without `ca_pem` the server is not verified (what
    kubeadm does for cluster-info, before it checks the CA found there against its pin)."""
    import ssl
    import urllib.error
    import urllib.request

    context = ssl.create_default_context(cadata=ca_pem or None)
    if not ca_pem:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")
    except (urllib.error.URLError, OSError) as err:
        raise Refused(f"unable to reach {url}: {err}") from None


def _join_hosted(m: Machine, jc: dict[str, Any], state: dict[str, Any]) -> str:
    import base64

    import yaml

    from tests.support import jws, kubeadm_reference

    mine = state["machines"].setdefault(m.ip, {})
    if "controlPlane" in jc:
        raise Refused("this stand-in joins workers only to a control plane it did not init")
    if mine.get("member"):
        raise Refused("[ERROR FileAvailable--etc-kubernetes-kubelet.conf]: this machine already joined")
    bootstrap = jc["discovery"].get("bootstrapToken")
    if bootstrap is None:
        raise Refused("this stand-in only does token discovery")
    match = TOKEN.match(bootstrap.get("token", ""))
    if match is None:
        raise Refused("the bootstrap token is malformed: want [a-z0-9]{6}.[a-z0-9]{16}")
    token_id, token_secret = match.groups()
    endpoint = bootstrap.get("apiServerEndpoint", "")
    base = f"https://{endpoint}"
    code, info = _https(f"{base}/api/v1/namespaces/kube-public/configmaps/cluster-info")
    if code != 200:
        raise Refused(f"failed to request the cluster-info ConfigMap: {info.get('message', code)}")
    data = info.get("data") or {}
    kubeconfig = data.get("kubeconfig", "")
    signature = data.get(f"jws-kubeconfig-{token_id}")
    if signature is None:  # the bootstrapsigner adds it a little after the token: kubeadm waits
        timeout = (jc.get("timeouts") or {}).get("discovery") or jc["discovery"].get("timeout") or "5m0s"
        raise NotYetSigned(token_id, _seconds(timeout))
    if signature != jws.detached(kubeconfig, token_id, token_secret):
        raise Refused("failed to verify JWS signature of received cluster info object, can't trust this API Server")
    cluster = yaml.safe_load(kubeconfig)["clusters"][0]["cluster"]
    ca_pem = base64.b64decode(cluster["certificate-authority-data"]).decode()
    if spki_hash(ca_pem.encode()) not in bootstrap.get("caCertHashes", []):
        raise Refused("cluster CA found in cluster-info ConfigMap is invalid: none of the public keys are pinned")
    token = bootstrap["token"]
    found: dict[str, Any] = {}
    for name in ("kubeadm-config", "kubelet-config"):
        code, body = _https(f"{base}/api/v1/namespaces/kube-system/configmaps/{name}", ca_pem=ca_pem, token=token)
        if code != 200:
            raise Refused(f"unable to fetch the {name} ConfigMap: {body.get('message', code)}")
        found[name] = body.get("data") or {}
    cc = yaml.safe_load(found["kubeadm-config"].get("ClusterConfiguration", "")) or {}
    kubelet = yaml.safe_load(found["kubelet-config"].get("kubelet", "")) or {}
    for what, doc in (("kubeadm-config", cc), ("kubelet-config", kubelet)):
        problems = kubeadm_reference.errors(doc)
        if problems:
            raise Refused(f"the {what} ConfigMap does not decode: " + "; ".join(problems))
    version = str(cc.get("kubernetesVersion", "")).lstrip("v")
    if not version or cc.get("controlPlaneEndpoint") != endpoint:
        raise Refused(f"the cluster's ClusterConfiguration does not name the endpoint {endpoint}")
    _check_api(jc, version)
    _kubeadm_minor_matches(mine, version)
    reg = jc.get("nodeRegistration", {})
    name = reg.get("name", m.ip)
    code, body = _https(f"{base}/api/v1/nodes/{name}", ca_pem=ca_pem, token=token)
    if code == 200:
        raise Refused(f'a Node with name {name!r} and status "Ready" already exists in the cluster')
    if code != 404:
        raise Refused(f"cannot get Node {name!r}: {body.get('message', code)}")
    _preflight(m, mine, reg.get("ignorePreflightErrors", []), control_plane=False)
    hosted = state.setdefault("hosted", {}).setdefault(endpoint, {"version": version, "nodes": {}})
    hosted["nodes"][name] = {"ip": m.ip}
    mine["member"] = name
    mine["control_plane"] = False
    mine["endpoint"] = endpoint
    _write(m.path("/etc/kubernetes/kubelet.conf"), f"# stand-in kubelet.conf of {name} for {base}\n", 0o600)
    return "This node has joined the cluster.\n"


def _live_init(m: Machine, state: dict[str, Any], cc: dict[str, Any], registration: dict[str, Any]) -> None:
    """A live world's kubeadm init (standin_kube.py): certificates and kubeconfigs, the static
    pods with the API stand-in, the bootstrap objects, the first Node."""
    from tests.support import standin_kube as kube

    cluster = state["cluster"]
    pki_dir = cc.get("certificatesDir", "/etc/kubernetes/pki")
    cluster.update(
        pki_dir=pki_dir,
        service_subnet=cc.get("networking", {}).get("serviceSubnet", "10.96.0.0/12"),
        configuration=cc,
        # For the workers' kubelet certificates (TLS bootstrap is not imitated).
        ca_key_pem=m.path(pki_dir + "/ca.key").read_text(),
    )
    ca = kube.cluster_ca(m, pki_dir)
    name = registration.get("name", m.ip)
    kube.apiserver_certificate(m, ca, cc, name)
    kube.write_kubeconfigs(m, ca, cluster["endpoint"], name, admin=True)
    with kube.static_pods(m, state):
        kube.bootstrap(m)
        kube.register_node(m, state["machines"][m.ip], registration, control_plane=True)


def _live_join(m: Machine, state: dict[str, Any], registration: dict[str, Any], *, control_plane: bool) -> None:
    from tests.support import standin_kube as kube
    from tke.internal.provider.kube import pki

    cluster = state["cluster"]
    name = registration.get("name", m.ip)
    if control_plane:
        ca = kube.cluster_ca(m, cluster["pki_dir"])
        kube.apiserver_certificate(m, ca, cluster["configuration"], name)
    else:
        ca = pki.CertificateAuthority(pki.KeyPair(cluster["ca_pem"].encode(), cluster["ca_key_pem"].encode()))
    kube.write_kubeconfigs(m, ca, cluster["endpoint"], name, admin=control_plane)
    with kube.static_pods(m, state):
        kube.register_node(m, state["machines"][m.ip], registration, control_plane=control_plane)


# -- the rest -----------------------------------------------------------------------------


def apt_get(m: Machine, argv: list[str], state: dict[str, Any]) -> str:
    mine = state["machines"].setdefault(m.ip, {})
    sources = m.path("/etc/apt/sources.list.d/kubernetes.list")
    if "update" in argv:
        if not sources.exists():
            return "Hit: the distribution's repositories\n"
        line = sources.read_text()
        keyring = re.search(r"signed-by=(\S+)\]", line)
        if keyring is None or not Path(keyring.group(1)).exists():
            raise Refused("NO_PUBKEY: the repository's key is not in the keyring")
        repo = re.search(r"/v(\d+\.\d+)/deb/", line)
        mine["repository"] = repo.group(1) if repo else ""
        mine["repository_url"] = line.split("]")[1].split()[0]
        return "Hit: the Kubernetes repository\n"
    if "install" in argv:
        packages = mine.setdefault("packages", {})
        held = mine.get("held", [])
        for spec in [a for a in argv[argv.index("install") + 1 :] if not a.startswith("-")]:
            name, _, version = spec.partition("=")
            if not version:
                packages[name] = "1.7.24" if name == "containerd" else packages.get(name, "")
                continue
            version = version.rstrip("*").rstrip("-")
            if mine.get("repository") != _minor(version):
                raise Refused(
                    f"E: Version '{version}-*' for '{name}' was not found (repository: {mine.get('repository')})"
                )
            if name in held and packages.get(name) not in (None, version):
                raise Refused(
                    f"E: Held packages were changed and -y was used without --allow-change-held-packages: {name}"
                )
            packages[name] = version
        return ""
    raise Refused(f"stand-in apt-get: unsupported {argv[1:]}")


def apt_mark(m: Machine, argv: list[str], state: dict[str, Any]) -> str:
    mine = state["machines"].setdefault(m.ip, {})
    held = set(mine.get("held", []))
    names = set(argv[2:])
    held = held | names if argv[1] == "hold" else held - names
    mine["held"] = sorted(held)
    return ""


def systemctl(m: Machine, argv: list[str], state: dict[str, Any]) -> str:
    mine = state["machines"].setdefault(m.ip, {})
    services = mine.setdefault("services", {})
    args = [a for a in argv[1:] if not a.startswith("-")]
    verb, units = (args[0], args[1:]) if args else ("", [])
    if verb == "is-active":
        if all(services.get(u) == "active" for u in units):
            return "active\n"
        raise Refused("inactive")
    for unit in units:
        if unit not in mine.get("packages", {}):
            raise Refused(f"Unit {unit}.service not found.")
        if verb in ("restart", "start") or (verb == "enable" and "--now" in argv):
            services[unit] = "active"
            if unit == "kubelet":
                mine["kubelet_version"] = mine["packages"]["kubelet"]
                if m.world.live and mine.get("member"):
                    from tests.support import standin_kube

                    # The kubelet reports when it can; systemctl succeeds either way.
                    with contextlib.suppress(Refused):
                        standin_kube.report(m, mine, mine["member"])
        elif verb == "enable":
            services.setdefault(unit, "enabled")
    return ""


def simple(m: Machine, argv: list[str], state: dict[str, Any]) -> str:
    mine = state["machines"].setdefault(m.ip, {})
    program = argv[0]
    if program == "modprobe":
        mine["modules"] = sorted({*mine.get("modules", []), argv[-1]})
    elif program == "swapoff":
        mine["swap"] = False
    elif program == "sysctl" and "--system" in argv:
        values = mine.setdefault("sysctl", {})
        for conf in sorted(m.path("/etc/sysctl.d").glob("*.conf")):
            for line in conf.read_text().splitlines():
                if "=" in line and not line.startswith("#"):
                    key, value = (x.strip() for x in line.split("=", 1))
                    values[key] = value
    elif program == "kubelet":
        version = mine.get("packages", {}).get("kubelet")
        if version is None:
            raise Refused("kubelet: command not found")
        return f"Kubernetes v{version}\n"
    return ""


def _operands(argv: list[str], *valued: str) -> list[str]:
    """The arguments that are neither options nor the values of the options in `valued`."""
    return [a for i, a in enumerate(argv[1:], 1) if not a.startswith("-") and argv[i - 1] not in valued]


def curl(argv: list[str]) -> str:
    """Prints (or with -o writes) a stand-in key for the URL; never reads stdin."""
    urls = _operands(argv, "-o", "--output")
    if len(urls) != 1:
        raise Refused(f"this stand-in fetches one URL, not {urls}")
    key = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nstand-in key of " + urls[0] + "\n"
    out = _flag(argv, "-o") or _flag(argv, "--output")
    if out is None:
        return key
    Path(out).write_text(key)
    return ""


def gpg(argv: list[str]) -> str:
    """--dearmor of its input file, or of stdin (a pipe from curl) without one, as gpg does:
    stdin is read only when it is the input, so a command that names its file never waits on
    a stdin nobody closes."""
    out = _flag(argv, "-o") or _flag(argv, "--output")
    if out is None or "--dearmor" not in argv:
        raise Refused("this stand-in does `gpg --dearmor -o FILE [INPUT]` only")
    inputs = _operands(argv, "-o", "--output")
    if len(inputs) > 1:
        raise Refused(f"gpg: one input file, not {inputs}")
    text = Path(inputs[0]).read_text() if inputs else sys.stdin.read()
    if "BEGIN PGP PUBLIC KEY BLOCK" not in text:
        raise Refused("gpg: no valid OpenPGP data found")
    Path(out).write_text("dearmored " + text)
    return ""


def crictl(m: Machine, argv: list[str], state: dict[str, Any]) -> str:
    mine = state["machines"].setdefault(m.ip, {})
    cluster = state["cluster"]
    if argv[1:2] == ["ps"]:
        return f"etcd-{mine['member']}\n" if mine.get("control_plane") else ""
    if argv[1:2] == ["exec"] and "etcdctl" in argv:
        if not argv[2].startswith("etcd-") or cluster is None:
            raise Refused(f"container {argv[2]!r} not found")
        rest = argv[argv.index("etcdctl") + 1 :]
        words = [a for a in rest if not a.startswith("-")]
        if words[:2] == ["member", "list"]:
            members = [{"ID": i, "name": n} for n, i in sorted(cluster["etcd"].items())]
            return json.dumps({"members": members}) + "\n"
        if words[:2] == ["member", "remove"]:
            wanted = int(words[2], 16)
            for name, member_id in list(cluster["etcd"].items()):
                if member_id == wanted:
                    del cluster["etcd"][name]
                    return f"Member {words[2]} removed from cluster\n"
            raise Refused(f"member {words[2]} not found")
    raise Refused(f"stand-in crictl: unsupported {argv[1:]}")


HANDLERS: dict[str, Callable[[Machine, list[str], dict[str, Any]], str]] = {
    "kubeadm": kubeadm,
    "apt-get": apt_get,
    "apt-mark": apt_mark,
    "systemctl": systemctl,
    "crictl": crictl,
}


STATELESS: dict[str, Callable[[list[str]], str]] = {"curl": curl, "gpg": gpg}


def _under_the_lock(world: Any, machine: Machine, args: list[str]) -> str:
    """The program's handler with the world's state locked; a join that finds cluster-info not
    yet signed lets go of the lock and tries again until its discovery timeout, as kubeadm does."""
    deadline = 0.0
    while True:
        try:
            with world.state() as state:
                return HANDLERS.get(args[0], simple)(machine, args, state)
        except NotYetSigned as unsigned:
            deadline = deadline or time.monotonic() + unsigned.timeout
            if time.monotonic() >= deadline:
                raise
        _before_asking_again()


def _before_asking_again() -> None:
    time.sleep(DISCOVERY_RETRY)


def main(argv: list[str]) -> int:
    from tests.support.kubeadm_world import WORLD_ENV, World, WorldBusy

    program = os.path.basename(argv[0])
    args = [program, *argv[1:]]
    world = World(Path(os.environ[WORLD_ENV]))
    ip = os.environ.get("SSH_CONNECTION", "127.0.0.1 0 127.0.0.1 22").split()[2]
    machine = Machine(world, ip)
    record: dict[str, Any] = {"machine": ip, "argv": args, "ok": True}
    try:
        # curl and gpg never take the world's lock: in `curl | gpg` gpg waits for curl's output,
        # and holding the lock meanwhile it would wait forever for a curl waiting for the lock.
        out = STATELESS[program](args) if program in STATELESS else _under_the_lock(world, machine, args)
    except (Refused, WorldBusy, OSError) as err:
        record.update(ok=False, error=str(err))
        print(f"{program}: {err}", file=sys.stderr)
        out = None
    if machine.documents:
        record["documents"] = machine.documents
    if machine.token_id:
        record["token_id"] = machine.token_id
    world.log(record)
    if out is None:
        return 1
    sys.stdout.write(out)
    return 0
