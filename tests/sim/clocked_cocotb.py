"""cocotb side of tests/sim/test_harness_main.py: the C++ clock against cocotb's triggers.

Times are in ps; the clock period is PERIOD_PS (the build's clock_ps), first rising edge at
half a period. As under cocotb's own Verilator loop, a trigger on `clk` resumes Python after
the design has taken the edge: registers read there hold their new values.
"""

from __future__ import annotations

import os

import cocotb
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge, Timer
from cocotb.utils import get_sim_time

PERIOD_PS = int(os.environ["CLOCK_PS"])
HALF = PERIOD_PS // 2


def now() -> int:
    return int(get_sim_time("ps"))


@cocotb.test()
async def clock_and_timers(dut):
    dut.rst.value = 1
    dut.flag_at.value = 0xFFFFFFFF
    await RisingEdge(dut.clk)
    assert now() == HALF, now()
    await FallingEdge(dut.clk)
    assert now() == PERIOD_PS, now()
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    t0, c0 = now(), int(dut.count.value)
    assert t0 % PERIOD_PS == HALF and c0 == 1, (t0, c0)

    # edges counted by the design and by cocotb agree
    await ClockCycles(dut.clk, 37)
    assert now() == t0 + 37 * PERIOD_PS and int(dut.count.value) == c0 + 37

    # a timer that ends on a rising edge runs before the design takes that edge, and an
    # edge trigger set up there fires at the same time step, after it
    t1, c1 = now(), int(dut.count.value)
    await Timer(100 * PERIOD_PS, "ps")
    assert now() == t1 + 100 * PERIOD_PS and int(dut.count.value) == c1 + 99, (now() - t1, int(dut.count.value) - c1)
    await RisingEdge(dut.clk)
    assert now() == t1 + 100 * PERIOD_PS and int(dut.count.value) == c1 + 100, (now() - t1, int(dut.count.value) - c1)

    # timers between edges end exactly when asked
    t2 = now()
    for delay in [d for d in (1, HALF - 1, HALF, 3 * PERIOD_PS + 7) if d > 0]:
        await Timer(delay, "ps")
        t2 += delay
        assert now() == t2, (delay, now(), t2)

    # a value written from Python is taken at the next rising edge
    await RisingEdge(dut.clk)
    dut.poke.value = 0x1234_5678
    await RisingEdge(dut.clk)
    assert int(dut.seen.value) == 0x1234_5678

    # First(): the edge wins, then the timer wins; a timer left behind does not disturb later ones
    c3, t3 = int(dut.count.value), now()
    dut.flag_at.value = c3 + 20
    flag = RisingEdge(dut.flag)
    won = await First(flag, Timer(1000 * PERIOD_PS, "ps"))
    assert won is flag and now() == t3 + 20 * PERIOD_PS, (won, now() - t3)
    dut.flag_at.value = 0xFFFFFFFF
    t4 = now()
    timer = Timer(50 * PERIOD_PS, "ps")
    won = await First(RisingEdge(dut.flag), timer)
    assert won is timer and now() == t4 + 50 * PERIOD_PS
    await Timer(3, "ps")
    assert now() == t4 + 50 * PERIOD_PS + 3
