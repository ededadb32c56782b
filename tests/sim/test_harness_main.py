"""The engine harnesses' Verilator main (sim/hdl/harness_main.cpp): its C++ clock keeps cocotb's
timing contract (edges, timers, First(), writes), and builds that use it are told apart."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("cocotb")

from codenet.sim import runner  # noqa: E402

HERE = Path(__file__).resolve().parent
SOURCES = [HERE / "tb_clocked.sv"]
ARGS = ["-Wno-fatal", "--timescale", "1ns/1ps"]


@pytest.mark.parametrize("clock_ps", [10_000, 2])
def test_cpp_clock_keeps_cocotbs_timing(clock_ps: int, tmp_path: Path) -> None:
    b = runner.build(SOURCES, "tb_clocked", build_args=ARGS, public_depth=None, clock_ps=clock_ps)
    res = runner.run_built(
        b, "clocked_cocotb", module_dirs=[HERE], test_dir=tmp_path, extra_env={"CLOCK_PS": str(clock_ps)}, timeout_s=120
    )
    assert res.passed == ["clock_and_timers"]


def test_clock_period_must_be_whole_half_periods() -> None:
    for bad in (0, -10, 5, 3.0):
        with pytest.raises(ValueError, match="clock_ps"):
            runner.build_key(SOURCES, "tb_clocked", clock_ps=bad)


def test_build_key_tells_the_main_loops_apart() -> None:
    cocotb_main = runner.build_key(SOURCES, "tb_clocked", build_args=ARGS, public_depth=None)
    ours = runner.build_key(SOURCES, "tb_clocked", build_args=ARGS, public_depth=None, clock_ps=10_000)
    other_period = runner.build_key(SOURCES, "tb_clocked", build_args=ARGS, public_depth=None, clock_ps=4_000)
    assert len({cocotb_main, ours, other_period}) == 3


def test_a_hung_simulation_is_killed(tmp_path: Path) -> None:
    """cocotb's own test timeouts are simulated time; a simulator that never returns needs a wall-clock one."""
    mod = tmp_path / "hang_cocotb.py"
    mod.write_text("import time\nimport cocotb\n\n@cocotb.test()\nasync def hang(dut):\n    time.sleep(60)\n")
    b = runner.build(SOURCES, "tb_clocked", build_args=ARGS, public_depth=None, clock_ps=10_000)
    with pytest.raises(runner.SimulationTimeout, match="did not finish within 2"):
        runner.run_built(b, "hang_cocotb", module_dirs=[tmp_path], test_dir=tmp_path / "run", timeout_s=2)


def test_waves_from_our_main_loop(tmp_path: Path) -> None:
    b = runner.build(SOURCES, "tb_clocked", build_args=ARGS, public_depth=None, clock_ps=10_000, waves=True)
    res = runner.run_built(b, "clocked_cocotb", module_dirs=[HERE], test_dir=tmp_path, extra_env={"CLOCK_PS": "10000"}, timeout_s=120)
    assert res.passed == ["clock_and_timers"] and res.waves is not None and res.waves.name == "dump.vcd"
    vcd = res.waves.read_text()
    assert "$timescale" in vcd and " count " in vcd
    stamps = [int(line[1:]) for line in vcd.splitlines() if line.startswith("#")]
    # the clock's edges (ps): every half period from the first rising edge on
    assert {5_000, 10_000, 15_000, 20_000} <= set(stamps)
    assert stamps == sorted(stamps)


def test_a_period_the_time_precision_cannot_hold_is_refused(tmp_path: Path) -> None:
    """2.5 ns at a 1 ns precision would silently become 2 ns: the simulator stops at once and says why."""
    b = runner.build(SOURCES, "tb_clocked", build_args=["-Wno-fatal", "--timescale", "1ns/1ns"], public_depth=None, clock_ps=2_500)
    with pytest.raises(runner.SimulationError, match="clock period 2500 ps is not an even number of time-precision units"):
        runner.run_built(b, "clocked_cocotb", module_dirs=[HERE], test_dir=tmp_path, extra_env={"CLOCK_PS": "2500"}, timeout_s=60)
