"""AXI4-Lite register file vs the register map data (codenet.sw.engine.register_map)."""

from __future__ import annotations

import simkit
from amaranth.hdl import Fragment

from codenet.hw.regfile import RegFile, field_port_name
from codenet.sw import engine as E

CFG = E.PRESETS["tiny"]


async def axil_write(ctx, bus, addr, data, strb=0xF, watch=None):
    """One AXI4-Lite write; returns how many cycles `watch` was high during it and 3 after."""
    seen = 0
    ctx.set(bus.awaddr, addr)
    ctx.set(bus.awvalid, 1)
    ctx.set(bus.wdata, data)
    ctx.set(bus.wstrb, strb)
    ctx.set(bus.wvalid, 1)
    ctx.set(bus.bready, 1)
    aw = w = False
    probe = watch if watch is not None else bus.bvalid
    while not (aw and w):
        _, _, awr, wr, p = await ctx.tick().sample(bus.awready, bus.wready, probe)
        seen += p
        if awr and not aw:
            aw = True
            ctx.set(bus.awvalid, 0)
        if wr and not w:
            w = True
            ctx.set(bus.wvalid, 0)
    while True:
        _, _, bv, resp, p = await ctx.tick().sample(bus.bvalid, bus.bresp, probe)
        seen += p
        if bv:
            assert resp == 0
            break
    ctx.set(bus.bready, 0)
    for _ in range(3):
        _, _, p = await ctx.tick().sample(probe)
        seen += p
    return seen


async def axil_read(ctx, bus, addr):
    ctx.set(bus.araddr, addr)
    ctx.set(bus.arvalid, 1)
    ctx.set(bus.rready, 1)
    await ctx.tick().until(bus.arready)
    ctx.set(bus.arvalid, 0)
    while not ctx.get(bus.rvalid):
        await ctx.tick()
    data, resp = ctx.get(bus.rdata), ctx.get(bus.rresp)
    await ctx.tick()
    ctx.set(bus.rready, 0)
    assert resp == 0
    return data


def test_regfile_follows_the_map():
    dut = RegFile(CFG)
    regs = E.register_map(CFG)
    bus = dut.axil
    log = {}

    async def bench(ctx):
        # 1. every register reads its reset value (inputs at 0)
        for r in regs:
            want = 0 if (r.counter or any(f.access == "ro" and not f.const for f in r.fields)) else r.reset
            assert await axil_read(ctx, bus, r.offset) == want, r.name
        # 2. rw fields keep exactly their bits
        for r in regs:
            if all(f.access == "rw" for f in r.fields):
                mask = sum(f.mask for f in r.fields)
                await axil_write(ctx, bus, r.offset, 0xFFFFFFFF)
                assert await axil_read(ctx, bus, r.offset) == mask, r.name
                await axil_write(ctx, bus, r.offset, 0xA5A5A5A5)
                assert await axil_read(ctx, bus, r.offset) == 0xA5A5A5A5 & mask, r.name
                f = r.fields[0]
                assert ctx.get(getattr(dut, field_port_name(r, f))) == (0xA5A5A5A5 & f.mask) >> f.lsb
        # 3. partial-strobe writes are ignored
        pa = E.reg("PROG_ADDR")
        await axil_write(ctx, bus, pa.offset, 0x1234, strb=0x3)
        assert await axil_read(ctx, bus, pa.offset) == 0xA5A5A5A5
        # 4. ro inputs appear where the map puts them
        st = E.reg("STATUS")
        ctx.set(dut.status_busy, 1)
        ctx.set(dut.status_error, 9)
        ctx.set(dut.status_err_desc, 0x1234)
        await ctx.tick()
        assert await axil_read(ctx, bus, st.offset) == 1 | 9 << 8 | 0x1234 << 16
        # 5. w1s pulses for one cycle, reads 0
        ctrl = E.reg("CTRL")
        log["start_pulses"] = await axil_write(ctx, bus, ctrl.offset, 0b101, watch=dut.ctrl_start)
        log["irq_en"] = ctx.get(dut.ctrl_irq_en)
        assert await axil_read(ctx, bus, ctrl.offset) == 0b100
        log["reset_pulses"] = await axil_write(ctx, bus, ctrl.offset, 0b100, watch=dut.ctrl_soft_reset)
        # 6. w1c: set by the engine, cleared by writing 1
        irq = E.reg("IRQ_STATUS")
        ctx.set(dut.irq_status_error_set, 1)
        await ctx.tick()
        ctx.set(dut.irq_status_error_set, 0)
        ctx.set(dut.irq_status_done_set, 1)
        await ctx.tick()
        ctx.set(dut.irq_status_done_set, 0)
        assert await axil_read(ctx, bus, irq.offset) == 0b11
        await axil_write(ctx, bus, irq.offset, 0b10)
        assert await axil_read(ctx, bus, irq.offset) == 0b01
        # 7. 64-bit counters: LO latches HI
        ctx.set(dut.perf_cycles, 0x11223344_55667788)
        await ctx.tick()
        lo = E.reg("PERF_CYCLES_LO")
        assert await axil_read(ctx, bus, lo.offset) == 0x55667788
        ctx.set(dut.perf_cycles, 0xAABBCCDD_00000000)
        await ctx.tick()
        assert await axil_read(ctx, bus, lo.offset + 4) == 0x11223344  # the latched half
        # 8. unmapped offsets read 0
        assert await axil_read(ctx, bus, 0xFFC) == 0
        assert await axil_read(ctx, bus, 0x030) == 0

    simkit.run(dut, bench, deadline_cycles=20000)
    assert log["irq_en"] == 1
    assert log["start_pulses"] == 1 and log["reset_pulses"] == 0


def test_regfile_ports_cover_every_field():
    dut = RegFile(CFG)
    Fragment.get(dut, None)  # elaborates
    names = set(dut.signature.members)
    for r in E.register_map(CFG):
        for f in r.fields:
            if r.counter:
                assert f"perf_{r.counter.lower()}" in names
            elif f.const:
                assert field_port_name(r, f) not in names
            else:
                assert field_port_name(r, f) in names, (r.name, f.name)
