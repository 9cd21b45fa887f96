"""HPACK (RFC 7541) for the CNI plugins' small gRPC client: an encoder that never compresses
(literal fields, names by static index; the RFC allows an encoder that never indexes or
Huffman-codes) and a strict decoder with the dynamic table and Huffman decoding, since gRPC
servers Huffman-code some values (grpc-status-details-bin, for one).

The decoder reads what a server sends, so it bounds everything: integers (at most four
continuation octets), strings (inside the block), the dynamic table (the size the client
announced; a size update above it is an error), and the decoded header list (what the client
announced as SETTINGS_MAX_HEADER_LIST_SIZE: indexed fields repeating a large table entry cannot
make a small block expand without limit). Anything malformed is a `DecodeError` with a clear
message; a decoder that raised must not be used again (its table may be half updated).
"""

from __future__ import annotations

TABLE_SIZE = 4096  # SETTINGS_HEADER_TABLE_SIZE: the default, never changed by the client
MAX_HEADER_LIST = 64 * 1024  # SETTINGS_MAX_HEADER_LIST_SIZE the client announces
ENTRY_OVERHEAD = 32  # RFC 7541 4.1

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

# RFC 7541 Appendix B, the "len in bits" column: the code length of each symbol 0-255 and of EOS
# (256). The code is canonical (codes of one length are consecutive numbers in symbol order,
# each length's first code following on from the shorter ones'), so these lengths determine
# every code of the table; tests/cni/test_hpack.py checks the derived codes against the whole
# table of an independent implementation and against the RFC's examples.
HUFFMAN_CODE_LENGTHS = bytes((
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    30,
))  # fmt: skip
EOS = 256
MAX_CODE_LENGTH = 30


class DecodeError(ValueError):
    """A header block that is not valid HPACK, or exceeds the client's limits."""


# -- Huffman ------------------------------------------------------------------------------------


class _Canonical:
    """The decoding tables of the canonical code: per length, its first code, how many codes it
    has, and where its symbols start in `symbols` (all symbols ordered by code)."""

    def __init__(self, lengths: bytes) -> None:
        self.symbols = sorted(range(len(lengths)), key=lambda s: (lengths[s], s))
        self.first = [0] * (MAX_CODE_LENGTH + 1)
        self.count = [0] * (MAX_CODE_LENGTH + 1)
        self.start = [0] * (MAX_CODE_LENGTH + 1)
        code = -1
        previous = lengths[self.symbols[0]]
        for position, symbol in enumerate(self.symbols):
            length = lengths[symbol]
            code = (code + 1) << (length - previous)
            previous = length
            if not self.count[length]:
                self.first[length] = code
                self.start[length] = position
            self.count[length] += 1

    def codes(self) -> list[tuple[int, int]]:
        """(code, length) of every symbol, as Appendix B lists them."""
        out = [(0, 0)] * len(self.symbols)
        for length in range(MAX_CODE_LENGTH + 1):
            for i in range(self.count[length]):
                out[self.symbols[self.start[length] + i]] = (self.first[length] + i, length)
        return out


_huffman: list[_Canonical] = []  # built on first use: most calls never meet a Huffman-coded string


def huffman_table() -> _Canonical:
    if not _huffman:
        _huffman.append(_Canonical(HUFFMAN_CODE_LENGTHS))
    return _huffman[0]


def huffman_decode(data: bytes) -> bytes:
    """Decode a Huffman-coded string (RFC 7541 5.2): EOS inside it, padding longer than seven
    bits or padding that is not the most significant bits of EOS (all ones) are errors."""
    table = huffman_table()
    symbols, first, count, start = table.symbols, table.first, table.count, table.start
    out = bytearray()
    code = length = 0
    for byte in data:
        for shift in (7, 6, 5, 4, 3, 2, 1, 0):
            code = code << 1 | (byte >> shift) & 1
            length += 1
            offset = code - first[length]
            if 0 <= offset < count[length]:
                symbol = symbols[start[length] + offset]
                if symbol == EOS:
                    raise DecodeError("Huffman-coded string contains EOS")
                out.append(symbol)
                code = length = 0
            elif length == MAX_CODE_LENGTH:  # unreachable for a complete code; kept as a bound
                raise DecodeError("invalid Huffman code")
    if length > 7 or code != (1 << length) - 1:
        raise DecodeError("invalid Huffman padding")
    return bytes(out)


# -- encoding -----------------------------------------------------------------------------------


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


# -- decoding -----------------------------------------------------------------------------------


def _read_int(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    if pos >= len(data):
        raise DecodeError("truncated integer")
    limit = (1 << prefix_bits) - 1
    value = data[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        if pos >= len(data):
            raise DecodeError("truncated integer")
        if shift > 21:
            raise DecodeError("integer longer than four continuation octets")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _read_string(data: bytes, pos: int) -> tuple[str, int]:
    if pos >= len(data):
        raise DecodeError("truncated string")
    huffman = data[pos] & 0x80
    length, pos = _read_int(data, pos, 7)
    end = pos + length
    if end > len(data):
        raise DecodeError("string runs past the end of the header block")
    raw = data[pos:end]
    return (huffman_decode(raw) if huffman else raw).decode("latin-1"), end


class Decoder:
    """One connection's HPACK decoder: the dynamic table lives as long as the connection."""

    def __init__(self, table_size: int = TABLE_SIZE, max_header_list: int = MAX_HEADER_LIST) -> None:
        self.limit = table_size  # the most the server's encoder may use
        self.max_size = table_size
        self.max_header_list = max_header_list
        self.size = 0
        self.table: list[tuple[str, str]] = []  # newest first

    def _entry(self, index: int) -> tuple[str, str]:
        if 1 <= index <= len(STATIC_TABLE):
            return STATIC_TABLE[index - 1]
        dynamic = index - len(STATIC_TABLE) - 1
        if not 0 <= dynamic < len(self.table):
            raise DecodeError(f"index {index} is in neither table")
        return self.table[dynamic]

    def _evict(self, room: int = 0) -> None:
        while self.table and self.size + room > self.max_size:
            name, value = self.table.pop()
            self.size -= len(name) + len(value) + ENTRY_OVERHEAD

    def _add(self, name: str, value: str) -> None:
        size = len(name) + len(value) + ENTRY_OVERHEAD
        self._evict(size)
        if size <= self.max_size:  # a larger entry empties the table and is not added (4.4)
            self.table.insert(0, (name, value))
            self.size += size

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        """The header fields of one complete header block, in order."""
        headers: list[tuple[str, str]] = []
        total = 0
        pos = 0
        while pos < len(block):
            first = block[pos]
            if first & 0x80:  # indexed field
                index, pos = _read_int(block, pos, 7)
                name, value = self._entry(index)
            elif first & 0xE0 == 0x20:  # dynamic table size update
                if headers:
                    raise DecodeError("table size update after a header field")
                size, pos = _read_int(block, pos, 5)
                if size > self.limit:
                    raise DecodeError(f"table size update to {size}, above the {self.limit} allowed")
                self.max_size = size
                self._evict()
                continue
            else:  # literal, with incremental indexing (01), without (0000) or never indexed (0001)
                indexing = first & 0xC0 == 0x40
                index, pos = _read_int(block, pos, 6 if indexing else 4)
                if index:
                    name = self._entry(index)[0]
                else:
                    name, pos = _read_string(block, pos)
                value, pos = _read_string(block, pos)
                if indexing:
                    self._add(name, value)
            total += len(name) + len(value) + ENTRY_OVERHEAD
            if total > self.max_header_list:
                raise DecodeError(f"header list larger than {self.max_header_list} bytes")
            headers.append((name, value))
        return headers
