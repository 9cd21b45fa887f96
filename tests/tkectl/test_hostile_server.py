"""tkectl against a server that lies: what it prints never drives the terminal, answers no
Timestamp can hold are shown as such, and a login answer that is no token is not saved.

A tenant writes names, messages and annotations that tkectl prints to an operator, and tkectl
may be pointed at any server. Before, an event's message with `ESC ] 0 ; ... BEL ESC [ 2 J`
retitled the operator's window and cleared the screen, a creation time in year 10^11 ended
`describe` with "unexpected error: OSError", and a token with a newline was saved and broke
every later call of the context."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from tke.auth.v1 import accounts_pb2
from tke.platform.v1 import cluster_pb2, event_pb2

TKECTL = str(Path(sys.executable).parent / "tkectl")
ESC = "\x1b]0;PWNED\x07\x1b[2J\x1b[31m\x9b1m\x7f"
FAR = 2**62  # seconds: far beyond year 9999


class Hostile:
    """The answers of a server that lies; `far` puts every time out of any Timestamp's range."""

    def __init__(self, far: bool) -> None:
        self.far = far

    def cluster(self) -> cluster_pb2.Cluster:
        c = cluster_pb2.Cluster()
        c.metadata.name, c.metadata.tenant_id = "evil" + ESC, "t" + ESC
        c.metadata.annotations["note"] = "a" + ESC
        c.metadata.creation_timestamp.seconds = FAR if self.far else 1
        c.spec.type, c.spec.version = "baremetal" + ESC, "1.30" + ESC
        c.status.message = "m" + ESC
        return c

    def login(self, request: Message, context: Any) -> accounts_pb2.LoginResponse:
        answer = accounts_pb2.LoginResponse(token="tok\nen" if self.far else "tok" + ESC)
        answer.expires_at.seconds = FAR if self.far else 2_000_000_000
        return answer

    def list_clusters(self, request: Message, context: Any) -> cluster_pb2.ClusterList:
        return cluster_pb2.ClusterList(items=[self.cluster()])

    def get_cluster(self, request: Message, context: Any) -> cluster_pb2.Cluster:
        if request.name == "missing":  # type: ignore[attr-defined]
            context.abort(grpc.StatusCode.NOT_FOUND, "no such cluster" + ESC)
        return self.cluster()

    def kubeconfig(self, request: Message, context: Any) -> cluster_pb2.GetKubeconfigResponse:
        answer = cluster_pb2.GetKubeconfigResponse(kubeconfig="apiVersion: v1\n# " + ESC + "\n")
        answer.expire_time.seconds = FAR if self.far else 2_000_000_000
        return answer

    def list_events(self, request: Message, context: Any) -> event_pb2.EventList:
        e = event_pb2.Event()
        e.metadata.name = "e"
        e.spec.reason, e.spec.message, e.spec.count = "R" + ESC, "M" + ESC, 1
        e.spec.involved_object.kind, e.spec.involved_object.name = "Cluster", "evil" + ESC
        e.spec.last_timestamp.seconds = FAR if self.far else 1
        return event_pb2.EventList(items=[e])


def _handler(method: Any, request: type[Message], response: type[Message]) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(
        method, request_deserializer=request.FromString, response_serializer=response.SerializeToString
    )


@pytest.fixture(params=[False, True], ids=["escapes", "far-times"])
def server(request: pytest.FixtureRequest) -> Iterator[str]:
    hostile = Hostile(far=request.param)
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    s.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "tke.auth.v1.AuthService",
                {"Login": _handler(hostile.login, accounts_pb2.LoginRequest, accounts_pb2.LoginResponse)},
            ),
            grpc.method_handlers_generic_handler(
                "tke.platform.v1.ClusterService",
                {
                    "List": _handler(hostile.list_clusters, cluster_pb2.ListClustersRequest, cluster_pb2.ClusterList),
                    "Get": _handler(hostile.get_cluster, cluster_pb2.GetClusterRequest, cluster_pb2.Cluster),
                    "GetKubeconfig": _handler(
                        hostile.kubeconfig, cluster_pb2.GetKubeconfigRequest, cluster_pb2.GetKubeconfigResponse
                    ),
                },
            ),
            grpc.method_handlers_generic_handler(
                "tke.platform.v1.EventService",
                {"List": _handler(hostile.list_events, event_pb2.ListEventsRequest, event_pb2.EventList)},
            ),
        ]
    )
    port = s.add_insecure_port("127.0.0.1:0")
    s.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        s.stop(None)


def tkectl(home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TKECONFIG": str(home / "config")}
    return subprocess.run(
        [TKECTL, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False
    )


def drives_a_terminal(text: str) -> list[str]:
    return sorted({hex(ord(c)) for c in text if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0})


@pytest.mark.parametrize(
    "args",
    [
        ("get", "clusters"),
        ("get", "clusters", "-o", "wide"),
        ("get", "cluster", "x"),
        ("get", "clusters", "-o", "yaml"),
        ("get", "clusters", "-o", "json"),
        ("describe", "cluster", "x"),
        ("get", "events"),
        ("get", "cluster", "missing"),
        ("get", "kubeconfig", "x"),
    ],
    ids=" ".join,
)
def test_what_tkectl_prints_never_drives_the_terminal(server: str, tmp_path: Path, args: tuple[str, ...]) -> None:
    result = tkectl(tmp_path, "--server", server, "--token", "t", *args)
    assert "Traceback" not in result.stderr
    assert "unexpected error" not in result.stderr, result.stderr
    assert drives_a_terminal(result.stdout) == [], result.stdout
    assert drives_a_terminal(result.stderr) == [], result.stderr
    if "no JSON form" not in result.stderr:  # (-o json and yaml of the far-times server)
        assert "\\u001b" in result.stdout + result.stderr or "\\e" in result.stdout, "the server's text was not shown"


def test_times_no_timestamp_can_hold_are_shown_as_invalid(server: str, tmp_path: Path) -> None:
    described = tkectl(tmp_path, "--server", server, "--token", "t", "describe", "cluster", "x")
    assert described.returncode == 0, described.stderr
    assert "Created:" in described.stdout
    events = tkectl(tmp_path, "--server", server, "--token", "t", "get", "events")
    assert events.returncode == 0, events.stderr
    as_json = tkectl(tmp_path, "--server", server, "--token", "t", "get", "clusters", "-o", "json")
    if "<invalid>" in described.stdout:  # the far-times server
        assert "<invalid>" in events.stdout
        assert as_json.returncode == 1
        assert as_json.stderr.startswith("tkectl: the server sent a Cluster that has no JSON form: "), as_json.stderr
    else:
        assert as_json.returncode == 0, as_json.stderr


def test_a_login_answer_that_is_no_token_is_not_saved(server: str, tmp_path: Path) -> None:
    result = tkectl(tmp_path, "--server", server, "login", "-u", "ann", "--password-stdin", stdin="pw\n")
    assert result.returncode == 1
    assert "answered the login with no usable token" in result.stderr
    assert "the configuration is unchanged" in result.stderr
    assert not (tmp_path / "config").exists()
