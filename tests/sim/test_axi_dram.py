"""The HDL DRAM model under Verilator, exercised by cocotbext-axi and by hand (axi_dram_cocotb.py).

One Verilator build per configuration, cached under build/sim (or $CODENET_SIM_CACHE) across
tests and runs; each test runs one cocotb test in its own simulator process, so a failure
names the case. Timing is set per run by plusargs, so latency and bandwidth cases need no
rebuild. The 32- and 512-bit builds are marked slow.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("cocotb")

from codenet.sim import runner  # noqa: E402
from codenet.sim.dram import IDEAL, ULTRA96, ULX3S, DramTiming  # noqa: E402


def _has_cocotbext_axi() -> bool:
    try:
        return importlib.util.find_spec("cocotbext.axi") is not None
    except ModuleNotFoundError:
        return False


# cases that use cocotbext-axi's AxiMaster, an independent implementation of the master side
HAS_AXI = _has_cocotbext_axi()
needs_axi = pytest.mark.skipif(not HAS_AXI, reason="needs cocotbext-axi (pip install cocotbext-axi)")
HERE = Path(__file__).resolve().parent
MODULE = "axi_dram_cocotb"
MEM_BYTES = 1 << 20
SOURCES = ("tb_axi_dram.sv", "axi_dram.sv", "axi_traffic_gen.sv")


def build_tb(width: int, **kw: object) -> runner.Build:
    return runner.build(runner.hdl(*SOURCES), "tb_axi_dram", parameters={"DATA_WIDTH": width, "MEM_BYTES": MEM_BYTES}, **kw)


@pytest.fixture(scope="session")
def tb64() -> runner.Build:
    return build_tb(64)


def run_case(
    b: runner.Build, case: str, tmp_path: Path, *, seed: int = 1, timing: DramTiming = IDEAL, check: bool = True
) -> runner.TestResult:
    env = {
        "DRAM_TEST_SEED": str(seed),
        "DRAM_MEM_BYTES": str(MEM_BYTES),
        "DRAM_READ_LATENCY": str(timing.read_latency),
        "DRAM_WRITE_LATENCY": str(timing.write_latency),
        "DRAM_BW_NUM": str(timing.bw_num),
        "DRAM_BW_DEN": str(timing.bw_den),
    }
    return runner.run_built(
        b, MODULE, testcase=case, module_dirs=[HERE], test_dir=tmp_path, plusargs=timing.plusargs(), extra_env=env, seed=seed, check=check
    )


@needs_axi
@pytest.mark.parametrize("seed", [1, 2])
def test_random_traffic(tb64: runner.Build, tmp_path: Path, seed: int) -> None:
    run_case(tb64, "random_traffic", tmp_path, seed=seed, timing=ULTRA96 if seed == 1 else IDEAL)


@needs_axi
def test_bulk_load_then_axi_read(tb64: runner.Build, tmp_path: Path) -> None:
    run_case(tb64, "bulk_load_axi_read", tmp_path, seed=3)


@needs_axi
def test_axi_write_then_bulk_dump(tb64: runner.Build, tmp_path: Path) -> None:
    run_case(tb64, "axi_write_dump", tmp_path, seed=4, timing=ULX3S)


def test_raw_bursts_strobes_fixed_wrap(tb64: runner.Build, tmp_path: Path) -> None:
    run_case(tb64, "raw_bursts", tmp_path, seed=5)


def test_protocol_errors_are_flagged(tb64: runner.Build, tmp_path: Path) -> None:
    run_case(tb64, "protocol_errors", tmp_path, seed=6)


@needs_axi
@pytest.mark.parametrize("read_latency, write_latency", [(3, 2), (17, 9), (40, 20)])
def test_latency(tb64: runner.Build, tmp_path: Path, read_latency: int, write_latency: int) -> None:
    run_case(tb64, "latency", tmp_path, timing=DramTiming(read_latency, write_latency, bw_num=0))


@needs_axi
@pytest.mark.parametrize("bw_num, bw_den", [(0, 1), (5, 2), (13, 2)], ids=["unlimited", "2.5B", "6.5B"])
def test_bandwidth(tb64: runner.Build, tmp_path: Path, bw_num: int, bw_den: int) -> None:
    run_case(tb64, "bandwidth", tmp_path, timing=DramTiming(20, 10, bw_num, bw_den))


@pytest.mark.parametrize("timing", [IDEAL, DramTiming(30, 15, 5, 2)], ids=["unlimited", "2.5B"])
def test_traffic_generator(tb64: runner.Build, tmp_path: Path, timing: DramTiming) -> None:
    run_case(tb64, "traffic_generator", tmp_path, timing=timing)


def test_failing_cocotb_test_fails_the_pytest(tb64: runner.Build, tmp_path: Path) -> None:
    with pytest.raises(runner.SimulationError) as info:
        run_case(tb64, "must_fail", tmp_path)
    msg = str(info.value)
    assert "must_fail" in msg and "deliberate failure" in msg and str(tmp_path / "sim.log") in msg
    res = run_case(tb64, "must_fail", tmp_path, check=False)
    assert res.passed == [] and list(res.failed) == ["must_fail"]


def test_build_is_cached(tb64: runner.Build) -> None:
    again = build_tb(64)
    assert not again.built and again.build_dir == tb64.build_dir
    assert (tb64.build_dir / runner.STAMP).is_file()
    key = runner.build_key(runner.hdl(*SOURCES), "tb_axi_dram", parameters={"DATA_WIDTH": 64, "MEM_BYTES": MEM_BYTES})
    assert key == tb64.key
    other = runner.build_key(runner.hdl(*SOURCES), "tb_axi_dram", parameters={"DATA_WIDTH": 64, "MEM_BYTES": 2 * MEM_BYTES})
    assert other != key
    assert runner.build_key(runner.hdl(*SOURCES), "tb_axi_dram", parameters={"DATA_WIDTH": 64, "MEM_BYTES": MEM_BYTES}, waves=True) != key


@pytest.mark.slow
@pytest.mark.parametrize("width", [32, 512])
@pytest.mark.parametrize("case", ["random_traffic", "raw_bursts", "traffic_generator", "protocol_errors"])
def test_other_widths(tmp_path: Path, width: int, case: str) -> None:
    if case == "random_traffic" and not HAS_AXI:
        pytest.skip("needs cocotbext-axi")
    run_case(build_tb(width), case, tmp_path, seed=width, timing=DramTiming(9, 5, 37, 4))


@pytest.mark.slow
def test_waves_are_written(tmp_path: Path) -> None:
    b = build_tb(64, waves=True)  # VCD: FST would need the lz4 headers
    res = run_case(b, "raw_bursts", tmp_path, timing=DramTiming(5, 3, 0))
    assert res.waves is not None and res.waves.is_file() and res.waves.stat().st_size > 1000
