"""The pure allocation policy: numbering, picking, cooldown, cursor."""

from __future__ import annotations

import pytest

from tke.internal.ipamd.allocator import BLOCK_SIZE, Block, give_back, layout, locate, pick, take


def test_layout_skips_network_broadcast_gateway_and_exclusions() -> None:
    lay = layout("10.0.0.0/24", "10.0.0.1", [], ["10.0.0.10", "10.0.0.64/30"])
    assert lay.size == 254 - 1 - 1 - 4
    assert lay.ip_at(0) == "10.0.0.2"
    assert lay.offset_of("10.0.0.1") is None
    assert lay.offset_of("10.0.0.10") is None
    assert lay.offset_of("10.0.0.65") is None
    assert lay.offset_of("10.0.0.255") is None
    for offset in range(lay.size):
        assert lay.offset_of(lay.ip_at(offset)) == offset


def test_layout_ranges_are_merged_and_checked() -> None:
    lay = layout("10.0.0.0/24", "10.0.0.1", [("10.0.0.20", "10.0.0.29"), ("10.0.0.25", "10.0.0.40")], [])
    assert lay.size == 21
    assert lay.ip_at(0) == "10.0.0.20"
    with pytest.raises(ValueError):
        layout("10.0.0.0/24", "10.0.0.1", [("10.0.1.1", "10.0.1.2")], [])


def test_pick_is_round_robin_and_honours_cooldown() -> None:
    b = Block(pool="p", index=0)
    now = 100.0
    bits = []
    for _ in range(3):
        bit = pick(b, BLOCK_SIZE, now)
        assert bit is not None
        bits.append(bit)
        b = take(b, bit, now)
    assert bits == [0, 1, 2]
    b = give_back(b, 0, now, cooldown=30)
    # Bit 0 is free but cooling, and the cursor is past it anyway.
    assert pick(b, BLOCK_SIZE, now) == 3
    full = b
    for bit in range(3, BLOCK_SIZE):
        full = take(full, bit, now)
    assert pick(full, BLOCK_SIZE, now) is None  # only the cooling one is free
    assert pick(full, BLOCK_SIZE, now + 31) == 0


def test_partial_last_block() -> None:
    lay = layout("10.0.0.0/25", "10.0.0.1", [], [])  # 125 addresses: one full block, one of 61
    assert lay.block_count == 2
    assert lay.block_span(1) == lay.size - BLOCK_SIZE
    b = Block(pool="p", index=1)
    for _ in range(lay.block_span(1)):
        bit = pick(b, lay.block_span(1), 0)
        assert bit is not None
        b = take(b, bit, 0)
    assert pick(b, lay.block_span(1), 0) is None
    assert locate(BLOCK_SIZE + 5) == (1, 5)
