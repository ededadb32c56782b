"""The AXI4-Lite register file, generated from codenet.sw.engine.register_map().

Nothing about the registers is written here: offsets, fields, access kinds and reset values
all come from the map, the same data the driver, engine.json, the C header and
docs/register-map.md are made from. Each field becomes a port of this component:

- ``rw``: an output carrying the register's value;
- ``ro`` (not const): an input the engine drives; ``const`` fields read their reset value;
- ``w1c``: an output with the value, and an input ``<name>_set`` that sets bits;
- ``w1s``: an output pulsing for one cycle when 1 is written;
- 64-bit counters (LO/HI pairs): an input ``perf_<name>``; reading LO latches HI.

Port names: ``<register>`` for a one-field register, ``<register>_<field>`` otherwise, lower
case. Only full-word writes (WSTRB = 0xF) take effect; unmapped offsets read 0. One read
and one write are handled at a time; BRESP and RRESP are always OKAY.
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..sw.engine import AXIL_ADDR_BITS, EngineConfig, register_map
from .axi import axi4_lite_signature

__all__ = ["RegFile", "field_port_name"]


def field_port_name(reg, fld) -> str:
    return (reg.name if len(reg.fields) == 1 else f"{reg.name}_{fld.name}").lower()


class RegFile(wiring.Component):
    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        self.regs = register_map(cfg)
        members = {"axil": In(axi4_lite_signature(AXIL_ADDR_BITS))}
        self.counters = []
        for r in self.regs:
            if r.counter:
                if r.half == "lo":
                    members[f"perf_{r.counter.lower()}"] = In(64)
                    self.counters.append(r.counter)
                continue
            for f in r.fields:
                name = field_port_name(r, f)
                if f.access == "rw":
                    members[name] = Out(f.width, init=f.reset)
                elif f.access == "ro" and not f.const:
                    members[name] = In(f.width)
                elif f.access == "w1c":
                    members[name] = Out(f.width)
                    members[f"{name}_set"] = In(f.width)
                elif f.access == "w1s":
                    members[name] = Out(f.width)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        bus = self.axil
        regs = self.regs
        shadows = {c: Signal(32, name=f"shadow_{c.lower()}") for c in self.counters}

        # ------------------------------------------------------------ write channel
        aw_have, w_have = Signal(), Signal()
        aw_addr = Signal(AXIL_ADDR_BITS)
        w_data = Signal(32)
        w_full = Signal()
        m.d.comb += [bus.awready.eq(~aw_have), bus.wready.eq(~w_have), bus.bresp.eq(0)]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [aw_have.eq(1), aw_addr.eq(bus.awaddr)]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [w_have.eq(1), w_data.eq(bus.wdata), w_full.eq(bus.wstrb == 0xF)]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)
        do_write = Signal()
        m.d.comb += do_write.eq(aw_have & w_have & ~bus.bvalid)
        with m.If(do_write):
            m.d.sync += [aw_have.eq(0), w_have.eq(0), bus.bvalid.eq(1)]

        # pulses default to 0; w1c fields are set by the engine, cleared by writes of 1
        for r in regs:
            if r.counter:
                continue
            hit = do_write & w_full & (aw_addr[2:] == r.offset >> 2)
            for f in r.fields:
                port = getattr(self, field_port_name(r, f), None)
                value = w_data[f.lsb : f.lsb + f.width]
                if f.access == "rw":
                    with m.If(hit):
                        m.d.sync += port.eq(value)
                elif f.access == "w1s":
                    m.d.sync += port.eq(0)
                    with m.If(hit):
                        m.d.sync += port.eq(value)
                elif f.access == "w1c":
                    setp = getattr(self, f"{field_port_name(r, f)}_set")
                    cleared = Signal(f.width, name=f"{field_port_name(r, f)}_clr")
                    m.d.comb += cleared.eq(0)
                    with m.If(hit):
                        m.d.comb += cleared.eq(value)
                    m.d.sync += port.eq((port & ~cleared) | setp)

        # ------------------------------------------------------------ read channel
        m.d.comb += [bus.arready.eq(~bus.rvalid), bus.rresp.eq(0)]
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [bus.rvalid.eq(1), bus.rdata.eq(0)]
            with m.Switch(bus.araddr[2:]):
                for r in regs:
                    with m.Case(r.offset >> 2):
                        if r.counter:
                            value = getattr(self, f"perf_{r.counter.lower()}")
                            if r.half == "lo":
                                m.d.sync += [bus.rdata.eq(value[:32]), shadows[r.counter].eq(value[32:])]
                            else:
                                m.d.sync += bus.rdata.eq(shadows[r.counter])
                            continue
                        word = 0
                        parts = []
                        for f in r.fields:
                            if f.const:
                                word |= (f.reset << f.lsb) & f.mask
                            elif f.access != "w1s":
                                parts.append((f, getattr(self, field_port_name(r, f))))
                        expr = word
                        for f, sig in parts:
                            expr = expr | (sig.as_unsigned() << f.lsb)
                        m.d.sync += bus.rdata.eq(expr)
        return m
