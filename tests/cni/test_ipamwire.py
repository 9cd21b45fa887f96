"""The hand-written wire format and HTTP/2 client against the real thing: every message
checked both ways against the generated protobuf classes, the HPACK decoder against the
specification's examples, and the fallback to grpc when the small client meets Huffman coding."""

from __future__ import annotations

import pytest

from tke.internal.cni import h2
from tke.internal.cni import ipamwire as wire
from tke.ipam.v1 import ipam_pb2


def test_requests_parse_as_the_generated_messages() -> None:
    owner = wire.encode_owner("shop", "db-0", "uid-1", "StatefulSet", "db")
    request = wire.encode_allocate(
        owner=owner, container_id="c1", ifname="eth0", node="n1", node_ip="10.0.0.5", pool="p", ip="10.1.0.9",
        release_policy=wire.IMMUTABLE,
    )  # fmt: skip
    expected = ipam_pb2.AllocateRequest(
        owner=ipam_pb2.Owner(
            namespace="shop", pod_name="db-0", pod_uid="uid-1", workload_kind="StatefulSet", workload_name="db"
        ),
        container_id="c1",
        ifname="eth0",
        node="n1",
        node_ip="10.0.0.5",
        pool="p",
        ip="10.1.0.9",
        release_policy=ipam_pb2.RELEASE_POLICY_IMMUTABLE,
    )
    assert ipam_pb2.AllocateRequest.FromString(request) == expected
    assert ipam_pb2.AllocateRequest.FromString(
        wire.encode_allocate(owner=wire.encode_owner("", "p", "", "", ""), container_id="c", ifname="e", node="n")
    ) == ipam_pb2.AllocateRequest(owner=ipam_pb2.Owner(pod_name="p"), container_id="c", ifname="e", node="n")
    assert ipam_pb2.LookupBindingRequest.FromString(
        wire.encode_lookup_binding("a", "b", "", "w")
    ) == ipam_pb2.LookupBindingRequest(namespace="a", pod_name="b", workload_name="w")
    assert ipam_pb2.ReleaseRequest.FromString(wire.encode_release("c", "eth0", "u")) == ipam_pb2.ReleaseRequest(
        container_id="c", ifname="eth0", pod_uid="u"
    )
    by_attachment = ipam_pb2.GetAllocationRequest.FromString(wire.encode_get_allocation_by_attachment("c", "e"))
    assert by_attachment.WhichOneof("by") == "attachment" and by_attachment.attachment.ifname == "e"
    gc = ipam_pb2.GarbageCollectRequest.FromString(wire.encode_garbage_collect("n", [("a", "eth0"), ("b", "")], 0))
    assert gc.node == "n" and [(a.container_id, a.ifname) for a in gc.valid_attachments] == [("a", "eth0"), ("b", "")]
    assert gc.HasField("min_age_seconds") and gc.min_age_seconds == 0
    assert not ipam_pb2.GarbageCollectRequest.FromString(wire.encode_garbage_collect("n", [], None)).HasField(
        "min_age_seconds"
    )


def allocation() -> ipam_pb2.Allocation:
    return ipam_pb2.Allocation(
        address="10.1.0.9/24",
        ip="10.1.0.9",
        pool="p",
        gateway="10.1.0.1",
        routes=[ipam_pb2.Route(dst="0.0.0.0/0"), ipam_pb2.Route(dst="10.96.0.0/12", gw="10.1.0.254")],
        dns=ipam_pb2.DNS(nameservers=["10.1.0.2"], domain="cluster.local", search=["a", "b"], options=["ndots:5"]),
        vlan=-1,  # a negative int32 is a ten-byte varint: skipped correctly?
        owner=ipam_pb2.Owner(namespace="shop", pod_name="db-0", workload_kind="StatefulSet", workload_name="db"),
        container_id="c1",
        ifname="eth0",
        node="n1",
        release_policy=ipam_pb2.RELEASE_POLICY_NEVER,
        state=ipam_pb2.ALLOCATION_STATE_ATTACHED,
        network="fixed",
    )


def test_responses_decode_from_the_generated_messages() -> None:
    pb = allocation()
    pb.allocate_timestamp.GetCurrentTime()
    decoded = wire.decode_allocation(pb.SerializeToString())
    assert decoded == wire.Allocation(
        address="10.1.0.9/24",
        ip="10.1.0.9",
        pool="p",
        gateway="10.1.0.1",
        routes=(wire.Route("0.0.0.0/0"), wire.Route("10.96.0.0/12", "10.1.0.254")),
        dns=wire.DNS(("10.1.0.2",), "cluster.local", ("a", "b"), ("ndots:5",)),
        container_id="c1",
        ifname="eth0",
        node="n1",
        workload_kind="StatefulSet",
        workload_name="db",
        network="fixed",
    )
    assert wire.decode_allocation(b"").dns is None
    answer = ipam_pb2.AllocateResponse(allocation=pb, reused=True).SerializeToString()
    assert wire.decode_allocate_response(answer) == wire.AllocateResponse(decoded, reused=True)
    released = ipam_pb2.ReleaseResponse(found=True, retained=True, allocation=pb).SerializeToString()
    assert wire.decode_release_response(released) == wire.ReleaseResponse(found=True, retained=True)
    binding = ipam_pb2.Binding(
        workload=ipam_pb2.WorkloadRef(namespace="shop", kind="StatefulSet", name="db"),
        network="fixed",
        pool="p",
        release_policy=ipam_pb2.RELEASE_POLICY_IMMUTABLE,
    )
    assert wire.decode_binding(binding.SerializeToString()) == wire.Binding(
        "shop", "StatefulSet", "db", "fixed", "p", wire.IMMUTABLE
    )
    collected = ipam_pb2.GarbageCollectResponse(collected=[pb, pb]).SerializeToString()
    assert wire.decode_collected(collected) == [decoded, decoded]


@pytest.mark.parametrize("data", [b"\x0a\x05ab", b"\x08", b"\x0b", b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"])
def test_broken_bytes_are_a_wire_error(data: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.parse(data)


def test_hpack_decoder_follows_rfc7541_examples() -> None:
    decoder = h2.HeaderDecoder()
    # C.3.1 and C.3.2: requests without Huffman coding, sharing a dynamic table.
    first = bytes.fromhex("828684410f7777772e6578616d706c652e636f6d")
    assert decoder.decode(first) == [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ]
    second = bytes.fromhex("828684be58086e6f2d6361636865")
    assert decoder.decode(second)[-2:] == [(":authority", "www.example.com"), ("cache-control", "no-cache")]
    assert decoder.table == [("cache-control", "no-cache"), (":authority", "www.example.com")]


def test_hpack_huffman_values_are_left_undecoded_and_flagged() -> None:
    decoder = h2.HeaderDecoder()
    # C.4.1: the same request with Huffman-coded :authority, added to the table.
    [*_, (name, value)] = decoder.decode(bytes.fromhex("828684418cf1e3c2e5f23a6ba0ab90f4ff"))
    assert name == ":authority" and isinstance(value, h2.Undecoded)
    assert decoder.uncertain
    with pytest.raises(h2.ProtocolUnsupported):
        h2.HeaderDecoder(max_size=20)._add(":authority", h2.Undecoded(b"\xff" * 40))


def test_encoded_request_headers_decode() -> None:
    headers = [(":method", "POST"), (":path", "/a.B/C"), ("content-type", "application/grpc"), ("te", "trailers")]
    assert h2.HeaderDecoder().decode(h2.encode_headers(headers)) == headers


def test_text_that_is_not_utf8_is_a_wire_error() -> None:
    with pytest.raises(wire.WireError, match="field 2: not UTF-8"):
        wire.decode_binding(b"\x12\x02\xff\xfe")
