"""cocotb side of ``python -m codenet.sim.speed``: how fast tb_axi_dram simulates, three ways.

* ``idle``: the clock runs and nothing happens, Python waits on one timer (the floor cost of
  a cycle: Verilator's eval plus cocotb's C clock);
* ``generator``: the HDL traffic generator streams reads and writes at the DRAM model while
  Python waits for ``done`` (how a whole-network run behaves);
* ``python_master``: cocotbext-axi drives the bus from Python every cycle (a typical
  Python-driven bench), for comparison;
* ``bulk``: wall time of loading and dumping a large image through the hex files.

Settings come from the environment (SPEED_CYCLES, SPEED_BULK_BYTES); results go to the JSON
file named by SPEED_OUT. No assertions about speed: this measures, tests check.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, Timer
from cocotb.utils import get_sim_time

from codenet.sim import dram
from codenet.sim.dram_port import DramPort
from codenet.sim.traffic import run_traffic

PERIOD_NS = 4


async def _start(dut: Any) -> DramPort:
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    for name in ("tg_enable", "tg_start", "s_axi_awvalid", "s_axi_wvalid", "s_axi_arvalid", "s_axi_bready", "s_axi_rready"):
        getattr(dut, name).value = 0
    port = DramPort(dut, dut.clk, len(dut.s_axi_wdata) // 8)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    return port


@cocotb.test()
async def speed(dut: Any) -> None:
    """Measure and write SPEED_OUT."""
    cycles = int(os.environ.get("SPEED_CYCLES", 2_000_000))
    bulk = int(os.environ.get("SPEED_BULK_BYTES", 8 << 20))
    out: dict[str, Any] = {"cycles": cycles}
    port = await _start(dut)
    wb = port.word_bytes

    t0 = time.perf_counter()
    await Timer(cycles * PERIOD_NS, unit="ns")
    wall = time.perf_counter() - t0
    out["idle"] = {"cycles": cycles, "wall_s": wall, "cycles_per_s": cycles / wall}

    base, size = 0, 1 << 20
    await port.load(base, dram.traffic_pattern(base, size, wb))
    dut.tg_enable.value = 1
    burst = min(16, 4096 // wb)
    res = await run_traffic(dut, dut.clk, cycles=cycles, burst_len=burst, base=base, mask=size - 1)
    dut.tg_enable.value = 0
    c = port.counters()
    out["generator"] = {
        "cycles": res.busy_cycles,
        "wall_s": res.wall_s,
        "cycles_per_s": res.cycles_per_s,
        "rd_beats": res.rd_beats,
        "wr_beats": res.wr_beats,
        "rd_errors": res.rd_errors,
        "bytes_per_cycle": (c.rd_bytes + c.wr_bytes) / res.busy_cycles,
    }

    from cocotbext.axi import AxiBus, AxiMaster  # only this part needs it

    m = AxiMaster(AxiBus.from_prefix(dut, "s_axi"), dut.clk, dut.rst)
    for lg in (m.write_if.log, m.read_if.log):
        lg.setLevel(logging.WARNING)
    n = 256 * 1024
    t_sim = get_sim_time("ns")
    t0 = time.perf_counter()
    await m.write(0x100000, bytes(n))
    await m.read(0x100000, n)
    wall = time.perf_counter() - t0
    sim_cycles = (get_sim_time("ns") - t_sim) / PERIOD_NS
    out["python_master"] = {"cycles": sim_cycles, "wall_s": wall, "cycles_per_s": sim_cycles / wall, "bytes": 2 * n}

    data = np.random.default_rng(0).integers(0, 256, bulk, dtype=np.uint8)
    t0 = time.perf_counter()
    await port.load(0, data)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    back = await port.dump(0, bulk)
    t_dump = time.perf_counter() - t0
    out["bulk"] = {"bytes": bulk, "load_s": t_load, "dump_s": t_dump, "round_trip_ok": bool(np.array_equal(back, data))}

    Path(os.environ.get("SPEED_OUT", "speed.json")).write_text(json.dumps(out, indent=2))
