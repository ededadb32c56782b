"""`codenet gen`: Verilog with the cocotbext-axi port names, engine.json, C header, Verilator lint."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from codenet.hw import gen as hw_gen
from codenet.sw import cli
from codenet.sw import engine as E

S_AXIL_WRITE = "awaddr awprot awvalid awready wdata wstrb wvalid wready bresp bvalid bready"
S_AXIL = S_AXIL_WRITE + " araddr arprot arvalid arready rdata rresp rvalid rready"
M_AXI = (
    "awid awaddr awlen awsize awburst awvalid awready wdata wstrb wlast wvalid wready bid bresp bvalid bready "
    "arid araddr arlen arsize arburst arvalid arready rid rdata rresp rlast rvalid rready"
)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen_tiny")
    r = CliRunner().invoke(cli.main, ["gen", "--engine", "tiny", "-o", str(out), "--lint", "--json"])
    return out, r


def test_gen_json_output_is_one_object(generated):
    out, r = generated
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["engine"] == "tiny" and report["lint"]["ok"], report.get("lint")
    assert set(report["files"]) == {"verilog", "json", "header", "waivers"}


def test_gen_verilog_ports(generated):
    out, _ = generated
    v = (out / "engine.v").read_text()
    m = re.search(r"module codenet_engine\((.*?)\);", v, re.S)
    assert m, "top module codenet_engine"
    ports = {p.strip() for p in m.group(1).split(",")}
    want = {"clk", "rst", "irq"} | {f"s_axil_{s}" for s in S_AXIL.split()} | {f"m_axi_{s}" for s in M_AXI.split()}
    assert ports == want, (sorted(ports - want), sorted(want - ports))
    L = E.PRESETS["tiny"].lanes
    assert re.search(rf"input \[{8 * L - 1}:0\] m_axi_rdata;", v)
    assert re.search(r"output \[31:0\] m_axi_araddr;", v)


def test_gen_json_and_header_match_the_contract(generated):
    out, _ = generated
    cfg = E.PRESETS["tiny"]
    assert json.loads((out / "engine.json").read_text()) == json.loads(json.dumps(E.engine_json(cfg)))
    assert (out / "engine.h").read_text() == E.c_header(cfg)
    vlt = (out / "verilator.vlt").read_text()
    for rule, _ in hw_gen.WAIVERS:
        assert f"lint_off -rule {rule}" in vlt


def test_lint_without_waivers_only_reports_waived_rules(generated):
    """Every warning Verilator raises belongs to a rule that docs/engine.md waives with a reason."""
    out, _ = generated
    r = hw_gen.lint(out, waivers=False)
    rules = set(re.findall(r"%Warning-([A-Z]+)", r.stdout + r.stderr))
    assert rules <= {rule for rule, _ in hw_gen.WAIVERS}, rules
    assert "%Error:" not in (r.stdout + r.stderr).replace("%Error: Exiting due to", "")


def test_gen_config_file_and_bad_config(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"preset": "tiny", "max_dilation": 0}))
    r = CliRunner().invoke(cli.main, ["gen", "--engine", str(bad), "-o", str(tmp_path / "x")])
    assert r.exit_code != 0 and "max_dilation" in r.output


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
def test_gen_header_compiles(generated):
    out, _ = generated
    cc = shutil.which("cc") or shutil.which("gcc")
    src = out / "t.c"
    src.write_text('#include "engine.h"\nint main(void) { return CODENET_LANES == 8 ? 0 : 1; }\n')
    r = subprocess.run([cc, "-Wall", "-Werror", "-fsyntax-only", "-I", str(out), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
