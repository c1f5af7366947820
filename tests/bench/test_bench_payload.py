"""The message pool both processes build, and the checks the receiver makes."""

from __future__ import annotations

import zlib

import pytest

from ipcwire.bench.payload import MIN_SIZE, TAG_END, TAG_WARM, Pool, VerificationError


def test_both_sides_build_the_same_pool_from_the_seed() -> None:
    a, b = Pool(64, seed=7), Pool(64, seed=7)
    assert a.messages == b.messages
    assert a.crcs == b.crcs
    assert Pool(64, seed=8).messages != a.messages


def test_messages_have_the_size_and_are_all_different() -> None:
    pool = Pool(1000)
    assert all(len(m) == 1000 for m in pool.messages)
    assert len(set(pool.messages)) == len(pool.messages)
    assert len(pool.warm) == len(pool.end) == 1000
    assert pool.mask + 1 == 64


def test_large_messages_get_a_smaller_pool() -> None:
    pool = Pool(4 * 1024 * 1024)
    assert pool.mask + 1 == 4
    assert Pool.slots_for(4 * 1024 * 1024) == 4


def test_markers_are_recognised_and_anything_else_is_rejected() -> None:
    pool = Pool(64)
    assert pool.marker(pool.warm) == TAG_WARM
    assert pool.marker(pool.end) == TAG_END
    with pytest.raises(VerificationError, match="unexpected"):
        pool.marker(pool.messages[3])
    with pytest.raises(VerificationError):
        pool.marker(pool.end[:-1])  # a truncated END is not an END


def test_crc_check_catches_a_changed_byte() -> None:
    pool = Pool(256)
    pool.check_crc(pool.messages[5], 5)
    corrupt = bytearray(pool.messages[5])
    corrupt[100] ^= 1
    assert zlib.crc32(corrupt) != pool.crcs[5]
    with pytest.raises(VerificationError, match="CRC"):
        pool.check_crc(corrupt, 5)


def test_mismatch_names_what_was_expected_and_what_came() -> None:
    pool = Pool(64)
    err = pool.mismatch(pool.messages[2][:40], 1)
    assert "expected data message 1" in str(err)
    assert "40 bytes (expected 64)" in str(err)


def test_batches_cover_the_pool_in_order() -> None:
    pool = Pool(64)
    batches = pool.batches(16)
    assert len(batches) == 4
    assert [m for b in batches for m in b] == pool.messages
    with pytest.raises(ValueError):
        pool.batches(48)


def test_sizes_below_the_header_are_refused() -> None:
    with pytest.raises(ValueError):
        Pool(MIN_SIZE - 1)
