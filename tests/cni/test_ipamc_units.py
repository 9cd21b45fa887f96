"""tke-ipamc's verbs over a fake ipamd: the owner CNI_ARGS name, the order of a queued release
and a new allocation, and DEL while ipamd is unreachable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tke.internal.cni import ipamwire as wire
from tke.internal.cni.errors import CNIError
from tke.internal.cni.ipamc.config import IpamcConfig
from tke.internal.cni.ipamc.plugin import Ipamc
from tke.internal.cni.ipamc.spool import QueuedRelease, ReleaseSpool
from tke.internal.cni.ipamdclient import IpamdRefused, IpamdUnreachable
from tke.internal.cni.skel import Request


class FakeIpamd:
    def __init__(self) -> None:
        self.down = False
        self.calls: list[tuple[str, Any]] = []
        self.refuse_release = False

    def __enter__(self) -> FakeIpamd:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _check(self) -> None:
        if self.down:
            raise IpamdUnreachable("connection refused")

    def allocate(self, request: bytes) -> wire.AllocateResponse:
        self._check()
        fields = wire.parse(request)
        owner = wire.get_message(fields, 1)
        self.calls.append(("allocate", (wire.get_str(owner, 2), wire.get_str(owner, 4), wire.get_str(owner, 5))))
        return wire.AllocateResponse(wire.Allocation(address="10.0.0.5/24", gateway="10.0.0.1", pool="p"))

    def release(self, container_id: str, ifname: str, pod_uid: str = "") -> wire.ReleaseResponse:
        self._check()
        if self.refuse_release:
            raise IpamdRefused("INVALID_ARGUMENT", "no")
        self.calls.append(("release", (container_id, ifname, pod_uid)))
        return wire.ReleaseResponse(found=True)


def make(tmp_path: Path, ipamd: FakeIpamd) -> Ipamc:
    config = IpamcConfig.from_network(
        {"ipam": {"type": "tke-ipamc", "ipamd": "/run/x.sock", "releaseRetrySeconds": 0.3}}, {"NODE_NAME": "n1"}
    )
    assert config.node == "n1"
    return Ipamc(config, lambda: ipamd, ReleaseSpool(str(tmp_path / "releases")))  # type: ignore[arg-type, return-value]


def request(command: str, args: str = "", container_id: str = "c1") -> Request:
    return Request(command, {"cniVersion": "1.1.0", "name": "n"}, container_id, "/x", "eth0", args, (), {})


def test_owner_from_cni_args(tmp_path: Path) -> None:
    ipamd = FakeIpamd()
    ipamc = make(tmp_path, ipamd)
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=db-0;TKE_WORKLOAD_KIND=StatefulSet;TKE_WORKLOAD_NAME=db"
    result = ipamc.add(request("ADD", args))
    assert result == {"ips": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1"}], "routes": [], "dns": {}}
    ipamc.add(request("ADD", "FOO=bar", container_id="c2"))
    assert ipamd.calls == [("allocate", ("db-0", "StatefulSet", "db")), ("allocate", ("c2", "", ""))]


def test_del_while_ipamd_is_down_queues_then_replays_in_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ipamd = FakeIpamd()
    ipamc = make(tmp_path, ipamd)
    ipamd.down = True
    ipamc.delete(request("DEL", "K8S_POD_NAME=p;K8S_POD_UID=u1"))  # succeeds: queued
    assert "queued" in capsys.readouterr().err
    assert [q.container_id for q in ipamc.spool.pending()] == ["c1"]
    with pytest.raises(CNIError) as err:
        ipamc.add(request("ADD", "K8S_POD_NAME=p"))
    assert err.value.code == 11
    ipamd.down = False
    ipamc.add(request("ADD", "K8S_POD_NAME=p"))  # the same container and interface again
    assert [name for name, _ in ipamd.calls] == ["release", "allocate"]
    assert ipamd.calls[0] == ("release", ("c1", "eth0", "u1"))
    assert ipamc.spool.pending() == []


def test_del_fails_only_when_the_release_cannot_be_queued(tmp_path: Path) -> None:
    ipamd = FakeIpamd()
    ipamd.down = True
    ipamc = make(tmp_path, ipamd)
    (tmp_path / "releases").write_text("not a directory")
    with pytest.raises(CNIError) as err:
        ipamc.delete(request("DEL"))
    assert err.value.code == 11


def test_replay_drops_what_ipamd_refuses_and_skips_other_daemons(tmp_path: Path) -> None:
    ipamd = FakeIpamd()
    ipamc = make(tmp_path, ipamd)
    ipamc.spool.put(QueuedRelease("old", "eth0", "", "/run/x.sock", 0.0))
    ipamc.spool.put(QueuedRelease("elsewhere", "eth0", "", "/run/other.sock", 0.0))
    ipamd.refuse_release = True
    ipamc.replay(ipamd)  # type: ignore[arg-type]
    assert [q.container_id for q in ipamc.spool.pending()] == ["elsewhere"]
    assert sorted(os.listdir(tmp_path / "releases")) == ["elsewhere=eth0.json"]


@pytest.mark.parametrize(
    "ipam",
    [
        {"type": "tke-ipamc"},
        {"type": "tke-ipamc", "ipamd": "/s", "pool": 3},
        {"type": "tke-ipamc", "ipamd": "/s", "releasePolicy": "sometimes"},
        {"type": "tke-ipamc", "ipamd": "/s", "gcMinAgeSeconds": -1},
        {"type": "tke-ipamc", "ipamd": {"address": "/s", "timeout": 0}},
        {"type": "tke-ipamc", "ipamd": "/s", "colour": "blue"},
    ],
)
def test_invalid_ipam_sections(ipam: dict[str, Any]) -> None:
    with pytest.raises(CNIError) as err:
        IpamcConfig.from_network({"ipam": ipam}, {})
    assert err.value.code == 7
