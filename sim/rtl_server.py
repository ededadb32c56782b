"""Simulator side of the ``rtl`` backend: one cocotb test that serves a host over a local socket.

Runs inside the Verilator simulation of ``sim/hdl/rtl_top.sv`` (started by
:mod:`codenet.sim.rtl_backend`). It connects to the host's Unix socket (path in
``CODENET_RTL_SOCKET``), then answers requests until told to quit:

- register reads and writes go through cocotbext-axi's ``AxiLiteMaster`` on ``s_axil_*``
  (a few clock cycles each);
- memory moves in bulk through the DRAM model's hex load / dump port (:class:`DramPort`);
  partial words at the edges of a write are read first, so a write changes exactly its bytes;
- ``wait`` lets the engine run until ``irq`` (or DONE) with nothing in Python per cycle: it
  awaits the interrupt's rising edge or a timer of many thousand cycles, whichever comes
  first, and checks the host's wall-clock deadline between timers;
- ``reset`` pulses the system reset (engine and DRAM model queues; the memory keeps its
  contents), ``stall`` holds the interconnect (the harness's ``bus_stall``).

While the server waits for the next request the simulation stands still: the socket read
blocks the simulator's only thread, so simulated time passes only inside a request.
"""

from __future__ import annotations

import os
import socket
import time
import traceback

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer, with_timeout
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from codenet.sim.dram_port import DramPort
from codenet.sim.rtl_backend import CLOCK_PERIOD_NS, recv_msg, send_msg
from codenet.sw import engine as E

#: cycles a register access may take before it counts as a hung register port
REG_TIMEOUT_CYCLES = 10_000


class Server:
    def __init__(self, dut, word_bytes: int, base_addr: int):
        self.dut = dut
        self.word_bytes = word_bytes
        self.port = DramPort(dut, dut.clk, word_bytes, base_addr=base_addr)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        self.status_off = E.reg("STATUS").offset

    # ------------------------------------------------------------------ helpers
    def cycle(self) -> int:
        return int(self.dut.cycle.value)

    async def _reg_read(self, offset: int) -> int:
        return int(await with_timeout(self.axil.read_dword(offset), REG_TIMEOUT_CYCLES * CLOCK_PERIOD_NS, "ns"))

    async def _reg_write(self, offset: int, value: int) -> None:
        await with_timeout(self.axil.write_dword(offset, value & 0xFFFFFFFF), REG_TIMEOUT_CYCLES * CLOCK_PERIOD_NS, "ns")

    # ------------------------------------------------------------------ requests
    async def op_read32(self, offset: int) -> int:
        return await self._reg_read(offset)

    async def op_read_many(self, offsets: list[int]) -> list[int]:
        return [await self._reg_read(o) for o in offsets]

    async def op_write32(self, offset: int, value: int) -> None:
        await self._reg_write(offset, value)

    async def op_write_many(self, pairs: list[tuple[int, int]]) -> None:
        for o, v in pairs:
            await self._reg_write(o, v)

    async def op_write(self, addr: int, data: bytes) -> None:
        """Put `data` at bus address `addr`: whole words by one bulk load, edge words merged first."""
        wb = self.word_bytes
        b = np.frombuffer(data, np.uint8)
        if b.size == 0:
            return
        lo = addr - addr % wb
        hi = -(-(addr + b.size) // wb) * wb
        if lo != addr or hi != addr + b.size:
            img = np.empty(hi - lo, np.uint8)
            img[:wb] = await self.port.dump(lo, wb)
            img[-wb:] = await self.port.dump(hi - wb, wb)
            img[addr - lo : addr - lo + b.size] = b
            b = img
        await self.port.load(lo, b)

    async def op_fill(self, addr: int, nbytes: int, seed: int) -> None:
        """Seeded garbage over [addr, addr + nbytes) (word-aligned): uninitialised DRAM."""
        rng = np.random.default_rng(seed)
        await self.port.load(addr, rng.integers(0, 256, nbytes, dtype=np.uint8))

    async def op_dump(self, addr: int, nbytes: int) -> bytes:
        return (await self.port.dump(addr, nbytes)).tobytes()

    async def op_wait(self, timeout_s: float, max_cycles: int | None, chunk: int) -> dict:
        """Run until irq (or STATUS DONE with BUSY low), the wall-clock timeout or max_cycles."""
        t0, c0 = time.monotonic(), self.cycle()
        done = bool(int(self.dut.irq.value))
        irq_edge = RisingEdge(self.dut.irq)
        while not done:
            if max_cycles is not None:
                left = max_cycles - (self.cycle() - c0)
                if left <= 0:
                    break
                n = min(chunk, left)
            else:
                n = chunk
            fired = await First(irq_edge, Timer(n * CLOCK_PERIOD_NS, "ns"))
            if fired is irq_edge or int(self.dut.irq.value):
                done = True
                break
            st = await self._reg_read(self.status_off)  # also covers a run started without IRQ_EN
            if st & 0b10 and not st & 0b01:
                done = True
                break
            if time.monotonic() - t0 >= timeout_s:
                break
        return {"done": done, "cycles": self.cycle() - c0, "seconds": time.monotonic() - t0}

    async def op_reset(self, cycles: int = 8) -> None:
        """System reset: engine, its register file and the DRAM model's queues; memory is kept."""
        self.dut.bus_stall.value = 0
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def op_stall(self, on: bool) -> None:
        self.dut.bus_stall.value = int(bool(on))
        await ClockCycles(self.dut.clk, 2)  # rtl_top registers bus_stall: in force from the second edge

    async def op_dram_counters(self) -> dict:
        c = self.port.counters()
        return {k: getattr(c, k) for k in ("rd_beats", "wr_beats", "rd_bytes", "wr_bytes", "err_flags")}

    async def op_cycle(self) -> int:
        return self.cycle()

    async def op_ping(self) -> str:
        return "pong"


@cocotb.test()
async def serve(dut):
    """Connect to the host and answer its requests until it says quit (or goes away)."""
    path = os.environ["CODENET_RTL_SOCKET"]
    word_bytes = int(os.environ["CODENET_RTL_WORD_BYTES"])
    base_addr = int(os.environ["CODENET_RTL_BASE"])
    dut.bus_stall.value = 0
    dut.rst.value = 1
    srv = Server(dut, word_bytes, base_addr)
    await ClockCycles(dut.clk, 8)
    dut.rst.value = 0
    await RisingEdge(dut.clk)

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    send_msg(sock, ("hello", {"pid": os.getpid(), "cycle": srv.cycle()}))
    while True:
        try:
            msg = recv_msg(sock)  # blocks the simulator: simulated time stands still meanwhile
        except (ConnectionError, EOFError, OSError):
            break  # the host went away
        op, args = msg[0], msg[1:]
        if op == "quit":
            send_msg(sock, ("ok", None))
            break
        fn = getattr(srv, f"op_{op}", None)
        try:
            if fn is None:
                raise ValueError(f"unknown request {op!r}")
            result = await fn(*args)
        except Exception as e:  # reported to the host, which raises DeviceError
            send_msg(sock, ("error", f"{type(e).__name__}: {e}", traceback.format_exc(limit=6)))
            continue
        send_msg(sock, ("ok", result))
    sock.close()
