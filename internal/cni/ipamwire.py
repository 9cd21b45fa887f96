"""The few tke.ipam.v1 messages the CNI plugins exchange with tke-ipamd, encoded and decoded in
protobuf's wire format by hand, so a plugin process does not import the protobuf runtime and
the generated contract (~35 ms) to send a handful of fields.

Field numbers are proto/tke/ipam/v1/ipam.proto's; tests/cni/test_ipamwire.py checks every
message against the generated classes in both directions. Unknown fields are skipped, as
protobuf does, so a newer ipamd stays compatible.
"""

from __future__ import annotations

from tke.internal.cni.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    Fields = dict[int, list[int | bytes]]

VARINT, I64, LEN, I32 = 0, 1, 2, 5


class WireError(ValueError):
    """Bytes that are not the message they should be."""


# -- encoding -----------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # negative int32/int64 values are ten-byte varints
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def field_int(number: int, value: int, *, always: bool = False) -> bytes:
    """A varint field (int32, bool, enum); zero is omitted as proto3 does unless `always`
    (an `optional` field that is set)."""
    return _key(number, VARINT) + _varint(value) if value or always else b""


def field_bytes(number: int, value: bytes | str, *, always: bool = False) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _key(number, LEN) + _varint(len(data)) + data if data or always else b""


# -- decoding -----------------------------------------------------------------------------------


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(data):
            raise WireError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint too long")


def parse(data: bytes) -> Fields:
    """Field number -> values in order (ints for varints and fixed, bytes for LEN)."""
    fields: Fields = {}
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == VARINT:
            value, pos = _read_varint(data, pos)
        elif wire_type == LEN:
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise WireError("truncated field")
            value, pos = data[pos : pos + length], pos + length
        elif wire_type == I64:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire_type == I32:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            raise WireError(f"unsupported wire type {wire_type}")
        fields.setdefault(number, []).append(value)
    if pos != len(data):
        raise WireError("truncated message")
    return fields


def _bytes(fields: Fields, number: int) -> bytes:
    values = fields.get(number)
    if not values:
        return b""
    value = values[-1]
    if not isinstance(value, bytes):
        raise WireError(f"field {number}: expected bytes")
    return value


def _text(data: bytes, number: int) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise WireError(f"field {number}: not UTF-8") from None


def get_str(fields: Fields, number: int) -> str:
    return _text(_bytes(fields, number), number)


def get_int(fields: Fields, number: int) -> int:
    values = fields.get(number)
    if not values:
        return 0
    value = values[-1]
    if not isinstance(value, int):
        raise WireError(f"field {number}: expected a number")
    return value


def get_message(fields: Fields, number: int) -> Fields:
    return parse(_bytes(fields, number))


def get_repeated_str(fields: Fields, number: int) -> list[str]:
    return [_text(v, number) for v in fields.get(number, []) if isinstance(v, bytes)]


def get_repeated_message(fields: Fields, number: int) -> list[Fields]:
    return [parse(v) for v in fields.get(number, []) if isinstance(v, bytes)]


# -- the messages -------------------------------------------------------------------------------


class Route(Record):
    dst: str
    gw: str = ""


class DNS(Record):
    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


class Allocation(Record):
    address: str = ""
    ip: str = ""
    pool: str = ""
    gateway: str = ""
    routes: tuple[Route, ...] = ()
    dns: DNS | None = None
    container_id: str = ""
    ifname: str = ""
    node: str = ""
    workload_kind: str = ""
    workload_name: str = ""
    network: str = ""


class Binding(Record):
    namespace: str
    kind: str
    name: str
    network: str = ""
    pool: str = ""
    release_policy: int = 0


class AllocateResponse(Record):
    allocation: Allocation
    reused: bool = False


class ReleaseResponse(Record):
    found: bool = False
    retained: bool = False


def decode_allocation(data: bytes) -> Allocation:
    f = parse(data)
    dns = None
    if 6 in f:
        d = get_message(f, 6)
        dns = DNS(
            nameservers=tuple(get_repeated_str(d, 1)),
            domain=get_str(d, 2),
            search=tuple(get_repeated_str(d, 3)),
            options=tuple(get_repeated_str(d, 4)),
        )
    owner = get_message(f, 8)
    return Allocation(
        address=get_str(f, 1),
        ip=get_str(f, 2),
        pool=get_str(f, 3),
        gateway=get_str(f, 4),
        routes=tuple(Route(get_str(r, 1), get_str(r, 2)) for r in get_repeated_message(f, 5)),
        dns=dns,
        container_id=get_str(f, 9),
        ifname=get_str(f, 10),
        node=get_str(f, 11),
        workload_kind=get_str(owner, 4),
        workload_name=get_str(owner, 5),
        network=get_str(f, 16),
    )


def decode_binding(data: bytes) -> Binding:
    f = parse(data)
    w = get_message(f, 1)
    return Binding(
        namespace=get_str(w, 1),
        kind=get_str(w, 2),
        name=get_str(w, 3),
        network=get_str(f, 2),
        pool=get_str(f, 3),
        release_policy=get_int(f, 4),
    )


def decode_allocate_response(data: bytes) -> AllocateResponse:
    f = parse(data)
    return AllocateResponse(allocation=decode_allocation(_bytes(f, 1)), reused=bool(get_int(f, 2)))


def decode_release_response(data: bytes) -> ReleaseResponse:
    f = parse(data)
    return ReleaseResponse(found=bool(get_int(f, 1)), retained=bool(get_int(f, 2)))


def decode_collected(data: bytes) -> list[Allocation]:
    """GarbageCollectResponse.collected."""
    return [decode_allocation(v) for v in parse(data).get(1, []) if isinstance(v, bytes)]


def encode_lookup_binding(namespace: str, pod_name: str, workload_kind: str, workload_name: str) -> bytes:
    return (
        field_bytes(1, namespace)
        + field_bytes(2, pod_name)
        + field_bytes(3, workload_kind)
        + field_bytes(4, workload_name)
    )


def encode_owner(namespace: str, pod_name: str, pod_uid: str, workload_kind: str, workload_name: str) -> bytes:
    return (
        field_bytes(1, namespace)
        + field_bytes(2, pod_name)
        + field_bytes(3, pod_uid)
        + field_bytes(4, workload_kind)
        + field_bytes(5, workload_name)
    )


def encode_allocate(
    *,
    owner: bytes,
    container_id: str,
    ifname: str,
    node: str,
    node_ip: str = "",
    pool: str = "",
    ip: str = "",
    release_policy: int = 0,
) -> bytes:
    return (
        field_bytes(1, owner, always=True)
        + field_bytes(2, container_id)
        + field_bytes(3, ifname)
        + field_bytes(4, node)
        + field_bytes(5, node_ip)
        + field_bytes(6, pool)
        + field_bytes(7, ip)
        + field_int(8, release_policy)
    )


def encode_attachment(container_id: str, ifname: str) -> bytes:
    return field_bytes(1, container_id) + field_bytes(2, ifname)


def encode_release(container_id: str, ifname: str, pod_uid: str = "") -> bytes:
    return field_bytes(1, container_id) + field_bytes(2, ifname) + field_bytes(3, pod_uid)


def encode_get_allocation_by_attachment(container_id: str, ifname: str) -> bytes:
    return field_bytes(1, encode_attachment(container_id, ifname), always=True)


def encode_garbage_collect(node: str, valid: Iterable[tuple[str, str]], min_age_seconds: int | None) -> bytes:
    out = field_bytes(1, node)
    for container_id, ifname in valid:
        out += field_bytes(2, encode_attachment(container_id, ifname), always=True)
    if min_age_seconds is not None:
        out += field_int(4, min_age_seconds, always=True)
    return out


# The release policies' enum values.
POD_DELETE, IMMUTABLE, NEVER = 1, 2, 3
SERVING = 1  # grpc.health.v1.HealthCheckResponse.SERVING


def status_detail_types(data: bytes) -> list[str]:
    """The type URLs of a google.rpc.Status's details (field 3, each a google.protobuf.Any whose
    field 1 is its type URL): what kind of help the refusal carries (RetryInfo, ErrorInfo, ...)."""
    return [get_str(detail, 1) for detail in get_repeated_message(parse(data), 3)]


def status_reason(data: bytes) -> str:
    """The reason of a google.rpc.Status's ErrorInfo (the Any's value, field 2, is the ErrorInfo,
    whose field 1 is its reason: NODE_RESTRICTED, POOL_NOT_ALLOWED, ...); "" when it has none."""
    for detail in get_repeated_message(parse(data), 3):
        if get_str(detail, 1).endswith("/google.rpc.ErrorInfo"):
            return get_str(get_message(detail, 2), 1)
    return ""
