"""cocotb tests of the HDL DRAM model (sim/hdl/axi_dram.sv) through tb_axi_dram.

Run by tests/sim/test_axi_dram.py, one test per simulator process. The expected values come
from a numpy byte array updated by the tests themselves, from the AXI rules (beat counts,
byte lanes, WRAP order) and from the timing parameters handed in by pytest; cocotbext-axi's
AxiMaster is an independent implementation of the master side of the protocol. Handshakes
are timed by sampling valid and ready at falling edges: what is seen there is what the next
rising edge takes.

Environment (set by the pytest side): DRAM_TEST_SEED, DRAM_MEM_BYTES, and for the timing
tests DRAM_READ_LATENCY, DRAM_WRITE_LATENCY, DRAM_BW_NUM, DRAM_BW_DEN (the same values are
passed to the model as plusargs).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge

from codenet.sim import dram
from codenet.sim.dram_port import DramCounters, DramPort
from codenet.sim.traffic import run_traffic

OKAY, DECERR = 0, 3


def _env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


class Bench:
    """Clock, reset, the DRAM's bulk port, a numpy image of what the memory must hold."""

    def __init__(self, dut: Any) -> None:
        self.dut = dut
        self.wb = len(dut.s_axi_wdata) // 8
        self.size_max = self.wb.bit_length() - 1
        self.mem_bytes = _env("DRAM_MEM_BYTES", 1 << 20)
        self.rng = np.random.default_rng(_env("DRAM_TEST_SEED", 1))
        self.model = np.zeros(self.mem_bytes, np.uint8)  # a fresh simulator starts from zeros
        self.port = DramPort(dut, dut.clk, self.wb)
        self.cycle = 0  # falling edges seen by the handshake monitor
        self.log: dict[str, list[int]] = {ch: [] for ch in ("ar", "r", "rlast", "aw", "w", "wlast", "b")}

    async def start(self) -> None:
        d = self.dut
        cocotb.start_soon(Clock(d.clk, 4, unit="ns").start())
        for name in ("tg_enable", "tg_start", "s_axi_awvalid", "s_axi_wvalid", "s_axi_arvalid", "s_axi_bready", "s_axi_rready"):
            getattr(d, name).value = 0
        d.rst.value = 1
        await ClockCycles(d.clk, 4)
        d.rst.value = 0
        await RisingEdge(d.clk)

    def axi_master(self) -> Any:
        """cocotbext-axi's AxiMaster on s_axi_* (imported here: the hand-driven cases run without it)."""
        from cocotbext.axi import AxiBus, AxiMaster

        m = AxiMaster(AxiBus.from_prefix(self.dut, "s_axi"), self.dut.clk, self.dut.rst)
        for lg in (m.write_if.log, m.read_if.log):
            lg.setLevel(logging.WARNING)
        logging.getLogger("cocotb.tb_axi_dram").setLevel(logging.WARNING)
        return m

    def start_monitor(self) -> None:
        """Record the cycle of every handshake on the five channels (Python per cycle: short tests only)."""
        cocotb.start_soon(self._monitor())

    async def _monitor(self) -> None:
        d = self.dut
        while True:
            await FallingEdge(d.clk)
            self.cycle += 1
            if d.s_axi_arvalid.value == 1 and d.s_axi_arready.value == 1:
                self.log["ar"].append(self.cycle)
            if d.s_axi_rvalid.value == 1 and d.s_axi_rready.value == 1:
                self.log["r"].append(self.cycle)
                if d.s_axi_rlast.value == 1:
                    self.log["rlast"].append(self.cycle)
            if d.s_axi_awvalid.value == 1 and d.s_axi_awready.value == 1:
                self.log["aw"].append(self.cycle)
            if d.s_axi_wvalid.value == 1 and d.s_axi_wready.value == 1:
                self.log["w"].append(self.cycle)
                if d.s_axi_wlast.value == 1:
                    self.log["wlast"].append(self.cycle)
            if d.s_axi_bvalid.value == 1 and d.s_axi_bready.value == 1:
                self.log["b"].append(self.cycle)

    def clear_log(self) -> None:
        for v in self.log.values():
            v.clear()

    def beats(self, addr: int, length: int, size: int) -> int:
        """AXI beats for `length` bytes from `addr` with 2**size-byte beats (the first may be short)."""
        n = 1 << size
        return (length + addr % n + n - 1) // n

    def random_region(self, max_len: int, taken: list[tuple[int, int]]) -> tuple[int, int]:
        """A random (addr, length) not overlapping any of `taken`."""
        while True:
            length = int(self.rng.choice([self.rng.integers(1, 17), self.rng.integers(17, 600), self.rng.integers(600, max_len + 1)]))
            addr = int(self.rng.integers(0, self.mem_bytes - length))
            if all(addr + length <= a or a + n <= addr for a, n in taken):
                return addr, length


async def _gather(*coros: Any) -> list[Any]:
    tasks = [cocotb.start_soon(c) for c in coros]
    return [await t for t in tasks]


# ---------------------------------------------------------------------------------------------


@cocotb.test()
async def random_traffic(dut: Any) -> None:
    """Random writes and reads (lengths 1..4 KiB, unaligned, narrow sizes), several in flight, vs numpy."""
    b = Bench(dut)
    m = b.axi_master()
    await b.start()
    exp_wr_beats = exp_wr_bytes = exp_rd_beats = exp_rd_bytes = 0
    for _round in range(12):
        taken: list[tuple[int, int]] = []
        writes = []
        for _ in range(int(b.rng.integers(1, 5))):
            addr, length = b.random_region(4096, taken)
            taken.append((addr, length))
            size = int(b.rng.integers(0, b.size_max + 1))
            data = b.rng.integers(0, 256, length, dtype=np.uint8)
            writes.append((addr, data, size))
        resps = await _gather(*(m.write(a, d.tobytes(), size=s) for a, d, s in writes))
        for (a, d, s), r in zip(writes, resps):
            assert r.resp == OKAY, f"write at 0x{a:x} answered {r.resp}"
            b.model[a : a + d.size] = d
            exp_wr_beats += b.beats(a, d.size, s)
            exp_wr_bytes += d.size
        reads = []
        for _ in range(int(b.rng.integers(1, 5))):
            if b.rng.random() < 0.5:  # re-read part of something just written
                a, d, _s = writes[int(b.rng.integers(0, len(writes)))]
                lo = int(b.rng.integers(0, d.size))
                addr, length = a + lo, int(b.rng.integers(1, d.size - lo + 1))
            else:
                addr, length = b.random_region(4096, [])
            reads.append((addr, length, int(b.rng.integers(0, b.size_max + 1))))
        got = await _gather(*(m.read(a, n, size=s) for a, n, s in reads))
        for (a, n, s), r in zip(reads, got):
            assert r.resp == OKAY
            assert bytes(r.data) == b.model[a : a + n].tobytes(), f"read 0x{a:x}+{n} size {s} differs"
            beats = b.beats(a, n, s)
            exp_rd_beats += beats
            exp_rd_bytes += beats * (1 << s) - a % (1 << s)  # active lanes: only the first beat is short
    c = b.port.counters()
    assert c.err_flags == 0, f"model flagged a protocol error: {c.err_flags:#x}"
    assert (c.wr_beats, c.wr_bytes) == (exp_wr_beats, exp_wr_bytes)
    assert (c.rd_beats, c.rd_bytes) == (exp_rd_beats, exp_rd_bytes)


@cocotb.test()
async def bulk_load_axi_read(dut: Any) -> None:
    """Bulk-load regions in one strobe, read them back with AXI bursts; words outside them are untouched."""
    b = Bench(dut)
    m = b.axi_master()
    await b.start()
    outer_addr = int(b.rng.integers(0, b.mem_bytes // 2 // b.wb)) * b.wb
    outer = b.rng.integers(0, 256, 64 * 1024, dtype=np.uint8)
    await b.port.load(outer_addr, outer)
    inner_off = int(b.rng.integers(1, 1024)) * b.wb
    inner = b.rng.integers(0, 256, 8 * 1024, dtype=np.uint8)
    far_addr = b.mem_bytes - 4096
    far = b.rng.integers(0, 256, 4096, dtype=np.uint8)
    await b.port.load_regions([(outer_addr + inner_off, inner), (far_addr, far)])
    b.model[outer_addr : outer_addr + outer.size] = outer
    b.model[outer_addr + inner_off : outer_addr + inner_off + inner.size] = inner
    b.model[far_addr:] = far
    span = (outer_addr - 256, outer.size + 512)
    for addr, n in [(max(span[0], 0), span[1]), (far_addr - 100, 4196), (outer_addr + inner_off - 3, 77)]:
        r = await m.read(addr, n)
        assert bytes(r.data) == b.model[addr : addr + n].tobytes(), f"read 0x{addr:x}+{n} differs from what was loaded"


@cocotb.test()
async def axi_write_dump(dut: Any) -> None:
    """AXI writes (random sizes, unaligned), then one bulk dump; compared with numpy, also at odd offsets."""
    b = Bench(dut)
    m = b.axi_master()
    await b.start()
    base = b.mem_bytes // 4
    taken: list[tuple[int, int]] = []
    for _ in range(20):
        addr, length = b.random_region(3000, taken)
        addr = base + addr % (64 * 1024)
        if any(not (addr + length <= a or a + n <= addr) for a, n in taken):
            continue
        taken.append((addr, length))
        data = b.rng.integers(0, 256, length, dtype=np.uint8)
        r = await m.write(addr, data.tobytes(), size=int(b.rng.integers(0, b.size_max + 1)))
        assert r.resp == OKAY
        b.model[addr : addr + length] = data
    got = await b.port.dump(base, 72 * 1024)
    assert np.array_equal(got, b.model[base : base + 72 * 1024])
    got = await b.port.dump(base + 13, 1001)
    assert np.array_equal(got, b.model[base + 13 : base + 1014])


@cocotb.test()
async def latency(dut: Any) -> None:
    """First-beat delay of reads and B delay of writes equal the model's latencies, also with several in flight."""
    rl, wl = _env("DRAM_READ_LATENCY", 0), _env("DRAM_WRITE_LATENCY", 0)
    assert rl >= 3 and wl >= 2, "pytest passes the latencies under test"
    b = Bench(dut)
    m = b.axi_master()
    await b.start()
    b.start_monitor()
    # one beat at a time
    for i in range(4):
        b.clear_log()
        await m.read(0x1000 + 64 * i, b.wb)
        assert b.log["r"][0] - b.log["ar"][0] == rl, f"read latency {b.log['r'][0] - b.log['ar'][0]} != {rl}"
        b.clear_log()
        await m.write(0x2000 + 64 * i, bytes(b.wb))
        assert b.log["b"][0] - b.log["wlast"][0] == wl, f"write latency {b.log['b'][0] - b.log['wlast'][0]} != {wl}"
    # a 16-beat burst: first beat after the latency, then one beat per cycle
    b.clear_log()
    await m.read(0x3000, 16 * b.wb)
    assert b.log["r"][0] - b.log["ar"][0] == rl
    assert b.log["r"][-1] - b.log["r"][0] == 15
    # several single-beat reads in flight: each answered rl cycles after its own AR
    b.clear_log()
    await _gather(*(m.read(0x4000 + 256 * k, b.wb) for k in range(4)))
    ar, r = b.log["ar"], b.log["r"]
    assert len(ar) == len(r) == 4
    assert [y - x for x, y in zip(ar, r)] == [rl] * 4, f"AR at {ar}, R at {r}"
    if rl > 12:
        assert ar[-1] < r[0], "all four reads should be accepted before the first answer"
    b.clear_log()
    await _gather(*(m.write(0x5000 + 256 * k, bytes(b.wb)) for k in range(4)))
    assert [y - x for x, y in zip(b.log["wlast"], b.log["b"])] == [wl] * 4


@cocotb.test()
async def bandwidth(dut: Any) -> None:
    """Long reads, long writes and both at once move bw_num/bw_den bytes per cycle (or 1 beat/cycle unlimited)."""
    num, den = _env("DRAM_BW_NUM", 0), _env("DRAM_BW_DEN", 1)
    b = Bench(dut)
    m = b.axi_master()
    await b.start()
    b.start_monitor()
    rate = min(num / den, b.wb) if num else b.wb  # bytes per cycle one channel can get
    n = 32 * 1024

    def measured(ch: str) -> float:
        cyc = b.log[ch][-1] - b.log[ch][0] + 1
        return len(b.log[ch]) * b.wb / cyc

    b.clear_log()
    await m.read(0x10000, n)
    got = measured("r")
    assert abs(got - rate) <= 0.03 * rate, f"read: {got:.3f} B/cycle, expected {rate:.3f}"
    b.clear_log()
    await m.write(0x20000, bytes(n))
    got = measured("w")
    assert abs(got - rate) <= 0.03 * rate, f"write: {got:.3f} B/cycle, expected {rate:.3f}"
    # both at once share the budget
    b.clear_log()
    await _gather(m.read(0x30000, n), m.write(0x40000, bytes(n)))
    first = max(b.log["r"][0], b.log["w"][0])
    last = min(b.log["r"][-1], b.log["w"][-1])  # the window where both were streaming
    beats = sum(1 for c in b.log["r"] if first <= c <= last) + sum(1 for c in b.log["w"] if first <= c <= last)
    both = min(num / den, 2 * b.wb) if num else 2 * b.wb
    got = beats * b.wb / (last - first + 1)
    assert abs(got - both) <= 0.05 * both, f"read+write: {got:.3f} B/cycle, expected {both:.3f}"


@cocotb.test()
async def traffic_generator(dut: Any) -> None:
    """The HDL generator streams against the model with no Python per cycle: data checks out, counts agree, bandwidth holds."""
    num, den = _env("DRAM_BW_NUM", 0), _env("DRAM_BW_DEN", 1)
    b = Bench(dut)
    await b.start()
    base, size = 0x40000, 0x10000
    pattern = dram.traffic_pattern(base, size, b.wb)
    await b.port.load(base, pattern)
    dut.tg_enable.value = 1
    burst = 4096 // b.wb if b.wb * 16 > 4096 else 16
    res = await run_traffic(dut, dut.clk, cycles=20000, burst_len=burst, base=base, mask=size - 1)
    dut.tg_enable.value = 0
    c = b.port.counters()
    assert res.rd_errors == 0, f"{res.rd_errors} read beats came back wrong"
    assert res.rd_beats > 0 and res.wr_beats > 0
    assert res.rd_beats % burst == 0 and res.wr_beats % burst == 0
    assert (c.rd_beats, c.wr_beats) == (res.rd_beats, res.wr_beats)
    assert c.rd_bytes == res.rd_beats * b.wb and c.wr_bytes == res.wr_beats * b.wb
    assert c.err_flags == 0
    moved = (res.rd_beats + res.wr_beats) * b.wb / res.busy_cycles
    expect = min(num / den, 2 * b.wb) if num else 2 * b.wb
    assert abs(moved - expect) <= 0.05 * expect, f"generator moved {moved:.3f} B/cycle, expected {expect:.3f}"
    assert np.array_equal(await b.port.dump(base, size), pattern), "writes changed the pattern"
    dut._log.info("traffic generator: %d cycles in %.3f s = %.0f cycles/s", res.busy_cycles, res.wall_s, res.cycles_per_s)


# ------------------------------------------------------------------ raw AXI, driven by hand


class Raw:
    """A minimal hand-driven AXI master: bursts cocotbext-axi does not make (sparse strobes, FIXED, WRAP, errors)."""

    def __init__(self, b: Bench) -> None:
        self.b = b
        self.d = b.dut

    async def _handshake(self, ch: str) -> None:
        valid, ready = getattr(self.d, f"s_axi_{ch}valid"), getattr(self.d, f"s_axi_{ch}ready")
        valid.value = 1
        while True:
            await FallingEdge(self.d.clk)
            if ready.value == 1:
                break
        await RisingEdge(self.d.clk)
        valid.value = 0

    async def write(self, addr: int, beats: list[tuple[int, int]], size: int, burst: int, wlast_at: int | None = None) -> int:
        d = self.d
        d.s_axi_awid.value = 0
        d.s_axi_awaddr.value = addr
        d.s_axi_awlen.value = len(beats) - 1
        d.s_axi_awsize.value = size
        d.s_axi_awburst.value = burst
        await self._handshake("aw")
        last = len(beats) - 1 if wlast_at is None else wlast_at
        for i, (data, strb) in enumerate(beats):
            d.s_axi_wdata.value = data
            d.s_axi_wstrb.value = strb
            d.s_axi_wlast.value = int(i == last)
            await self._handshake("w")
        d.s_axi_bready.value = 1
        while True:
            await FallingEdge(d.clk)
            if d.s_axi_bvalid.value == 1:
                resp = int(d.s_axi_bresp.value)
                break
        await RisingEdge(d.clk)
        d.s_axi_bready.value = 0
        return resp

    async def read(self, addr: int, nbeats: int, size: int, burst: int) -> list[tuple[int, int, int]]:
        d = self.d
        d.s_axi_arid.value = 0
        d.s_axi_araddr.value = addr
        d.s_axi_arlen.value = nbeats - 1
        d.s_axi_arsize.value = size
        d.s_axi_arburst.value = burst
        await self._handshake("ar")
        d.s_axi_rready.value = 1
        out = []
        while True:
            await FallingEdge(d.clk)
            if d.s_axi_rvalid.value == 1:
                out.append((int(d.s_axi_rdata.value), int(d.s_axi_rresp.value), int(d.s_axi_rlast.value)))
                if out[-1][2]:
                    break
        await RisingEdge(d.clk)
        d.s_axi_rready.value = 0
        return out


def _word(data: np.ndarray) -> int:
    return int.from_bytes(data.tobytes(), "little")


@cocotb.test()
async def raw_bursts(dut: Any) -> None:
    """Sparse strobes, narrow strobed beats, FIXED and WRAP bursts, checked against AXI's address rules."""
    b = Bench(dut)
    await b.start()
    raw = Raw(b)
    wb, full = b.wb, b.size_max
    base = 0x8000
    init = b.rng.integers(0, 256, 4096, dtype=np.uint8)
    await b.port.load(base, init)
    b.model[base : base + 4096] = init
    # 8 full beats, random strobes (holes included)
    beats = []
    for i in range(8):
        data = b.rng.integers(0, 256, wb, dtype=np.uint8)
        keep = b.rng.random(wb) < 0.5
        strb = sum(1 << k for k in range(wb) if keep[k])
        beats.append((_word(data), strb))
        b.model[base + i * wb : base + (i + 1) * wb][keep] = data[keep]
    assert await raw.write(base, beats, full, 1) == OKAY
    # narrow: 2-byte beats from an odd-halfword address, each strobing only its own lanes
    addr = base + 0x200 + 2
    beats = []
    for i in range(6):
        a = addr + 2 * i
        lane = a % wb
        v = b.rng.integers(0, 256, 2, dtype=np.uint8)
        beats.append((int(v[0]) << (8 * lane) | int(v[1]) << (8 * (lane + 1)), 0b11 << lane))
        b.model[a : a + 2] = v
    assert await raw.write(addr, beats, 1, 1) == OKAY
    # FIXED: four beats to one word, the last one stays
    addr = base + 0x400
    vals = [b.rng.integers(0, 256, wb, dtype=np.uint8) for _ in range(4)]
    assert await raw.write(addr, [(_word(v), (1 << wb) - 1) for v in vals], full, 0) == OKAY
    b.model[addr : addr + wb] = vals[-1]
    got = await raw.read(addr, 3, full, 0)
    assert [g[0] for g in got] == [_word(vals[-1])] * 3 and [g[2] for g in got] == [0, 0, 1]
    # WRAP: 4 beats starting at word 2 of an aligned 4-word block visit words 2, 3, 0, 1
    block = base + 0x800
    got = await raw.read(block + 2 * wb, 4, full, 2)
    order = [2, 3, 0, 1]
    assert [g[0] for g in got] == [_word(b.model[block + k * wb : block + (k + 1) * wb]) for k in order]
    vals = [b.rng.integers(0, 256, wb, dtype=np.uint8) for _ in range(4)]
    assert await raw.write(block + 1 * wb, [(_word(v), (1 << wb) - 1) for v in vals], full, 2) == OKAY
    for v, k in zip(vals, [1, 2, 3, 0]):
        b.model[block + k * wb : block + (k + 1) * wb] = v
    assert np.array_equal(await b.port.dump(base, 4096), b.model[base : base + 4096])
    assert b.port.counters().err_flags == 0


@cocotb.test()
async def protocol_errors(dut: Any) -> None:
    """Each misuse raises its own err_flags bit; out-of-range accesses answer DECERR and change nothing."""
    b = Bench(dut)
    await b.start()
    raw = Raw(b)
    wb, full = b.wb, b.size_max

    async def flags_after(coro: Any) -> tuple[Any, int]:
        """Reset (flags are sticky), run one access, return what it raised."""
        dut.rst.value = 1
        await ClockCycles(dut.clk, 2)
        dut.rst.value = 0
        await RisingEdge(dut.clk)
        assert b.port.counters().err_flags == 0, "reset clears the flags"
        res = await coro
        await ClockCycles(dut.clk, 2)
        return res, b.port.counters().err_flags

    res, f = await flags_after(raw.read(0x1000 - wb, 2, full, 1))  # crosses 4 KiB
    assert f == 1 << 0, f"{f:#x}"
    res, f = await flags_after(raw.write(0x3000 - wb, [(0, 0), (0, 0)], full, 1))
    assert f == 1 << 1 and res == OKAY, f"{f:#x}"
    if full < 7:
        res, f = await flags_after(raw.read(0x100, 1, full + 1, 1))  # size wider than the bus
        assert f & (1 << 2), f"{f:#x}"
    res, f = await flags_after(raw.read(0x100, 1, full, 3))  # reserved burst type
    assert f == 1 << 3, f"{f:#x}"
    res, f = await flags_after(raw.read(0x100, 3, full, 2))  # WRAP of 3 beats
    assert f == 1 << 3, f"{f:#x}"
    res, f = await flags_after(raw.write(0x200, [(0, 0), (0, 0)], full, 1, wlast_at=0))  # early WLAST
    assert f == 1 << 4, f"{f:#x}"
    res, f = await flags_after(raw.read(b.mem_bytes, 2, full, 1))
    assert f == 1 << 5 and [r[1] for r in res] == [DECERR, DECERR] and [r[0] for r in res] == [0, 0], f"{f:#x} {res}"
    before = await b.port.dump(0, 64)
    res, f = await flags_after(raw.write(b.mem_bytes + 64, [(-1 & ((1 << 8 * wb) - 1), (1 << wb) - 1)], full, 1))
    assert f == 1 << 6 and res == DECERR, f"{f:#x} {res}"
    assert np.array_equal(await b.port.dump(0, 64), before), "an out-of-range write must not wrap around"
    res, f = await flags_after(raw.write(0x301, [(0xAB00, 0b11)], 0, 1))  # 1-byte beat strobing two lanes
    assert f == 1 << 7, f"{f:#x}"
    assert b.port.counters().wr_beats == 1
    res, f = await flags_after(ClockCycles(dut.clk, 1))
    assert b.port.counters() == DramCounters(0, 0, 0, 0, 0), "reset clears counters and flags"


@cocotb.test()
async def must_fail(dut: Any) -> None:
    """Fails on purpose: proves that a failing cocotb test fails the pytest that runs it."""
    b = Bench(dut)
    await b.start()
    assert b.port.counters().rd_beats == 12345, "deliberate failure"
