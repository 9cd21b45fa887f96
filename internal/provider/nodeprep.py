"""Preparing a machine for kubeadm, by default: containerd, and kubeadm, kubelet and kubectl of
the cluster's version from a package repository, the kernel modules and sysctls kubeadm's
preflight checks want, swap off, containerd on the systemd cgroup driver.

What to install from where is a *profile* of the controller's configuration
([cluster_providers.baremetal.options.profiles.NAME], the same under machine_providers); a
cluster chooses one by name (spec.install_profile, "default" when empty). Profiles belong to
the operator: a cluster never carries commands of its own, since the commands run as root with
the platform's SSH credentials. A profile may be offered to some tenants only (`tenants`): one
that holds a tenant's own mirror and its credentials is then never installed on another
tenant's machines, whatever name that tenant's cluster asks for.

The platform writes the files (the repository's sources.list entry, modules-load.d and
sysctl.d entries, containerd's configuration) and runs the profile's commands with these
variables set (besides the TKE_* every command sees):
  TKE_ROOT                prefix of every path on the machine ("" on real machines)
  TKE_VERSION, TKE_MINOR  "1.31.2" and "1.31"
  TKE_PACKAGE_REPOSITORY  the repository of that minor version (its {minor} filled in)
  TKE_PACKAGE_KEY_URL     the repository's signing key
  TKE_KEYRING             where the dearmored key goes (the sources entry's signed-by)
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from tke.internal.config.loader import ConfigError, from_dict
from tke.internal.provider.errors import PermanentError
from tke.internal.provider.kube.config import minor

# Kubernetes' community package repositories, one per minor version.
COMMUNITY_REPOSITORY = "https://pkgs.k8s.io/core:/stable:/v{minor}/deb/"
KEYRING = "/etc/apt/keyrings/kubernetes-apt-keyring.gpg"
SOURCES = "/etc/apt/sources.list.d/kubernetes.list"
MODULES = "/etc/modules-load.d/kubernetes.conf"
SYSCTLS = "/etc/sysctl.d/99-kubernetes.conf"
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
PACKAGES = '"kubelet=$TKE_VERSION-*" "kubeadm=$TKE_VERSION-*" "kubectl=$TKE_VERSION-*"'
APT = "DEBIAN_FRONTEND=noninteractive apt-get"

# containerd 1.x (version 2 of its configuration; containerd 2 reads it too): the CRI plugin's
# runc runtime on the systemd cgroup driver, as the kubelet's cgroupDriver: systemd.
DEFAULT_CONTAINERD_CONFIG = """version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = true
"""

DEFAULT_PREPARE = (
    "swapoff -a",
    '[ ! -f "$TKE_ROOT/etc/fstab" ] || sed -ri \'/\\sswap\\s/s/^#?/#/\' "$TKE_ROOT/etc/fstab"',
    "sysctl --system",
    'mkdir -p -m 755 "$(dirname "$TKE_KEYRING")"',
    'curl -fsSL "$TKE_PACKAGE_KEY_URL" | gpg --dearmor --yes -o "$TKE_KEYRING"',
    f"{APT} update",
    f"{APT} install -y containerd {PACKAGES}",
    "apt-mark hold kubelet kubeadm kubectl",
    "systemctl restart containerd",
    "systemctl enable --now containerd kubelet",
)
# kubeadm's upgrade order: the kubeadm package first, then (after kubeadm upgrade apply or
# node) the kubelet and kubectl packages and a kubelet restart.
DEFAULT_UPGRADE_KUBEADM = (
    'curl -fsSL "$TKE_PACKAGE_KEY_URL" | gpg --dearmor --yes -o "$TKE_KEYRING"',
    f"{APT} update",
    "apt-mark unhold kubeadm",
    f'{APT} install -y "kubeadm=$TKE_VERSION-*"',
    "apt-mark hold kubeadm",
)
DEFAULT_UPGRADE_KUBELET = (
    "apt-mark unhold kubelet kubectl",
    f'{APT} install -y "kubelet=$TKE_VERSION-*" "kubectl=$TKE_VERSION-*"',
    "apt-mark hold kubelet kubectl",
    "systemctl daemon-reload",
    "systemctl restart kubelet",
)


@dataclass(frozen=True)
class Profile:
    # Package repository of one minor version ("{minor}" becomes "1.31"): your mirror of
    # Kubernetes' community repositories, or those themselves.
    repository: str = COMMUNITY_REPOSITORY
    # Its signing key ("{repository}" becomes the repository's URL).
    repository_key: str = "{repository}Release.key"
    # Kernel modules loaded now and at every boot (modules-load.d).
    modules: Sequence[str] = ("overlay", "br_netfilter")
    # Kernel settings applied now and at every boot (sysctl.d); kubeadm's preflight checks the
    # first three.
    sysctls: Mapping[str, str] = field(
        default_factory=lambda: {
            "net.bridge.bridge-nf-call-iptables": "1",
            "net.bridge.bridge-nf-call-ip6tables": "1",
            "net.ipv4.ip_forward": "1",
        }
    )
    # "off": swap is switched off (the default commands do it); "kubelet": swap stays on and
    # the kubelet runs with failSwapOn: false.
    swap: str = "off"
    containerd_config: str = DEFAULT_CONTAINERD_CONFIG
    prepare_commands: Sequence[str] = DEFAULT_PREPARE
    upgrade_kubeadm_commands: Sequence[str] = DEFAULT_UPGRADE_KUBEADM
    upgrade_kubelet_commands: Sequence[str] = DEFAULT_UPGRADE_KUBELET
    # The tenants whose clusters may use this profile; empty: every tenant.
    tenants: Sequence[str] = ()

    def offered_to(self, tenant: str) -> bool:
        return not self.tenants or tenant in self.tenants

    def repository_of(self, version: str) -> str:
        major, mnr = minor(version)
        return self.repository.replace("{minor}", f"{major}.{mnr}")

    def files(self, version: str, root: str = "") -> dict[str, bytes]:
        """Paths (from the machine's root) and contents the platform writes before the commands."""
        repo = self.repository_of(version)
        return {
            SOURCES: f"deb [signed-by={root}{KEYRING}] {repo} /\n".encode(),
            MODULES: "".join(f"{m}\n" for m in self.modules).encode(),
            SYSCTLS: "".join(f"{k} = {v}\n" for k, v in sorted(self.sysctls.items())).encode(),
            CONTAINERD_CONFIG: self.containerd_config.encode(),
        }

    def module_commands(self) -> list[str]:
        return [f"modprobe {shlex.quote(m)}" for m in self.modules]

    def environment(self, version: str, root: str) -> dict[str, str]:
        major, mnr = minor(version)
        repo = self.repository_of(version)
        return {
            "TKE_ROOT": root,
            "TKE_MINOR": f"{major}.{mnr}",
            "TKE_PACKAGE_REPOSITORY": repo,
            "TKE_PACKAGE_KEY_URL": self.repository_key.replace("{repository}", repo),
            "TKE_KEYRING": root + KEYRING,
        }


def profiles_from(options: Mapping[str, Any] | None) -> dict[str, Profile]:
    """Profiles from a provider's `profiles` option (TOML tables by name); "default" is always
    there (the built-in one unless configured)."""
    known = {f.name for f in fields(Profile)}
    out = {"default": Profile()}
    for name, values in (options or {}).items():
        if not isinstance(values, dict):
            raise ValueError(f"profile {name!r}: expected a table of profile fields")
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"profile {name!r}: unknown options {sorted(unknown)}; known: {sorted(known)}")
        if values.get("swap", "off") not in ("off", "kubelet"):
            raise ValueError(f"profile {name!r}: swap must be 'off' or 'kubelet'")
        tenants = values.get("tenants", [])
        if not isinstance(tenants, list) or not all(isinstance(t, str) and t for t in tenants):
            raise ValueError(f"profile {name!r}: tenants must be a list of tenant names")
        try:
            out[name] = from_dict(Profile, values, f"profiles.{name}")
        except ConfigError as err:  # a string for a list of modules or commands, a number for a text
            raise ValueError(str(err)) from None
    return out


def choose(profiles: Mapping[str, Profile], name: str, tenant: str) -> Profile:
    """The profile a cluster of `tenant` names; PermanentError if it is not configured or not
    offered to that tenant (the names listed are only those the tenant may use)."""
    profile = profiles.get(name or "default")
    if profile is None or not profile.offered_to(tenant):
        offered = ", ".join(sorted(n for n, p in profiles.items() if p.offered_to(tenant)))
        why = "is not configured in tke-controller" if profile is None else f"is not offered to tenant {tenant!r}"
        raise PermanentError(f"install profile {name!r} {why} (profiles it may use: {offered or 'none'})")
    return profile


def profile_violation(profiles: Mapping[str, Profile], name: str, tenant: str) -> str | None:
    """Why a cluster of `tenant` may not name profile `name`, for the apiserver's validation: only
    a profile this configuration knows and keeps from the tenant (a name it does not know is
    left to tke-controller, whose configuration may have more)."""
    profile = profiles.get(name or "default")
    if profile is None or profile.offered_to(tenant):
        return None
    return f"install profile {name or 'default'!r} is not offered to tenant {tenant!r}"
