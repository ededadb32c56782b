"""The DRAM model's hex files (codenet.sim.dram): format by hand-written examples, round trips, presets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from codenet.sim import dram


def test_word_layout_matches_verilog_hex() -> None:
    # byte 0 is lane 0 = least significant = the last two digits of the word
    assert dram.hex_lines(bytes([1, 2, 3, 4, 5, 6, 7, 8]), 4) == b"04030201\n08070605\n"
    assert dram.hex_lines(bytes([0xAB, 0xCD, 0xEF]), 4) == b"00efcdab\n"  # short word zero-padded
    assert dram.hex_image([(8, bytes(range(8))), (64, b"\xff")], 8) == b"@1\n0706050403020100\n@8\n00000000000000ff\n"
    assert dram.hex_image([(0x1010, b"\x01\x02")], 4, base_addr=0x1000) == b"@4\n00000201\n"


def test_unaligned_region_is_refused() -> None:
    with pytest.raises(ValueError, match="aligned"):
        dram.hex_image([(3, b"x")], 4)
    with pytest.raises(ValueError, match="below the base"):
        dram.hex_image([(0, b"x")], 4, base_addr=16)


def test_parse_plain_and_addressed() -> None:
    assert dram.parse_hex(b"04030201\n08070605\n", 4).tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    # '@' moves the address, comments and underscores are ignored, words may be short
    text = b"// header\n@2\n0403_0201 // first\nff\n@0\n00000009\n"
    assert dram.parse_hex(text, 4).tolist() == [9, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 0xFF, 0, 0, 0]
    assert dram.parse_hex(text, 4, first_word=2, words=1).tolist() == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="not a hex word"):
        dram.parse_hex(b"0403020g\n", 4)


@pytest.mark.parametrize("word_bytes", [4, 8, 16, 64])
def test_round_trip(tmp_path: Path, word_bytes: int) -> None:
    rng = np.random.default_rng(word_bytes)
    data = rng.integers(0, 256, 4096 * word_bytes, dtype=np.uint8)
    path = dram.write_hex(tmp_path / "m.hex", [(0, data)], word_bytes)
    # what $writememh writes has no '@'; strip ours to take the fast path
    plain = path.read_bytes().split(b"\n", 1)[1]
    assert np.array_equal(dram.parse_hex(plain, word_bytes), data)
    assert np.array_equal(dram.read_hex(path, word_bytes), data)
    # several regions: untouched words read back as zero
    a, b = data[:100], data[200:300]
    path = dram.write_hex(tmp_path / "r.hex", [(word_bytes * 3, a), (word_bytes * 500, b)], word_bytes)
    out = dram.read_hex(path, word_bytes)
    expect = np.zeros(word_bytes * 500 + -(-b.size // word_bytes) * word_bytes, np.uint8)
    expect[word_bytes * 3 : word_bytes * 3 + a.size] = a
    expect[word_bytes * 500 : word_bytes * 500 + b.size] = b
    assert np.array_equal(out, expect)


def test_arrays_of_any_dtype_go_in_as_their_bytes() -> None:
    x = np.array([0x01020304, -1], np.int32)
    assert dram.hex_lines(x, 4) == b"01020304\nffffffff\n"


def test_traffic_pattern_by_hand() -> None:
    # word w, 32-bit lane k: (w * 0x9E3779B1) ^ (k * 0x85EBCA77), mod 2**32
    p = dram.traffic_pattern(16, 16, 8).view("<u4").tolist()
    w2, w3 = (2 * 0x9E3779B1) % 2**32, (3 * 0x9E3779B1) % 2**32
    assert p == [w2, w2 ^ 0x85EBCA77, w3, w3 ^ 0x85EBCA77]
    with pytest.raises(ValueError):
        dram.traffic_pattern(4, 8, 8)


def test_presets() -> None:
    assert abs(dram.ULTRA96.bytes_per_cycle - 17.056) < 1e-9  # 1066 MT/s * 4 B / 250 MHz
    assert dram.ULX3S.bytes_per_cycle == 4.0
    assert dram.IDEAL.bytes_per_cycle == float("inf")
    assert "+dram_read_latency=40" in dram.ULTRA96.plusargs()
    assert dram.ULTRA96.parameters()["BW_NUM"] == 4264
