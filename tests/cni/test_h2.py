"""The CNI client's HTTP/2 framing: answers of the real tke-ipamd (grpc's HTTP/2 server) recorded
from its unix socket and replayed in every chunking and with random damage, and hand-made
answers for what a real server does rarely or never (CONTINUATION, padding, small flow-control
windows) and for every way an answer can be malformed. A call ends with a Reply or an
`Unreachable` (a `ProtocolError` when the answer is malformed) saying what is wrong, and with
nothing else."""

from __future__ import annotations

import shutil
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.cni import IpamdDaemon
from tests.support.etcd import EtcdProcess
from tke.internal.cni import h2, hpack
from tke.internal.cni import ipamwire as wire
from tke.internal.cni.transport import dial_unix

if TYPE_CHECKING:
    from tke.internal.cni.transport import Stream

LOOKUP = "/tke.ipam.v1.IPAMService/LookupBinding"


class Scripted:
    """A connection whose server side is a script: `incoming` is handed out `chunk` bytes per
    recv (or one item per recv when it is a list), then EOF; everything sent is kept, and
    `data_sent_at` records how many DATA bytes the client had sent at each recv."""

    def __init__(self, incoming: bytes | list[bytes], chunk: int = 65536) -> None:
        self.items = list(incoming) if isinstance(incoming, list) else [incoming]
        self.chunk = chunk
        self.sent = bytearray()
        self.data_sent_at: list[int] = []

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def recv(self, size: int) -> bytes:
        self.data_sent_at.append(sum(len(p) for k, _, s, p in frames(self.sent, client=True) if k == h2.DATA))
        while self.items and not self.items[0]:
            self.items.pop(0)
        if not self.items:
            return b""
        n = min(size, self.chunk, len(self.items[0]))
        out, self.items[0] = self.items[0][:n], self.items[0][n:]
        return out

    def settimeout(self, timeout: float | None) -> None:
        pass

    def close(self) -> None:
        pass


class Recording:
    """A real connection that keeps what the server sent."""

    def __init__(self, path: str) -> None:
        self.sock = dial_unix(path, time.monotonic() + 10)
        self.received = bytearray()

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, size: int) -> bytes:
        data = self.sock.recv(size)
        self.received += data
        return data

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def close(self) -> None:
        self.sock.close()


def frames(data: bytes | bytearray, client: bool = False) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream, payload) of each frame (after the preface when `client`)."""
    pos = len(h2.PREFACE) if client else 0
    out = []
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        out.append(
            (
                data[pos + 3],
                data[pos + 4],
                int.from_bytes(data[pos + 5 : pos + 9], "big"),
                bytes(data[pos + 9 : pos + 9 + length]),
            )
        )
        pos += 9 + length
    return out


def call(stream: Stream, request: bytes = b"") -> h2.Reply:
    return h2.unary(stream, LOOKUP, request, time.monotonic() + 5, authority="localhost")


@pytest.fixture(scope="module")
def recorded(etcd: EtcdProcess) -> Iterator[dict[str, bytes]]:
    """The real ipamd's answers: a health check (SERVING) and a LookupBinding it refuses with
    NOT_FOUND and a Huffman-coded grpc-status-details-bin."""
    workdir = Path(tempfile.mkdtemp(prefix="cni-h2-", dir="/tmp"))
    daemon = IpamdDaemon(workdir, endpoints=[etcd.endpoint], prefix="/h2-recording")
    try:
        daemon.start()
        answers = {}
        for name, method, request in (
            ("health", "/grpc.health.v1.Health/Check", b""),
            ("not-found", LOOKUP, wire.encode_lookup_binding("ns", "nobody-0", "", "")),
        ):
            stream = Recording(daemon.socket)
            try:
                h2.unary(stream, method, request, time.monotonic() + 10, authority="localhost")
            finally:
                stream.close()
            answers[name] = bytes(stream.received)
        yield answers
    finally:
        daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_recorded_answers_replay_in_any_chunking(recorded: dict[str, bytes]) -> None:
    for chunk in (1, 2, 7, 9, 100, 65536):
        health = call(Scripted(recorded["health"], chunk))
        assert health.code == 0 and wire.get_int(wire.parse(health.data), 1) == wire.SERVING
        refused = call(Scripted(recorded["not-found"], chunk))
        assert refused.code == 5 and refused.message == 'binding "pod/nobody-0" not found'
        assert refused.data == b"" and refused.metadata["grpc-status-details-bin"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    which=st.sampled_from(["health", "not-found"]),
    damage=st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from(["set", "cut", "insert"])),
        min_size=1,
        max_size=4,
    ),
    chunk=st.integers(1, 300),
)
def test_damaged_answers_are_a_reply_or_unreachable(
    recorded: dict[str, bytes], which: str, damage: list[tuple[int, int, str]], chunk: int
) -> None:
    data = bytearray(recorded[which])
    for position, value, how in damage:
        at = position % (len(data) + 1)
        if how == "set" and at < len(data):
            data[at] = value
        elif how == "cut":
            del data[at:]
        else:
            data[at:at] = bytes([value])
    try:
        reply = call(Scripted(bytes(data), chunk))
    except h2.Unreachable as err:
        assert str(err)
        return
    assert isinstance(reply.code, int) and isinstance(reply.message, str)


# -- hand-made answers --------------------------------------------------------------------------


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def headers(*fields: tuple[str, str], flags: int = h2.END_HEADERS) -> bytes:
    return frame(h2.HEADERS, flags, 1, hpack.encode_headers(list(fields)))


RESPONSE = headers((":status", "200"), ("content-type", "application/grpc"))
OK = headers(("grpc-status", "0"), flags=h2.END_HEADERS | h2.END_STREAM)


def message(data: bytes, flags: int = 0) -> bytes:
    return frame(h2.DATA, flags, 1, b"\x00" + struct.pack(">I", len(data)) + data)


def test_continuation_padding_and_priority() -> None:
    block = hpack.encode_headers([(":status", "200"), ("content-type", "application/grpc+proto"), ("x-a", "b" * 50)])
    padded_priority = bytes([3]) + b"\x00\x00\x00\x00\x10" + block[:10] + b"\x00" * 3
    body = b"\x00" + struct.pack(">I", 6) + b"abcdef"
    answer = [
        frame(h2.SETTINGS, 0, 0, struct.pack(">HI", h2.SETTINGS_MAX_FRAME_SIZE, 20000)),
        frame(h2.PING, 0, 0, b"12345678"),
        frame(h2.HEADERS, h2.PADDED | h2.PRIORITY_FLAG, 1, padded_priority),
        frame(h2.CONTINUATION, 0, 1, block[10:20]),
        frame(h2.CONTINUATION, h2.END_HEADERS, 1, block[20:]),
        frame(h2.PRIORITY, 0, 1, b"\x00" * 5),
        frame(0x42, 0, 0, b"an extension frame"),
        frame(h2.DATA, h2.PADDED, 1, bytes([2]) + body[:4] + b"\x00\x00"),
        frame(h2.DATA, 0, 1, body[4:]),
        frame(
            h2.HEADERS,
            h2.END_HEADERS | h2.END_STREAM,
            1,
            hpack.encode_headers([("grpc-status", "0"), ("grpc-message", "fine%20%E2%9C%93")]),
        ),
    ]
    stream = Scripted(answer)
    reply = call(stream)
    assert (reply.code, reply.message, reply.data) == (0, "fine \u2713", b"abcdef")
    assert reply.metadata["x-a"] == "b" * 50
    sent = [(kind, flags, payload) for kind, flags, _, payload in frames(stream.sent, client=True)]
    assert (h2.SETTINGS, h2.ACK, b"") in sent and (h2.PING, h2.ACK, b"12345678") in sent


def test_the_request_keeps_to_the_servers_frame_size_and_windows() -> None:
    request = bytes(range(256)) * 400  # 102400 bytes: more than the first window of 65535
    answer = [
        frame(h2.SETTINGS, 0, 0, b""),
        frame(h2.WINDOW_UPDATE, 0, 0, struct.pack(">I", 50000)),
        frame(h2.WINDOW_UPDATE, 0, 1, struct.pack(">I", 50000)),
        RESPONSE,
        message(b"ok"),
        OK,
    ]
    stream = Scripted(answer)
    assert call(stream, request).data == b"ok"
    data = [(flags, payload) for kind, flags, _, payload in frames(stream.sent, client=True) if kind == h2.DATA]
    assert all(len(payload) <= h2.MAX_FRAME for _, payload in data)
    assert b"".join(payload for _, payload in data) == b"\x00" + struct.pack(">I", len(request)) + request
    assert [flags & h2.END_STREAM for flags, _ in data] == [0] * (len(data) - 1) + [h2.END_STREAM]
    # Until the stream's window opened (the third frame read), the client sent one window's worth.
    assert stream.data_sent_at[:3] == [65535, 65535, 65535]


def test_a_response_above_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h2, "MAX_RESPONSE", 70000)
    big = [message(b"x" * 16000)] + [frame(h2.DATA, 0, 1, b"x" * 16000) for _ in range(4)]
    with pytest.raises(h2.ProtocolError, match="response larger than 70000 bytes"):
        call(Scripted([RESPONSE, *big, OK]))


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        ([b"\x00\x40\x01" + bytes([h2.DATA, 0]) + b"\x00\x00\x00\x01"], "above the maximum frame size"),
        ([message(b"x")], "DATA before the response headers"),
        ([frame(h2.CONTINUATION, h2.END_HEADERS, 1, b"\x88")], "CONTINUATION without HEADERS"),
        ([frame(h2.HEADERS, 0, 1, b"\x88"), message(b"x")], "interrupted"),
        ([frame(h2.PUSH_PROMISE, h2.END_HEADERS, 1, b"\x00\x00\x00\x02\x88")], "PUSH_PROMISE"),
        ([frame(h2.HEADERS, h2.PADDED | h2.END_HEADERS, 1, b"\x05\x88")], "padding longer"),
        ([RESPONSE, frame(h2.DATA, 0, 1, b"\x00\x00\x00\x00\x0aabc"), OK], "framed as 10"),
        ([RESPONSE, frame(h2.DATA, 0, 1, b"\x01\x00\x00\x00\x01a"), OK], "compressed"),
        (
            [RESPONSE, message(b"x"), headers(("grpc-message", "no status"), flags=h2.END_HEADERS | h2.END_STREAM)],
            "no grpc-status",
        ),
        ([RESPONSE, headers(("grpc-status", "abc"), flags=h2.END_HEADERS | h2.END_STREAM)], "not a status code"),
        ([RESPONSE, message(b"x", h2.END_STREAM)], "no grpc-status"),
        ([RESPONSE, OK], "no response message"),
        (
            [
                headers(
                    (":status", "200"),
                    ("content-type", "text/html"),
                    ("grpc-status", "0"),
                    flags=h2.END_HEADERS | h2.END_STREAM,
                )
            ],
            "not a gRPC response",
        ),
        ([headers((":status", "503"), flags=h2.END_HEADERS | h2.END_STREAM)], "HTTP status 503"),
        ([frame(h2.RST_STREAM, 0, 1, struct.pack(">I", 7))], "reset the call (REFUSED_STREAM)"),
        ([frame(h2.GOAWAY, 0, 0, struct.pack(">II", 0, 0))], "going away (NO_ERROR)"),
        ([frame(h2.HEADERS, h2.END_HEADERS, 1, b"\x80")], "HPACK: index 0"),
        (
            [frame(h2.HEADERS, 0, 1, b"\x00" * 16384)] + [frame(h2.CONTINUATION, 0, 1, b"\x00" * 16384)] * 4,
            "header block larger",
        ),
        ([frame(h2.SETTINGS, 0, 0, b"\x00\x04\x00")], "SETTINGS payload"),
        ([frame(h2.SETTINGS, 0, 0, struct.pack(">HI", h2.SETTINGS_MAX_FRAME_SIZE, 100))], "maximum frame size 100"),
        ([frame(h2.WINDOW_UPDATE, 0, 0, struct.pack(">I", 2**31 - 1))], "above 2^31-1"),
        ([frame(h2.WINDOW_UPDATE, 0, 1, b"\x00\x00\x00\x00")], "WINDOW_UPDATE of 0"),
        ([frame(h2.PING, 0, 0, b"short")], "malformed PING"),
        ([RESPONSE[:12]], "connection closed"),
        ([], "connection closed"),
    ],
)
def test_malformed_answers(answer: list[bytes], words: str) -> None:
    with pytest.raises(h2.Unreachable) as caught:
        call(Scripted(answer))
    assert words in str(caught.value)


def test_the_deadline_bounds_a_silent_server() -> None:
    class Silent(Scripted):
        def recv(self, size: int) -> bytes:
            raise TimeoutError

    with pytest.raises(h2.Unreachable, match="deadline exceeded"):
        call(Silent(b""))
    with pytest.raises(h2.Unreachable, match="deadline exceeded"):
        h2.unary(Scripted(RESPONSE), LOOKUP, b"", time.monotonic() - 1, authority="localhost")
