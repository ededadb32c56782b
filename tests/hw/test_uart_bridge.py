"""The ECP5 system (engine + AXI4 RAM + UART host bridge) in the Amaranth simulator.

A host model speaks the bridge protocol (codenet.hw.uart) on the serial lines, 8 clock
cycles per bit: register and RAM access, the STATUS byte, an unknown command, a request cut
short (the timeout drops it), and one CONV1X1 job uploaded, started, polled and read back
through the bridge alone, compared with codenet.sw.golden.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import simkit

from codenet.hw import uart as U
from codenet.hw.system import EngineSystem
from codenet.sw import engine as E
from codenet.sw import golden

CFG = E.preset("micro")  # the bitstream test's engine
DIV = 8  # cycles per bit
TIMEOUT = 400  # cycles of silence that drop a request
RAM = 4096
REG = {r.name: r.offset for r in E.register_map(CFG)}


class Host:
    """The PC side: bytes out on uart_rx, bytes in from uart_tx (a free-running receiver)."""

    def __init__(self, dut):
        self.dut = dut
        self.rx_bytes: list[int] = []
        self.stopped = False

    async def send(self, ctx, data: bytes, gap: int = 0):
        for b in data:
            bits = [0] + [(b >> i) & 1 for i in range(8)] + [1]
            for bit in bits:
                ctx.set(self.dut.uart_rx, bit)
                await ctx.tick().repeat(DIV)
            if gap:
                await ctx.tick().repeat(gap)

    async def receiver(self, ctx):
        tx = self.dut.uart_tx
        while not self.stopped:
            if ctx.get(tx):
                await ctx.tick()
                continue
            await ctx.tick().repeat(DIV + DIV // 2)  # middle of bit 0
            b = 0
            for i in range(8):
                b |= ctx.get(tx) << i
                await ctx.tick().repeat(DIV)
            assert ctx.get(tx) == 1, "stop bit"
            self.rx_bytes.append(b)

    async def recv(self, ctx, n: int, limit: int = 200_000) -> bytes:
        for _ in range(limit):
            if len(self.rx_bytes) >= n:
                out = bytes(self.rx_bytes[:n])
                del self.rx_bytes[:n]
                return out
            await ctx.tick()
        raise AssertionError(f"no response: wanted {n} bytes, have {self.rx_bytes}")

    async def reg_write(self, ctx, addr: int, value: int):
        await self.send(ctx, U.reg_write(addr, value))
        assert await self.recv(ctx, 1) == bytes([U.REG_WRITE])

    async def reg_read(self, ctx, addr: int) -> int:
        await self.send(ctx, U.reg_read(addr))
        r = await self.recv(ctx, 5)
        assert r[0] == U.REG_READ
        return int.from_bytes(r[1:], "little")

    async def mem_write(self, ctx, addr: int, data: bytes):
        await self.send(ctx, U.mem_write(addr, data))
        assert await self.recv(ctx, 1) == bytes([U.MEM_WRITE])

    async def mem_read(self, ctx, addr: int, n: int) -> bytes:
        await self.send(ctx, U.mem_read(addr, n))
        r = await self.recv(ctx, n + 1)
        assert r[0] == U.MEM_READ
        return r[1:]

    async def status(self, ctx) -> int:
        await self.send(ctx, U.status())
        r = await self.recv(ctx, 2)
        assert r[0] == U.STATUS
        return r[1]


def conv_job(rng):
    """A CONV1X1 (3 x 2 x 4 uint8 -> 4 channels, ReLU): ({address: bytes} to upload, program, out view, want)."""
    x = rng.integers(0, 256, size=(3, 2, 4))
    w = rng.integers(-8, 8, size=(4, 1, 1, 4))
    bias, mult = rng.integers(-800, 800, size=4), rng.integers(2**13, 2**16, size=4)
    want = golden.requantize(golden.conv2d(x[None], w, bias)[0], mult, 14, True)
    assert want.any()
    inp, out = E.View.dense(0x400, 3, 2, 4), E.View.dense(0x480, 3, 2, 4)
    blobs = {
        inp.addr: np.asarray(x, np.uint8).tobytes(),
        0x500: bytes(E.pack_weights(E.Op.CONV1X1, w, CFG)),
        0x580: bytes(E.pack_params(bias, mult, CFG)),
    }
    desc = E.Descriptor(E.Op.CONV1X1, inp, out, relu=True, shift=14, weight_addr=0x500, param_addr=0x580)
    assert E.check_descriptor(desc, CFG)[0] == E.ErrorCode.NONE
    prog = E.encode_program([desc, E.Descriptor(E.Op.END)])
    return blobs, prog, out, want


@pytest.fixture(scope="module")
def session():
    dut = EngineSystem(CFG, RAM, DIV, TIMEOUT)
    host = Host(dut)
    res: dict = {}
    prng = random.Random(1)
    rng = np.random.default_rng(2)

    async def driver(ctx):
        ctx.set(dut.uart_rx, 1)
        await ctx.tick().repeat(20)
        res["status0"] = await host.status(ctx)
        res["id"] = await host.reg_read(ctx, REG["ID"])
        res["cfg_lanes"] = await host.reg_read(ctx, REG["CFG_LANES"])
        await host.reg_write(ctx, REG["WIN2_BASE"], 0x12345000)
        res["win2"] = await host.reg_read(ctx, REG["WIN2_BASE"])
        await host.reg_write(ctx, REG["PROG_LEN"], 0xDEADBEEF)
        res["prog_len"] = await host.reg_read(ctx, REG["PROG_LEN"])
        # RAM: an unaligned run across words, then a few bytes around it
        data = bytes(prng.randrange(256) for _ in range(23))
        await host.mem_write(ctx, 0x0FD, data)
        res["mem"] = (data, await host.mem_read(ctx, 0x0FD, 23))
        res["mem_edges"] = await host.mem_read(ctx, 0x0FC, 1) + await host.mem_read(ctx, 0x0FD + 23, 1)
        res["mem_empty"] = await host.mem_read(ctx, 0x10, 0)
        await host.mem_write(ctx, 0x200, b"")
        # the RAM repeats every RAM bytes
        res["alias"] = await host.mem_read(ctx, 0x0FD + RAM, 4)
        # unknown command, then a request cut short: dropped after TIMEOUT cycles of silence
        await host.send(ctx, b"\x77")
        res["unknown"] = await host.recv(ctx, 1)
        await host.send(ctx, U.reg_write(REG["PROG_ADDR"], 0x55)[:3])
        await ctx.tick().repeat(2 * TIMEOUT)
        res["after_timeout"] = await host.reg_read(ctx, REG["PROG_ADDR"])
        await host.send(ctx, bytes([U.NOP, U.NOP]))
        res["after_nop"] = await host.status(ctx)
        # ---- one engine job through the bridge alone
        blobs, prog, out, want = conv_job(rng)
        for addr, blob in blobs.items():
            await host.mem_write(ctx, addr, blob)
        await host.mem_write(ctx, 0x100, prog)
        await host.reg_write(ctx, REG["WIN0_BASE"], 0)
        await host.reg_write(ctx, REG["WIN0_SIZE"], RAM)
        await host.reg_write(ctx, REG["WIN0_CTRL"], 0b11)
        await host.reg_write(ctx, REG["PROG_ADDR"], 0x100)
        await host.reg_write(ctx, REG["PROG_LEN"], 2)
        await host.reg_write(ctx, REG["IRQ_STATUS"], 0b11)
        await host.reg_write(ctx, REG["CTRL"], 0b101)  # IRQ_EN | START
        polls = 0
        while not (await host.status(ctx)) & 1:
            polls += 1
            assert polls < 100
        res["irq_line"] = ctx.get(dut.irq)
        res["job_status"] = await host.reg_read(ctx, REG["STATUS"])
        res["job_irq"] = await host.reg_read(ctx, REG["IRQ_STATUS"])
        got = await host.mem_read(ctx, out.addr, out.h * out.w * out.c)
        res["job"] = (np.frombuffer(got, np.uint8).reshape(out.h, out.w, out.c), np.asarray(want).astype(np.int64) & 0xFF)
        res["untouched"] = (await host.mem_read(ctx, 0x400, len(blobs[0x400])), blobs[0x400])
        await host.reg_write(ctx, REG["IRQ_STATUS"], 0b11)
        res["status_cleared"] = await host.status(ctx)
        host.stopped = True

    simkit.run(dut, driver, host.receiver, deadline_cycles=600_000, chunk=256)
    return res


def test_status_reports_the_interrupt_line(session):
    assert session["status0"] == 0 and session["after_nop"] == 0 and session["status_cleared"] == 0


def test_register_reads_and_writes(session):
    assert session["id"] == E.ENGINE_ID
    assert session["cfg_lanes"] & 0xFF == CFG.lanes
    assert session["win2"] == 0x12345000
    assert session["prog_len"] == 0xDEADBEEF


def test_ram_reads_and_writes_bytes(session):
    data, back = session["mem"]
    assert back == data
    assert session["mem_edges"] == b"\x00\x00"
    assert session["mem_empty"] == b""
    assert session["alias"] == data[:4]


def test_unknown_command_and_timeout(session):
    assert session["unknown"] == bytes([U.ERROR])
    assert session["after_timeout"] == 0  # the cut-short PROG_ADDR write was dropped


def test_conv1x1_job_matches_golden(session):
    st = session["job_status"]
    assert st & 0b11 == 0b10 and (st >> 8) & 0xFF == 0, hex(st)  # DONE, not BUSY, no error
    assert session["job_irq"] == 0b01 and session["irq_line"] == 1
    got, want = session["job"]
    assert np.array_equal(got.astype(np.int64), want)
    got_in, img = session["untouched"]
    assert got_in == img


def test_frames_and_divisor():
    assert U.reg_write(0x14, 0x01020304) == bytes([1, 0x14, 0, 4, 3, 2, 1])
    assert U.mem_read(0x10000, 3) == bytes([4, 0, 0, 1, 0, 3, 0])
    assert U.mem_write(5, b"ab")[-2:] == b"ab" and len(U.mem_write(5, b"ab")) == 9
    with pytest.raises(ValueError, match="65535"):
        U.mem_write(0, bytes(70000))
    assert U.baud_divisor(50e6, 115200) == 434 and U.baud_divisor(50e6, 1_000_000) == 50
    with pytest.raises(ValueError, match="too fast"):
        U.baud_divisor(10e6, 3_000_000)


# --------------------------------------------------------------------------- the RAM alone, under back-pressure


def test_axi_ram_bursts_with_backpressure_and_host_bytes():
    from codenet.hw.axi_ram import AxiRam

    dut = AxiRam(256, 32, addr_bits=16, id_bits=2)
    bus = dut.axi
    prng = random.Random(4)
    model = bytearray(256)
    host_model = {}
    log = {"bursts": 0, "host": 0}
    stop = []

    async def master(ctx):
        for _ in range(40):
            words, addr = prng.randint(1, 8), 4 * prng.randrange(0, 24)  # bursts stay below 0x80, the host above
            data = [prng.getrandbits(32) for _ in range(words)]
            strb = [prng.choice([0xF, 0xF, 0x5, 0x8, 0x0]) for _ in range(words)]
            ctx.set(bus.awaddr, addr)
            ctx.set(bus.awlen, words - 1)
            ctx.set(bus.awvalid, 1)
            await ctx.tick().until(bus.awready)
            ctx.set(bus.awvalid, 0)
            for k in range(words):
                while prng.random() < 0.3:
                    ctx.set(bus.wvalid, 0)
                    await ctx.tick()
                ctx.set(bus.wdata, data[k])
                ctx.set(bus.wstrb, strb[k])
                ctx.set(bus.wlast, k == words - 1)
                ctx.set(bus.wvalid, 1)
                await ctx.tick().until(bus.wready)
                for b in range(4):
                    if strb[k] >> b & 1 and (addr + 4 * k + b) < 0x80:
                        model[addr + 4 * k + b] = data[k] >> (8 * b) & 0xFF
            ctx.set(bus.wvalid, 0)
            ctx.set(bus.bready, 1)
            await ctx.tick().until(bus.bvalid)
            ctx.set(bus.bready, 0)
            # read the same burst back, with random R back-pressure
            ctx.set(bus.araddr, addr)
            ctx.set(bus.arlen, words - 1)
            ctx.set(bus.arvalid, 1)
            await ctx.tick().until(bus.arready)
            ctx.set(bus.arvalid, 0)
            got = []
            while len(got) < words:
                ready = prng.random() < 0.6
                ctx.set(bus.rready, ready)
                _, _, valid, rdata, rlast = await ctx.tick().sample(bus.rvalid, bus.rdata, bus.rlast)
                if valid and ready:
                    got.append(rdata)
                    assert bool(rlast) == (len(got) == words)
            ctx.set(bus.rready, 0)
            for k, word in enumerate(got):
                for b in range(4):
                    a = addr + 4 * k + b
                    if a < 0x80:
                        assert word >> (8 * b) & 0xFF == model[a], (hex(a), log)
            log["bursts"] += 1
        stop.append(1)

    async def host(ctx):
        while not stop:
            a = 0x80 + prng.randrange(0x80)
            if prng.random() < 0.5 or a not in host_model:
                v = prng.randrange(256)
                ctx.set(dut.host_addr, a)
                ctx.set(dut.host_wdata, v)
                ctx.set(dut.host_we, 1)
                await ctx.tick()
                ctx.set(dut.host_we, 0)
                host_model[a] = v
            else:
                ctx.set(dut.host_addr, a)
                ctx.set(dut.host_re, 1)
                await ctx.tick().until(dut.host_r_ready)
                ctx.set(dut.host_re, 0)
                _, _, v = await ctx.tick().sample(dut.host_rdata)
                assert v == host_model[a], hex(a)
                log["host"] += 1
            await ctx.tick().repeat(prng.randint(1, 3))

    simkit.run(dut, master, host, deadline_cycles=50_000)
    assert log["bursts"] == 40 and log["host"] > 20
