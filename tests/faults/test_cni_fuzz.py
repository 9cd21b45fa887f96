"""Hostile input to the CNI plugins, executed exactly as a runtime does (environment + stdin):
random verbs, container ids, interface names, CNI_ARGS, versions and configurations (broken
JSON, wrong types, unknown keys). Whatever comes in, a plugin exits within its time, prints
either nothing (a successful DEL) or one JSON document on stdout, an error being the spec's
{"code", "msg"} with a code in range, and never a Python traceback. Nothing can reach the
network: CNI_PATH is an empty directory and every ipamd address is a socket path in the test's
own directory where nobody listens; state directories are the test's own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BIN = Path(sys.executable).parent
VERBS = st.sampled_from(["ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS", "", "add", "FLY"])
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
VERSIONS = st.one_of(st.sampled_from(["1.0.0", "1.1.0", "0.4.0", "0.3.1", "2.0.0", ""]), TEXT)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cni-fuzz")
    (root / "bin").mkdir()  # an empty CNI_PATH: no delegate can run
    return root


def config(draw: Any, plugin: str, sandbox: Path) -> bytes:
    """A configuration: sometimes garbage, usually JSON shaped like the plugin's own."""
    if draw(st.integers(0, 9)) == 0:
        return bytes(draw(st.binary(max_size=80)))
    ipamd = str(sandbox / "nobody-listens.sock")
    conf: dict[str, Any] = {"cniVersion": draw(VERSIONS), "name": draw(TEXT)}
    if plugin == "cni-switch":
        conf["type"] = "cni-switch"
        conf["stateDir"] = str(sandbox / "switch-state")
        conf["confDir"] = str(sandbox / "tke.d")
        if draw(st.booleans()):
            conf["ipamd"] = ipamd
        nets = draw(st.dictionaries(TEXT, st.one_of(JSON_VALUE, st.just({"type": "bridge"})), max_size=3))
        conf["networks"] = nets if draw(st.integers(0, 5)) else draw(JSON_VALUE)
        if draw(st.booleans()):
            conf["defaultNetwork"] = draw(st.one_of(TEXT, st.sampled_from(sorted(nets) or ["x"])))
    else:
        conf["type"] = "bridge"
        ipam: dict[str, Any] = {"type": "tke-ipamc", "ipamd": ipamd, "stateDir": str(sandbox / "ipamc-state")}
        ipam["releaseRetrySeconds"] = 0.1
        for key in draw(st.lists(st.sampled_from(["pool", "node", "nodeIP", "releasePolicy", "gcMinAgeSeconds", "x"]))):
            ipam[key] = draw(JSON_VALUE)
        conf["ipam"] = ipam
    for key in draw(st.lists(TEXT, max_size=2)):
        conf.setdefault(key, draw(JSON_VALUE))
    if draw(st.booleans()):
        conf["prevResult"] = draw(JSON_VALUE)
    return json.dumps(conf).encode()


@st.composite
def invocations(draw: Any, plugin: str, sandbox: Path) -> tuple[dict[str, str], bytes]:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "CNI_COMMAND": draw(VERBS),
        "CNI_CONTAINERID": draw(st.one_of(st.from_regex(r"[a-z0-9]{1,64}", fullmatch=True), TEXT)),
        "CNI_NETNS": draw(st.sampled_from(["", "/var/run/netns/does-not-exist", "/proc/1/ns/net-nope", "relative"])),
        "CNI_IFNAME": draw(st.one_of(st.sampled_from(["eth0", "", "a" * 20, "e/th"]), TEXT)),
        "CNI_PATH": str(sandbox / "bin"),
        "CNI_ARGS": draw(
            st.one_of(
                TEXT,
                st.sampled_from(
                    ["IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p-0;K8S_POD_UID=u", "=;;=", "K8S_POD_NAME"]
                ),
            )
        ),
    }
    for key in draw(st.lists(st.sampled_from(sorted(env)), max_size=2)):
        env.pop(key, None)  # missing variables
    return {k: v for k, v in env.items() if "\x00" not in v}, config(draw, plugin, sandbox)


def run(plugin: str, env: dict[str, str], stdin: bytes) -> None:
    proc = subprocess.run([str(BIN / plugin)], input=stdin, env=env, capture_output=True, timeout=30, check=False)
    out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    assert "Traceback" not in out and "Traceback" not in err, err
    if proc.returncode == 0:
        if out.strip():
            json.loads(out)
        return
    document = json.loads(out)
    assert isinstance(document.get("code"), int) and 1 <= document["code"] <= 999, document
    assert isinstance(document.get("msg"), str) and document["msg"], document


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("plugin", ["cni-switch", "tke-ipamc"])
def test_plugins_answer_any_input_with_the_specs_json(sandbox: Path, plugin: str) -> None:
    @SETTINGS
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        env, stdin = data.draw(invocations(plugin, sandbox))
        run(plugin, env, stdin)

    fuzz()
