"""User data for EC2 instances: a cloud-init document (#cloud-config) that prepares the node
and runs kubeadm, which is what the baremetal providers do over SSH.

The document has two parts:
- write_files: the install profile's files (package sources, modules-load.d, sysctl.d,
  containerd's configuration: tke.internal.provider.nodeprep), the kubeadm configuration file
  (mode 0600: it holds a bootstrap token) and, for masters, the cluster's CAs and keys in
  kubeadm's PKI layout (what kubeadm makes every leaf certificate from);
- runcmd: one shell script, `set -eu`, with the TKE_* variables every command of the
  baremetal flow sees (tke.internal.provider.nodes.environment and the profile's), the
  profile's module and prepare commands, `kubeadm init` or `kubeadm join --config` and the
  removal of the configuration file once kubeadm is done with it.
cloud-init runs runcmd once per instance, so the node is prepared and joined once.

Secrets: the bootstrap token lives in the kubeadm file only, never on a command line; the
platform never logs user data (plugins/aws/client.py holds botocore's body logging back).
User data stays readable to whoever may call ec2:DescribeInstanceAttribute on the instance
and, from the node, through the instance metadata service: the instances require IMDSv2 with
a hop limit of 1 (pods cannot reach it), tokens expire after bootstrap_token_ttl, and
a master's user data carries the cluster's CA keys, so that permission must stay with
administrators (docs/providers.md).

EC2 takes at most 16 KiB of user data (before base64). A document over that is sent gzipped
(cloud-init reads gzip); one still over it is a PermanentError.
"""

from __future__ import annotations

import base64
import gzip
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

import yaml

from tke.internal.provider.errors import PermanentError
from tke.internal.provider.nodeprep import Profile

MAX_USER_DATA = 16 * 1024
KUBEADM_CONFIG = "/etc/kubernetes/kubeadm.yaml"
PKI_DIR = "/etc/kubernetes/pki"


@dataclass(frozen=True)
class NodeBootstrap:
    """What one node's cloud-init does: files, environment, then commands."""

    env: Mapping[str, str]
    profile: Profile
    version: str
    kubeadm_config: str
    # "init" or "join": which kubeadm runs with the configuration file.
    kubeadm: str
    # Files besides the profile's and the kubeadm configuration: path -> (content, mode).
    files: Mapping[str, tuple[bytes, int]] = field(default_factory=dict)

    def document(self) -> str:
        version = self.version.lstrip("v")
        files: dict[str, tuple[bytes, int]] = {p: (d, 0o644) for p, d in self.profile.files(version).items()}
        files.update(self.files)
        files[KUBEADM_CONFIG] = (self.kubeadm_config.encode(), 0o600)
        env = {**self.env, **self.profile.environment(version, "")}
        lines = ["set -eu", *(f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items()))]
        lines += [*self.profile.module_commands(), *self.profile.prepare_commands]
        lines += [f"kubeadm {self.kubeadm} --config {KUBEADM_CONFIG}", f"rm -f {KUBEADM_CONFIG}"]
        doc = {
            "write_files": [
                {
                    "path": path,
                    "permissions": f"0{mode:o}",
                    "owner": "root:root",
                    "encoding": "b64",
                    "content": base64.b64encode(data).decode(),
                }
                for path, (data, mode) in sorted(files.items())
            ],
            "runcmd": [["/bin/sh", "-c", "\n".join(lines) + "\n"]],
        }
        return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False, width=1 << 20)


def pki_files(files: Mapping[str, bytes], pki_dir: str = PKI_DIR) -> dict[str, tuple[bytes, int]]:
    """The cluster's CAs and keys (pki.ClusterCAs.files()) as files of the node: keys 0600."""
    return {f"{pki_dir}/{name}": (data, 0o600 if name.endswith(".key") else 0o644) for name, data in files.items()}


def pack(document: str) -> bytes:
    """The user data to send: the document, gzipped when it is over EC2's limit."""
    raw = document.encode()
    if len(raw) <= MAX_USER_DATA:
        return raw
    packed = gzip.compress(raw, mtime=0)
    if len(packed) > MAX_USER_DATA:
        raise PermanentError(
            f"the node's cloud-init document is {len(raw)} bytes ({len(packed)} gzipped): over EC2's "
            f"{MAX_USER_DATA}-byte user data limit (shorten the install profile's commands)"
        )
    return packed


def unpack(data: bytes) -> str:
    """The document back from user data (gzipped or not), as cloud-init reads it."""
    return (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode()
