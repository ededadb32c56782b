"""codenet.boards.vivado: the generated Vivado project, run under tclsh with recording stand-ins.

Vivado is not here, so the Tcl runs under tclsh (or Python's tkinter Tcl) with
tests/boards/vivado_stubs.tcl: a stand-in for every Vivado command the scripts may use, each
logging its call as a JSON line and failing on a command it does not know, an option it does
not know or an object that was never created. The tests read the log and check what a Vivado
run would build: the part and board part, the IP packaged from engine.v with its AXI
interfaces, the PS and the ports it enables, every connection and the address map. The
expectations below are written from the Xilinx documentation (PG201 for zynq_ultra_ps_e, UG585 /
PG082 for processing_system7), not copied from the generator. What only Vivado can show
(properties it accepts, timing, fit) is in docs/vivado.md.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from codenet.boards import vivado as V
from codenet.boards.catalogue import BOARDS, get_board
from codenet.hw import gen as hw_gen
from codenet.sw import cli
from codenet.sw.engine import AXIL_ADDR_BITS, PRESETS, EngineConfig

STUBS = Path(__file__).with_name("vivado_stubs.tcl")
ZYNQ_BOARDS = ["ultra96v2", "pynq-z2", "zcu104", "kv260"]
G = 1 << 30

# What each PS port needs enabled, and the pins that come with it (PG201, UG585).
EXPECT = {
    "zynqmp": {
        "vlnv": "xilinx.com:ip:zynq_ultra_ps_e",
        "rule": "xilinx.com:bd_rule:zynq_ultra_ps_e",
        "lite": {"M_AXI_HPM0_FPD": ("PSU__USE__M_AXI_GP0", "maxihpm0_fpd_aclk", (0xA000_0000, 0x1000_0000))},
        "master": {"S_AXI_HP0_FPD": ("PSU__USE__S_AXI_GP2", "saxihp0_fpd_aclk", "SAXIGP2/HP0_DDR_LOW", 2 * G, "PSU__SAXIGP2__DATA_WIDTH")},
        "clock": {"pl_clk0": ({"PSU__FPGA_PL0_ENABLE": "1"}, "PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ")},
        "reset": "pl_resetn0",
        "irq": {"pl_ps_irq0": {"PSU__USE__IRQ0": "1"}},
        "use": re.compile(r"PSU__USE__[MS]_AXI_GP\d"),
    },
    "zynq7": {
        "vlnv": "xilinx.com:ip:processing_system7",
        "rule": "xilinx.com:bd_rule:processing_system7",
        "lite": {"M_AXI_GP0": ("PCW_USE_M_AXI_GP0", "M_AXI_GP0_ACLK", (0x4000_0000, 0x4000_0000))},
        "master": {"S_AXI_HP0": ("PCW_USE_S_AXI_HP0", "S_AXI_HP0_ACLK", "S_AXI_HP0/HP0_DDR_LOWOCM", G, "PCW_S_AXI_HP0_DATA_WIDTH")},
        "clock": {"FCLK_CLK0": ({"PCW_EN_CLK0_PORT": "1"}, "PCW_FPGA0_PERIPHERAL_FREQMHZ")},
        "reset": "FCLK_RESET0_N",
        "irq": {"IRQ_F2P": {"PCW_USE_FABRIC_INTERRUPT": "1", "PCW_IRQ_F2P_INTR": "1"}},
        "use": re.compile(r"PCW_USE_[MS]_AXI_\w+"),
    },
}


# =========================================================================== running Tcl


def _tcl_command() -> list[str] | None:
    tclsh = shutil.which("tclsh")
    if tclsh:
        return [tclsh, str(STUBS)]
    try:
        import tkinter

        tkinter.Tcl()
    except Exception:
        return None
    # tkinter's interpreter has no `exit` (Python removes it): give it one that ends the process.
    code = (
        "import os, sys, tkinter\n"
        "t = tkinter.Tcl()\n"
        "t.createcommand('exit', lambda code=0: (sys.stdout.flush(), sys.stderr.flush(), os._exit(int(code))))\n"
        "t.call('set', 'argv', tuple(sys.argv[2:]))\n"
        "t.call('source', sys.argv[1])\n"
    )
    return [sys.executable, "-c", code, str(STUBS)]


TCL = _tcl_command()
needs_tcl = pytest.mark.skipif(TCL is None, reason="neither tclsh nor Python's tkinter (Tcl) is available to run the generated Tcl")


def _busifs(engine_v: Path) -> str:
    """The bus interfaces Vivado's packager infers from the top module's port names, as the stand-ins take them."""
    text = engine_v.read_text()
    header = text[text.index("module codenet_engine(") :]
    header = header[: header.index("\nendmodule")]
    ports = set(re.findall(r"^\s*(?:input|output)\s+(?:\[\d+:\d+\]\s*)?(\w+)\s*;", header, re.M))
    pairs = []
    for p in sorted(ports):
        if p.endswith("_araddr") and p.replace("_araddr", "_awaddr") in ports:
            pairs += ["aximm_rtl", p[: -len("_araddr")]]
    kinds = {"clk": "clock_rtl", "rst": "reset_rtl", "irq": "interrupt_rtl"}
    for p, kind in kinds.items():
        if p in ports:
            pairs += [kind, p]
    return " ".join(pairs)


class Log(list):
    """The stand-ins' records of one run."""

    def calls(self, cmd: str) -> list[dict]:
        return [r for r in self if r.get("cmd") == cmd]

    def index(self, cmd: str, pred=lambda r: True, last: bool = False) -> int:  # type: ignore[override]
        hits = [i for i, r in enumerate(self) if r.get("cmd") == cmd and pred(r)]
        assert hits, f"no {cmd} call"
        return hits[-1] if last else hits[0]

    def props(self, obj: str) -> dict[str, str]:
        """Every property set on `obj` (set_property NAME VALUE and -dict), the last value winning."""
        out: dict[str, str] = {}
        for r in self.calls("set_property"):
            if r["pos"][-1] != obj:
                continue
            if "-dict" in r["opts"]:
                items = _tcl_list(r["opts"]["-dict"])
                out.update(zip(items[::2], items[1::2]))
            else:
                out[r["pos"][0]] = r["pos"][1]
        return out


def _tcl_list(s: str) -> list[str]:
    """The words of a Tcl list (as the stand-ins log it: words, some in braces, no nesting beyond one level)."""
    return [a or b for a, b in re.findall(r"\{([^{}]*)\}|(\S+)", s)]


def run_tcl(
    workdir: Path,
    script: str = "build.tcl",
    *args: str,
    busifs: str | None = None,
    board_parts: str | None = None,
    extra_env: dict | None = None,
) -> tuple[int, Log, str]:
    """Run a generated script under the stand-ins; (exit status, log records, stderr)."""
    log = workdir / f"stub-{script}.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODENET_")}
    env["CODENET_STUB_BUSIFS"] = _busifs(workdir / "engine.v") if busifs is None else busifs
    env["CODENET_STUB_BOARD_PARTS"] = board_parts if board_parts is not None else ""
    env.update(extra_env or {})
    out = subprocess.run([*TCL, str(log), script, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
    records = Log(json.loads(line) for line in log.read_text().splitlines()) if log.exists() else Log()
    return out.returncode, records, out.stdout + out.stderr


def _ok(rc: int, log: Log, out: str) -> None:
    fails = [r for r in log if "fail" in r or "error" in r]
    assert rc == 0 and not fails and log and log[-1] == {"done": True}, f"rc {rc}, {fails}\n{out}"


def _size(v: str) -> int:
    m = re.fullmatch(r"(\d+)([KMGT]?)", v) or re.fullmatch(r"0x([0-9A-Fa-f]+)()", v)
    assert m, v
    base = int(m.group(1), 16) if v.startswith("0x") else int(m.group(1))
    return base << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m.group(2)]


# =========================================================================== generation (cached per engine)


@pytest.fixture(scope="session")
def engine_cache(tmp_path_factory):
    """hw_gen.generate, remembered per configuration: each board's engine is converted once per session."""
    root = tmp_path_factory.mktemp("engines")
    real = hw_gen.generate

    @functools.cache
    def cached(cfg_json: str) -> Path:
        cfg = EngineConfig.from_json(cfg_json)
        d = root / cfg.name
        real(cfg, d)
        return d

    def generate(cfg: EngineConfig, out_dir):
        src = cached(cfg.to_json())
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {}
        for key, name in (("verilog", "engine.v"), ("json", "engine.json"), ("header", "engine.h"), ("waivers", "verilator.vlt")):
            shutil.copyfile(src / name, out / name)
            paths[key] = out / name
        return paths

    return generate


@pytest.fixture
def fast_gen(engine_cache, monkeypatch):
    monkeypatch.setattr(hw_gen, "generate", engine_cache)


def _project(board: str, tmp_path: Path) -> tuple[dict, Path]:
    out = tmp_path / board
    return V.generate_project(board, out), out


# =========================================================================== the four Zynq boards


@needs_tcl
@pytest.mark.parametrize("name", ZYNQ_BOARDS)
def test_generated_tcl_builds_the_overlay_of_each_zynq_board(name, tmp_path, fast_gen):
    board = get_board(name)
    cfg = board.engine_config()
    result, out = _project(name, tmp_path)
    rc, log, text = run_tcl(out, board_parts=board.board_part or "")
    _ok(rc, log, text)
    exp = EXPECT[board.family]
    assert board.axi_lite_port in exp["lite"] and board.axi_master_port in exp["master"], "a port the test has no expectation for"
    lite_use, lite_aclk, (win_base, win_size) = exp["lite"][board.axi_lite_port]
    hp_use, hp_aclk, ddr_seg, ddr_max, hp_width_key = exp["master"][board.axi_master_port]
    clk_enable, clk_freq_key = exp["clock"][board.engine_clock]

    # ---- projects: the packager's and the design's, both on the board's part; the board part set
    projects = log.calls("create_project")
    assert [p["pos"][0] for p in projects] == ["codenet_ip", "codenet"]
    assert all(p["opts"]["-part"] == board.part for p in projects)
    assert all(Path(p["pos"][1]).is_relative_to(out) for p in projects), "projects stay inside the output folder"
    assert log.props("codenet")["board_part"] == board.board_part
    design = log.index("create_project", lambda r: r["pos"][0] == "codenet")
    assert log.index("set_property", lambda r: r["pos"][:1] == ["board_part"]) > design

    # ---- the IP: engine.v packaged, AXI interfaces named after the port prefixes, clock/reset associated
    added = [Path(f) for r in log.calls("add_files") for f in r["pos"]]
    assert out / "engine.v" in added
    ports = (out / "engine.v").read_text()
    assert re.search(r"output \[\d+:0\] m_axi_awaddr;", ports) and re.search(r"input \[\d+:0\] s_axil_awaddr;", ports)
    assert log.props("sources_1")["top"] == "codenet_wrapper"  # the last top: the design's wrapper
    assert any(r["pos"][:2] == ["top", "codenet_engine"] for r in log.calls("set_property"))
    pkg = log.calls("ipx::package_project")
    assert len(pkg) == 1 and Path(pkg[0]["opts"]["-root_dir"]) == out / "ip_repo" / "codenet_engine" and pkg[0]["opts"]["-import_files"]
    inferred = {r["pos"][0] for r in log.calls("ipx::infer_bus_interfaces")}
    assert "xilinx.com:interface:aximm_rtl:1.0" in inferred
    checked = {r["pos"][0] for r in log.calls("ipx::get_bus_interfaces")}
    assert {"m_axi", "s_axil", "clk", "rst"} <= checked
    assoc = {
        (r["opts"].get("-busif"), r["opts"].get("-clock"), r["opts"].get("-reset")) for r in log.calls("ipx::associate_bus_interfaces")
    }
    assert {("m_axi", "clk", None), ("s_axil", "clk", None), (None, "clk", "rst")} <= assoc
    assert log.props("param:busif:rst:POLARITY") == {"value": "ACTIVE_HIGH"}
    assert log.props("busif:s_axil")["slave_memory_map_ref"] == "s_axil"
    block = log.props("block:memmap:s_axil:reg0")
    assert _size(block["range"]) == board.reg_size and block["usage"] == "register"
    assert log.props("busif:m_axi")["master_address_space_ref"] == "m_axi"
    addr_bits = int(re.search(r"output \[(\d+):0\] m_axi_araddr;", ports).group(1)) + 1
    assert _size(log.props("space:m_axi")["range"]) == 1 << addr_bits == 1 << cfg.axi_addr_bits
    core = log.props("core_0")
    assert (core["name"], core["version"]) == ("codenet_engine", "1.0")
    assert log.index("ipx::check_integrity") < log.index("ipx::save_core")
    assert (out / "ip_repo" / "codenet_engine" / "component.xml").exists()
    assert Path(_tcl_list(log.props("codenet")["ip_repo_paths"])[0]) == out / "ip_repo"

    # ---- the block design's cells
    cells = {r["pos"][0]: r["opts"]["-vlnv"] for r in log.calls("create_bd_cell")}
    ps = [c for c, v in cells.items() if v == exp["vlnv"]]
    assert len(ps) == 1, cells
    ps = ps[0]
    eng = [c for c, v in cells.items() if v == V.IP_VLNV]
    assert len(eng) == 1 and "codenet" in eng[0]  # PYNQ finds the engine by "codenet" in ip_dict
    eng = eng[0]
    rst = [c for c, v in cells.items() if v == "xilinx.com:ip:proc_sys_reset"]
    assert len(rst) == 1
    rst = rst[0]
    smcs = [c for c, v in cells.items() if v == "xilinx.com:ip:smartconnect"]
    assert set(cells) == {ps, eng, rst, *smcs}, f"unexpected cells {cells}"
    for s in smcs:
        p = log.props(f"/{s}")
        assert (p["CONFIG.NUM_SI"], p["CONFIG.NUM_MI"]) == ("1", "1")

    # ---- the PS: board preset, then exactly the engine's ports, its clock and its interrupt
    auto = log.calls("apply_bd_automation")
    assert len(auto) == 1 and auto[0]["opts"]["-rule"] == exp["rule"] and auto[0]["pos"] == [f"/{ps}"]
    assert 'apply_board_preset "1"' in auto[0]["opts"]["-config"]
    assert log.index("apply_bd_automation") < log.index("set_property", lambda r: r["pos"] == [f"/{ps}"])  # the preset first
    conf = {k.removeprefix("CONFIG."): v for k, v in log.props(f"/{ps}").items()}
    enabled = {k for k, v in conf.items() if exp["use"].fullmatch(k) and v == "1"}
    assert enabled == {lite_use, hp_use}, f"enabled AXI ports {enabled}"
    assert conf[hp_width_key] == str(cfg.axi_data_bits) == str(board.axi_master_bits)
    assert conf[clk_freq_key] == str(board.engine_clock_mhz) == str(cfg.clock_mhz)
    assert all(conf[k] == v for k, v in clk_enable.items())
    assert all(conf[k] == v for k, v in exp["irq"][board.irq].items())

    # ---- AXI: engine master -> HP port, GP port -> engine registers, each through one SmartConnect
    edges: dict[str, set[str]] = {}
    for r in log.calls("connect_bd_intf_net"):
        a, b = (p.lstrip("/") for p in r["pos"])
        edges.setdefault(a, set()).add(b)
        edges.setdefault(b, set()).add(a)

    def follow(start: str) -> list[str]:
        """From a master interface pin to the slave it ends at, across SmartConnects (S00_AXI in, M00_AXI out)."""
        path, here = [start], start
        for _ in range(8):
            (nxt,) = edges[here]
            path.append(nxt)
            cell, pin = nxt.split("/")
            if cells[cell] != "xilinx.com:ip:smartconnect":
                return path
            assert pin == "S00_AXI", f"a master drives {nxt}"
            here = f"{cell}/M00_AXI"
            path.append(here)
        raise AssertionError(path)

    assert follow(f"{eng}/m_axi")[-1] == f"{ps}/{board.axi_master_port}"
    assert follow(f"{ps}/{board.axi_lite_port}")[-1] == f"{eng}/s_axil"
    assert len(log.calls("connect_bd_intf_net")) == 4

    # ---- clock, resets, interrupt
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for r in log.calls("connect_bd_net"):
        pins = [p.lstrip("/") for p in r["pos"]]
        for p in pins[1:]:
            parent[find(p)] = find(pins[0])

    def net(pin: str) -> set[str]:
        assert pin in parent, f"{pin} is not connected"
        return {p for p in parent if find(p) == find(pin)}

    clock = net(f"{ps}/{board.engine_clock}")
    assert {f"{eng}/clk", f"{ps}/{lite_aclk}", f"{ps}/{hp_aclk}", f"{rst}/slowest_sync_clk", *(f"{s}/aclk" for s in smcs)} <= clock
    assert net(f"{eng}/rst") == {f"{eng}/rst", f"{rst}/peripheral_reset"}  # active high, like the engine's rst
    assert net(f"{rst}/ext_reset_in") == {f"{rst}/ext_reset_in", f"{ps}/{exp['reset']}"}
    for s in smcs:
        assert net(f"{s}/aresetn") & {f"{rst}/interconnect_aresetn", f"{rst}/peripheral_aresetn"}
    assert net(f"{eng}/irq") == {f"{eng}/irq", f"{ps}/{board.irq}"}
    assert len({find(p) for p in parent}) == 5, "clock, board reset, interconnect reset, engine reset, interrupt"
    for pin in (f"{ps}/{board.engine_clock}", f"{ps}/{lite_aclk}", f"{ps}/{hp_aclk}", f"{ps}/{exp['reset']}", f"{ps}/{board.irq}"):
        assert pin in parent

    # ---- address map: registers at reg_base (the board's window), the master over DDR from 0
    assigns = {(r["opts"]["-target_address_space"], r["pos"][0]): r["opts"] for r in log.calls("assign_bd_address")}
    assert len(assigns) == 2
    regs = assigns[(f"{ps}/Data", f"{eng}/s_axil/reg0")]
    assert int(regs["-offset"], 16) == board.reg_base and int(regs["-range"], 16) == board.reg_size
    assert board.reg_size >= 1 << AXIL_ADDR_BITS
    assert win_base <= board.reg_base and board.reg_base + board.reg_size <= win_base + win_size
    ddr = assigns[(f"{eng}/m_axi", f"{ps}/{ddr_seg}")]
    assert int(ddr["-offset"], 16) == 0
    assert int(ddr["-range"], 16) == min(board.dram.size_mb << 20, ddr_max)

    # ---- order: validate after every connection and address, then wrapper, then the runs
    last_edit = max(log.index(c, last=True) for c in ("connect_bd_net", "connect_bd_intf_net", "assign_bd_address"))
    assert last_edit < log.index("validate_bd_design") < log.index("save_bd_design") < log.index("make_wrapper")
    assert log.calls("make_wrapper")[0]["opts"]["-top"] is True
    assert log.index("make_wrapper") < log.index("launch_runs")
    runs = [(r["pos"][0], r["opts"].get("-to_step")) for r in log.calls("launch_runs")]
    assert runs == [("synth_1", None), ("impl_1", "write_bitstream")]

    # ---- the overlay: codenet.bit and codenet.hwh side by side (PYNQ's Overlay wants the pair)
    bit, hwh = out / "overlay" / "codenet.bit", out / "overlay" / "codenet.hwh"
    assert bit.read_text().strip() == "stub bitstream" and "stub hwh of codenet" in hwh.read_text()
    assert result["overlay"] == {"bit": str(bit), "hwh": str(hwh)}
    assert result["board"] == name and result["part"] == board.part and result["engine"] == cfg.name


# =========================================================================== options and failures of the Tcl


@pytest.fixture
def u96(tmp_path, fast_gen):
    _, out = _project("ultra96v2", tmp_path)
    return out


@needs_tcl
def test_bd_only_stops_before_the_runs(u96):
    rc, log, text = run_tcl(u96, "build.tcl", "--bd-only", board_parts="avnet.com:ultra96v2:part0:1.2")
    _ok(rc, log, text)
    assert log.calls("validate_bd_design") and not log.calls("launch_runs")
    assert not (u96 / "overlay").exists()


@needs_tcl
def test_jobs_argument_reaches_the_runs_and_bad_arguments_are_refused(u96):
    rc, log, text = run_tcl(u96, "build.tcl", "--jobs", "7", board_parts="avnet.com:ultra96v2:part0:1.2")
    _ok(rc, log, text)
    assert {r["opts"]["-jobs"] for r in log.calls("launch_runs")} == {"7"}
    for args, want in ((["--jobs", "x"], "positive integer"), (["--fast"], "unknown argument '--fast'")):
        rc, log, text = run_tcl(u96, "build.tcl", *args)
        assert rc == 1 and want in log[-1]["error"] and not log.calls("create_project")


@needs_tcl
def test_missing_board_files_stop_with_instructions_and_another_version_is_taken(u96):
    rc, log, text = run_tcl(u96, board_parts="")
    assert rc == 1 and "no board files for avnet.com:ultra96v2:part0:1.2" in log[-1]["error"]
    assert not log.calls("create_bd_design")
    rc, log, text = run_tcl(u96, board_parts="avnet.com:ultra96v2:part0:1.3 avnet.com:ultra96v2:part0:1.1")
    _ok(rc, log, text)
    assert log.props("codenet")["board_part"] == "avnet.com:ultra96v2:part0:1.3"
    rc, log, text = run_tcl(u96, "build.tcl", "--bd-only", board_parts="", extra_env={"CODENET_BOARD_REPO": "/opt/boards"})
    assert [r["pos"] for r in log.calls("set_param")] == [["board.repoPaths", "/opt/boards"]]


@needs_tcl
def test_an_engine_without_an_axi_master_is_not_packaged(u96):
    rc, log, text = run_tcl(u96, busifs="aximm_rtl s_axil clock_rtl clk reset_rtl rst")
    assert rc == 1 and "did not infer the bus interface 'm_axi'" in log[-1]["error"]


# =========================================================================== the stand-ins are strict


@needs_tcl
@pytest.mark.parametrize(
    "tcl, why",
    [
        ("create_bd_celll -type ip foo", "no stand-in for command 'create_bd_celll'"),
        ("catch {launch_runs synth_1 -jobs 2 -bogus 1}", "unknown option '-bogus'"),
        ("create_project -part p x d; create_bd_design bd; get_bd_pins nope/clk", "never created"),
        ("exec ls", "no stand-in for command 'exec'"),
        ("ipx::edit_core foo", "no stand-in for command 'ipx::edit_core'"),
        ("create_project x d", "without -part"),
        ("create_project -part p x d; set_property top x [get_files foo.bd]", "no such file"),
    ],
)
def test_stand_ins_fail_on_anything_unknown(tmp_path, tcl, why):
    (tmp_path / "engine.v").write_text("module codenet_engine();\nendmodule\n")
    (tmp_path / "bad.tcl").write_text(tcl + "\n")
    rc, log, _ = run_tcl(tmp_path, "bad.tcl", busifs="")
    assert rc == 3 and why in log[-1]["fail"]


# =========================================================================== build.sh


@needs_tcl
def test_build_sh_needs_vivado_on_path(u96):
    path = "/usr/bin:/bin"
    if shutil.which("vivado", path=path):
        pytest.skip("a vivado is installed on /usr/bin:/bin")
    out = subprocess.run([str(u96 / "build.sh")], capture_output=True, text=True, env={"PATH": path}, timeout=30)
    assert out.returncode == 127 and "'vivado' is not on PATH" in out.stderr and "settings64.sh" in out.stderr


@pytest.mark.skipif(shutil.which("tclsh") is None, reason="the fake vivado runs the Tcl with tclsh")
def test_build_sh_runs_build_tcl_in_vivado_batch_mode(u96, tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "vivado").write_text(
        "#!/usr/bin/env bash\n"
        'echo "$@" > "$FAKE_VIVADO_ARGS"\n'
        'mode=""; src=""; targs=()\n'
        'while [ $# -gt 0 ]; do case "$1" in\n'
        '  -mode) mode="$2"; shift 2;; -source) src="$2"; shift 2;; -log) shift 2;;\n'
        '  -tclargs) shift; targs=("$@"); break;; *) shift;; esac; done\n'
        '[ "$mode" = batch ] || exit 9\n'
        'exec tclsh "$STUBS" "$STUB_LOG" "$src" ${targs[@]+"${targs[@]}"}\n'
    )
    (fake / "vivado").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODENET_")}
    env.update(
        PATH=f"{fake}:{os.environ['PATH']}",
        FAKE_VIVADO_ARGS=str(tmp_path / "args"),
        STUBS=str(STUBS),
        STUB_LOG=str(tmp_path / "log.jsonl"),
        CODENET_STUB_BUSIFS=_busifs(u96 / "engine.v"),
        CODENET_STUB_BOARD_PARTS="avnet.com:ultra96v2:part0:1.2",
    )
    out = subprocess.run([str(u96 / "build.sh")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "args").read_text().split()[:2] == ["-mode", "batch"]
    assert "-source build.tcl" in (tmp_path / "args").read_text()
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log[-1] == {"done": True}
    assert (u96 / "overlay" / "codenet.bit").exists() and (u96 / "overlay" / "codenet.hwh").exists()


# =========================================================================== generator errors and engine.v parsing


@pytest.mark.parametrize("name", ["ulx3s", "no-such-board"])
def test_boards_outside_the_vivado_flow_are_refused_naming_the_known_ones(name, tmp_path):
    with pytest.raises(V.VivadoError) as e:
        V.generate_project(name, tmp_path / "x")
    msg = str(e.value)
    assert repr(name) in msg and all(b in msg for b in BOARDS)
    assert not (tmp_path / "x").exists()


def test_vivado_boards_are_the_zynq_ones():
    assert V.vivado_boards() == ZYNQ_BOARDS


def test_engine_ports_and_missing_interfaces():
    text = (
        "module other(a);\n  input a;\nendmodule\n"
        "module codenet_engine(clk, rst, m_axi_araddr);\n  input clk;\n  input rst;\n  output [31:0] m_axi_araddr;\n"
        "  input [1:0] s_axil_bresp_unused;\nendmodule\n"
    )
    ports = V.engine_ports(text)
    assert ports["clk"] == ("input", 1) and ports["m_axi_araddr"] == ("output", 32) and "a" not in ports
    with pytest.raises(V.VivadoError, match="irq.*m_axi_awaddr.*s_axil_awaddr"):
        V._check_ports(ports)
    with pytest.raises(V.VivadoError, match="no module codenet_engine"):
        V.engine_ports("module x();\nendmodule\n")


def test_generated_files_and_manifest(tmp_path, fast_gen):
    result, out = _project("pynq-z2", tmp_path)
    assert json.loads((out / "build.json").read_text()) == result
    for f in ("engine.v", "engine.json", "engine.h", "package_ip.tcl", "block_design.tcl", "build.tcl", "build.sh", "README.md"):
        assert (out / f).is_file(), f
    assert os.access(out / "build.sh", os.X_OK)
    assert subprocess.run(["bash", "-n", str(out / "build.sh")]).returncode == 0
    readme = (out / "README.md").read_text()
    assert "xc7z020clg400-1" in readme and "0x40000000" in readme and "codenet.hwh" in readme
    # Paths in the Tcl are relative to the script: the folder can move to the Vivado machine.
    for f in ("package_ip.tcl", "block_design.tcl", "build.tcl"):
        assert str(out) not in (out / f).read_text()
    assert result["address_map"][0]["offset_hex"] == "0x40000000"


def test_a_custom_engine_sets_the_clock_and_port_width_and_is_noted(tmp_path, fast_gen):
    result = V.generate_project("ultra96v2", tmp_path / "u", engine_config=PRESETS["tiny"])
    assert result["engine"] == "tiny" and result["clock"]["mhz"] == 100
    assert result["ps_config"]["PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ"] == "100"
    assert result["ps_config"]["PSU__SAXIGP2__DATA_WIDTH"] == "64"
    assert any("not the board's preset" in n for n in result["notes"])


# =========================================================================== the CLI


@needs_tcl
def test_cli_build_ultra96v2_json_is_one_object_and_the_tcl_runs(tmp_path, fast_gen):
    out = tmp_path / "u96"
    r = CliRunner().invoke(cli.main, ["build", "--board", "ultra96v2", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)  # exactly one JSON document
    assert report["board"] == "ultra96v2" and report["engine"] == "ultra96" and report["part"] == "xczu3eg-sbva484-1-i"
    assert report["overlay"]["bit"].endswith("overlay/codenet.bit") and report["overlay"]["hwh"].endswith("overlay/codenet.hwh")
    assert all(Path(p).exists() for p in report["files"].values())
    assert report["address_map"][0]["offset"] == 0xA000_0000
    rc, log, text = run_tcl(out, "build.tcl", "--bd-only", board_parts="avnet.com:ultra96v2:part0:1.2")
    _ok(rc, log, text)


def test_cli_build_human_output(tmp_path, fast_gen):
    r = CliRunner().invoke(cli.main, ["build", "--board", "kv260", "-o", str(tmp_path / "k"), "--engine", "tiny"])
    assert r.exit_code == 0, r.output
    assert "build.sh" in r.output and "kv260" in r.output


def test_cli_build_refuses_an_unknown_board(tmp_path):
    # (ulx3s goes to the ECP5 bitstream flow: tests/boards/test_ecp5.py)
    r = CliRunner().invoke(cli.main, ["build", "--board", "nope", "-o", str(tmp_path / "x")])
    assert r.exit_code != 0 and "'nope'" in r.output and "ultra96v2" in r.output
