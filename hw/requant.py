"""Requantize + ReLU, exactly as docs/integer-semantics.md § Requantization.

    y = clamp((acc * M + 2**(S-1)) >> S, lo, hi)     (S >= 1)
    y = clamp(acc * M, lo, hi)                        (S = 0)

The rounding is done the way § 5.3 suggests so that nothing is wider than 49 bits:
``t = P >> (S-1)`` (arithmetic), ``y = (t + 1) >> 1``. That equals the formula for every
P because ``floor((P + 2**(S-1)) / 2**S) = floor((floor(P / 2**(S-1)) + 1) / 2)``.

Three pipeline stages (multiply, shift, round + clamp), ``L`` lanes, one beat per cycle;
the whole pipeline stalls when the output is not taken.
"""

from __future__ import annotations

from amaranth import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sw.intmath import MULT_BITS, SHIFT_MAX

__all__ = ["Requant", "requant_in_layout", "unpack_params"]


def unpack_params(tile, lanes: int):
    """A parameter tile (pack_params: L int32 biases, then L uint16 multipliers; 6 beats
    concatenated, beat 0 lowest) -> (biases, multipliers), one Value per lane."""
    bias = [tile[32 * k : 32 * k + 32].as_signed() for k in range(lanes)]
    mult = [tile[32 * lanes + 16 * k : 32 * lanes + 16 * k + 16] for k in range(lanes)]
    return bias, mult


def requant_in_layout(lanes: int) -> data.StructLayout:
    return data.StructLayout(
        {
            "acc": data.ArrayLayout(signed(32), lanes),
            "mult": data.ArrayLayout(unsigned(MULT_BITS), lanes),
        }
    )


class Requant(wiring.Component):
    """`i`: accumulators and multipliers of L lanes; `o`: L output bytes (uint8 with relu,
    int8 two's complement without). `shift` and `relu` are held for a whole layer."""

    def __init__(self, lanes: int):
        self.lanes = lanes
        super().__init__(
            {
                "i": In(stream.Signature(requant_in_layout(lanes))),
                "o": Out(stream.Signature(data.ArrayLayout(unsigned(8), lanes))),
                "shift": In(range(SHIFT_MAX + 1)),
                "relu": In(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        L = self.lanes
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]

        v1, v2 = Signal(), Signal()
        prod = [Signal(signed(32 + MULT_BITS + 1), name=f"prod{k}") for k in range(L)]
        shifted = [Signal(signed(32 + MULT_BITS + 1), name=f"shifted{k}") for k in range(L)]
        with m.If(en):
            m.d.sync += [v1.eq(self.i.valid), v2.eq(v1), self.o.valid.eq(v2)]
            for k in range(L):
                acc = self.i.payload.acc[k]
                mult = self.i.payload.mult[k]
                m.d.sync += prod[k].eq(acc * Cat(mult, C(0, 1)).as_signed())
                # stage 2: arithmetic shift by S-1 (S = 0: no shift, no rounding)
                m.d.sync += shifted[k].eq(Mux(self.shift == 0, prod[k], prod[k] >> (self.shift - 1)[:6]))
                # stage 3: round half up, clamp
                rounded = Mux(self.shift != 0, (shifted[k] + 1) >> 1, shifted[k])
                lo = Mux(self.relu, 0, -128)
                hi = Mux(self.relu, 255, 127)
                clamped = Mux(rounded < lo, lo, Mux(rounded > hi, hi, rounded))
                m.d.sync += self.o.payload[k].eq(clamped[:8])
        return m
