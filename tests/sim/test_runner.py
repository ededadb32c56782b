"""The cached Verilator runner (codenet.sim.runner): cache keys, and build failures that say where to look.

Needs cocotb and Verilator but no cocotbext-axi; the runs against a real harness live in
test_axi_dram.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("cocotb")

from codenet.sim import runner  # noqa: E402


def test_hdl_sources_are_found() -> None:
    assert all(p.is_file() for p in runner.hdl("axi_dram.sv", "tb_axi_dram.sv", "axi_traffic_gen.sv"))
    with pytest.raises(FileNotFoundError):
        runner.hdl("no_such_file.sv")


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(runner.CACHE_ENV, str(tmp_path))
    assert runner.cache_root() == tmp_path.resolve()
    monkeypatch.delenv(runner.CACHE_ENV)
    assert runner.cache_root() == runner.REPO / "build" / "sim"


def test_build_env_fills_the_wheel_makeflags() -> None:
    env = runner.build_env("/usr/bin")
    assert "CFG_CXXFLAGS_PCH_I=-include" in env["MAKEFLAGS"] and "CFG_CXXFLAGS_COROUTINES=-fcoroutines" in env["MAKEFLAGS"]
    assert env["PATH"].endswith("/usr/bin") and Path(env["PATH"].split(":")[0], "verilator").exists()


def test_build_key_follows_source_contents(tmp_path: Path) -> None:
    src = tmp_path / "m.sv"
    src.write_text("module m(input wire a, output wire b); assign b = a; endmodule\n")
    k1 = runner.build_key([src], "m")
    src.write_text("module m(input wire a, output wire b); assign b = !a; endmodule\n")
    assert runner.build_key([src], "m") != k1


def test_build_error_names_the_log(tmp_path: Path) -> None:
    src = tmp_path / "broken.sv"
    src.write_text("module broken(input wire clk);\n  always_ff @(posedge clk) undeclared_signal <= 1'b1;\nendmodule\n")
    with pytest.raises(runner.SimBuildError) as info:
        runner.build([src], "broken", cache_dir=tmp_path / "cache")
    msg = str(info.value)
    assert "build.log" in msg and "undeclared_signal" in msg
    assert not list((tmp_path / "cache").glob(f"*/{runner.STAMP}")), "a failed build must not be cached"


def test_wave_formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WAVES", raising=False)
    src = tmp_path / "m.sv"
    src.write_text("module m(input wire a, output wire b); assign b = a; endmodule\n")
    keys = {runner.build_key([src], "m", waves=w) for w in (False, True, "fst")}
    assert len(keys) == 3
    assert runner.build_key([src], "m", waves="vcd") == runner.build_key([src], "m", waves=True)
    monkeypatch.setenv("WAVES", "1")  # cocotb's convention: turns tracing on
    assert runner.build_key([src], "m") == runner.build_key([src], "m", waves=True)
    with pytest.raises(ValueError):
        runner.build_key([src], "m", waves="ghw")
