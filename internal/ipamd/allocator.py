"""The allocation policy, pure: where a pool's addresses are and which one to hand out next.
No I/O here, so the interesting logic is tested without servers.

Invariants:
- A pool's allocatable addresses are numbered 0..size-1 (its ranges in address order, minus the
  network and broadcast addresses, the gateway and the exclusions); that numbering depends on
  the pool's immutable fields only, so every ipamd replica computes the same one.
- Offsets are grouped in blocks of BLOCK_SIZE. A block's state is a bitmap of owned offsets, the
  offsets cooling down (with the time they become free) and a cursor. A block is the unit of
  compare-and-swap: owning an address is setting its bit in a block write that compares the
  block's version, so two owners of one address are impossible.
- Picking is O(BLOCK_SIZE) bit operations on one block, whatever the pool's fill: the cursor
  makes the search round-robin inside a block, so a just-freed address is the last to be
  handed out again even after its cooldown.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

BLOCK_SIZE = 64
_FULL = (1 << BLOCK_SIZE) - 1


@dataclass(frozen=True, slots=True)
class Segment:
    """Allocatable addresses [first, last] (integers) with offsets from `offset`."""

    first: int
    last: int
    offset: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class Layout:
    """The numbering of a pool's allocatable addresses."""

    network: ipaddress.IPv4Network
    segments: tuple[Segment, ...]
    size: int

    @property
    def block_count(self) -> int:
        return (self.size + BLOCK_SIZE - 1) // BLOCK_SIZE

    def block_span(self, index: int) -> int:
        """How many offsets block `index` holds (the last block may be partial)."""
        return min(BLOCK_SIZE, self.size - index * BLOCK_SIZE)

    def ip_at(self, offset: int) -> str:
        for seg in self.segments:
            if seg.offset <= offset < seg.offset + seg.size:
                return str(ipaddress.IPv4Address(seg.first + offset - seg.offset))
        raise IndexError(offset)

    def offset_of(self, ip: str) -> int | None:
        """The offset of an allocatable address, None when the pool never hands it out."""
        try:
            value = int(ipaddress.IPv4Address(ip))
        except ValueError:
            return None
        for seg in self.segments:
            if seg.first <= value <= seg.last:
                return seg.offset + value - seg.first
        return None


def _subtract(intervals: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    out = []
    for a, b in intervals:
        if hi < a or lo > b:
            out.append((a, b))
            continue
        if a < lo:
            out.append((a, lo - 1))
        if hi < b:
            out.append((hi + 1, b))
    return out


def layout(cidr: str, gateway: str, ranges: Sequence[tuple[str, str]], excluded: Iterable[str]) -> Layout:
    """Number the allocatable addresses. Raises ValueError (with a message for users) on
    addresses outside the subnet; the caller validates syntax first."""
    net = ipaddress.IPv4Network(cidr, strict=True)
    lo, hi = int(net.network_address), int(net.broadcast_address)
    if net.prefixlen < 31:
        lo, hi = lo + 1, hi - 1  # the network and broadcast addresses are never a host's
    if ranges:
        intervals = []
        for start, end in ranges:
            a, b = int(ipaddress.IPv4Address(start)), int(ipaddress.IPv4Address(end))
            if a > b:
                raise ValueError(f"range {start}-{end} ends before it starts")
            if a < lo or b > hi:
                raise ValueError(f"range {start}-{end} is not inside the hosts of {cidr}")
            intervals.append((a, b))
        intervals.sort()
        merged: list[tuple[int, int]] = []
        for a, b in intervals:
            if merged and a <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
            else:
                merged.append((a, b))
        intervals = merged
    else:
        intervals = [(lo, hi)]
    if gateway:
        gw = int(ipaddress.IPv4Address(gateway))
        intervals = _subtract(intervals, gw, gw)
    for item in excluded:
        ex = ipaddress.IPv4Network(item, strict=False)
        intervals = _subtract(intervals, int(ex.network_address), int(ex.broadcast_address))
    segments = []
    offset = 0
    for a, b in intervals:
        segments.append(Segment(a, b, offset))
        offset += b - a + 1
    return Layout(network=net, segments=tuple(segments), size=offset)


@dataclass(frozen=True)
class Block:
    """The state of BLOCK_SIZE consecutive offsets of a pool. `version` is the storage's
    version of it (0: never written, all free)."""

    pool: str
    index: int
    used: int = 0
    cooling: dict[int, float] = field(default_factory=dict)
    cursor: int = 0
    version: int = 0

    def owned(self, bit: int) -> bool:
        return bool(self.used >> bit & 1)

    def count(self) -> int:
        return self.used.bit_count()

    def cooling_count(self, now: float) -> int:
        return sum(1 for until in self.cooling.values() if until > now)


def _cooling_mask(block: Block, now: float) -> int:
    mask = 0
    for bit, until in block.cooling.items():
        if until > now:
            mask |= 1 << bit
    return mask


def pickable(block: Block, span: int, now: float) -> int:
    """Bitmap of the offsets of `block` that may be handed out now."""
    return ~block.used & ~_cooling_mask(block, now) & ((1 << span) - 1) & _FULL


def pick(block: Block, span: int, now: float) -> int | None:
    """The first pickable bit at or after the block's cursor, wrapping around; None when the
    block has none."""
    free = pickable(block, span, now)
    if not free:
        return None
    ahead = free >> block.cursor << block.cursor
    chosen = ahead or free
    return (chosen & -chosen).bit_length() - 1


def take(block: Block, bit: int, now: float) -> Block:
    """The block with `bit` owned and the cursor after it; expired cooldowns are dropped."""
    cooling = {b: u for b, u in block.cooling.items() if u > now and b != bit}
    return replace(block, used=block.used | 1 << bit, cooling=cooling, cursor=(bit + 1) % BLOCK_SIZE)


def give_back(block: Block, bit: int, now: float, cooldown: float) -> Block:
    """The block with `bit` free again, cooling down for `cooldown` seconds."""
    cooling = {b: u for b, u in block.cooling.items() if u > now}
    if cooldown > 0:
        cooling[bit] = now + cooldown
    return replace(block, used=block.used & ~(1 << bit), cooling=cooling)


def locate(offset: int) -> tuple[int, int]:
    """(block index, bit) of an offset."""
    return divmod(offset, BLOCK_SIZE)
