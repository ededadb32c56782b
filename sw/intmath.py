"""Integer helpers shared by every reader of the contract (docs/integer-semantics.md).

Kept free of anything but numpy: the exporter, the compiler, the hardware generator and the
board runtime all need the same ranges, the same requantization parameters and the same
nibble order, and there must be exactly one definition of each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Activation value ranges, by dtype name.
ACT_RANGE: dict[str, tuple[int, int]] = {"uint8": (0, 255), "int8": (-128, 127)}

#: Accumulators are int32 in hardware: every layer's worst case must fit.
ACC_BITS = 32
ACC_MIN, ACC_MAX = -(2 ** (ACC_BITS - 1)), 2 ** (ACC_BITS - 1) - 1

#: Requantization multiplier: unsigned, 16 bits (fits one DSP input with room to spare).
MULT_BITS = 16
MULT_MAX = 2**MULT_BITS - 1
#: Requantization shift: |acc (32 b) * M (16 b)| < 2**47, and with the rounding term < 2**48.
SHIFT_MAX = 47


def weight_range(bits: int) -> tuple[int, int]:
    """Symmetric-capable two's complement range of a `bits`-wide signed weight."""
    if bits < 2 or bits > 8:
        raise ValueError(f"weight bit width must be 2..8, got {bits}")
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def act_range(dtype: str) -> tuple[int, int]:
    try:
        return ACT_RANGE[dtype]
    except KeyError:
        raise ValueError(f"activation dtype must be one of {sorted(ACT_RANGE)}, got {dtype!r}") from None


def out_dtype(relu: bool) -> str:
    """A ReLU layer writes uint8, any other layer int8 (zero point 0 either way)."""
    return "uint8" if relu else "int8"


def pack_int4(values: np.ndarray) -> np.ndarray:
    """Pack signed 4-bit values two per byte in C order.

    Element 2k goes to bits 3:0 of byte k and element 2k+1 to bits 7:4, each in two's
    complement. An odd count is padded with a zero nibble.
    """
    flat = np.asarray(values).reshape(-1).astype(np.int64)
    if flat.size and (flat.min() < -8 or flat.max() > 7):
        raise ValueError(f"int4 values must lie in [-8, 7], got [{flat.min()}, {flat.max()}]")
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.int64)])
    nib = (flat & 0xF).astype(np.uint8)
    return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8)


def unpack_int4(packed: np.ndarray, count: int) -> np.ndarray:
    """Inverse of :func:`pack_int4`: the first `count` signed values, as int8."""
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1)
    if count < 0 or count > 2 * packed.size:
        raise ValueError(f"cannot unpack {count} nibbles from {packed.size} bytes")
    nib = np.empty(2 * packed.size, np.int16)
    nib[0::2] = packed & 0xF
    nib[1::2] = packed >> 4
    nib = np.where(nib >= 8, nib - 16, nib)
    return nib[:count].astype(np.int8)


@dataclass(frozen=True)
class Requant:
    """Per-channel multipliers and the layer's shift: y = (acc*M + 2**(S-1)) >> S."""

    mult: np.ndarray
    shift: int

    def real(self) -> np.ndarray:
        return self.mult.astype(np.float64) / 2.0**self.shift


def choose_requant(ratio: np.ndarray | float, mult_bits: int = MULT_BITS) -> Requant:
    """Pick M (per channel) and one shared S so that M / 2**S best approximates `ratio`.

    `ratio` is s_in * s_w[oc] / s_out. S is the largest shift that keeps every M within
    `mult_bits` bits, so the largest channel gets full precision; smaller channels lose
    relative precision, which is the price of one shift per layer.
    """
    r = np.atleast_1d(np.asarray(ratio, dtype=np.float64))
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ValueError("requantization ratios must be finite and non-negative")
    mmax = 2**mult_bits - 1
    peak = float(r.max()) if r.size else 0.0
    if peak == 0.0:
        return Requant(np.zeros(r.shape, np.int64), 0)
    # largest S with round(peak * 2**S) <= mmax
    shift = math.floor(math.log2(mmax / peak))
    shift = max(0, min(SHIFT_MAX, shift))
    while shift > 0 and round(peak * 2.0**shift) > mmax:
        shift -= 1
    mult = np.round(r * 2.0**shift).astype(np.int64)
    if mult.max() > mmax:
        raise ValueError(f"requantization ratio {peak:g} is too large for a {mult_bits}-bit multiplier")
    return Requant(mult, int(shift))


def acc_bound(w: np.ndarray, in_dtype: str, bias: np.ndarray | None = None) -> int:
    """Worst-case |accumulator| of a convolution, per the contract's int32 check.

    `w` has output channels first; the bound is max over channels of
    sum|w[oc]| * max|x| + |bias[oc]|.
    """
    lo, hi = act_range(in_dtype)
    xmax = max(abs(lo), abs(hi))
    w = np.asarray(w, dtype=np.int64)
    per_oc = np.abs(w.reshape(w.shape[0], -1)).sum(axis=1) * xmax
    if bias is not None:
        per_oc = per_oc + np.abs(np.asarray(bias, dtype=np.int64))
    return int(per_oc.max()) if per_oc.size else 0
