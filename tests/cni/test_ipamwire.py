"""The hand-written wire format against the real thing: every message checked both ways
against the generated protobuf classes; broken bytes are a WireError."""

from __future__ import annotations

import pytest

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


def test_text_that_is_not_utf8_is_a_wire_error() -> None:
    with pytest.raises(wire.WireError, match="field 2: not UTF-8"):
        wire.decode_binding(b"\x12\x02\xff\xfe")


def test_status_detail_types_from_the_generated_messages() -> None:
    from google.protobuf import any_pb2
    from google.rpc import error_details_pb2, status_pb2

    details = []
    for message in (error_details_pb2.ErrorInfo(reason="TOO_MANY_REQUESTS"), error_details_pb2.RetryInfo()):
        packed = any_pb2.Any()
        packed.Pack(message)
        details.append(packed)
    status = status_pb2.Status(code=8, message="busy", details=details).SerializeToString()
    assert wire.status_detail_types(status) == [
        "type.googleapis.com/google.rpc.ErrorInfo",
        "type.googleapis.com/google.rpc.RetryInfo",
    ]
    assert wire.status_detail_types(b"") == []


def test_status_reason_from_the_generated_messages() -> None:
    from google.protobuf import any_pb2
    from google.rpc import error_details_pb2, status_pb2

    details = []
    for message in (
        error_details_pb2.PreconditionFailure(),
        error_details_pb2.ErrorInfo(reason="NOT_THE_PODS_WORKLOAD", domain="tke.cloud", metadata={"pod": "shop/x"}),
    ):
        packed = any_pb2.Any()
        packed.Pack(message)
        details.append(packed)
    status = status_pb2.Status(code=7, message="no", details=details).SerializeToString()
    assert wire.status_reason(status) == "NOT_THE_PODS_WORKLOAD"
    assert wire.status_reason(status_pb2.Status(code=7, details=details[:1]).SerializeToString()) == ""
    assert wire.status_reason(b"") == ""
