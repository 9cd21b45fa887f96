"""The pure parts, without processes or namespaces: the skeleton's contract, version
negotiation and conversion, CNI_ARGS, the choice of network, and cni-switch's verbs over a fake
plugin executor and an in-memory attachment store."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from tests.support.memory_attachments import MemoryStore
from tke.internal.cni import version
from tke.internal.cni.args import parse_args, without
from tke.internal.cni.errors import CNIError
from tke.internal.cni.owner import PodOwner
from tke.internal.cni.skel import Request, cni_main, valid_attachments
from tke.internal.cni.switch.config import SwitchConfig
from tke.internal.cni.switch.delegate import PluginVersions
from tke.internal.cni.switch.plugin import Switch
from tke.internal.cni.switch.policy import Binding, BindingUnavailable, choose_network
from tke.internal.cni.switch.state import ADDED, ADDING, Attachment, DiskStore

# -- the skeleton ----------------------------------------------------------------------------


def run_skel(env: dict[str, str], stdin: bytes, handlers: dict[str, Any] | None = None) -> tuple[int, Any]:
    out = io.StringIO()
    code = cni_main(handlers or {"ADD": lambda r: {"ips": []}}, environ=env, stdin=io.BytesIO(stdin), stdout=out)
    return code, json.loads(out.getvalue()) if out.getvalue() else None


ADD_ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0", "CNI_PATH": "/p"}


def test_skel_result_carries_the_configured_version() -> None:
    assert run_skel(ADD_ENV, b'{"cniVersion": "1.0.0"}') == (0, {"ips": [], "cniVersion": "1.0.0"})


@pytest.mark.parametrize(
    ("env", "stdin", "code"),
    [
        ({**ADD_ENV, "CNI_NETNS": ""}, b'{"cniVersion": "1.0.0"}', 4),
        (ADD_ENV, b"", 6),
        (ADD_ENV, b'{"cniVersion": 1}', 7),
        (ADD_ENV, b'{"cniVersion": "0.3.1"}', 1),
        (ADD_ENV, b'{"cniVersion": "one"}', 1),
        ({**ADD_ENV, "CNI_COMMAND": "GC"}, b'{"cniVersion": "1.1.0"}', 4),  # no GC handler
        ({**ADD_ENV, "CNI_IFNAME": "a b"}, b'{"cniVersion": "1.0.0"}', 4),
        ({**ADD_ENV, "CNI_CONTAINERID": "-lead"}, b'{"cniVersion": "1.0.0"}', 4),
    ],
)
def test_skel_errors(env: dict[str, str], stdin: bytes, code: int) -> None:
    status, out = run_skel(env, stdin)
    assert status == 1 and out["code"] == code and out["msg"]


def test_skel_gc_needs_1_1() -> None:
    env = {"CNI_COMMAND": "GC", "CNI_PATH": "/p"}
    status, out = run_skel(env, b'{"cniVersion": "1.0.0"}', {"GC": lambda r: None})
    assert (status, out["code"]) == (1, 1)
    assert run_skel(env, b'{"cniVersion": "1.1.0"}', {"GC": lambda r: None}) == (0, None)


def test_skel_never_leaks_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    def boom(request: Request) -> None:
        raise KeyError("secret")

    status, out = run_skel(ADD_ENV, b'{"cniVersion": "1.0.0"}', {"ADD": boom})
    assert status == 1 and out["code"] == 101
    assert "Traceback" not in capsys.readouterr().err


# -- versions and arguments ------------------------------------------------------------------


def test_version_for_delegate() -> None:
    debian = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]
    assert version.for_delegate("1.1.0", debian) == "1.0.0"
    assert version.for_delegate("1.0.0", ["0.4.0", "1.1.0"]) == "0.4.0"
    assert version.for_delegate("1.1.0", ["0.1.0", "0.2.0"]) is None


def test_result_conversion_round_trip() -> None:
    new = {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/24"}, {"address": "fd00::2/64"}]}
    old = version.convert_result(new, "0.4.0")
    assert [ip["version"] for ip in old["ips"]] == ["4", "6"] and old["cniVersion"] == "0.4.0"
    assert version.convert_result(old, "1.0.0") == {**new, "cniVersion": "1.0.0"}


def test_args() -> None:
    assert parse_args("IgnoreUnknown=1;K8S_POD_NAME=a=b;;") == {"IgnoreUnknown": "1", "K8S_POD_NAME": "a=b"}
    assert without("A=1;TKE_NETWORK=x;B=2", ["TKE_NETWORK"]) == "A=1;B=2"
    with pytest.raises(CNIError) as err:
        parse_args("novalue")
    assert err.value.code == 4


def test_owner_from_args() -> None:
    assert PodOwner.from_args({}) is None
    assert PodOwner.from_args({"K8S_POD_NAME": "web"}) == PodOwner("default", "web")
    pod = PodOwner.from_args({"K8S_POD_NAMESPACE": "a", "K8S_POD_NAME": "b", "K8S_POD_UID": "u", "X": "y"})
    assert pod == PodOwner("a", "b", "u")


# -- the choice of network -------------------------------------------------------------------


class FakeBindings:
    def __init__(self, binding: Binding | None = None, down: bool = False) -> None:
        self.binding = binding
        self.down = down
        self.asked: list[PodOwner] = []

    def lookup(self, pod: PodOwner) -> Binding | None:
        self.asked.append(pod)
        if self.down:
            raise BindingUnavailable("connection refused")
        return self.binding


NETWORKS: dict[str, object] = {"bridge": {}, "fixed": {}}
POD = PodOwner("shop", "db-0")


def choose(pairs: dict[str, str], pod: PodOwner | None, bindings: FakeBindings | None) -> str:
    return choose_network(
        networks=NETWORKS, default="bridge", network_arg="TKE_NETWORK", pairs=pairs, pod=pod, bindings=bindings
    ).network


def test_explicit_choice_wins_and_needs_no_ipamd() -> None:
    down = FakeBindings(down=True)
    assert choose({"TKE_NETWORK": "fixed"}, POD, down) == "fixed"
    assert down.asked == []


def test_binding_then_default() -> None:
    assert choose({}, POD, FakeBindings(Binding("StatefulSet", "db", "fixed"))) == "fixed"
    assert choose({}, POD, FakeBindings(Binding("StatefulSet", "db", ""))) == "bridge"  # empty = default
    assert choose({}, POD, FakeBindings(None)) == "bridge"
    assert choose({}, None, FakeBindings(down=True)) == "bridge"  # no pod: nothing to look up
    assert choose({}, POD, None) == "bridge"  # no ipamd configured


@pytest.mark.parametrize(
    ("pairs", "bindings", "code"),
    [
        ({}, FakeBindings(down=True), 11),
        ({"TKE_NETWORK": "nope"}, None, 4),
        ({}, FakeBindings(Binding("StatefulSet", "db", "elsewhere")), 7),
    ],
)
def test_choice_errors(pairs: dict[str, str], bindings: FakeBindings | None, code: int) -> None:
    with pytest.raises(CNIError) as err:
        choose(pairs, POD, bindings)
    assert err.value.code == code


# -- cni-switch's verbs over fakes -----------------------------------------------------------


class FakeExec:
    """Plugins by type; `fail` maps (type, command) to the error that call raises."""

    def __init__(self, fail: Mapping[tuple[str, str], CNIError] | None = None) -> None:
        self.fail = dict(fail or {})
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def find(self, plugin_type: str, path: Sequence[str]) -> str:
        if plugin_type == "missing":
            raise CNIError(7, "failed to find plugin")
        return f"/fake/{plugin_type}"

    def run(self, executable: str, config: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any] | None:
        kind, command = executable.rsplit("/", 1)[1], env["CNI_COMMAND"]
        if command == "VERSION":
            return {"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]}
        self.calls.append((kind, command, dict(config)))
        if (kind, command) in self.fail:
            raise self.fail[(kind, command)]
        if command == "ADD":
            return {"cniVersion": config["cniVersion"], "ips": [{"address": "10.0.0.2/24"}]}
        return None


def make_switch(runner: FakeExec, store: MemoryStore, bindings: FakeBindings | None = None) -> Switch:
    config = SwitchConfig.from_json(
        {
            "name": "tke",
            "defaultNetwork": "a",
            "networks": {"a": {"type": "pa"}, "b": {"plugins": [{"type": "pb1"}, {"type": "pb2"}]}},
        }
    )
    return Switch(config, store, runner, PluginVersions(runner, None), bindings)


def request(command: str, **config: Any) -> Request:
    return Request(
        command=command,
        config={"cniVersion": "1.1.0", "name": "tke", **config},
        container_id="c1",
        netns="/var/run/netns/x",
        ifname="eth0",
        args="",
        path=("/fake",),
        environ={},
    )


def test_chain_runs_in_order_and_dels_in_reverse() -> None:
    runner, store = FakeExec(), MemoryStore()
    switch = make_switch(runner, store)
    result = switch.add(request("ADD").replace(args="TKE_NETWORK=b"))
    assert result["cniVersion"] == "1.1.0"
    assert [(k, c) for k, c, _ in runner.calls] == [("pb1", "ADD"), ("pb2", "ADD")]
    assert runner.calls[0][2]["cniVersion"] == "1.0.0"  # what the delegate supports
    assert runner.calls[1][2]["prevResult"]["cniVersion"] == "1.0.0"
    record = store.get("c1", "eth0")
    assert record is not None and record.phase == ADDED and record.args == ""  # our key stripped
    runner.calls.clear()
    switch.delete(request("DEL"))
    assert [(k, c) for k, c, _ in runner.calls] == [("pb2", "DEL"), ("pb1", "DEL")]
    assert store.get("c1", "eth0") is None


def test_failed_undo_keeps_the_record_for_del_and_gc() -> None:
    runner = FakeExec({("pb2", "ADD"): CNIError(11, "later"), ("pb1", "DEL"): CNIError(5, "stuck")})
    store = MemoryStore()
    switch = make_switch(runner, store)
    with pytest.raises(CNIError) as err:
        switch.add(request("ADD").replace(args="TKE_NETWORK=b"))
    assert err.value.code == 11  # the ADD's error, not the undo's
    kept = store.get("c1", "eth0")
    assert kept is not None and kept.phase == ADDING
    runner.fail.clear()
    switch.delete(request("DEL"))
    assert store.get("c1", "eth0") is None


@pytest.mark.parametrize("phase", [ADDED, ADDING])
def test_add_for_a_recorded_attachment_is_refused_and_changes_nothing(phase: str) -> None:
    # ADD twice without DEL (the specification: a runtime should not; a plugin must fail when
    # the interface exists; the runtime DELs after a failed ADD). Bad input is refused as bad
    # input first; either way no delegate is asked to ADD or DEL and the record is untouched.
    store, runner = MemoryStore(), FakeExec()
    record = Attachment("c1", "eth0", {"key": "a", "name": "a", "plugins": [{"type": "pa"}]}, phase=phase, updated=1.0)
    store.put(record)
    switch = make_switch(runner, store)
    for args, code in (("", 104), ("TKE_NETWORK=b", 104), ("TKE_NETWORK=nope", 4)):
        with pytest.raises(CNIError) as err:
            switch.add(request("ADD").replace(args=args))
        assert err.value.code == code, args
        assert runner.calls == [] and store.list() == [record]
    with pytest.raises(CNIError) as err:
        switch.add(request("ADD"))
    assert f"c1/eth0 is already attached to network a ({phase})" in err.value.msg


def test_a_plugin_without_a_usable_version_fails_before_anything_is_recorded() -> None:
    class Old(FakeExec):
        def run(self, executable: str, config: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any] | None:
            if executable.endswith("/pb2") and env["CNI_COMMAND"] == "VERSION":
                return {"cniVersion": "0.2.0", "supportedVersions": ["0.1.0", "0.2.0"]}
            return super().run(executable, config, env)

    store, runner = MemoryStore(), Old()
    with pytest.raises(CNIError) as err:
        make_switch(runner, store).add(request("ADD").replace(args="TKE_NETWORK=b"))
    assert err.value.code == 1 and "pb2" in err.value.msg
    assert runner.calls == [] and store.list() == []  # pb1 never ran, so there was nothing to undo


def test_del_without_a_record_asks_every_network() -> None:
    runner = FakeExec()
    make_switch(runner, MemoryStore()).delete(request("DEL"))
    assert [(k, c) for k, c, _ in runner.calls] == [("pa", "DEL"), ("pb2", "DEL"), ("pb1", "DEL")]


def test_crash_between_record_and_result_is_recoverable() -> None:
    # A record in phase "adding" (the process died after writing it): DEL still reaches "b".
    store = MemoryStore()
    store.put(Attachment("c1", "eth0", {"key": "b", "name": "b", "plugins": [{"type": "pb1"}]}, updated=0))
    runner = FakeExec()
    make_switch(runner, store).delete(request("DEL"))
    assert [(k, c) for k, c, _ in runner.calls] == [("pb1", "DEL")]


def test_gc_spares_valid_and_in_flight_attachments() -> None:
    store, runner = MemoryStore(), FakeExec()
    net = {"key": "a", "name": "a", "plugins": [{"type": "pa"}]}
    store.put(Attachment("keep", "eth0", net, phase=ADDED))
    store.put(Attachment("gone", "eth0", net, phase=ADDED))
    store.put(Attachment("fresh", "eth0", net, updated=9e99))  # an ADD in flight
    make_switch(runner, store).gc(
        request("GC", **{"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]})
    )
    assert sorted(a.container_id for a in store.list()) == ["fresh", "keep"]
    [(kind, command, _)] = runner.calls
    assert (kind, command) == ("pa", "DEL")


def test_missing_plugin_fails_before_anything_is_recorded() -> None:
    store = MemoryStore()
    switch = make_switch(FakeExec(), store)
    switch.config = switch.config.replace(networks={"a": {"type": "missing"}})
    with pytest.raises(CNIError):
        switch.add(request("ADD"))
    assert store.list() == []


def test_disk_store_is_atomic_and_skips_temporary_files(tmp_path: Any) -> None:
    store = DiskStore(str(tmp_path / "att"))
    store.put(Attachment("c1", "eth0", {"key": "a"}))
    (tmp_path / "att" / ".c2=eth0.json.1.tmp").write_text("{partial")
    (tmp_path / "att" / "c3=eth0.json").write_text("{corrupt")
    assert [a.container_id for a in store.list()] == ["c1"]
    store.remove("c1", "eth0")
    store.remove("c1", "eth0")
    assert store.get("c1", "eth0") is None


def test_gc_reaches_ipam_plugins_under_1_0_main_plugins_once() -> None:
    class Newer(FakeExec):
        def run(self, executable: str, config: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any] | None:
            if executable.endswith("/ipamx") and env["CNI_COMMAND"] == "VERSION":
                return {"cniVersion": "1.1.0", "supportedVersions": ["1.0.0", "1.1.0"]}
            return super().run(executable, config, env)

    runner = Newer()
    ipam = {"type": "ipamx", "ipamd": "/run/x.sock"}
    config = SwitchConfig.from_json(
        {
            "name": "tke",
            "defaultNetwork": "a",
            "networks": {"a": {"type": "pa", "ipam": ipam}, "b": {"type": "pb", "ipam": ipam}, "c": {"type": "pc"}},
        }
    )
    switch = Switch(config, MemoryStore(), runner, PluginVersions(runner, None), None)
    switch.gc(request("GC", **{"cni.dev/valid-attachments": []}))
    [(kind, command, sent)] = runner.calls
    assert (kind, command) == ("ipamx", "GC")
    assert sent["type"] == "pa" and sent["cniVersion"] == "1.1.0" and sent["cni.dev/valid-attachments"] == []


def test_gc_without_the_list_of_attachments_in_use_is_refused_and_null_means_none() -> None:
    """GC removes what the list does not name: a GC without the list would remove every live
    attachment, so it is refused (code 7); libcni's null (its runtime has none in use) is []."""
    with pytest.raises(CNIError) as err:
        valid_attachments({"cniVersion": "1.1.0", "name": "n"})
    assert err.value.code == 7 and "cni.dev/valid-attachments" in err.value.msg
    assert valid_attachments({"cni.dev/valid-attachments": None}) == []
    assert valid_attachments({"cni.dev/attachments": [{"containerID": "c", "ifname": "eth0"}]}) == [
        {"containerID": "c", "ifname": "eth0"}
    ]


@pytest.mark.parametrize(
    ("extra", "network", "message"),
    [
        # Dropped without a word: no delegate got the args the operator wrote.
        ({"args": "x"}, {"type": "pa"}, "args: expected an object"),
        # bool("false") is true: CHECK and GC would have been skipped.
        ({}, {"type": "pa", "disableCheck": "false"}, "networks.a.disableCheck: expected true or false"),
        ({}, {"plugins": [{"type": "pa"}], "disableGC": 0}, "networks.a.disableGC: expected true or false"),
    ],
)
def test_switch_options_of_the_wrong_type_are_code_7(
    extra: dict[str, Any], network: dict[str, Any], message: str
) -> None:
    with pytest.raises(CNIError) as err:
        config = SwitchConfig.from_json({"name": "tke", "networks": {"a": network}, **extra})
        config.network("a")
    assert err.value.code == 7 and message in err.value.msg
