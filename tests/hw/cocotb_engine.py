"""cocotb side of the whole-engine Verilator runs (tests/hw/test_engine_rtl.py, tb_engine.sv).

The pytest side prepares a job (numpy .npz, path in ENGINE_JOB): memory regions to load,
the program address and length, the windows, the output regions to dump, a cycle budget.
This module loads the DRAM model in bulk, programs the registers through cocotbext-axi's
AxiLiteMaster (an independent implementation of the register port's protocol), starts the
engine, waits for `irq` (nothing in Python per cycle meanwhile), and writes the outputs,
STATUS, the engine's counters and the DRAM model's counters to ENGINE_RESULT.
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from codenet.sim.dram_port import DramPort
from codenet.sw import engine as E


@cocotb.test()
async def run_job(dut):
    job = np.load(os.environ["ENGINE_JOB"], allow_pickle=False)
    meta = json.loads(str(job["meta"]))
    regs = {r.name: r.offset for r in E.register_map()}
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await RisingEdge(dut.clk)

    word_bytes = meta["word_bytes"]
    port = DramPort(dut, dut.clk, word_bytes)
    regions = [(int(a), job[f"region{k}"]) for k, a in enumerate(meta["regions"])]
    await port.load_regions(regions)

    axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
    ident = await axil.read_dword(regs["ID"])
    assert ident == E.ENGINE_ID, hex(ident)
    for k, (base, size, r, w) in enumerate(meta["windows"]):
        await axil.write_dword(regs[f"WIN{k}_BASE"], base)
        await axil.write_dword(regs[f"WIN{k}_SIZE"], size)
        await axil.write_dword(regs[f"WIN{k}_CTRL"], r | w << 1)
    await axil.write_dword(regs["PROG_ADDR"], meta["prog_addr"])
    await axil.write_dword(regs["PROG_LEN"], meta["prog_len"])
    await axil.write_dword(regs["WATCHDOG"], meta.get("watchdog", 1 << 20))
    start_cycle = int(dut.cycle.value)
    await axil.write_dword(regs["CTRL"], 0b101)  # IRQ_EN | START
    timeout = Timer(meta["clock_ns"] * meta["max_cycles"], unit="ns")
    fired = await First(RisingEdge(dut.irq), timeout)
    cycles = int(dut.cycle.value) - start_cycle
    result = {"timed_out": fired is timeout, "wall_cycles": cycles}
    status = await axil.read_dword(regs["STATUS"])
    result.update(status=status, error=status >> 8 & 0xFF, err_desc=status >> 16, irq_status=await axil.read_dword(regs["IRQ_STATUS"]))
    result["err_addr"] = await axil.read_dword(regs["ERR_ADDR"])
    counters = {}
    for name, _ in E.PERF_COUNTERS:
        lo = await axil.read_dword(regs[f"PERF_{name}_LO"])
        hi = await axil.read_dword(regs[f"PERF_{name}_HI"])
        counters[name] = lo | hi << 32
    result["counters"] = counters
    c = port.counters()
    result["dram"] = {k: getattr(c, k) for k in ("rd_beats", "wr_beats", "rd_bytes", "wr_bytes", "err_flags")}
    outs = {}
    for k, (addr, nbytes) in enumerate(meta["outputs"]):
        outs[f"out{k}"] = await port.dump(int(addr), int(nbytes))
    np.savez(os.environ["ENGINE_RESULT"], meta=json.dumps(result), **outs)
