"""Host side of the HDL DRAM model (sim/hdl/axi_dram.sv): bulk images as hex files, timing presets.

Why files: the model loads and dumps its memory with ``$readmemh`` / ``$writememh`` on a strobe,
so moving megabytes in or out of a running simulation costs one clock cycle of simulation and a
vectorised numpy conversion here, never Python work per word or per cycle.

The hex format is Verilog's: one memory word per line, most significant hex digit first, so the
byte at the lowest address (AXI byte lane 0) is the last two digits; ``@<word index>`` (hex) moves
the load address, which lets one file place several regions and leave every other word as it is.

Numpy only (no cocotb): usable from test benches, the ``rtl`` backend, and scripts alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# ASCII hex digits of every byte value, and the nibble of every ASCII code (255 = not a hex digit)
_HEX = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), np.uint8).reshape(256, 2)
_NIBBLE = np.full(256, 255, np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _NIBBLE[_c] = 10 + _i


def _as_bytes(data: np.ndarray | bytes | bytearray | memoryview) -> np.ndarray:
    """Any array or bytes-like as a flat uint8 view of its raw bytes (little-endian as stored)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return np.frombuffer(bytes(data), np.uint8)


def hex_lines(data: np.ndarray | bytes | bytearray | memoryview, word_bytes: int) -> bytes:
    """The words of ``data`` as hex lines (no ``@``); a short last word is zero-padded."""
    raw = _as_bytes(data)
    n = -(-raw.size // word_bytes)
    words = np.zeros((n, word_bytes), np.uint8)
    words.reshape(-1)[: raw.size] = raw
    out = np.empty((n, 2 * word_bytes + 1), np.uint8)
    out[:, :-1] = _HEX[words[:, ::-1]].reshape(n, 2 * word_bytes)
    out[:, -1] = ord("\n")
    return out.tobytes()


def hex_image(regions: Iterable[tuple[int, np.ndarray | bytes | bytearray | memoryview]], word_bytes: int, base_addr: int = 0) -> bytes:
    """A ``$readmemh`` file placing each ``(address, data)`` region, touching no other word.

    Addresses are bus addresses (``base_addr`` is the model's BASE_ADDR) and must be aligned to
    ``word_bytes``; the last word of a region whose length is not a multiple is zero-padded.
    """
    parts = []
    for addr, data in regions:
        off = addr - base_addr
        if off < 0 or off % word_bytes:
            raise ValueError(f"region at 0x{addr:x} is below the base 0x{base_addr:x} or not aligned to {word_bytes}-byte words")
        parts.append(f"@{off // word_bytes:x}\n".encode())
        parts.append(hex_lines(data, word_bytes))
    return b"".join(parts)


def write_hex(
    path: str | os.PathLike[str],
    regions: Iterable[tuple[int, np.ndarray | bytes | bytearray | memoryview]],
    word_bytes: int,
    base_addr: int = 0,
) -> Path:
    """Write :func:`hex_image` to ``path`` atomically (the simulator never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(hex_image(regions, word_bytes, base_addr))
    os.replace(tmp, path)
    return path


def _decode_fixed(block: np.ndarray, word_bytes: int) -> np.ndarray:
    """(n, 2*word_bytes) ASCII hex digits -> (n, word_bytes) bytes, lane 0 first."""
    nib = _NIBBLE[block]
    if (nib == 255).any():
        bad = bytes(block[(nib == 255).any(axis=1)][0]).decode(errors="replace")
        raise ValueError(f"not a hex word: {bad!r}")
    return ((nib[:, 0::2] << 4) | nib[:, 1::2])[:, ::-1]


def parse_hex(text: bytes, word_bytes: int, first_word: int = 0, words: int | None = None) -> np.ndarray:
    """Decode a ``$writememh`` / ``$readmemh`` text into bytes, lane 0 first.

    The result covers words ``first_word .. first_word + words - 1`` (default: up to the last word
    in the file); words the file does not mention are 0. Whole-file fixed-width dumps (what
    ``$writememh`` writes) decode in one vectorised step; ``@`` lines, comments and short words
    take a slower but still per-line-free path.
    """
    width = 2 * word_bytes
    buf = np.frombuffer(text, np.uint8)
    plain = b"@" not in text and b"/" not in text and b"_" not in text
    if plain and buf.size % (width + 1) == 0 and buf.size and (buf[width :: width + 1] == ord("\n")).all():
        data = _decode_fixed(buf.reshape(-1, width + 1)[:, :width], word_bytes)
        n = data.shape[0]
        total = n if words is None else words
        out = np.zeros((total, word_bytes), np.uint8)
        k = min(n, total)
        out[:k] = data[:k]
        return out.reshape(-1)
    # general path: tokens, '@' address changes, comments, underscores
    lines = [ln.split(b"//", 1)[0] for ln in text.splitlines()]
    tokens = b" ".join(lines).replace(b"_", b"").split()
    placed: list[tuple[int, list[bytes]]] = []
    addr = first_word
    cur: list[bytes] = []
    start = addr
    for t in tokens:
        if t.startswith(b"@"):
            if cur:
                placed.append((start, cur))
            addr = start = int(t[1:], 16)
            cur = []
        else:
            cur.append(t)
            addr += 1
    if cur:
        placed.append((start, cur))
    end = max((s + len(c) for s, c in placed), default=first_word)
    total = (end - first_word) if words is None else words
    out = np.zeros((max(total, 0), word_bytes), np.uint8)
    for s, toks in placed:
        if all(len(t) == width for t in toks):
            block = _decode_fixed(np.frombuffer(b"".join(toks), np.uint8).reshape(-1, width), word_bytes)
        else:
            block = np.array([list(int(t, 16).to_bytes(word_bytes, "little")) for t in toks], np.uint8).reshape(-1, word_bytes)
        lo, hi = max(s, first_word), min(s + len(toks), first_word + total)
        if lo < hi:
            out[lo - first_word : hi - first_word] = block[lo - s : hi - s]
    return out.reshape(-1)


def read_hex(path: str | os.PathLike[str], word_bytes: int, first_word: int = 0, words: int | None = None) -> np.ndarray:
    """Read a hex file into bytes (see :func:`parse_hex`)."""
    return parse_hex(Path(path).read_bytes(), word_bytes, first_word, words)


def traffic_pattern(addr: int, nbytes: int, word_bytes: int) -> np.ndarray:
    """The data ``axi_traffic_gen.sv`` writes and expects at bus addresses [addr, addr + nbytes), word-aligned.

    32-bit lane k of the word at byte address A: ((A >> log2(word_bytes)) * 0x9E3779B1) ^ (k * 0x85EBCA77), mod 2**32.
    """
    if addr % word_bytes or nbytes % word_bytes:
        raise ValueError("traffic_pattern needs whole words")
    first = addr // word_bytes
    word = np.arange(first, first + nbytes // word_bytes, dtype=np.uint64) & 0xFFFFFFFF
    lanes = np.arange(word_bytes // 4, dtype=np.uint64)
    val = ((word[:, None] * 0x9E3779B1) & 0xFFFFFFFF) ^ ((lanes[None, :] * 0x85EBCA77) & 0xFFFFFFFF)
    return val.astype("<u4").view(np.uint8).reshape(-1)


@dataclass(frozen=True)
class DramTiming:
    """Board-like timing of the DRAM model, in cycles of the engine clock.

    ``bw_num / bw_den`` bytes per cycle; the natural way to fill it in is bw_num = DRAM transfers
    per microsecond times bytes per transfer, bw_den = engine clock in MHz. bw_num = 0: no limit.
    """

    read_latency: int
    write_latency: int
    bw_num: int
    bw_den: int = 1
    bucket_bytes: int = 0

    @property
    def bytes_per_cycle(self) -> float:
        """Long-run bandwidth limit (inf when unlimited)."""
        return float("inf") if self.bw_num == 0 else self.bw_num / self.bw_den

    def parameters(self) -> dict[str, int]:
        """As Verilog parameters of axi_dram / tb_axi_dram (fixed at build time)."""
        return {
            "READ_LATENCY": self.read_latency,
            "WRITE_LATENCY": self.write_latency,
            "BW_NUM": self.bw_num,
            "BW_DEN": self.bw_den,
            "BUCKET_BYTES": self.bucket_bytes,
        }

    def plusargs(self, name: str = "dram") -> list[str]:
        """As run-time plusargs for the instance called ``name`` (no rebuild)."""
        return [
            f"+{name}_read_latency={self.read_latency}",
            f"+{name}_write_latency={self.write_latency}",
            f"+{name}_bw_num={self.bw_num}",
            f"+{name}_bw_den={self.bw_den}",
            f"+{name}_bucket_bytes={self.bucket_bytes}",
        ]


# Ultra96-V2: 32-bit LPDDR4 at 1066 MT/s = 4264 MB/s peak, engine at 250 MHz -> 17.06 B/cycle.
# Latencies are estimates for a PL master through an HP port (~150 ns read, ~80 ns write ack).
ULTRA96 = DramTiming(read_latency=40, write_latency=20, bw_num=1066 * 4, bw_den=250)
# ULX3S-like: 16-bit SDR SDRAM at 100 MHz = 200 MB/s peak under a soft controller, engine at 50 MHz
# -> 4 B/cycle; latencies are estimates (activate + CAS + controller pipeline).
ULX3S = DramTiming(read_latency=12, write_latency=6, bw_num=100 * 2, bw_den=50)
# An ideal memory for functional tests: minimum latencies, one beat per cycle and channel.
IDEAL = DramTiming(read_latency=3, write_latency=2, bw_num=0)
PRESETS = {"ultra96": ULTRA96, "ulx3s": ULX3S, "ideal": IDEAL}
