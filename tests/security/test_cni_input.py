"""Rule: the CNI plugins bound what a runtime hands them. An environment variable beyond its
limit is code 4 (invalid environment variables), a configuration that is too large, not UTF-8,
nested too deeply or holding NaN or Infinity (which Python's json reads and JSON does not have)
is code 6 (decoding failure); never 101 (internal error), never a traceback, and nothing is
touched. Input at the limits still works: a real ADD, CHECK and DEL through cni-switch,
Debian's bridge and host-local with the longest container id allowed.

The plugins run as a runtime runs them (environment + stdin), inside a network namespace the
test creates (root, as the CNI tests)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cni import (
    DEBIAN_CNI,
    Runtime,
    addresses,
    bin_dir,
    bridge_network,
    console_script,
    netns,
    netns_path,
    record_dir,
    switch_config,
    unique,
    with_prev,
)
from tke.internal.cni.limits import ENVIRONMENT_LIMITS, MAX_CONFIG_BYTES, MAX_JSON_DEPTH, PATH_MAX

PLUGINS = ["cni-switch", "tke-ipamc"]


@pytest.fixture
def node() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.fail("the CNI security tests need root (network namespaces), as CI runs them", pytrace=False)
    with netns("tsn") as name:
        yield name


def runtime(plugin: str, node: str, tmp_path: Path) -> Runtime:
    return Runtime(binary=console_script(plugin), node=node, path=[bin_dir(tmp_path, *PLUGINS), DEBIAN_CNI])


def config_of(plugin: str, tmp_path: Path) -> dict[str, Any]:
    """A configuration each plugin accepts (nobody listens on the ipamd socket: the probes must
    be refused before anything is asked)."""
    if plugin == "cni-switch":
        return switch_config(tmp_path, {"pods": bridge_network(tmp_path, "10.90.0.0/24", name="pods")}, "pods")
    return {
        "cniVersion": "1.0.0",
        "name": "fixed",
        "type": "bridge",
        "ipam": {"type": "tke-ipamc", "ipamd": str(tmp_path / "nobody.sock"), "stateDir": str(tmp_path / "ipamc")},
    }


def refused(outcome: Any, code: int, says: str) -> None:
    assert outcome.code == 1, outcome
    error = outcome.json
    assert error["code"] == code and says in error["msg"], error
    assert "Traceback" not in outcome.stderr and len(outcome.stdout) < 1024, outcome  # no echo of the input


OVERLONG = {
    "CNI_CONTAINERID": "c" * (ENVIRONMENT_LIMITS["CNI_CONTAINERID"] + 1),
    "CNI_IFNAME": "e" * (ENVIRONMENT_LIMITS["CNI_IFNAME"] + 1),
    "CNI_NETNS": "/" + "n" * PATH_MAX,
    "CNI_ARGS": "K8S_POD_NAME=" + "p" * ENVIRONMENT_LIMITS["CNI_ARGS"],
}


@pytest.mark.parametrize("plugin", PLUGINS)
@pytest.mark.parametrize("verb", ["ADD", "CHECK", "DEL"])
@pytest.mark.parametrize("variable", sorted(OVERLONG))
def test_an_overlong_environment_variable_is_code_4(
    node: str, tmp_path: Path, plugin: str, verb: str, variable: str
) -> None:
    run = runtime(plugin, node, tmp_path)
    values = {"container_id": unique("c"), "netns": "/var/run/netns/none", "ifname": "eth0", "args": ""}
    key = {"CNI_CONTAINERID": "container_id", "CNI_IFNAME": "ifname", "CNI_NETNS": "netns", "CNI_ARGS": "args"}
    values[key[variable]] = OVERLONG[variable]
    out = run.run(verb, config_of(plugin, tmp_path), **values)  # type: ignore[arg-type]
    refused(out, 4, variable)
    assert not (tmp_path / "state").exists() and not (tmp_path / "ipamc").exists()  # nothing written


@pytest.mark.parametrize("plugin", PLUGINS)
def test_an_overlong_cni_path_or_node_name_is_code_4(node: str, tmp_path: Path, plugin: str) -> None:
    run = runtime(plugin, node, tmp_path)
    long_dir = Runtime(binary=run.binary, node=node, path=["/" + "d" * (PATH_MAX + 1), DEBIAN_CNI])
    refused(long_dir.run("ADD", config_of(plugin, tmp_path), container_id="c1", netns="/x"), 4, "CNI_PATH")
    many = Runtime(binary=run.binary, node=node, path=["/usr/lib/cni"] * 3000)  # 39 KB in all
    refused(many.run("DEL", config_of(plugin, tmp_path), container_id="c1"), 4, "CNI_PATH")
    named = Runtime(binary=run.binary, node=node, path=run.path, extra_env={"TKE_NODE_NAME": "n" * 254})
    refused(named.run("ADD", config_of(plugin, tmp_path), container_id="c1", netns="/x"), 4, "TKE_NODE_NAME")


def nested(depth: int) -> bytes:
    return b'{"cniVersion": "1.0.0", "name": "n", "type": "bridge", "x": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("plugin", PLUGINS)
@pytest.mark.parametrize(
    "stdin",
    [
        pytest.param(nested(200_000), id="nested-200000"),  # beyond the interpreter's recursion limit
        pytest.param(nested(MAX_JSON_DEPTH), id="nested-one-beyond-the-limit"),  # inside the outer object
        pytest.param(b'{"cniVersion": "1.0.0", "name": "\xff\xfe"}', id="not-utf8"),
        pytest.param(b'{"cniVersion": "1.0.0", "pad": "' + b" " * MAX_CONFIG_BYTES + b'"}', id="over-1MiB"),
        pytest.param(b'{"cniVersion": "1.0.0"', id="truncated"),
    ],
)
@pytest.mark.parametrize("verb", ["ADD", "DEL"])
def test_an_undecodable_configuration_is_code_6(
    node: str, tmp_path: Path, plugin: str, stdin: bytes, verb: str
) -> None:
    out = runtime(plugin, node, tmp_path).run(verb, stdin, container_id=unique("c"), netns="/var/run/netns/none")
    refused(out, 6, "failed to decode the network configuration")


NOT_JSON_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e999"]


def with_number(plugin: str, tmp_path: Path, where: str, number: str) -> bytes:
    """The plugin's configuration with `number` (no JSON value, or one beyond a double that
    Python reads as infinity) in a delegate plugin's options or in prevResult."""
    config = config_of(plugin, tmp_path)
    if where == "prevResult":
        config["prevResult"] = {"cniVersion": "1.0.0", "ips": [], "routes": [{"dst": "0.0.0.0/0", "mtu": "@@"}]}
    elif plugin == "cni-switch":
        config["networks"]["pods"]["plugins"][0]["mtu"] = "@@"
    else:
        config["mtu"] = "@@"
    return json.dumps(config).replace('"@@"', number).encode()


@pytest.mark.parametrize("plugin", PLUGINS)
@pytest.mark.parametrize("verb", ["ADD", "CHECK", "DEL"])
@pytest.mark.parametrize("where", ["options", "prevResult"])
@pytest.mark.parametrize("number", NOT_JSON_NUMBERS)
def test_nan_or_infinity_in_the_configuration_is_code_6(  # noqa: PLR0917 - pytest fixtures
    node: str, tmp_path: Path, plugin: str, verb: str, where: str, number: str
) -> None:
    # Python's json reads them; JSON has no such values, and a delegate handed them refuses the
    # whole configuration. Refused like any undecodable configuration, before anything is touched.
    stdin = with_number(plugin, tmp_path, where, number)
    out = runtime(plugin, node, tmp_path).run(verb, stdin, container_id=unique("c"), netns="/var/run/netns/none")
    refused(out, 6, "failed to decode the network configuration")
    assert number.lstrip("-") in out.json["details"], out.json
    assert not (tmp_path / "state").exists() and not (tmp_path / "ipamc").exists()  # nothing written


@pytest.mark.parametrize("plugin", PLUGINS)
def test_version_answers_whatever_comes_on_stdin(node: str, tmp_path: Path, plugin: str) -> None:
    run = runtime(plugin, node, tmp_path)
    for stdin in (nested(200_000), b" " * (MAX_CONFIG_BYTES + 10)):
        assert run.run("VERSION", stdin).ok()["supportedVersions"] == ["1.0.0", "1.1.0"]


def test_input_at_the_limits_still_works(node: str, tmp_path: Path) -> None:
    """The longest container id, an interface name of 15 bytes and a configuration nested to
    the limit (inside an ignored key) go through a real ADD, CHECK and DEL."""
    run = runtime("cni-switch", node, tmp_path)
    conf = config_of("cni-switch", tmp_path)
    deep: Any = []
    for _ in range(MAX_JSON_DEPTH - 2):  # the configuration object and "x"'s own level
        deep = [deep]
    conf["x"] = deep
    cid = "c" * ENVIRONMENT_LIMITS["CNI_CONTAINERID"]
    ifname = "e" * ENVIRONMENT_LIMITS["CNI_IFNAME"]
    with netns("tsc") as container:
        path = netns_path(container)
        result = run.run("ADD", conf, container_id=cid, netns=path, ifname=ifname).ok()
        [ip] = result["ips"]
        assert addresses(container, ifname) == [ip["address"]]
        assert (record_dir(tmp_path) / f"{cid}={ifname}.json").exists()
        assert run.run("CHECK", with_prev(conf, result), container_id=cid, netns=path, ifname=ifname).code == 0
        assert run.run("DEL", with_prev(conf, result), container_id=cid, netns=path, ifname=ifname).code == 0
        assert addresses(container, ifname) == []


MALFORMED_RESULTS = [[], "ok", {"cniVersion": "bogus", "ips": []}, {"cniVersion": 1}, {"cniVersion": "0.4.0", "ips": 5}]


@pytest.mark.parametrize("prev", MALFORMED_RESULTS, ids=repr)
def test_a_prev_result_that_is_no_result_is_code_7_for_check_and_ignored_by_del(
    node: str, tmp_path: Path, prev: Any
) -> None:
    """A runtime's prevResult is input like any other: CHECK refuses one that is no CNI result
    (code 7, never 101); DEL ignores it and finishes, with the record's result or without."""
    switch, ipamc = runtime("cni-switch", node, tmp_path), runtime("tke-ipamc", node, tmp_path)
    conf = config_of("cni-switch", tmp_path)
    with netns("tsc") as container:
        path, cid = netns_path(container), unique("c")
        switch.run("ADD", conf, container_id=cid, netns=path).ok()
        refused(switch.run("CHECK", with_prev(conf, prev), container_id=cid, netns=path), 7, "prevResult")
        refused(
            ipamc.run("CHECK", with_prev(config_of("tke-ipamc", tmp_path), prev), container_id=cid, netns=path),
            7,
            "prevResult",
        )
        never = switch.run("DEL", with_prev(conf, prev), container_id=unique("never"), netns=path)
        assert never.code == 0 and "ignoring prevResult" in never.stderr, never
        assert switch.run("DEL", with_prev(conf, prev), container_id=cid, netns=path).code == 0
        assert addresses(container, "eth0") == []
        assert not (record_dir(tmp_path) / f"{cid}=eth0.json").exists()


def with_nul(plugin: str, tmp_path: Path, option: str) -> dict[str, Any]:
    """The plugin's configuration with `option` (a path) holding a NUL character."""
    config = config_of(plugin, tmp_path)
    section = config if plugin == "cni-switch" else config["ipam"]
    if option == "confDir":
        config["networks"] = {"pods": "pods.conflist"}
    if option == "ipamd.tls.caFile":
        section["ipamd"] = {"address": "192.0.2.1:9443", "tls": {"caFile": str(tmp_path / "ca\x00.pem")}}
    elif option == "ipamd":
        section["ipamd"] = str(tmp_path / "ipamd\x00.sock")
    else:
        section[option] = str(tmp_path / f"{option}\x00x")
    return config


@pytest.mark.parametrize(
    ("plugin", "option"),
    [
        ("cni-switch", "stateDir"),
        ("cni-switch", "confDir"),
        ("cni-switch", "ipamd"),
        ("tke-ipamc", "stateDir"),
        ("tke-ipamc", "ipamd"),
        ("tke-ipamc", "ipamd.tls.caFile"),
    ],
)
@pytest.mark.parametrize("verb", ["ADD", "DEL"])
def test_a_path_option_holding_nul_is_code_7(node: str, tmp_path: Path, plugin: str, option: str, verb: str) -> None:
    # JSON strings may hold NUL, paths cannot: a stateDir with one was an internal error (101),
    # an ipamd socket "try again later" (11), and its DEL queued a release nothing could replay.
    out = runtime(plugin, node, tmp_path).run(
        verb, with_nul(plugin, tmp_path, option), container_id=unique("c"), netns="/var/run/netns/none"
    )
    refused(out, 7, "a path cannot hold a NUL character")
    assert not (tmp_path / "state").exists() and not (tmp_path / "ipamc").exists()  # nothing written
