"""A small evaluator of the Pod Security Standards (the `baseline` and `restricted` levels that
Pod Security Admission enforces), for tests and for the Kubernetes API stand-in. Nothing installed
here evaluates them (kube-apiserver's PodSecurity admission plugin does, in a real cluster), so
this is a stand-in written from the rules as Kubernetes defines them: the reference page
concepts/security/pod-security-standards and the checks of k8s.io/pod-security-admission
(staging/src/k8s.io/pod-security-admission/policy/check_*.go), each with the version it applies
from. "Containers" are containers, initContainers and ephemeralContainers, as PSA visits them.

baseline:
- hostProcess: no windowsOptions.hostProcess true (pod or container);
- hostNamespaces: hostNetwork, hostPID, hostIPC not true;
- privileged: no container securityContext.privileged true;
- capabilities_baseline: capabilities.add only from Docker's default set (AUDIT_WRITE, CHOWN,
  DAC_OVERRIDE, FOWNER, FSETID, KILL, MKNOD, NET_BIND_SERVICE, SETFCAP, SETGID, SETPCAP, SETUID,
  SYS_CHROOT);
- hostPathVolumes: no hostPath volume;
- hostPorts: no container port with a hostPort other than 0;
- appArmorProfile: the beta annotations `container.apparmor.security.beta.kubernetes.io/*` only
  runtime/default, localhost/* or empty; appArmorProfile.type (pod or container) RuntimeDefault
  or Localhost;
- seLinuxOptions: type empty, container_t, container_init_t or container_kvm_t; no user, no
  role;
- procMount: Default (or unset);
- seccompProfile_baseline: no seccompProfile.type Unconfined (pod or container);
- sysctls: only kernel.shm_rmid_forced, net.ipv4.ip_local_port_range, net.ipv4.tcp_syncookies,
  net.ipv4.ping_group_range, net.ipv4.ip_unprivileged_port_start; from 1.27
  net.ipv4.ip_local_reserved_ports; from 1.29 net.ipv4.tcp_keepalive_time, tcp_fin_timeout,
  tcp_keepalive_intvl, tcp_keepalive_probes;
- hostProbesAndHostLifecycle (from 1.34): no `host` in a probe's or lifecycle handler's httpGet
  or tcpSocket.

restricted, everything of baseline and:
- restrictedVolumes: every volume one of configMap, csi, downwardAPI, emptyDir, ephemeral,
  persistentVolumeClaim, projected, secret;
- allowPrivilegeEscalation (from 1.8): every container sets it false;
- runAsNonRoot: the pod sets true and no container sets false, or every container sets true;
- runAsUser (from 1.23): no runAsUser 0, pod or container;
- seccompProfile_restricted (from 1.19): the pod sets RuntimeDefault or Localhost (and no
  container another type), or every container does;
- capabilities_restricted (from 1.22): every container drops ALL and adds nothing but
  NET_BIND_SERVICE.

Stricter than PSA on purpose (never more lenient): the relaxations for Windows pods (spec.os.name
windows, 1.25+) and pods in a user namespace (hostUsers false) are not modelled, nor sysctls
allowed after 1.29 (tcp_rmem, tcp_wmem), nor SELinux types added to the list after 1.0, so a pod
this accepts is accepted by PSA at every version from 1.29 on. Messages are PSA's: `reason
(detail)`, joined by ", " in a refusal.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

LEVELS = ("privileged", "baseline", "restricted")
LATEST = (1, 34)  # the newest rules this evaluator knows (a `latest` label is evaluated with them)
ENFORCE = "pod-security.kubernetes.io/enforce"
ENFORCE_VERSION = "pod-security.kubernetes.io/enforce-version"

_BASELINE_CAPABILITIES = frozenset(
    {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP",
     "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
)  # fmt: skip
_RESTRICTED_VOLUMES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
_SYSCTLS = {
    (1, 0): {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
             "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start"},
    (1, 27): {"net.ipv4.ip_local_reserved_ports"},
    (1, 29): {"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
              "net.ipv4.tcp_keepalive_probes"},
}  # fmt: skip
_SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t"}
_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def version(label: str | None) -> tuple[int, int]:
    """An enforce-version label ("v1.30", "latest", unset) as (major, minor); PSA reads an invalid
    one as latest."""
    if label and label.startswith("v"):
        try:
            major, minor = (int(p) for p in label[1:].split("."))
            return (major, minor) if (major, minor) <= LATEST else LATEST
        except ValueError:
            pass
    return LATEST


def level(label: str | None) -> str:
    """An enforce label as a level: unset is privileged; PSA reads an invalid one as restricted."""
    if label is None:
        return "privileged"
    return label if label in LEVELS else "restricted"


def containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key) or []


def _sc(container: Mapping[str, Any]) -> Mapping[str, Any]:
    return container.get("securityContext") or {}


def _names(items: list[str]) -> str:
    word = "container" if len(items) == 1 else "containers"
    return f"{word} " + ", ".join(f'"{n}"' for n in items)


def _baseline(meta: Mapping[str, Any], spec: Mapping[str, Any], at: tuple[int, int]) -> list[str]:
    out = []
    pod_sc = spec.get("securityContext") or {}
    cs = list(containers(spec))
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess") or any(
        (_sc(c).get("windowsOptions") or {}).get("hostProcess") for c in cs
    ):
        out.append("hostProcess (pod or containers must not set securityContext.windowsOptions.hostProcess=true)")
    host = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    if host:
        out.append(f"host namespaces ({', '.join(host)})")
    privileged = [c["name"] for c in cs if _sc(c).get("privileged")]
    if privileged:
        out.append(f"privileged ({_names(privileged)} must not set securityContext.privileged=true)")
    added = {c["name"]: set((_sc(c).get("capabilities") or {}).get("add") or []) - _BASELINE_CAPABILITIES for c in cs}
    if any(added.values()):
        bad = sorted({cap for caps in added.values() for cap in caps})
        out.append(f"non-default capabilities ({_names([n for n, a in added.items() if a])} must not include "
                   f"{', '.join(repr(b) for b in bad)} in securityContext.capabilities.add)")  # fmt: skip
    host_path = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
    if host_path:
        out.append(f"hostPath volumes (volumes {host_path})")
    ports = [c["name"] for c in cs if any(p.get("hostPort") for p in c.get("ports") or [])]
    if ports:
        out.append(f"hostPort ({_names(ports)} use hostPorts)")
    armor = [
        f"{k}={v!r}"
        for k, v in (meta.get("annotations") or {}).items()
        if k.startswith(_APPARMOR_ANNOTATION) and v and v != "runtime/default" and not v.startswith("localhost/")
    ]
    armor += [
        f"appArmorProfile.type={t!r}"
        for sc in (pod_sc, *map(_sc, cs))
        if (t := (sc.get("appArmorProfile") or {}).get("type")) not in (None, "RuntimeDefault", "Localhost")
    ]
    if armor:
        out.append(f"forbidden AppArmor profiles ({', '.join(armor)})")  # fmt: skip
    if any(
        (o := sc.get("seLinuxOptions")) and (o.get("type", "") not in _SELINUX_TYPES or o.get("user") or o.get("role"))
        for sc in (pod_sc, *map(_sc, cs))
    ):
        out.append("seLinuxOptions (pod or containers set forbidden securityContext.seLinuxOptions)")
    proc = [c["name"] for c in cs if _sc(c).get("procMount", "Default") != "Default"]
    if proc:
        out.append(f"procMount ({_names(proc)} must not set securityContext.procMount)")
    if any((sc.get("seccompProfile") or {}).get("type") == "Unconfined" for sc in (pod_sc, *map(_sc, cs))):
        out.append(
            'seccompProfile (pod or containers must not set securityContext.seccompProfile.type to "Unconfined")'
        )
    allowed = set().union(*(names for since, names in _SYSCTLS.items() if at >= since))
    sysctls = [s["name"] for s in pod_sc.get("sysctls") or [] if s.get("name") not in allowed]
    if sysctls:
        out.append(f"forbidden sysctls ({', '.join(sysctls)})")
    if at >= (1, 34):
        handlers = [c.get(p) or {} for c in cs for p in ("livenessProbe", "readinessProbe", "startupProbe")]
        handlers += [h or {} for c in cs for h in (c.get("lifecycle") or {}).values()]
        if any((h.get(kind) or {}).get("host") for h in handlers for kind in ("httpGet", "tcpSocket")):
            out.append("probe or lifecycle host (containers use probe or lifecycle hosts)")
    return out


def _restricted(spec: Mapping[str, Any], at: tuple[int, int]) -> list[str]:
    out = []
    pod_sc = spec.get("securityContext") or {}
    cs = list(containers(spec))
    volumes = [v["name"] for v in spec.get("volumes") or [] if not _RESTRICTED_VOLUMES & set(v)]
    if volumes:
        out.append(f"restricted volume types (volumes {sorted(volumes)} have restricted types)")
    escalating = [c["name"] for c in cs if _sc(c).get("allowPrivilegeEscalation") is not False]
    if escalating:
        out.append(f"allowPrivilegeEscalation != false ({_names(escalating)} must set "
                   "securityContext.allowPrivilegeEscalation=false)")  # fmt: skip
    pod_non_root = pod_sc.get("runAsNonRoot")
    explicit = [c["name"] for c in cs if _sc(c).get("runAsNonRoot") is False]
    implicit = [c["name"] for c in cs if _sc(c).get("runAsNonRoot") is None and pod_non_root is not True]
    if pod_non_root is False or explicit:
        out.append("runAsNonRoot != true (pod or containers must not set securityContext.runAsNonRoot=false)")
    elif implicit:
        out.append(f"runAsNonRoot != true (pod or {_names(implicit)} must set securityContext.runAsNonRoot=true)")
    if at >= (1, 23) and (pod_sc.get("runAsUser") == 0 or any(_sc(c).get("runAsUser") == 0 for c in cs)):
        out.append("runAsUser=0 (pod or containers must not set runAsUser=0)")
    good = ("RuntimeDefault", "Localhost")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    bad = [
        c["name"] for c in cs if (t := (_sc(c).get("seccompProfile") or {}).get("type")) is not None and t not in good
    ]
    unset = [c["name"] for c in cs if _sc(c).get("seccompProfile") is None and pod_seccomp not in good]
    if (pod_seccomp is not None and pod_seccomp not in good) or bad:
        out.append("seccompProfile (pod or containers must not set securityContext.seccompProfile.type to that)")
    elif unset:
        out.append(f'seccompProfile (pod or {_names(unset)} must set securityContext.seccompProfile.type to '
                   '"RuntimeDefault" or "Localhost")')  # fmt: skip
    if at >= (1, 22):
        caps = {c["name"]: _sc(c).get("capabilities") or {} for c in cs}
        no_drop = [n for n, cap in caps.items() if "ALL" not in (cap.get("drop") or [])]
        adding = [n for n, cap in caps.items() if set(cap.get("add") or []) - {"NET_BIND_SERVICE"}]
        details = [f'{_names(no_drop)} must set securityContext.capabilities.drop=["ALL"]'] if no_drop else []
        details += [f"{_names(adding)} must not add capabilities but NET_BIND_SERVICE"] if adding else []
        if details:
            out.append(f"unrestricted capabilities ({'; '.join(details)})")
    return out


def violations(
    pod_spec: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
    *,
    at_level: str = "restricted",
    at_version: tuple[int, int] = LATEST,
) -> list[str]:
    """What a pod (its spec and metadata, or a workload's template's) violates of a level at a
    version, each as PSA words it; [] when it is allowed."""
    if at_level == "privileged":
        return []
    out = _baseline(metadata or {}, pod_spec, at_version)
    if at_level == "restricted":
        out += _restricted(pod_spec, at_version)
    return out


def admission(namespace_labels: Mapping[str, str], pod: Mapping[str, Any]) -> str | None:
    """What Pod Security Admission's enforce mode says of creating `pod` in a namespace with these
    labels: None (allowed) or PSA's refusal, `violates PodSecurity "restricted:v1.30": ...`."""
    wanted = level(namespace_labels.get(ENFORCE))
    label_version = namespace_labels.get(ENFORCE_VERSION)
    found = violations(pod.get("spec") or {}, pod.get("metadata") or {}, at_level=wanted,
                       at_version=version(label_version))  # fmt: skip
    if not found:
        return None
    shown = label_version if label_version and label_version.startswith("v") else "latest"
    return f'violates PodSecurity "{wanted}:{shown}": {", ".join(found)}'


WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job", "CronJob")


def pod_of(workload: Mapping[str, Any]) -> dict[str, Any] | None:
    """The first pod a workload's controller makes of its template, as it sends it to the API (a
    StatefulSet's pod gets a persistentVolumeClaim volume per claim template); a Pod as it is;
    None for an object that makes no pods."""
    kind, meta = workload.get("kind"), workload.get("metadata") or {}
    if kind == "Pod":
        return dict(workload)
    if kind not in WORKLOADS:
        return None
    spec = workload.get("spec") or {}
    if kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    template = spec.get("template") or {}
    name = f"{meta.get('name', '')}-0"
    pod_spec = dict(template.get("spec") or {})
    claims = [c["metadata"]["name"] for c in spec.get("volumeClaimTemplates") or []] if kind == "StatefulSet" else []
    if claims:
        pvcs = [{"name": c, "persistentVolumeClaim": {"claimName": f"{c}-{name}"}} for c in claims]
        pod_spec["volumes"] = [*(pod_spec.get("volumes") or []), *pvcs]
    pod_meta = {k: v for k, v in (template.get("metadata") or {}).items() if k in ("labels", "annotations")}
    pod_meta.update(name=name, namespace=meta.get("namespace", ""))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": pod_spec}
