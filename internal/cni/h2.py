"""A minimal gRPC client for one unary call on one HTTP/2 connection: what the CNI plugins need
to reach tke-ipamd without importing grpc (~90 ms of start-up per container). The connection
(a unix socket, TCP or TLS) comes from `transport`; this module speaks HTTP/2 on it.

One request on stream 1: the preface, SETTINGS (no push; a flow-control window as large as the
largest response accepted, so the client never has to reopen it), HEADERS (see `hpack`), the
message in DATA frames no larger than the server's maximum frame size and within its
flow-control windows (answering its SETTINGS and WINDOW_UPDATEs while it waits), then the
response headers, data and trailers. PING is answered; GOAWAY and RST_STREAM end the call.

Everything the server sends is checked before it is used, and every size is bounded: frames
(the 16 KiB maximum the client never raises), header blocks before and after HPACK decoding,
the response message. A malformed answer is a `ProtocolError` saying what is wrong, never an
IndexError or a silently truncated message; no answer by the deadline is `Unreachable`.
"""

from __future__ import annotations

import struct
import time

from tke.internal.cni import hpack
from tke.internal.cni.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from tke.internal.cni.transport import Stream

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE = 2, 4, 5, 6
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
STREAM = 1
DEFAULT_WINDOW = 65535
MAX_FRAME = 16384  # SETTINGS_MAX_FRAME_SIZE: the default, never raised by the client
MAX_WINDOW = 2**31 - 1
MAX_RESPONSE = 16 * 1024 * 1024  # DATA bytes accepted for one response (the window announced)
ERRORS = (
    "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT", "STREAM_CLOSED",
    "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM",
    "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED",
)  # fmt: skip


class Unreachable(Exception):
    """No usable answer (no connection, refused, reset, closed or timed out): try again later."""


class ProtocolError(Unreachable):
    """The server's answer broke HTTP/2, HPACK or gRPC framing."""


class Reply(Record):
    """A call's outcome: the gRPC status code and message, the response message's bytes (empty
    unless the status is OK), and every response header and trailer (the last value of each)."""

    code: int
    message: str
    data: bytes
    metadata: dict[str, str]


def remaining(deadline: float) -> float:
    """Seconds left until the `time.monotonic()` deadline; Unreachable once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise Unreachable("deadline exceeded")
    return left


def _error_name(code: int) -> str:
    return ERRORS[code] if 0 <= code < len(ERRORS) else f"error {code}"


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


HEX = frozenset(b"0123456789abcdefABCDEF")


def _percent_decode(text: str) -> str:
    """grpc-message is percent-encoded UTF-8."""
    if "%" not in text:
        return text
    raw = text.encode("latin-1")
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x25 and i + 2 < len(raw) and raw[i + 1] in HEX and raw[i + 2] in HEX:
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "replace")


def unary(
    stream: Stream, method: str, request: bytes, deadline: float, *, authority: str, scheme: str = "http"
) -> Reply:
    """Call `method` ("/package.Service/Method") with the serialized `request` on a fresh
    connection `stream`, by the `time.monotonic()` deadline. The caller closes the stream."""
    timeout_ms = max(1, int((deadline - time.monotonic()) * 1000))
    headers = [
        (":method", "POST"),
        (":scheme", scheme),
        (":path", method),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("grpc-timeout", f"{timeout_ms}m"),
    ]
    return _Call(stream, deadline).run(
        hpack.encode_headers(headers), b"\x00" + struct.pack(">I", len(request)) + request
    )


class _Call:
    def __init__(self, stream: Stream, deadline: float) -> None:
        self.stream = stream
        self.deadline = deadline
        self.buffer = b""
        self.pos = 0  # what of `buffer` has been read
        self.decoder = hpack.Decoder()
        self.max_frame = MAX_FRAME  # the server's
        self.window = DEFAULT_WINDOW  # the server's connection window for what we send
        self.stream_window = DEFAULT_WINDOW  # and its window for stream 1
        self.initial_window = DEFAULT_WINDOW  # the server's SETTINGS_INITIAL_WINDOW_SIZE
        self.received = 0  # DATA bytes (with padding) the server sent

    # -- I/O within the deadline --------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        self.stream.settimeout(remaining(self.deadline))
        try:
            self.stream.sendall(data)
        except TimeoutError:
            raise Unreachable("deadline exceeded") from None
        except OSError as err:
            raise Unreachable(f"sending: {err.strerror or err}") from None

    def _read(self, n: int) -> bytes:
        end = self.pos + n
        while len(self.buffer) < end:
            self.stream.settimeout(remaining(self.deadline))
            try:
                chunk = self.stream.recv(65536)
            except TimeoutError:
                raise Unreachable("deadline exceeded") from None
            except OSError as err:
                raise Unreachable(f"receiving: {err.strerror or err}") from None
            if not chunk:
                raise Unreachable("connection closed by ipamd")
            self.buffer = self.buffer[self.pos :] + chunk
            end -= self.pos
            self.pos = 0
        self.pos = end
        return self.buffer[end - n : end]

    def _next_frame(self) -> tuple[int, int, int, bytes]:
        head = self._read(9)
        length = int.from_bytes(head[:3], "big")
        if length > MAX_FRAME:
            raise ProtocolError(f"frame of {length} bytes, above the maximum frame size {MAX_FRAME}")
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        return head[3], head[4], stream, self._read(length)

    # -- the call ------------------------------------------------------------------------------

    def run(self, header_block: bytes, body: bytes) -> Reply:
        settings = struct.pack(
            ">HIHIHI",
            SETTINGS_ENABLE_PUSH, 0,
            SETTINGS_INITIAL_WINDOW_SIZE, MAX_RESPONSE,
            SETTINGS_MAX_HEADER_LIST_SIZE, hpack.MAX_HEADER_LIST,
        )  # fmt: skip
        self._send(
            PREFACE
            + _frame(SETTINGS, 0, 0, settings)
            + _frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", MAX_RESPONSE - DEFAULT_WINDOW))
            + _frame(HEADERS, END_HEADERS, STREAM, header_block)
        )
        sent = 0
        fields: dict[str, str] = {}
        data = bytearray()
        block = bytearray()
        in_block = False  # a HEADERS frame without END_HEADERS came: only CONTINUATIONs may follow
        block_ends_stream = False
        while True:
            sent = self._send_data(body, sent)
            kind, flags, stream, payload = self._next_frame()
            if in_block and (kind != CONTINUATION or stream != STREAM):
                raise ProtocolError("header block interrupted by another frame")
            if kind == DATA:
                self._expect_stream(kind, stream)
                if ":status" not in fields:
                    raise ProtocolError("DATA before the response headers")
                self.received += len(payload)
                if self.received > MAX_RESPONSE:
                    raise ProtocolError(f"response larger than {MAX_RESPONSE} bytes")
                data += _unpad(flags, payload)
                if flags & END_STREAM:
                    break
            elif kind == HEADERS:
                self._expect_stream(kind, stream)
                payload = _unpad(flags, payload)
                if flags & PRIORITY_FLAG:
                    if len(payload) < 5:
                        raise ProtocolError("HEADERS frame too short for its priority")
                    payload = payload[5:]
                block[:] = payload
                block_ends_stream = bool(flags & END_STREAM)
                in_block = not flags & END_HEADERS
            elif kind == CONTINUATION:
                if not in_block:
                    raise ProtocolError("CONTINUATION without HEADERS")
                block += payload
                in_block = not flags & END_HEADERS
            elif kind == SETTINGS:
                self._settings(flags, stream, payload)
            elif kind == PING:
                if stream or len(payload) != 8:
                    raise ProtocolError("malformed PING")
                if not flags & ACK:
                    self._send(_frame(PING, ACK, 0, payload))
            elif kind == WINDOW_UPDATE:
                self._window_update(stream, payload)
            elif kind == RST_STREAM:
                if len(payload) != 4 or stream == 0:
                    raise ProtocolError("malformed RST_STREAM")
                if stream == STREAM:
                    raise Unreachable(f"ipamd reset the call ({_error_name(int.from_bytes(payload, 'big'))})")
            elif kind == GOAWAY:
                if stream or len(payload) < 8:
                    raise ProtocolError("malformed GOAWAY")
                if int.from_bytes(payload[:4], "big") & 0x7FFFFFFF < STREAM:
                    raise Unreachable(f"ipamd is going away ({_error_name(int.from_bytes(payload[4:8], 'big'))})")
            elif kind == PUSH_PROMISE:
                raise ProtocolError("PUSH_PROMISE although push is disabled")
            # PRIORITY and unknown frame types are ignored, as RFC 9113 says.
            if kind in (HEADERS, CONTINUATION):
                if len(block) > hpack.MAX_HEADER_LIST:
                    raise ProtocolError(f"header block larger than {hpack.MAX_HEADER_LIST} bytes")
                if not in_block:
                    try:
                        fields.update(self.decoder.decode(bytes(block)))
                    except hpack.DecodeError as err:
                        raise ProtocolError(f"HPACK: {err}") from None
                    if block_ends_stream:
                        break
        return _reply(fields, bytes(data))

    def _expect_stream(self, kind: int, stream: int) -> None:
        if stream != STREAM:
            raise ProtocolError(f"frame type {kind} on stream {stream}, which the client never opened")

    def _send_data(self, body: bytes, sent: int) -> int:
        """Send what the server's windows allow of the rest of `body`; END_STREAM with the last."""
        frames = []
        while sent < len(body):
            size = min(len(body) - sent, self.max_frame, self.window, self.stream_window)
            if size <= 0:
                break
            chunk = body[sent : sent + size]
            sent += size
            self.window -= size
            self.stream_window -= size
            frames.append(_frame(DATA, END_STREAM if sent == len(body) else 0, STREAM, chunk))
        if frames:
            self._send(b"".join(frames))
        return sent

    def _settings(self, flags: int, stream: int, payload: bytes) -> None:
        if stream:
            raise ProtocolError("SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise ProtocolError("SETTINGS acknowledgement with a payload")
            return
        if len(payload) % 6:
            raise ProtocolError("SETTINGS payload is not a list of settings")
        for offset in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, offset)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ProtocolError(f"initial window size {value} too large")
                self.stream_window += value - self.initial_window
                self.initial_window = value
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not MAX_FRAME <= value <= 2**24 - 1:
                    raise ProtocolError(f"maximum frame size {value} out of range")
                self.max_frame = value
        self._send(_frame(SETTINGS, ACK, 0))

    def _window_update(self, stream: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolError("malformed WINDOW_UPDATE")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if not increment:
            raise ProtocolError("WINDOW_UPDATE of 0")
        if stream == 0:
            self.window += increment
            window = self.window
        elif stream == STREAM:
            self.stream_window += increment
            window = self.stream_window
        else:
            return  # a stream the client never opened: nothing to update
        if window > MAX_WINDOW:
            raise ProtocolError("flow-control window above 2^31-1")


def _unpad(flags: int, payload: bytes) -> bytes:
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise ProtocolError("padding longer than the frame")
    return payload[1 : len(payload) - payload[0]]


def _reply(fields: dict[str, str], data: bytes) -> Reply:
    status = fields.get(":status", "")
    if status != "200":
        raise Unreachable(f"HTTP status {status or 'missing'}")
    content_type = fields.get("content-type", "")
    if not content_type.startswith("application/grpc"):
        raise ProtocolError(f"not a gRPC response (content-type {content_type!r})")
    grpc_status = fields.get("grpc-status")
    if grpc_status is None:
        raise ProtocolError("no grpc-status in the response")
    if not (grpc_status.isascii() and grpc_status.isdigit() and len(grpc_status) <= 3):
        raise ProtocolError(f"grpc-status {grpc_status[:20]!r} is not a status code")
    code = int(grpc_status)
    message = _percent_decode(fields.get("grpc-message", ""))
    if code != 0:
        return Reply(code, message, b"", fields)
    if len(data) < 5:
        raise ProtocolError("no response message")
    if data[0] != 0:
        raise ProtocolError("compressed response message (the client accepts none)")
    size = int.from_bytes(data[1:5], "big")
    if size != len(data) - 5:
        raise ProtocolError(f"response message of {len(data) - 5} bytes, framed as {size}")
    return Reply(code, message, data[5:], fields)
