"""The stand-in programs (tests/support/standins.py) refuse what the real ones would, each
refusal on its own: a second kubeadm init, a control-plane join without the shared CAs, a
malformed, unknown or expired bootstrap token, a CA pin that is not the cluster CA's, documents
of the wrong kubeadm API version. And they cannot hang a test: gpg reads stdin only when it is
its input, curl | gpg runs while the world is locked, and a stand-in that finds the world
locked for too long fails with a message.

The programs run as processes here, as sshd runs them, with the machine picked by
SSH_CONNECTION; the machines are prepared by the default install profile's own commands."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import standins
from tests.support.kubeadm_world import LOCK_WAIT_ENV, WORLD_ENV, World
from tke.internal.provider import nodeprep, nodes
from tke.internal.provider.kube import config, pki
from tke.platform.v1 import cluster_pb2

pytestmark = pytest.mark.timeout(120)

VERSION = "1.31.1"
M1, M2, W1 = "127.0.9.11", "127.0.9.12", "127.0.9.21"
ENDPOINT = "192.0.2.100:6443"


class Machines:
    """Stand-in machines sharing one world, each reached as if over SSH on its own address."""

    def __init__(self, directory: Path) -> None:
        self.world = World(directory / "world")
        self.bin = directory / "bin"
        standins.install(self.bin)

    def env(self, ip: str, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            WORLD_ENV: str(self.world.directory),
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "SSH_CONNECTION": f"127.0.0.1 50000 {ip} 22",
            **extra,
        }

    def sh(self, ip: str, command: str, **extra: str) -> subprocess.CompletedProcess[str]:
        # stdin at end of file, as the platform runs commands; a hang fails on the timeout.
        return subprocess.run(
            ["bash", "-c", command],
            env=self.env(ip, **extra),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def root(self, ip: str) -> Path:
        return self.world.root_of(ip)

    def prepare(self, ip: str) -> None:
        """What nodes.prepare does over SSH, with the default profile."""
        profile = nodeprep.Profile()
        root = str(self.root(ip))
        for path, data in profile.files(VERSION, root).items():
            target = Path(root + path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        env = profile.environment(VERSION, root)
        for command in [*profile.module_commands(), *profile.prepare_commands]:
            done = self.sh(ip, command, TKE_VERSION=VERSION, **env)
            assert done.returncode == 0, (command, done.stderr)

    def write_cas(self, ip: str, cas: pki.ClusterCAs) -> None:
        for name, data in cas.files().items():
            path = self.root(ip) / "etc/kubernetes/pki" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def kubeadm(self, ip: str, verb: str, *documents: dict[str, object]) -> subprocess.CompletedProcess[str]:
        path = self.root(ip) / f"kubeadm-{verb}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config.documents(*documents))
        return self.sh(ip, f"kubeadm {verb} --config {path}")

    def last_call(self) -> dict[str, object]:
        return self.world.calls()[-1]


def _cluster(version: str = VERSION) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster()
    c.metadata.name = "prod"
    c.spec.version = version
    c.spec.network.pod_cidr = "10.244.0.0/16"
    c.spec.network.service_cidr = "10.96.0.0/12"
    return c


def _pki(m: Machines, ip: str) -> str:
    return str(m.root(ip) / "etc/kubernetes/pki")


@pytest.fixture
def cluster_on_m1(tmp_path: Path) -> tuple[Machines, pki.ClusterCAs, str]:
    """M1 initialized (with its bootstrap token returned); M2 and W1 prepared, not joined."""
    m = Machines(tmp_path)
    for ip in (M1, M2, W1):
        m.prepare(ip)
    cas = pki.ClusterCAs.generate()
    m.write_cas(M1, cas)
    token = nodes.new_bootstrap_token()
    c = _cluster()
    done = m.kubeadm(
        M1,
        "init",
        config.cluster_configuration(c, ENDPOINT, pki_dir=_pki(m, M1)),
        config.init_configuration(c, config.Node("m1", M1, control_plane=True), config.BootstrapToken(token, 600, "t")),
    )
    assert done.returncode == 0, done.stderr
    assert m.last_call()["documents"] == {
        "ClusterConfiguration": "kubeadm.k8s.io/v1beta4",
        "InitConfiguration": "kubeadm.k8s.io/v1beta4",
    }
    return m, cas, token


def _join(
    m: Machines, ip: str, name: str, token: str, pin: str, *, control_plane: bool = False, version: str = VERSION
) -> subprocess.CompletedProcess[str]:
    c = _cluster(version)
    node = config.Node(name, ip, control_plane=control_plane)
    doc = config.join_configuration(c, node, config.Discovery(ENDPOINT, token, [pin]), _pki(m, ip))
    return m.kubeadm(ip, "join", doc)


def _refused(m: Machines, done: subprocess.CompletedProcess[str], why: str) -> None:
    assert done.returncode == 1 and why in done.stderr, done.stderr
    call = m.last_call()
    assert call["ok"] is False and why in str(call["error"])


def _members(m: Machines) -> set[str]:
    return set(m.world.read()["cluster"]["nodes"])


def test_a_second_init_is_refused_on_the_same_machine_and_on_another(
    cluster_on_m1: tuple[Machines, pki.ClusterCAs, str],
) -> None:
    m, cas, _ = cluster_on_m1
    c = _cluster()

    def init(ip: str, name: str) -> subprocess.CompletedProcess[str]:
        node = config.Node(name, ip, control_plane=True)
        return m.kubeadm(
            ip,
            "init",
            config.cluster_configuration(c, ENDPOINT, pki_dir=_pki(m, ip)),
            config.init_configuration(c, node, config.BootstrapToken(nodes.new_bootstrap_token(), 60, "again")),
        )

    _refused(m, init(M1, "m1"), "FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml]: already exists")
    m.write_cas(M2, cas)
    _refused(m, init(M2, "m2"), f"a control plane was initialized already on {M1}")
    assert _members(m) == {"m1"}


def test_reset_of_the_last_control_plane_member_ends_the_cluster_and_init_may_run_again(
    cluster_on_m1: tuple[Machines, pki.ClusterCAs, str],
) -> None:
    """An init cut off after kubeadm finished is reset and run again by the provider: reset
    wipes the only member's etcd, so the cluster it made is gone, as with real kubeadm."""
    m, _, _ = cluster_on_m1
    reset = m.sh(M1, "kubeadm reset -f")
    assert reset.returncode == 0, reset.stderr
    assert m.world.read()["cluster"] is None
    c = _cluster()
    again = m.kubeadm(
        M1,
        "init",
        config.cluster_configuration(c, ENDPOINT, pki_dir=_pki(m, M1)),
        config.init_configuration(
            c, config.Node("m1", M1, control_plane=True), config.BootstrapToken(nodes.new_bootstrap_token(), 60, "t")
        ),
    )
    assert again.returncode == 0, again.stderr
    assert _members(m) == {"m1"}


def test_a_control_plane_join_needs_the_shared_cas(cluster_on_m1: tuple[Machines, pki.ClusterCAs, str]) -> None:
    m, cas, token = cluster_on_m1
    pin = pki.ca_cert_hash(cas.ca.pair.cert_pem)
    _refused(m, _join(m, M2, "m2", token, pin, control_plane=True), "failure loading certificate authority")
    assert _members(m) == {"m1"}
    # Another cluster's CAs are no better.
    m.write_cas(M2, pki.ClusterCAs.generate())
    _refused(m, _join(m, M2, "m2", token, pin, control_plane=True), "the CA in place is not the cluster's")
    m.write_cas(M2, cas)
    assert _join(m, M2, "m2", token, pin, control_plane=True).returncode == 0
    assert _members(m) == {"m1", "m2"} and set(m.world.read()["cluster"]["etcd"]) == {"m1", "m2"}


def test_a_join_needs_a_well_formed_known_unexpired_token(
    cluster_on_m1: tuple[Machines, pki.ClusterCAs, str],
) -> None:
    m, cas, token = cluster_on_m1
    pin = pki.ca_cert_hash(cas.ca.pair.cert_pem)
    _refused(m, _join(m, W1, "w1", "not-a-token", pin), "token")
    assert "bootstrapToken" in str(m.last_call()["error"])  # refused by the reference field types
    _refused(m, _join(m, W1, "w1", nodes.new_bootstrap_token(), pin), "unknown or expired")
    # A token created on the control plane with no time to live is expired when it is used.
    expired = nodes.new_bootstrap_token()
    admin = m.root(M1) / "etc/kubernetes/admin.conf"
    created = m.sh(M1, f"kubeadm token create {expired} --ttl 0s --kubeconfig {admin}")
    assert created.returncode == 0, created.stderr
    _refused(m, _join(m, W1, "w1", expired, pin), "unknown or expired")
    # A token is created on a control-plane machine only, and only in kubeadm's format.
    _refused(m, m.sh(W1, f"kubeadm token create {nodes.new_bootstrap_token()}"), "not a control-plane machine")
    _refused(m, m.sh(M1, f"kubeadm token create abc.def --kubeconfig {admin}"), "does not match the format")
    assert _members(m) == {"m1"}
    assert _join(m, W1, "w1", token, pin).returncode == 0
    assert _members(m) == {"m1", "w1"}


def test_a_join_needs_the_pin_of_the_cluster_ca(cluster_on_m1: tuple[Machines, pki.ClusterCAs, str]) -> None:
    m, cas, token = cluster_on_m1
    other = pki.ca_cert_hash(pki.ClusterCAs.generate().ca.pair.cert_pem)
    _refused(m, _join(m, W1, "w1", token, other), "none of the public keys match")
    assert _members(m) == {"m1"}
    assert _join(m, W1, "w1", token, pki.ca_cert_hash(cas.ca.pair.cert_pem)).returncode == 0


def test_documents_of_the_other_kubeadm_api_version_are_refused(
    cluster_on_m1: tuple[Machines, pki.ClusterCAs, str],
) -> None:
    m, cas, token = cluster_on_m1
    done = _join(m, W1, "w1", token, pki.ca_cert_hash(cas.ca.pair.cert_pem), version="1.30.2")
    _refused(m, done, "wants kubeadm.k8s.io/v1beta4, not kubeadm.k8s.io/v1beta3")
    assert m.last_call()["documents"] == {"JoinConfiguration": "kubeadm.k8s.io/v1beta3"}


def test_the_stand_ins_cannot_hang_a_test(tmp_path: Path) -> None:
    m = Machines(tmp_path)
    key = tmp_path / "Release.key"
    assert m.sh(M1, f"curl -fsSL https://mirror.example/Release.key -o {key}").returncode == 0
    # gpg given its input file never reads stdin, even one nobody closes.
    with subprocess.Popen(
        ["gpg", "--dearmor", "--yes", "-o", str(tmp_path / "a.gpg"), str(key)],
        env=m.env(M1),
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as gpg:
        assert gpg.wait(timeout=60) == 0
    assert (tmp_path / "a.gpg").read_text().startswith("dearmored -----BEGIN PGP")
    # curl | gpg takes no lock: it runs while the world is locked...
    with m.world.state():
        done = m.sh(M1, f"curl -fsSL https://mirror.example/Release.key | gpg --dearmor --yes -o {tmp_path / 'b.gpg'}")
        assert done.returncode == 0, done.stderr
        # ... and a stand-in that needs the world fails after a bounded wait, saying why.
        _refused(m, m.sh(M1, "modprobe br_netfilter", **{LOCK_WAIT_ENV: "0.5"}), "stayed locked for 0.5s")
    assert m.sh(M1, "modprobe br_netfilter").returncode == 0


def test_a_join_asks_again_for_an_unsigned_cluster_info_without_holding_the_world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kubeadm's token discovery waits for the bootstrapsigner's JWS instead of failing at
    once; the stand-in does too, and lets go of the world's lock between its tries (the test's
    bootstrapsigner and kubelets read the world while it waits)."""
    world = World(tmp_path / "world")
    monkeypatch.setenv(WORLD_ENV, str(world.directory))
    monkeypatch.setenv(LOCK_WAIT_ENV, "0.5")
    free_between_tries: list[bool] = []

    def pause() -> None:
        world.read()  # the world is not locked between tries: this would fail (WorldBusy) if it were
        free_between_tries.append(True)

    monkeypatch.setattr(standins, "_before_asking_again", pause)
    tries: list[bool] = []

    def signed_on_the_third_try(machine: standins.Machine, args: list[str], state: dict[str, object]) -> str:
        tries.append(True)
        if len(tries) < 3:
            raise standins.NotYetSigned("abcdef", timeout=60)
        return "This node has joined the cluster\n"

    monkeypatch.setitem(standins.HANDLERS, "kubeadm", signed_on_the_third_try)
    assert standins.main(["kubeadm", "join"]) == 0
    assert (len(tries), len(free_between_tries)) == (3, 2)
    assert [c["ok"] for c in _calls(world)] == [True]

    def never_signed(machine: standins.Machine, args: list[str], state: dict[str, object]) -> str:
        raise standins.NotYetSigned("abcdef", timeout=0.2)

    monkeypatch.setitem(standins.HANDLERS, "kubeadm", never_signed)
    assert standins.main(["kubeadm", "join"]) == 1
    last = _calls(world)[-1]
    assert not last["ok"]
    assert "could not find a JWS signature in the cluster-info ConfigMap for token ID 'abcdef'" in last["error"]


def _calls(world: World) -> list[dict[str, Any]]:
    return [json.loads(line) for line in world.calls_file.read_text().splitlines()]
