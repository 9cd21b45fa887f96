"""tkectl's pure parts: the configuration file, file documents, apply's paths, error lines."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from tke.internal.tkectl import cli, connection
from tke.internal.tkectl import config as configfile
from tke.internal.tkectl.commands.write import apply_paths
from tke.internal.tkectl.documents import dump_yaml, parse, to_dict
from tke.internal.tkectl.errors import CliError, Exit, from_rpc
from tke.internal.tkectl.kinds.registry import by_file_kind, lookup
from tke.platform.v1 import cluster_pb2


def test_config_round_trip_is_private_and_keeps_only_what_is_set(tmp_path: Path) -> None:
    path = tmp_path / "dir" / "config"
    cfg = configfile.load(path)
    assert cfg.contexts == {} and cfg.context() == ("", configfile.Context())
    cfg.contexts["dev"] = configfile.Context(
        server="127.0.0.1:1", token="t", tenant="a", ipamd=configfile.Endpoint(server="unix:/x.sock")
    )
    cfg.current_context = "dev"
    cfg.save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == (
        "current-context: dev\ncontexts:\n  dev:\n    server: 127.0.0.1:1\n    token: t\n    tenant: a\n"
        "    ipamd:\n      server: unix:/x.sock\n"
    )
    again = configfile.load(path)
    assert again.context() == ("dev", cfg.contexts["dev"])


# Nested YAML aliases: a8 is 10^9 values (600 bytes of text).
ALIASES = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9)
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("contexts: [a]\n", "contexts must be a mapping"),
        ("contexts: {dev: {sever: x}}\n", "unknown key 'sever'"),
        ("contexts: {dev: {tls: maybe}}\n", "tls must be true or false"),
        ("current-context: [\n", "not valid YAML"),
        # Values are strings, whatever YAML a file someone else wrote holds.
        ("contexts: {dev: {token: {a: secret}}}\n", "context dev: token must be a string, not a YAML dict"),
        ("contexts: {dev: {server: [a, b]}}\n", "context dev: server must be a string, not a YAML list"),
        ("contexts: {dev: {ipamd: {token: [t]}}}\n", "context dev.ipamd: token must be a string"),
        ("current-context: {a: b}\n", "current-context must be a context's name"),
        # 10^9 "x" if its text were taken: refused before anything is expanded.
        (ALIASES + "contexts: {dev: {token: *a8}}\n", "expands to more than 1000000 values (through YAML aliases)"),
        ("contexts: " + "[" * 5000 + "]" * 5000 + "\n", "is nested too deeply"),
    ],
)
def test_a_broken_config_file_is_a_usage_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config"
    path.write_text(text)
    with pytest.raises(CliError) as err:
        configfile.load(path)
    assert err.value.exit_code == Exit.USAGE and message in err.value.message


@pytest.mark.parametrize("token", ["secret\nInjected: yes", "secr\u00e9t", "secret\x1b[2J", "s" * 8193])
@pytest.mark.parametrize("which", [connection.APISERVER, connection.IPAMD])
def test_a_token_that_is_no_header_value_is_a_usage_error_that_does_not_show_it(token: str, which: str) -> None:
    endpoint = configfile.Endpoint(server="127.0.0.1:1", token=token)
    context = configfile.Context(server="127.0.0.1:1", token=token, ipamd=endpoint)
    with pytest.raises(CliError) as err:
        connection.Connection("dev", context, 5.0).metadata(which)
    assert err.value.exit_code == Exit.USAGE
    assert f'the {which} token of context "dev"' in err.value.message
    assert "secr" not in err.value.message and "sss" not in err.value.message
    good = configfile.Context(server="127.0.0.1:1", token="tke1.abc", ipamd=configfile.Endpoint(token="k"))
    sent = connection.Connection("dev", good, 5.0).metadata(connection.APISERVER)
    assert sent == (("authorization", "Bearer tke1.abc"),)


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TKECONFIG", "/from/env")
    assert configfile.config_path("/from/flag") == Path("/from/flag")
    assert configfile.config_path() == Path("/from/env")
    monkeypatch.delenv("TKECONFIG")
    assert configfile.config_path() == Path("~/.tke/config").expanduser()


def test_documents_parse_yaml_streams_lists_and_json() -> None:
    docs = parse(
        "kind: Cluster\nmetadata: {name: a}\nspec: {type: baremetal}\n---\n"
        "kind: List\nitems:\n- {kind: Pool, name: p, cidr: 10.0.0.0/24}\n"
        "- {kind: User, metadata: {name: u}, password: pw}\n",
        "f.yaml",
    )
    assert [(d.kind.kind, d.kind.name_of(d.message)) for d in docs] == [("Cluster", "a"), ("Pool", "p"), ("User", "u")]
    assert docs[2].extra == {"password": "pw"}
    json_doc = parse('{"kind": "Machine", "metadata": {"name": "m"}, "spec": {"cluster_name": "a"}}', "m.json")[0]
    assert json_doc.message.spec.cluster_name == "a"  # type: ignore[attr-defined]


def test_yaml_timestamps_become_json_mapping_strings() -> None:
    doc = parse("kind: Event\nmetadata: {name: e}\nspec: {lastTimestamp: 2026-11-27T11:00:00Z}\n", "e.yaml")[0]
    assert doc.message.spec.last_timestamp.seconds > 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metadata: {name: x}\n", "missing kind:"),
        ("kind: Widget\n", 'unknown kind "Widget"'),
        ("kind: Cluster\nspec: {tpye: x}\n", "tpye"),
        ("kind: Cluster\nspec: [\n", "not valid YAML"),
        # Someone else's file: bounded, whatever it holds.
        ("kind: Cluster\nmetadata: " + "[" * 5000 + "]" * 5000 + "\n", "is nested too deeply"),
        (
            "x-junk:\n"
            + "".join("  " + line for line in ALIASES.splitlines(True))
            + "kind: Cluster\nspec: {extraArgs: {k: *a8}}\n",
            "expands to more",
        ),
        ("", "holds no objects"),
        ("- a\n", "expected an object"),
    ],
)
def test_invalid_documents_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(CliError) as err:
        parse(text, "f.yaml")
    assert err.value.exit_code == Exit.USAGE and message in err.value.message and "f.yaml" in err.value.message


def test_get_output_parses_back_to_the_same_object() -> None:
    c = cluster_pb2.Cluster()
    c.metadata.name = "demo"
    c.metadata.labels["env"] = "dev"
    c.spec.network.mode = cluster_pb2.NETWORK_MODE_FIXED_IP
    kind = lookup("cluster")
    again = parse(dump_yaml(to_dict(kind, c)), "exported")[0].message
    assert again == c


def test_apply_replaces_only_what_the_file_sets() -> None:
    only_spec = parse("kind: Cluster\nmetadata: {name: a}\nspec: {type: x}\n", "f")[0]
    assert apply_paths(only_spec) == ["spec"]
    labelled = parse("kind: Cluster\nmetadata: {name: a, labels: {}, finalizers: []}\n", "f")[0]
    assert apply_paths(labelled) == ["metadata.labels", "metadata.finalizers"]
    assert apply_paths(parse("kind: Pool\nname: p\ncidr: 10.0.0.0/24\n", "f")[0]) == []


def test_same_compares_the_applied_paths_only() -> None:
    kind = by_file_kind("Cluster")
    current, desired = cluster_pb2.Cluster(), cluster_pb2.Cluster()
    current.metadata.labels["a"] = "1"
    current.metadata.resource_version = "7"
    desired.metadata.labels["a"] = "1"
    assert kind.same(current, desired, ["metadata.labels", "spec"])
    desired.spec.version = "1.31.0"
    assert not kind.same(current, desired, ["metadata.labels", "spec"])


class FakeRpcError:
    """What grpc.aio.AioRpcError offers: code, details and trailing metadata."""

    def __init__(self, code: grpc.StatusCode, message: str, details: list[Any] | None = None) -> None:
        self._code, self._message = code, message
        self._trailers: tuple[tuple[str, bytes], ...] = ()
        if details:
            status = status_pb2.Status(code=code.value[0], message=message)
            for d in details:
                status.details.add().Pack(d)
            self._trailers = (("grpc-status-details-bin", status.SerializeToString()),)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self._trailers


def test_rpc_errors_become_one_line_with_the_code_and_an_exit_code() -> None:
    bad = error_details_pb2.BadRequest()
    bad.field_violations.add(field="cluster.metadata.name", description="must be lowercase")
    bad.field_violations.add(field="cluster.spec.type", description="is required")
    err = from_rpc(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "invalid (and 1 more)", [bad]))
    assert err.message == "INVALID_ARGUMENT: cluster.metadata.name: must be lowercase; cluster.spec.type: is required"
    assert err.exit_code == Exit.ERROR and err.code == "INVALID_ARGUMENT"
    for code, exit_code in [
        (grpc.StatusCode.NOT_FOUND, Exit.NOT_FOUND),
        (grpc.StatusCode.ALREADY_EXISTS, Exit.CONFLICT),
        (grpc.StatusCode.ABORTED, Exit.CONFLICT),
        (grpc.StatusCode.UNAUTHENTICATED, Exit.DENIED),
        (grpc.StatusCode.PERMISSION_DENIED, Exit.DENIED),
        (grpc.StatusCode.UNAVAILABLE, Exit.UNAVAILABLE),
        (grpc.StatusCode.DEADLINE_EXCEEDED, Exit.UNAVAILABLE),
        (grpc.StatusCode.INTERNAL, Exit.ERROR),
    ]:
        assert from_rpc(FakeRpcError(code, "multi\nline  text")).exit_code == exit_code
    assert from_rpc(FakeRpcError(grpc.StatusCode.INTERNAL, "multi\nline  text")).message == "INTERNAL: multi line text"
    unreachable = from_rpc(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "refused"), "the apiserver at 127.0.0.1:1")
    assert unreachable.message == "UNAVAILABLE: cannot reach the apiserver at 127.0.0.1:1: refused"


def test_every_kind_is_found_by_its_names() -> None:
    assert lookup("CLUSTERS") is lookup("cls") is lookup("Cluster") is by_file_kind("Cluster")
    assert lookup("rb").kind == "RoleBinding" and lookup("ips").kind == "Allocation"
    with pytest.raises(CliError):
        lookup("widgets")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # A call given no time ended DEADLINE_EXCEEDED (exit 6, "server unreachable"); a watch
        # with a negative timeout ended at once with exit 0, having watched nothing.
        (["get", "clusters", "--request-timeout", "-1"], "'-1' must be a positive number of seconds"),
        (["--request-timeout", "0", "get", "clusters"], "'0' must be a positive number of seconds"),
        (["get", "clusters", "--request-timeout", "nan"], "'nan' must be a positive number of seconds"),
        (["watch", "clusters", "--timeout", "-5"], "'-5' must be 0 (until Ctrl-C) or a positive number of seconds"),
    ],
)
def test_times_that_cannot_work_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        cli.parser().parse_args(argv)
    assert done.value.code == Exit.USAGE and message in capsys.readouterr().err


def test_every_config_subcommand_takes_the_global_options_after_it(tmp_path: Path) -> None:
    # As docs/tkectl.md says of every command: `tkectl config view --config FILE` was refused
    # ("unrecognized arguments"), only `tkectl --config FILE config view` worked.
    path = str(tmp_path / "config")
    for argv in (
        ["view", "--show-secrets"],
        ["get-contexts"],
        ["current-context"],
        ["use-context", "dev"],
        ["delete-context", "dev"],
    ):
        args = cli.parser().parse_args(["config", *argv, "--config", path, "--request-timeout", "5"])
        assert args.config == path and args.request_timeout == 5.0
    assert cli.parser().parse_args(["watch", "clusters", "--timeout", "0"]).timeout == 0.0
