"""A minimal gRPC client for one unary call over HTTP/2 without TLS (h2c) on a unix socket:
what tke-ipamc needs to reach the node-local tke-ipamd without importing grpc (~100 ms of
start-up per container).

It speaks just enough HTTP/2 for one request on one stream: the preface and SETTINGS (ACKed),
PING (answered), a HEADERS frame whose header block uses literal fields without Huffman coding
(HPACK allows an encoder that never compresses), a DATA frame, WINDOW_UPDATEs for what it
reads, then the response headers, data and trailers. Its HPACK decoder keeps the dynamic table;
it does not decode Huffman-coded strings: when a value it needs is Huffman-coded, or the table's
size becomes uncertain because of one, it raises `ProtocolUnsupported` and the caller makes the
same (idempotent) call with grpc instead. gRPC servers send grpc-status and grpc-message
uncompressed, so the fallback is for surprises only.
"""

from __future__ import annotations

import _socket  # socket.py would import enum and selectors, for nothing used here
import struct
import time

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
STREAM = 1
MAX_RESPONSE = 16 * 1024 * 1024

STATIC_TABLE: tuple[tuple[str, str], ...] = (
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
    (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
    (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
    ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""),
    ("cache-control", ""), ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""),
    ("content-length", ""), ("content-location", ""), ("content-range", ""), ("content-type", ""),
    ("cookie", ""), ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""),
    ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
    ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
    ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
)  # fmt: skip


class Unreachable(Exception):
    """Nothing answered (no socket, refused, reset or timed out): try again later."""


class ProtocolUnsupported(Exception):
    """The server said something this small client does not decode; use a full client."""


class Undecoded:
    """A Huffman-coded string this decoder does not expand (its coded size is known)."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw


# -- HPACK --------------------------------------------------------------------------------------


def _int(prefix_bits: int, value: int, flags: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([flags | value])
    out = bytearray([flags | limit])
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return _int(7, len(data)) + data


def encode_headers(headers: list[tuple[str, str]]) -> bytes:
    """Literal header fields without indexing (name by static index when there is one)."""
    names = {name: i + 1 for i, (name, _) in reversed(list(enumerate(STATIC_TABLE)))}
    out = bytearray()
    for name, value in headers:
        exact = next((i + 1 for i, entry in enumerate(STATIC_TABLE) if entry == (name, value)), 0)
        if exact:
            out += _int(7, exact, 0x80)
        elif name in names:
            out += _int(4, names[name]) + _string(value)
        else:
            out += b"\x00" + _string(name) + _string(value)
    return bytes(out)


class HeaderDecoder:
    """HPACK decoding with a dynamic table; Huffman-coded strings stay `Undecoded`."""

    def __init__(self, max_size: int = 4096) -> None:
        self.max_size = max_size
        self.table: list[tuple[str | Undecoded, str | Undecoded]] = []
        self.uncertain = False  # the table holds an entry whose decoded size is unknown

    def _read_int(self, data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
        limit = (1 << prefix_bits) - 1
        value = data[pos] & limit
        pos += 1
        if value < limit:
            return value, pos
        shift = 0
        while True:
            if pos >= len(data):
                raise ProtocolUnsupported("truncated HPACK integer")
            byte = data[pos]
            pos += 1
            value += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value, pos

    def _read_string(self, data: bytes, pos: int) -> tuple[str | Undecoded, int]:
        huffman = bool(data[pos] & 0x80)
        length, pos = self._read_int(data, pos, 7)
        raw = data[pos : pos + length]
        if len(raw) != length:
            raise ProtocolUnsupported("truncated HPACK string")
        return (Undecoded(raw) if huffman else raw.decode("latin-1")), pos + length

    def _entry(self, index: int) -> tuple[str | Undecoded, str | Undecoded]:
        if 1 <= index <= len(STATIC_TABLE):
            return STATIC_TABLE[index - 1]
        dynamic = index - len(STATIC_TABLE) - 1
        if not 0 <= dynamic < len(self.table):
            raise ProtocolUnsupported(f"HPACK index {index} out of range")
        return self.table[dynamic]

    @staticmethod
    def _size(item: str | Undecoded) -> int:
        # A Huffman code is at least 5 bits per octet, so the decoded size is at most 8/5 of it.
        return len(item.raw) * 8 // 5 + 1 if isinstance(item, Undecoded) else len(item.encode("latin-1"))

    def _add(self, name: str | Undecoded, value: str | Undecoded) -> None:
        self.table.insert(0, (name, value))
        if isinstance(name, Undecoded) or isinstance(value, Undecoded):
            self.uncertain = True
        self._evict()

    def _evict(self) -> None:
        size = sum(self._size(n) + self._size(v) + 32 for n, v in self.table)
        if size > self.max_size:
            if self.uncertain:
                raise ProtocolUnsupported("HPACK table size unknown (Huffman-coded entries)")
            while self.table and size > self.max_size:
                n, v = self.table.pop()
                size -= self._size(n) + self._size(v) + 32

    def decode(self, block: bytes) -> list[tuple[str | Undecoded, str | Undecoded]]:
        headers = []
        pos = 0
        while pos < len(block):
            first = block[pos]
            if first & 0x80:  # indexed
                index, pos = self._read_int(block, pos, 7)
                headers.append(self._entry(index))
                continue
            if first & 0xE0 == 0x20:  # dynamic table size update
                self.max_size, pos = self._read_int(block, pos, 5)
                self._evict()
                continue
            indexing = first & 0xC0 == 0x40
            index, pos = self._read_int(block, pos, 6 if indexing else 4)
            if index:
                name = self._entry(index)[0]
            else:
                name, pos = self._read_string(block, pos)
            value, pos = self._read_string(block, pos)
            if indexing:
                self._add(name, value)
            headers.append((name, value))
        return headers


# -- one unary call -----------------------------------------------------------------------------


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


class _Reader:
    def __init__(self, sock: _socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = b""

    def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise Unreachable("deadline exceeded")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise Unreachable("deadline exceeded") from None
            except OSError as err:
                raise Unreachable(str(err)) from None
            if not chunk:
                raise Unreachable("connection closed")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out


def _unpad(flags: int, payload: bytes) -> bytes:
    if flags & PADDED:
        pad = payload[0]
        payload = payload[1 : len(payload) - pad]
    return payload


def _text(value: str | Undecoded, what: str) -> str:
    if isinstance(value, Undecoded):
        raise ProtocolUnsupported(f"{what} is Huffman-coded")
    return value


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


def unary(path: str, method: str, request: bytes, timeout: float) -> tuple[int, str, bytes]:
    """Call `method` ("/package.Service/Method") on the unix socket `path`; returns the gRPC
    status code, its message and the response message's bytes."""
    deadline = time.monotonic() + timeout
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as err:
            raise Unreachable(f"{path}: {err.strerror or err}") from None
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", method),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("grpc-timeout", f"{max(1, int(timeout * 1000))}m"),
        ]
        body = b"\x00" + struct.pack(">I", len(request)) + request
        try:
            sock.sendall(
                PREFACE
                + _frame(SETTINGS, 0, 0, struct.pack(">HI", 2, 0))  # no server push
                + _frame(HEADERS, END_HEADERS, STREAM, encode_headers(headers))
                + _frame(DATA, END_STREAM, STREAM, body)
            )
        except OSError as err:
            raise Unreachable(str(err)) from None
        try:
            return _response(sock, _Reader(sock, deadline))
        except OSError as err:  # a write (ACK, WINDOW_UPDATE) to a server that went away
            raise Unreachable(str(err)) from None
    finally:
        sock.close()


def _response(sock: _socket.socket, reader: _Reader) -> tuple[int, str, bytes]:
    decoder = HeaderDecoder()
    fields: dict[str, str | Undecoded] = {}
    data = b""
    block = b""
    block_ends_stream = False
    while True:
        head = reader.read(9)
        length = int.from_bytes(head[:3], "big")
        kind, flags = head[3], head[4]
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        payload = reader.read(length)
        if kind == SETTINGS and not flags & ACK:
            sock.sendall(_frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            sock.sendall(_frame(PING, ACK, 0, payload))
        elif kind == GOAWAY:
            last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if last < STREAM:
                raise Unreachable("server going away")
        elif kind == RST_STREAM and stream == STREAM:
            raise Unreachable(f"stream reset (HTTP/2 error {int.from_bytes(payload[:4], 'big')})")
        elif kind == DATA and stream == STREAM:
            data += _unpad(flags, payload)
            if len(data) > MAX_RESPONSE:
                raise ProtocolUnsupported("response too large")
            if length:
                increment = struct.pack(">I", length)
                sock.sendall(_frame(WINDOW_UPDATE, 0, 0, increment) + _frame(WINDOW_UPDATE, 0, STREAM, increment))
            if flags & END_STREAM:
                break
        elif kind in (HEADERS, CONTINUATION) and stream == STREAM:
            if kind == HEADERS:
                payload = _unpad(flags, payload)
                if flags & PRIORITY:
                    payload = payload[5:]
                block_ends_stream = bool(flags & END_STREAM)
            block += payload
            if flags & END_HEADERS:
                for name, value in decoder.decode(block):
                    if isinstance(name, str):
                        fields[name] = value
                block = b""
                if block_ends_stream:
                    break
    status = _text(fields.get(":status", ""), ":status")
    if status != "200":
        raise Unreachable(f"HTTP status {status or 'missing'}")
    if "grpc-status" not in fields:
        raise ProtocolUnsupported("no grpc-status")
    code = int(_text(fields["grpc-status"], "grpc-status"))
    message = _percent_decode(_text(fields.get("grpc-message", ""), "grpc-message"))
    if code != 0:
        return code, message, b""
    if len(data) < 5 or data[0] != 0:
        raise ProtocolUnsupported("compressed or missing response message")
    size = int.from_bytes(data[1:5], "big")
    return code, message, data[5 : 5 + size]
