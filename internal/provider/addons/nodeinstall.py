"""tke-cni-install: the node half of the network add-on, which its tke-cni DaemonSet runs on
every node (the host's directories mounted under `--host`). What deploy/cni/install-node.sh
does by hand, from the add-on's ConfigMap:

1. the platform's runtime (`--runtime`, the image's /opt/tke: a relocatable Python with the tke
   package) copied to the same path on the host, as `releases/<version>` with a `current` link
   switched atomically (so a CNI call in flight keeps the files it started with; the release
   before stays, older ones go);
2. the launchers of cni-switch and tke-ipamc in the host's CNI bin directory (`#!<python> -I`,
   the module's main), written atomically;
3. the CNI configuration list (`10-tke.conflist` of `--config-dir`) in the host's CNI
   configuration directory, with the node's own values filled in
   (tke.internal.provider.addons.nodevalues): NODE_NAME and NODE_IP from the pod's environment
   (the downward API), the node's pod range from its Node object (spec.podCIDR, which
   kube-controller-manager allocates from the cluster's pod CIDR).

Every file is written only when it differs, through a temporary file renamed into place: the
runtime never reads half a file, and running it again changes nothing. With `--wait` it stays
and installs again whenever the ConfigMap changes (the kubelet swaps the mounted files), until
SIGTERM; a failure is then retried, never fatal. Nothing is removed when the add-on is deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tke.internal.provider.addons import network, nodevalues
from tke.internal.provider.errors import StepError
from tke.internal.provider.kube.access import ClusterAccess, from_kubeconfig, in_cluster
from tke.internal.provider.kube.api import ClusterAPI

LAUNCHERS = {"cni-switch": "tke.cmd.cni_switch", "tke-ipamc": "tke.cmd.ipamc"}


class InstallError(Exception):
    """What stops the installation, for the operator (one line)."""


@dataclass(frozen=True)
class Plan:
    config_dir: Path
    host: Path  # where the host's root is mounted ("/" when run on the host itself)
    runtime: Path | None  # the runtime to copy to the host (the image's); None: already there
    python: str  # the interpreter the launchers name, as the host sees it
    bin_dir: str = "/opt/cni/bin"
    conf_dir: str = "/etc/cni/net.d"
    version: str = ""

    def on_host(self, path: str) -> Path:
        return self.host / path.lstrip("/")


def write(path: Path, data: bytes, mode: int) -> bool:
    """Write `path` atomically unless it holds `data` already; True when it was written."""
    with contextlib.suppress(OSError):
        if path.read_bytes() == data and (path.stat().st_mode & 0o777) == mode:
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return True


def install_runtime(source: Path, target: Path, version: str) -> list[str]:
    """`source` copied to `target`/releases/<version>, `target`/current pointing at it."""
    releases = target / "releases"
    release = releases / version
    done = []
    if not release.exists():
        releases.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=releases, prefix=f".{version}."))
        try:
            shutil.copytree(source, staging, symlinks=True, dirs_exist_ok=True)
            staging.chmod(0o755)
            os.replace(staging, release)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        done.append(f"copied the runtime to {release}")
    current = target / "current"
    link = f"releases/{version}"
    if not current.is_symlink() or os.readlink(current) != link:
        previous = os.readlink(current) if current.is_symlink() else ""
        tmp = target / f".current.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(link)
        os.replace(tmp, current)
        done.append(f"{current} -> {link}")
        keep = {version, Path(previous).name}
        for old in releases.iterdir():
            if old.name not in keep and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)
    return done


def launcher(python: str, module: str) -> bytes:
    return f"#!{python} -I\nfrom {module} import main\nmain()\n".encode()


async def node_values(
    conflist: object, env: Mapping[str, str], access: ClusterAccess | None, known: dict[str, str]
) -> dict[str, str]:
    """The values of the placeholders the configuration uses, for this node. The pod range is
    read from the API once and kept in `known` (a Node's spec.podCIDR never changes once set)."""
    used = nodevalues.used(conflist)
    values: dict[str, str] = {}
    name = env.get("NODE_NAME", "")
    if not name:
        raise InstallError("NODE_NAME is not set (the DaemonSet passes spec.nodeName)")
    values[nodevalues.NODE_NAME] = name
    if nodevalues.NODE_IP in used:
        if not env.get("NODE_IP"):
            raise InstallError("NODE_IP is not set (the DaemonSet passes status.hostIP)")
        values[nodevalues.NODE_IP] = env["NODE_IP"]
    if nodevalues.NODE_POD_CIDR in used and nodevalues.NODE_POD_CIDR in known:
        values[nodevalues.NODE_POD_CIDR] = known[nodevalues.NODE_POD_CIDR]
    elif nodevalues.NODE_POD_CIDR in used:
        if access is None:
            raise InstallError("the configuration needs the node's pod range, and no Kubernetes API is configured")
        try:
            async with ClusterAPI(access, field_manager="tke-cni-install") as api:
                node = await api.node(name)
        except StepError as err:
            raise InstallError(f"reading Node {name}: {err}") from None
        cidr = node.spec.podCIDR if node is not None and node.spec is not None else None
        if not cidr:
            raise InstallError(
                f"Node {name} has no spec.podCIDR yet (kube-controller-manager allocates one per node when the "
                "cluster has a pod CIDR)"
            )
        values[nodevalues.NODE_POD_CIDR] = known[nodevalues.NODE_POD_CIDR] = cidr
    return values


async def install(
    plan: Plan, env: Mapping[str, str], access: ClusterAccess | None, known: dict[str, str] | None = None
) -> list[str]:
    """Install once; the changes made (empty: everything was in place)."""
    source = plan.config_dir / network.CONFLIST
    try:
        conflist = json.loads(source.read_bytes())
    except OSError as err:
        raise InstallError(f"cannot read {source}: {err.strerror}") from None
    except ValueError as err:
        raise InstallError(f"{source} is not JSON: {err}") from None
    filled = nodevalues.fill(conflist, await node_values(conflist, env, access, {} if known is None else known))
    done = []
    if plan.runtime is not None:
        done += install_runtime(plan.runtime, plan.on_host(str(plan.runtime)), plan.version)
    for name, module in LAUNCHERS.items():
        path = plan.on_host(plan.bin_dir) / name
        if write(path, launcher(plan.python, module), 0o755):
            done.append(f"installed {path}")
    target = plan.on_host(plan.conf_dir) / network.CONFLIST
    if write(target, (json.dumps(filled, indent=2, sort_keys=True) + "\n").encode(), 0o644):
        done.append(f"installed {target}")
    return done


async def run(plan: Plan, env: Mapping[str, str], access: ClusterAccess | None, *, wait: bool, interval: float) -> int:
    stopped = asyncio.Event()
    known: dict[str, str] = {}
    if wait:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopped.set)
    while True:
        try:
            for line in await install(plan, env, access, known):
                print(f"tke-cni-install: {line}", flush=True)
        except InstallError as err:
            print(f"tke-cni-install: {err}", file=sys.stderr, flush=True)
            if not wait:
                return 1
        except OSError as err:
            print(f"tke-cni-install: {err.filename or ''}: {err.strerror}", file=sys.stderr, flush=True)
            if not wait:
                return 1
        if not wait:
            return 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await stopped.wait()
        if stopped.is_set():
            return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tke-cni-install", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-dir", required=True, help="the add-on's ConfigMap, mounted")
    parser.add_argument("--host", default="/", help="where the host's root is mounted")
    parser.add_argument("--runtime", default="", help="the platform's runtime to copy to the same path on the host")
    parser.add_argument(
        "--python", default="", help="the launchers' interpreter (default: RUNTIME/current/bin/python3)"
    )
    parser.add_argument("--bin-dir", default="/opt/cni/bin", help="the host's CNI bin directory")
    parser.add_argument("--conf-dir", default="/etc/cni/net.d", help="the host's CNI configuration directory")
    parser.add_argument("--kubeconfig", default="", help="the cluster's API (default: the pod's service account)")
    parser.add_argument("--wait", action="store_true", help="stay, and install again when the configuration changes")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between two looks with --wait")
    args = parser.parse_args(argv)
    if not args.python and not args.runtime:
        parser.error("give --runtime (copied to the host) or --python (already on the host)")
    python = args.python or f"{args.runtime.rstrip('/')}/current/bin/python3"
    plan = Plan(
        config_dir=Path(args.config_dir),
        host=Path(args.host),
        runtime=Path(args.runtime) if args.runtime else None,
        python=python,
        bin_dir=args.bin_dir,
        conf_dir=args.conf_dir,
        version=network.platform_version(),
    )
    try:
        if args.kubeconfig:
            path = Path(args.kubeconfig)
            access: ClusterAccess | None = from_kubeconfig(path.read_text(), base_dir=path.parent)
        else:
            access = in_cluster() if os.environ.get("KUBERNETES_SERVICE_HOST") else None
    except (OSError, StepError) as err:
        print(f"tke-cni-install: the cluster's API: {err}", file=sys.stderr)
        return 2
    return asyncio.run(run(plan, os.environ, access, wait=args.wait, interval=args.interval))
