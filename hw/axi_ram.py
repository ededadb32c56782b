"""An on-chip AXI4 RAM for the engine's master port, with a byte-wide host port beside it.

It stands in for a DRAM where a board has no DRAM controller in the design (the ECP5 build,
docs/ecp5.md): one `amaranth.lib.memory.Memory` of `size` bytes, words as wide as the bus,
one read port and one write port (byte enables), which Yosys maps to block RAM (ECP5 EBR).

AXI4 slave: INCR bursts of full-width beats (what the engine issues: ARSIZE/AWSIZE =
log2(bus bytes), addresses aligned to the beat), any length 1..256, one read and one write
burst in flight at a time, reads and writes concurrently, responses always OKAY, IDs 0.
Addresses are taken modulo `size` (the RAM repeats through the address space). R has no
extra latency register: a beat is offered one cycle after its read.

Host port (the UART bridge, codenet.hw.uart): one byte at a time. A write (``host_we``) is
taken in the cycle it is asserted and has priority over the engine's W beat in that cycle;
a read (``host_re``) is taken when ``host_r_ready`` is high and its byte is on
``host_rdata`` while ``host_r_valid`` pulses, one cycle later. So the host never waits on
the engine and the engine loses at most one cycle per host access.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .axi import AXI_OKAY, axi4_signature

__all__ = ["AxiRam"]


class AxiRam(wiring.Component):
    """`size` bytes of block RAM behind an AXI4 slave port `axi` (`data_bits` wide) and a byte host port."""

    def __init__(self, size: int, data_bits: int, addr_bits: int = 32, id_bits: int = 4):
        nbytes = data_bits // 8
        if data_bits % 8 or nbytes & (nbytes - 1):
            raise ValueError(f"data_bits must be 8 times a power of two, got {data_bits}")
        if size & (size - 1) or size < nbytes * 2:
            raise ValueError(f"size must be a power of two of at least two words, got {size}")
        self.size = size
        self.data_bits = data_bits
        self.lanes = nbytes
        self.depth = size // nbytes
        self.byte_bits = (size - 1).bit_length()
        super().__init__(
            {
                "axi": In(axi4_signature(addr_bits, data_bits, id_bits)),
                "host_addr": In(self.byte_bits),
                "host_wdata": In(8),
                "host_we": In(1),
                "host_re": In(1),
                "host_r_ready": Out(1),
                "host_r_valid": Out(1),
                "host_rdata": Out(8),
            }
        )

    def elaborate(self, platform):
        m = Module()
        bus = self.axi
        L = self.lanes
        lg = L.bit_length() - 1
        word_bits = (self.depth - 1).bit_length()

        m.submodules.mem = mem = Memory(shape=self.data_bits, depth=self.depth, init=[])
        rp = mem.read_port(domain="sync")
        wp = mem.write_port(granularity=8)

        host_word = Signal(word_bits)
        host_lane = Signal(max(lg, 1))
        m.d.comb += host_word.eq(self.host_addr[lg:])
        if lg:
            m.d.comb += host_lane.eq(self.host_addr[:lg])

        # ------------------------------------------------------------ write channel
        w_busy = Signal()
        w_addr = Signal(word_bits)
        m.d.comb += [
            bus.awready.eq(~w_busy & ~bus.bvalid),
            bus.wready.eq(w_busy & ~self.host_we),
            bus.bresp.eq(AXI_OKAY),
            bus.bid.eq(0),
        ]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [w_busy.eq(1), w_addr.eq(bus.awaddr[lg:])]
        with m.If(self.host_we):
            m.d.comb += [
                wp.addr.eq(host_word),
                wp.data.eq(Cat(*([self.host_wdata] * L))),
                wp.en.eq(1 << host_lane if lg else 1),
            ]
        with m.Elif(bus.wvalid & bus.wready):
            m.d.comb += [wp.addr.eq(w_addr), wp.data.eq(bus.wdata), wp.en.eq(bus.wstrb)]
            m.d.sync += w_addr.eq(w_addr + 1)
            with m.If(bus.wlast):
                m.d.sync += [w_busy.eq(0), bus.bvalid.eq(1)]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)

        # ------------------------------------------------------------ read channel
        r_left = Signal(9)  # beats of the current burst not yet read from the memory
        r_addr = Signal(word_bits)
        free = Signal()  # the R output is empty, or its beat is taken in this cycle
        host_go, eng_go = Signal(), Signal()
        host_sel_lane = Signal.like(host_lane)
        m.d.comb += [
            free.eq(~bus.rvalid | bus.rready),
            bus.arready.eq(r_left == 0),
            self.host_r_ready.eq(free),
            host_go.eq(self.host_re & free),
            eng_go.eq((r_left != 0) & free & ~self.host_re),
            rp.en.eq(host_go | eng_go),
            rp.addr.eq(Mux(host_go, host_word, r_addr)),
            bus.rdata.eq(rp.data),
            bus.rresp.eq(AXI_OKAY),
            bus.rid.eq(0),
            self.host_rdata.eq(rp.data.word_select(host_sel_lane, 8) if lg else rp.data[:8]),
        ]
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [r_left.eq(bus.arlen + 1), r_addr.eq(bus.araddr[lg:])]
        m.d.sync += self.host_r_valid.eq(host_go)
        with m.If(host_go):
            m.d.sync += host_sel_lane.eq(host_lane)
        with m.If(eng_go):
            m.d.sync += [bus.rvalid.eq(1), bus.rlast.eq(r_left == 1), r_addr.eq(r_addr + 1), r_left.eq(r_left - 1)]
        with m.Elif(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        return m
