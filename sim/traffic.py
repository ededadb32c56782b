"""Drive the HDL traffic generator (sim/hdl/axi_traffic_gen.sv) from cocotb: start, wait for done.

Why: the generator streams AXI bursts at the DRAM model for as many cycles as asked while
Python sleeps on one edge of ``done``; this is how the simulation's own speed, and the model's
sustained bandwidth, are measured without Python in the loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from cocotb.triggers import RisingEdge


@dataclass(frozen=True)
class TrafficResult:
    """Counts reported by the generator after one run, and the wall time it took."""

    busy_cycles: int  # clock cycles from start to done, draining included
    rd_beats: int
    wr_beats: int
    rd_errors: int  # read beats whose data, RLAST or RRESP was wrong
    wall_s: float

    @property
    def cycles_per_s(self) -> float:
        """Simulated clock cycles per wall-clock second."""
        return self.busy_cycles / self.wall_s if self.wall_s > 0 else float("inf")


async def run_traffic(
    dut: Any,
    clk: Any,
    *,
    cycles: int,
    burst_len: int,
    base: int,
    mask: int,
    reads: bool = True,
    writes: bool = True,
    prefix: str = "tg_",
) -> TrafficResult:
    """Run the generator wired to ``<prefix>*`` top-level ports for ``cycles`` cycles of issue.

    ``burst_len`` beats per burst (1..256); bursts start at base + (random & mask), aligned to
    the burst size, which must be a power of two no larger than 4 KiB. The caller selects the
    generator as the master (``tg_enable`` in tb_axi_dram) and loads the region with
    :func:`codenet.sim.dram.traffic_pattern` if reads are to check out.
    """

    def sig(name: str) -> Any:
        return getattr(dut, prefix + name)

    if not 1 <= burst_len <= 256:
        raise ValueError("burst_len must be in 1..256")
    sig("cycles").value = cycles
    sig("len").value = burst_len - 1
    sig("base").value = base
    sig("mask").value = mask
    sig("rd_en").value = int(reads)
    sig("wr_en").value = int(writes)
    sig("start").value = 1
    await RisingEdge(clk)
    sig("start").value = 0
    await RisingEdge(clk)
    t0 = time.perf_counter()
    if not int(sig("done").value):
        await RisingEdge(sig("done"))
    wall = time.perf_counter() - t0
    return TrafficResult(
        busy_cycles=int(sig("busy_cycles").value),
        rd_beats=int(sig("rd_beats").value),
        wr_beats=int(sig("wr_beats").value),
        rd_errors=int(sig("rd_errors").value),
        wall_s=wall,
    )
