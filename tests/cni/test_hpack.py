"""The CNI client's HPACK decoder against the specification and an implementation nobody here
wrote: the Huffman code against RFC 7541 Appendix B as the hpack package transcribes it, the
decoder against the RFC's Appendix C examples (C.4 and C.6 Huffman-coded, C.6 with evictions
from a 256-byte table), against whatever the hpack package encodes, and against hostile
blocks, which are a DecodeError and never anything else. (Headers of the real grpc server:
tests/cni/test_ipamd_transports.py and test_h2.py.)"""

from __future__ import annotations

from typing import Any

import hpack as reference
import pytest
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hypothesis import given, settings
from hypothesis import strategies as st

from tke.internal.cni import hpack


def block(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_the_huffman_code_is_appendix_b() -> None:
    assert hpack.huffman_table().codes() == list(zip(REQUEST_CODES, REQUEST_CODES_LENGTH, strict=True))


def test_c3_requests_without_huffman() -> None:
    decoder = hpack.Decoder()
    first = decoder.decode(block("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"))
    assert first == [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")]
    second = decoder.decode(block("8286 84be 5808 6e6f 2d63 6163 6865"))
    assert second[-2:] == [(":authority", "www.example.com"), ("cache-control", "no-cache")]
    assert decoder.table == [("cache-control", "no-cache"), (":authority", "www.example.com")]
    assert decoder.size == 110


def test_c4_requests_with_huffman() -> None:
    decoder = hpack.Decoder()
    assert decoder.decode(block("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")) == [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ]
    assert decoder.size == 57
    assert decoder.decode(block("8286 84be 5886 a8eb 1064 9cbf"))[-1] == ("cache-control", "no-cache")
    assert decoder.size == 110
    assert decoder.decode(block("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf")) == [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ]
    assert decoder.table == [
        ("custom-key", "custom-value"),
        ("cache-control", "no-cache"),
        (":authority", "www.example.com"),
    ]
    assert decoder.size == 164


def test_c6_responses_with_huffman_and_eviction() -> None:
    decoder = hpack.Decoder(table_size=256)
    first = decoder.decode(
        block(
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e"
            "919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3"
        )
    )
    assert first == [
        (":status", "302"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
    ]
    assert decoder.size == 222
    second = decoder.decode(block("4883 640e ffc1 c0bf"))
    assert second == [(":status", "307"), *first[1:]]
    assert decoder.size == 222 and (":status", "302") not in decoder.table  # evicted for the 307
    third = decoder.decode(
        block(
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7"
            "821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed"
            "4ee5 b106 3d50 07"
        )
    )
    assert third == [
        (":status", "200"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
        ("location", "https://www.example.com"),
        ("content-encoding", "gzip"),
        ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"),
    ]
    assert decoder.size == 215 and len(decoder.table) == 3


def test_encoded_request_headers_decode() -> None:
    headers = [(":method", "POST"), (":path", "/a.B/C"), ("content-type", "application/grpc"), ("te", "trailers")]
    assert hpack.Decoder().decode(hpack.encode_headers(headers)) == headers
    decoded: Any = reference.Decoder().decode(hpack.encode_headers(headers))  # str pairs: raw=False
    assert decoded == headers


NAMES = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
FIELDS = st.lists(
    st.tuples(st.one_of(NAMES, st.sampled_from([":status", "content-type", "date"])), st.binary(max_size=60)),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(
    blocks=st.lists(st.tuples(FIELDS, st.booleans(), st.one_of(st.none(), st.integers(0, 4096))), max_size=6),
)
def test_decodes_what_an_independent_encoder_encodes(
    blocks: list[tuple[list[tuple[str, bytes]], bool, int | None]],
) -> None:
    """Blocks sharing one dynamic table, Huffman-coded or not, with table size changes."""
    encoder = reference.Encoder()
    decoder = hpack.Decoder()
    for fields, huffman, table_size in blocks:
        if table_size is not None:
            encoder.header_table_size = table_size
        data = encoder.encode([(name.encode(), value) for name, value in fields], huffman=huffman)
        assert decoder.decode(data) == [(name, value.decode("latin-1")) for name, value in fields]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x00\x82\xff\xff", "padding"),  # 16 one bits: padding longer than seven bits
        (b"\x00\x81\x00", "padding"),  # '0' (00000) then 000 padding that is not EOS's ones
        (b"\x3f", "truncated integer"),
        (b"\x3f\xff\xff\xff\xff\x0f", "continuation octets"),
        (b"\x80", "neither table"),  # index 0
        (b"\xbe", "neither table"),  # 62: the dynamic table is empty
        (b"\x3f\xe2\x1f", "above the 4096"),  # size update to 4097
        (b"\x82\x20", "after a header field"),
        (b"\x00\x05ab", "past the end"),
        (b"\x00", "truncated string"),
    ],
)
def test_malformed_blocks_are_decode_errors(data: bytes, words: str) -> None:
    with pytest.raises(hpack.DecodeError, match=words):
        hpack.Decoder().decode(data)


def test_eos_inside_a_string_is_an_error() -> None:
    # EOS is 30 one bits: four octets of ones hold it (and two bits of padding).
    with pytest.raises(hpack.DecodeError, match="EOS"):
        hpack.huffman_decode(b"\xff\xff\xff\xff")


def test_a_small_block_cannot_expand_without_limit() -> None:
    """One 4 kB entry, then thousands of one-octet references to it: 16 MB decoded."""
    decoder = hpack.Decoder()
    decoder.decode(b"\x40\x01x" + b"\x7f\xa1\x1e" + b"y" * 4000)  # x: 4000 octets, indexed
    assert decoder.table == [("x", "y" * 4000)]
    with pytest.raises(hpack.DecodeError, match="header list larger"):
        decoder.decode(b"\xbe" * 4000)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_are_a_decode_error(data: bytes) -> None:
    try:
        headers = hpack.Decoder().decode(data)
    except hpack.DecodeError:
        return
    assert all(isinstance(n, str) and isinstance(v, str) for n, v in headers)
