"""A register slice for valid/ready streams.

The engine's units stall their pipelines on their output's `ready`; without a slice that
`ready` comes combinationally from the next unit (the DMA write FIFO, the pointwise pixel
buffer) and reaches every pipeline register of the producer in the same cycle, which is
what limited the ECP5 clock (docs/synthesis.md). A skid buffer cuts the path: `i.ready` and
`o.valid` are registers, and one beat per cycle still passes.
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Skid"]


class Skid(wiring.Component):
    """Two entries: the output register and a skid register that takes the beat arriving in
    the cycle the output stalls. One cycle of latency, full throughput, and neither side's
    handshake logic reaches the other."""

    def __init__(self, shape):
        self.shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        skid_valid = Signal()
        skid_data = Signal(self.shape)
        m.d.comb += self.i.ready.eq(~skid_valid)
        with m.If(self.o.ready | ~self.o.valid):
            with m.If(skid_valid):
                m.d.sync += [self.o.payload.eq(skid_data), self.o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & ~skid_valid):
            m.d.sync += [skid_data.eq(self.i.payload), skid_valid.eq(1)]
        return m
