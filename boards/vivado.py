"""A Vivado project generator for the Zynq boards: engine IP + block design -> PYNQ overlay.

``generate_project(board, out_dir)`` writes everything a machine with Vivado needs to turn the
engine into a PYNQ overlay, and nothing here runs Vivado:

- ``engine.v``, ``engine.json``, ``engine.h`` (codenet.hw.gen);
- ``package_ip.tcl``: packages engine.v as an IP in ``ip_repo/`` (its ``m_axi_*`` ports become an
  AXI4 master with a 32-bit address space, its ``s_axil_*`` ports an AXI4-Lite slave with the
  register window, ``clk`` / ``rst`` / ``irq`` a clock, an active-high reset and an interrupt);
- ``block_design.tcl``: the project on the board's part (and board part), the processing system
  with the engine's AXI ports, clock, reset and interrupt enabled, SmartConnects, the address map
  (registers at the board's ``reg_base``, the engine's master seeing the PS DDR), validation and
  the HDL wrapper;
- ``build.tcl``: both of the above, then synthesis, implementation, the bitstream and the copy of
  ``codenet.bit`` + ``codenet.hwh`` (the pair ``pynq.Overlay`` loads) to ``overlay/``;
- ``build.sh`` (checks that ``vivado`` is on PATH), ``README.md`` and ``build.json`` (what was
  generated, the address map, the PS settings).

Every path in the Tcl is relative to the script's own folder, so the folder can be copied to
another machine. docs/vivado.md says how the Tcl is tested without Vivado (tclsh and recording
stand-ins for every Vivado command) and what only a real Vivado run can show.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..sw.engine import AXIL_ADDR_BITS, EngineConfig
from .catalogue import BOARDS, Board, BoardError, get_board

__all__ = [
    "VivadoError",
    "IP_VLNV",
    "IP_NAME",
    "BD_NAME",
    "ENGINE_CELL",
    "vivado_boards",
    "resolve_board",
    "engine_ports",
    "generate_project",
]

#: The packaged engine IP and the names the block design gives things (PYNQ finds the engine
#: in ``ip_dict`` by the "codenet" in its name; the bitstream and .hwh share the name ``codenet``).
IP_VENDOR = "codenet.dev"
IP_LIBRARY = "codenet"
IP_NAME = "codenet_engine"
IP_VERSION = "1.0"
IP_VLNV = f"{IP_VENDOR}:{IP_LIBRARY}:{IP_NAME}:{IP_VERSION}"
BD_NAME = "codenet"
PROJECT_NAME = "codenet"
ENGINE_CELL = "codenet_engine_0"
RESET_CELL = "rst_pl"
SMC_LITE = "smc_lite"
SMC_HP = "smc_hp"
OVERLAY_NAME = "codenet"

#: The top module's interface ports (docs/engine.md): the AXI4 master and AXI4-Lite slave prefixes
#: and the signals each needs for Vivado to infer the interface.
MASTER_PREFIX = "m_axi"
LITE_PREFIX = "s_axil"
_MASTER_NEEDS = (
    "awaddr awlen awsize awburst awvalid awready wdata wstrb wlast wvalid wready bresp bvalid bready "
    "araddr arlen arsize arburst arvalid arready rdata rresp rlast rvalid rready"
).split()
_LITE_NEEDS = (
    "awaddr awvalid awready wdata wstrb wvalid wready bresp bvalid bready araddr arvalid arready rdata rresp rvalid rready"
).split()


class VivadoError(ValueError):
    """The board or engine cannot be built by this Vivado flow; the message says which and why."""


@dataclass(frozen=True)
class _PsMaster:
    """A PS master port (the host's way to the register file)."""

    use: str  # CONFIG key that enables it
    width_key: str | None  # CONFIG key of its data width (None: fixed)
    width: int | None
    aclk: str  # its clock pin
    window: tuple[int, int]  # (base, size) of its address window in the PS map


@dataclass(frozen=True)
class _PsSlave:
    """A PS slave port (the engine's way to DDR)."""

    use: str
    width_key: str
    widths: tuple[int, ...]
    aclk: str
    ddr_seg: str  # the DDR segment behind it, as get_bd_addr_segs names it under the PS cell
    ddr_max: int  # the most of DDR the segment can map from address 0


_G = 1 << 30

_ZYNQMP_MASTERS = {
    "M_AXI_HPM0_FPD": _PsMaster("PSU__USE__M_AXI_GP0", "PSU__MAXIGP0__DATA_WIDTH", 32, "maxihpm0_fpd_aclk", (0xA000_0000, 0x1000_0000)),
    "M_AXI_HPM1_FPD": _PsMaster("PSU__USE__M_AXI_GP1", "PSU__MAXIGP1__DATA_WIDTH", 32, "maxihpm1_fpd_aclk", (0xB000_0000, 0x1000_0000)),
    "M_AXI_HPM0_LPD": _PsMaster("PSU__USE__M_AXI_GP2", "PSU__MAXIGP2__DATA_WIDTH", 32, "maxihpm0_lpd_aclk", (0x8000_0000, 0x2000_0000)),
}
# S_AXI_HPCn_FPD are SAXIGP0/1, S_AXI_HPn_FPD SAXIGP2..5; DDR_LOW is the first 2 GB of DDR.
_ZYNQMP_SLAVES = {
    **{
        f"S_AXI_HPC{i}_FPD": _PsSlave(
            f"PSU__USE__S_AXI_GP{i}",
            f"PSU__SAXIGP{i}__DATA_WIDTH",
            (32, 64, 128),
            f"saxihpc{i}_fpd_aclk",
            f"SAXIGP{i}/HPC{i}_DDR_LOW",
            2 * _G,
        )
        for i in range(2)
    },
    **{
        f"S_AXI_HP{i}_FPD": _PsSlave(
            f"PSU__USE__S_AXI_GP{i + 2}",
            f"PSU__SAXIGP{i + 2}__DATA_WIDTH",
            (32, 64, 128),
            f"saxihp{i}_fpd_aclk",
            f"SAXIGP{i + 2}/HP{i}_DDR_LOW",
            2 * _G,
        )
        for i in range(4)
    },
}
_ZYNQ7_MASTERS = {
    "M_AXI_GP0": _PsMaster("PCW_USE_M_AXI_GP0", None, None, "M_AXI_GP0_ACLK", (0x4000_0000, 0x4000_0000)),
    "M_AXI_GP1": _PsMaster("PCW_USE_M_AXI_GP1", None, None, "M_AXI_GP1_ACLK", (0x8000_0000, 0x4000_0000)),
}
_ZYNQ7_SLAVES = {
    f"S_AXI_HP{i}": _PsSlave(
        f"PCW_USE_S_AXI_HP{i}", f"PCW_S_AXI_HP{i}_DATA_WIDTH", (32, 64), f"S_AXI_HP{i}_ACLK", f"S_AXI_HP{i}/HP{i}_DDR_LOWOCM", _G
    )
    for i in range(4)
}
# Ports switched off explicitly (a board preset may enable them, and an enabled port left
# unconnected fails validation for want of a clock).
_ZYNQMP_ALL_USE = ["PSU__USE__M_AXI_GP0", "PSU__USE__M_AXI_GP1", "PSU__USE__M_AXI_GP2"] + [f"PSU__USE__S_AXI_GP{i}" for i in range(7)]
_ZYNQ7_ALL_USE = ["PCW_USE_M_AXI_GP0", "PCW_USE_M_AXI_GP1", "PCW_USE_S_AXI_GP0", "PCW_USE_S_AXI_GP1", "PCW_USE_S_AXI_ACP"] + [
    f"PCW_USE_S_AXI_HP{i}" for i in range(4)
]

_FAMILY = {
    "zynqmp": {
        "vlnv": "xilinx.com:ip:zynq_ultra_ps_e",
        "rule": "xilinx.com:bd_rule:zynq_ultra_ps_e",
        "cell": "zynq_ultra_ps_e_0",
        "masters": _ZYNQMP_MASTERS,
        "slaves": _ZYNQMP_SLAVES,
        "all_use": _ZYNQMP_ALL_USE,
        "clock": re.compile(r"pl_clk([0-3])"),
        "reset": "pl_resetn0",
        "irq": {"pl_ps_irq0": "PSU__USE__IRQ0", "pl_ps_irq1": "PSU__USE__IRQ1"},
        "space": "Data",
    },
    "zynq7": {
        "vlnv": "xilinx.com:ip:processing_system7",
        "rule": "xilinx.com:bd_rule:processing_system7",
        "cell": "processing_system7_0",
        "masters": _ZYNQ7_MASTERS,
        "slaves": _ZYNQ7_SLAVES,
        "all_use": _ZYNQ7_ALL_USE,
        "clock": re.compile(r"FCLK_CLK([0-3])"),
        "reset": "FCLK_RESET0_N",
        "irq": {"IRQ_F2P": "PCW_USE_FABRIC_INTERRUPT"},
        "space": "Data",
    },
}

_SAFE = re.compile(r"^[A-Za-z0-9_.:\-]+$")  # names that go into Tcl unquoted


def vivado_boards() -> list[str]:
    """The catalogue's boards this flow builds (those with a Zynq processing system)."""
    return [n for n, b in BOARDS.items() if b.family in _FAMILY]


def resolve_board(board: Board | str) -> Board:
    """A Board from a name or a Board; an unknown board or one Vivado does not build is an error naming it and the known ones."""
    if isinstance(board, str):
        try:
            board = get_board(board)
        except BoardError:
            raise VivadoError(
                f"unknown board {board!r}; known boards: {', '.join(BOARDS)} (Vivado builds: {', '.join(vivado_boards())})"
            ) from None
    if board.family not in _FAMILY or not board.ps_ip:
        raise VivadoError(
            f"board {board.name!r} ({board.family}) has no Zynq processing system: the Vivado flow builds only "
            f"{', '.join(vivado_boards())} (known boards: {', '.join(BOARDS)})"
        )
    return board


# =========================================================================== engine.v


def engine_ports(verilog: str, top: str = IP_NAME) -> dict[str, tuple[str, int]]:
    """{port: (direction, width)} of the top module in generated Verilog (Amaranth's port declarations)."""
    m = re.search(rf"^module {re.escape(top)}\s*\(", verilog, re.M)
    if not m:
        raise VivadoError(f"engine.v has no module {top}")
    end = verilog.find("\nendmodule", m.end())
    body = verilog[m.end() : end if end >= 0 else len(verilog)]
    ports: dict[str, tuple[str, int]] = {}
    decl = re.compile(r"^\s*(input|output|inout)\s+(?:wire\s+|reg\s+)?(?:\[(\d+):(\d+)\]\s*)?([A-Za-z_][\w$]*)\s*;", re.M)
    for d, hi, lo, name in decl.findall(body):
        ports[name] = (d, abs(int(hi) - int(lo)) + 1 if hi else 1)
    return ports


def _check_ports(ports: dict[str, tuple[str, int]]) -> dict[str, Any]:
    """The interfaces Vivado will infer, checked against what the block design connects."""
    missing = [p for p in ("clk", "rst", "irq") if p not in ports]
    missing += [f"{MASTER_PREFIX}_{s}" for s in _MASTER_NEEDS if f"{MASTER_PREFIX}_{s}" not in ports]
    missing += [f"{LITE_PREFIX}_{s}" for s in _LITE_NEEDS if f"{LITE_PREFIX}_{s}" not in ports]
    if missing:
        raise VivadoError(f"engine.v's top module lacks the ports the block design connects: {', '.join(missing)}")
    return {
        "m_axi": sorted(p for p in ports if p.startswith(MASTER_PREFIX + "_")),
        "s_axil": sorted(p for p in ports if p.startswith(LITE_PREFIX + "_")),
        "m_axi_addr_bits": ports[f"{MASTER_PREFIX}_araddr"][1],
        "m_axi_data_bits": ports[f"{MASTER_PREFIX}_rdata"][1],
        "s_axil_addr_bits": ports[f"{LITE_PREFIX}_araddr"][1],
        "clock": "clk",
        "reset": "rst",
        "interrupt": "irq",
    }


# =========================================================================== plan


def _size(n: int) -> str:
    """Vivado's size notation (64K, 2G) for a power-of-two byte count."""
    for suffix, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{suffix}"
    return str(n)


def _plan(board: Board, cfg: EngineConfig, ifs: dict[str, Any]) -> dict[str, Any]:
    """Every fact the Tcl needs, decided and checked here so that the Tcl has no choices left."""
    fam = _FAMILY[board.family]
    for what, v in (
        ("part", board.part),
        ("board_part", board.board_part or "x"),
        ("axi master", board.axi_master_port),
        ("axi lite", board.axi_lite_port),
        ("irq", board.irq or "x"),
        ("engine_clock", board.engine_clock),
    ):
        if not _SAFE.match(v):
            raise VivadoError(f"board {board.name!r}: {what} {v!r} has characters that cannot go into the Tcl")
    if board.axi_lite_port not in fam["masters"]:
        known = ", ".join(fam["masters"])
        raise VivadoError(f"board {board.name!r}: axi.lite {board.axi_lite_port!r} is not a {board.ps_ip} master port ({known})")
    if board.axi_master_port not in fam["slaves"]:
        known = ", ".join(fam["slaves"])
        raise VivadoError(f"board {board.name!r}: axi.master {board.axi_master_port!r} is not a {board.ps_ip} slave port ({known})")
    clk = fam["clock"].fullmatch(board.engine_clock)
    if not clk:
        raise VivadoError(f"board {board.name!r}: engine_clock {board.engine_clock!r} is not a {board.ps_ip} fabric clock")
    if board.irq not in fam["irq"]:
        raise VivadoError(f"board {board.name!r}: irq {board.irq!r} is not a {board.ps_ip} interrupt input ({', '.join(fam['irq'])})")
    master: _PsMaster = fam["masters"][board.axi_lite_port]
    slave: _PsSlave = fam["slaves"][board.axi_master_port]
    base, size = master.window
    reg_min = 1 << ifs["s_axil_addr_bits"]
    if board.reg_size < max(reg_min, 4096):
        raise VivadoError(f"board {board.name!r}: reg_size 0x{board.reg_size:x} is smaller than the engine's register file (0x{reg_min:x})")
    if not (base <= board.reg_base and board.reg_base + board.reg_size <= base + size):
        raise VivadoError(
            f"board {board.name!r}: registers at 0x{board.reg_base:x} (+0x{board.reg_size:x}) are outside {board.axi_lite_port}'s window "
            f"0x{base:x}..0x{base + size - 1:x}"
        )
    if board.reg_base % board.reg_size:
        raise VivadoError(f"board {board.name!r}: reg_base 0x{board.reg_base:x} is not aligned to reg_size 0x{board.reg_size:x}")
    ddr = min(board.dram.size_mb << 20, slave.ddr_max, 1 << ifs["m_axi_addr_bits"])
    ddr = 1 << (ddr.bit_length() - 1)  # Vivado ranges are powers of two
    hp_bits = cfg.axi_data_bits if cfg.axi_data_bits in slave.widths else max(slave.widths)
    n = clk.group(1)
    ps = fam["cell"]
    config: dict[str, str] = {k: "0" for k in fam["all_use"]}
    config[master.use] = "1"
    config[slave.use] = "1"
    config[slave.width_key] = str(hp_bits)
    if board.family == "zynqmp":
        if master.width_key:
            config[master.width_key] = str(master.width)
        config[f"PSU__FPGA_PL{n}_ENABLE"] = "1"
        config[f"PSU__CRL_APB__PL{n}_REF_CTRL__FREQMHZ"] = str(cfg.clock_mhz)
        config["PSU__NUM_FABRIC_RESETS"] = "1"
        config[fam["irq"][board.irq]] = "1"
    else:
        config[f"PCW_EN_CLK{n}_PORT"] = "1"
        config[f"PCW_FPGA{n}_PERIPHERAL_FREQMHZ"] = str(cfg.clock_mhz)
        config["PCW_EN_RST0_PORT"] = "1"
        config["PCW_USE_FABRIC_INTERRUPT"] = "1"
        config["PCW_IRQ_F2P_INTR"] = "1"
    e = ENGINE_CELL
    nets = {
        "clock": [
            f"{ps}/{board.engine_clock}",
            f"{ps}/{master.aclk}",
            f"{ps}/{slave.aclk}",
            f"{SMC_LITE}/aclk",
            f"{SMC_HP}/aclk",
            f"{RESET_CELL}/slowest_sync_clk",
            f"{e}/clk",
        ],
        "ext_reset": [f"{ps}/{fam['reset']}", f"{RESET_CELL}/ext_reset_in"],
        "interconnect_reset": [f"{RESET_CELL}/interconnect_aresetn", f"{SMC_LITE}/aresetn", f"{SMC_HP}/aresetn"],
        "engine_reset": [f"{RESET_CELL}/peripheral_reset", f"{e}/rst"],
        "interrupt": [f"{e}/irq", f"{ps}/{board.irq}"],
    }
    intf = [
        (f"{ps}/{board.axi_lite_port}", f"{SMC_LITE}/S00_AXI"),
        (f"{SMC_LITE}/M00_AXI", f"{e}/{LITE_PREFIX}"),
        (f"{e}/{MASTER_PREFIX}", f"{SMC_HP}/S00_AXI"),
        (f"{SMC_HP}/M00_AXI", f"{ps}/{board.axi_master_port}"),
    ]
    addresses = [
        {
            "what": "engine registers",
            "space": f"{ps}/{fam['space']}",
            "segment": f"{e}/{LITE_PREFIX}/reg0",
            "offset": board.reg_base,
            "range": board.reg_size,
        },
        {"what": "engine master -> DDR", "space": f"{e}/{MASTER_PREFIX}", "segment": f"{ps}/{slave.ddr_seg}", "offset": 0, "range": ddr},
    ]
    return {
        "ps_cell": ps,
        "ps_vlnv": fam["vlnv"],
        "ps_rule": fam["rule"],
        "ps_config": config,
        "hp_bits": hp_bits,
        "nets": nets,
        "intf_nets": intf,
        "addresses": addresses,
        "ddr_bytes": ddr,
        "reg_decoded_bytes": reg_min,
    }


# =========================================================================== Tcl


_HEADER = """\
# {file}: generated by `codenet build --board {board}` ({why}).
# Re-run codenet build rather than editing; docs/vivado.md explains every step.
set codenet_dir [file dirname [file normalize [info script]]]
"""


def _tcl_package_ip(board: Board, cfg: EngineConfig, ifs: dict[str, Any], plan: dict[str, Any]) -> str:
    t = _HEADER.format(file="package_ip.tcl", board=board.name, why="engine.v -> a Vivado IP in ip_repo/")
    t += f"""\
set codenet_ip_dir [file join $codenet_dir ip_repo {IP_NAME}]
file delete -force $codenet_ip_dir

# A throw-away project on the board's part holds engine.v while it is packaged.
create_project -force codenet_ip [file join $codenet_dir vivado ip_project] -part {board.part}
add_files -norecurse [file join $codenet_dir engine.v]
set_property top {IP_NAME} [current_fileset]
update_compile_order -fileset sources_1

ipx::package_project -root_dir $codenet_ip_dir -vendor {IP_VENDOR} -library {IP_LIBRARY} -taxonomy /UserIP -import_files -set_current true
set core [ipx::current_core]
set_property name {IP_NAME} $core
set_property version {IP_VERSION} $core
set_property display_name {{CoDeNet engine ({cfg.name})}} $core
set_property description {{CoDeNet accelerator engine {cfg.name}: AXI4 master m_axi, AXI4-Lite registers s_axil, irq}} $core
set_property vendor_display_name codenet $core

# The port prefixes m_axi_* and s_axil_* name the two AXI interfaces; clk, rst and irq the rest.
foreach vlnv {{xilinx.com:interface:aximm_rtl:1.0 xilinx.com:signal:clock_rtl:1.0
              xilinx.com:signal:reset_rtl:1.0 xilinx.com:signal:interrupt_rtl:1.0}} {{
    ipx::infer_bus_interfaces $vlnv $core
}}
foreach busif {{{MASTER_PREFIX} {LITE_PREFIX} clk rst}} {{
    if {{[llength [ipx::get_bus_interfaces -quiet $busif -of_objects $core]] == 0}} {{
        error "codenet: Vivado did not infer the bus interface '$busif' from engine.v's ports"
    }}
}}
ipx::associate_bus_interfaces -busif {MASTER_PREFIX} -clock clk $core
ipx::associate_bus_interfaces -busif {LITE_PREFIX} -clock clk $core
ipx::associate_bus_interfaces -clock clk -reset rst $core

proc codenet_bus_param {{core busif name value}} {{
    set bif [ipx::get_bus_interfaces $busif -of_objects $core]
    set param [ipx::get_bus_parameters -quiet $name -of_objects $bif]
    if {{[llength $param] == 0}} {{
        set param [ipx::add_bus_parameter $name $bif]
    }}
    set_property value $value $param
}}
# rst is active high (Amaranth's synchronous reset); irq is a level, high while a status bit is set.
codenet_bus_param $core rst POLARITY ACTIVE_HIGH
if {{[llength [ipx::get_bus_interfaces -quiet irq -of_objects $core]] > 0}} {{
    codenet_bus_param $core irq SENSITIVITY LEVEL_HIGH
}}

# The register window: the engine decodes {ifs["s_axil_addr_bits"]} address bits (0x{plan["reg_decoded_bytes"]:x} bytes);
# the board maps 0x{board.reg_size:x} bytes, in which the register file repeats.
if {{[llength [ipx::get_memory_maps -quiet {LITE_PREFIX} -of_objects $core]] > 0}} {{
    ipx::remove_memory_map {LITE_PREFIX} $core
}}
set codenet_mm [ipx::add_memory_map {LITE_PREFIX} $core]
set_property slave_memory_map_ref {LITE_PREFIX} [ipx::get_bus_interfaces {LITE_PREFIX} -of_objects $core]
set codenet_block [ipx::add_address_block reg0 $codenet_mm]
set_property base_address 0 $codenet_block
set_property range {_size(board.reg_size)} $codenet_block
set_property width 32 $codenet_block
set_property usage register $codenet_block

# The master's address space: {ifs["m_axi_addr_bits"]}-bit addresses.
if {{[llength [ipx::get_address_spaces -quiet {MASTER_PREFIX} -of_objects $core]] > 0}} {{
    ipx::remove_address_space {MASTER_PREFIX} $core
}}
set codenet_as [ipx::add_address_space {MASTER_PREFIX} $core]
set_property master_address_space_ref {MASTER_PREFIX} [ipx::get_bus_interfaces {MASTER_PREFIX} -of_objects $core]
set_property range {_size(1 << ifs["m_axi_addr_bits"])} $codenet_as
set_property width {ifs["m_axi_data_bits"]} $codenet_as

set_property core_revision 1 $core
ipx::create_xgui_files $core
ipx::update_checksums $core
ipx::check_integrity $core
ipx::save_core $core
close_project
puts "codenet: packaged {IP_VLNV} in $codenet_ip_dir"
"""
    return t


def _tcl_block_design(board: Board, cfg: EngineConfig, plan: dict[str, Any]) -> str:
    ps = plan["ps_cell"]
    t = _HEADER.format(file="block_design.tcl", board=board.name, why="project, block design, address map, wrapper")
    t += f"""\
set codenet_proj_dir [file join $codenet_dir vivado {PROJECT_NAME}]
create_project -force {PROJECT_NAME} $codenet_proj_dir -part {board.part}
"""
    if board.board_part:
        bp = board.board_part
        family_glob = ":".join(bp.split(":")[:3]) + ":*"
        t += f"""
# The board part carries the PS presets (DDR, MIO). Extra board files: CODENET_BOARD_REPO=DIR.
if {{[info exists ::env(CODENET_BOARD_REPO)]}} {{
    set_param board.repoPaths [list $::env(CODENET_BOARD_REPO)]
}}
set codenet_board_part [get_board_parts -quiet {bp}]
if {{[llength $codenet_board_part] == 0}} {{
    set codenet_board_part [lindex [get_board_parts -quiet -latest_file_version {family_glob}] 0]
    if {{$codenet_board_part eq ""}} {{
        error "codenet: Vivado has no board files for {bp}; install them (Tools > Vivado Store > Boards,\
            or the vendor's board files with CODENET_BOARD_REPO=DIR) and run build.sh again"
    }}
    puts "codenet: board part {bp} not installed, using $codenet_board_part"
}}
set_property board_part $codenet_board_part [current_project]
"""
    t += f"""
set_property ip_repo_paths [list [file join $codenet_dir ip_repo]] [current_project]
update_ip_catalog -rebuild
if {{[llength [get_ipdefs -quiet {IP_VLNV}]] == 0}} {{
    error "codenet: {IP_VLNV} is not in the IP catalogue; run package_ip.tcl first"
}}

create_bd_design {BD_NAME}

# Processing system: board preset first, then the ports, clock and interrupt the engine uses.
create_bd_cell -type ip -vlnv {plan["ps_vlnv"]} {ps}
"""
    preset = "1" if board.board_part else "0"
    if board.family == "zynqmp":
        t += f'apply_bd_automation -rule {plan["ps_rule"]} -config {{apply_board_preset "{preset}"}} [get_bd_cells {ps}]\n'
    else:
        t += (
            f"apply_bd_automation -rule {plan['ps_rule']} "
            f'-config {{make_external "FIXED_IO, DDR" apply_board_preset "{preset}" Master "Disable" Slave "Disable"}} '
            f"[get_bd_cells {ps}]\n"
        )
    t += "set_property -dict [list \\\n"
    for k, v in plan["ps_config"].items():
        t += f"    CONFIG.{k} {{{v}}} \\\n"
    t += f"] [get_bd_cells {ps}]\n"
    t += f"""
create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset {RESET_CELL}
create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect {SMC_LITE}
set_property -dict [list CONFIG.NUM_SI {{1}} CONFIG.NUM_MI {{1}} CONFIG.NUM_CLKS {{1}}] [get_bd_cells {SMC_LITE}]
create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect {SMC_HP}
set_property -dict [list CONFIG.NUM_SI {{1}} CONFIG.NUM_MI {{1}} CONFIG.NUM_CLKS {{1}}] [get_bd_cells {SMC_HP}]
create_bd_cell -type ip -vlnv {IP_VLNV} {ENGINE_CELL}

# AXI: host -> registers over {board.axi_lite_port}; engine -> DDR over {board.axi_master_port}.
"""
    for a, b in plan["intf_nets"]:
        t += f"connect_bd_intf_net [get_bd_intf_pins {a}] [get_bd_intf_pins {b}]\n"
    t += f"\n# Clock ({board.engine_clock} at {cfg.clock_mhz} MHz), resets and the interrupt.\n"
    for pins in plan["nets"].values():
        t += "connect_bd_net " + " ".join(f"[get_bd_pins {p}]" for p in pins) + "\n"
    t += "\n# Address map: the registers where the driver looks for them, the engine's master over DDR.\n"
    for a in plan["addresses"]:
        t += (
            f"assign_bd_address -offset 0x{a['offset']:08X} -range 0x{a['range']:08X} "
            f"-target_address_space [get_bd_addr_spaces {a['space']}] [get_bd_addr_segs {a['segment']}] -force\n"
        )
    t += f"""
validate_bd_design
save_bd_design
set codenet_bd_file [get_files {BD_NAME}.bd]
generate_target all $codenet_bd_file
add_files -norecurse [make_wrapper -files $codenet_bd_file -top]
set_property top {BD_NAME}_wrapper [current_fileset]
update_compile_order -fileset sources_1
puts "codenet: block design {BD_NAME} validated for {board.name} ({board.part})"
"""
    return t


def _tcl_build(board: Board) -> str:
    t = _HEADER.format(file="build.tcl", board=board.name, why="IP, block design, bitstream, PYNQ overlay")
    t += f"""\
# Arguments (build.sh passes them through): --bd-only  stop after the block design;
# --jobs N  parallel synthesis/implementation jobs (default 4).
set codenet_bd_only 0
set codenet_jobs 4
set codenet_args $argv
while {{[llength $codenet_args] > 0}} {{
    set codenet_args [lassign $codenet_args codenet_arg]
    switch -- $codenet_arg {{
        --bd-only {{ set codenet_bd_only 1 }}
        --jobs {{ set codenet_args [lassign $codenet_args codenet_jobs] }}
        default {{ error "codenet: unknown argument '$codenet_arg' (known: --bd-only, --jobs N)" }}
    }}
}}
if {{![string is integer -strict $codenet_jobs] || $codenet_jobs < 1}} {{
    error "codenet: --jobs wants a positive integer, got '$codenet_jobs'"
}}

source [file join $codenet_dir package_ip.tcl]
source [file join $codenet_dir block_design.tcl]

proc codenet_check_run {{run}} {{
    set r [get_runs $run]
    if {{[get_property PROGRESS $r] ne "100%"}} {{
        error "codenet: $run did not finish ([get_property STATUS $r]); see [get_property DIRECTORY $r]/runme.log"
    }}
}}

if {{$codenet_bd_only}} {{
    puts "codenet: --bd-only: block design done, no bitstream"
}} else {{
    launch_runs synth_1 -jobs $codenet_jobs
    wait_on_run synth_1
    codenet_check_run synth_1
    launch_runs impl_1 -to_step write_bitstream -jobs $codenet_jobs
    wait_on_run impl_1
    codenet_check_run impl_1

    set codenet_overlay [file join $codenet_dir overlay]
    file mkdir $codenet_overlay
    open_run impl_1
    report_utilization -file [file join $codenet_overlay utilization.rpt]
    report_timing_summary -file [file join $codenet_overlay timing.rpt]
    set codenet_wns [get_property STATS.WNS [get_runs impl_1]]

    # PYNQ wants the bitstream and the hardware handoff side by side, with the same name.
    set codenet_bit [file join [get_property DIRECTORY [get_runs impl_1]] {BD_NAME}_wrapper.bit]
    file copy -force $codenet_bit [file join $codenet_overlay {OVERLAY_NAME}.bit]
    set codenet_hwh [glob -nocomplain \\
        [file join $codenet_proj_dir {PROJECT_NAME}.gen sources_1 bd {BD_NAME} hw_handoff {BD_NAME}.hwh] \\
        [file join $codenet_proj_dir {PROJECT_NAME}.srcs sources_1 bd {BD_NAME} hw_handoff {BD_NAME}.hwh]]
    if {{[llength $codenet_hwh] == 0}} {{
        error "codenet: no {BD_NAME}.hwh under $codenet_proj_dir (hw_handoff of the block design)"
    }}
    file copy -force [lindex $codenet_hwh 0] [file join $codenet_overlay {OVERLAY_NAME}.hwh]
    puts "codenet: overlay written to $codenet_overlay ({OVERLAY_NAME}.bit + {OVERLAY_NAME}.hwh), WNS $codenet_wns ns"
    if {{$codenet_wns < 0}} {{
        puts "CRITICAL WARNING: codenet: timing not met (WNS $codenet_wns ns): the engine may fail at this clock (overlay/timing.rpt)"
    }}
}}
"""
    return t


_BUILD_SH = """\
#!/usr/bin/env bash
# build.sh: generated by `codenet build --board {board}`. Runs build.tcl in Vivado (batch mode):
# engine IP -> block design -> bitstream -> overlay/{overlay}.bit + overlay/{overlay}.hwh.
# Arguments go to build.tcl: --bd-only (stop after the block design), --jobs N.
set -euo pipefail
here="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
if ! command -v vivado >/dev/null 2>&1; then
    echo "build.sh: 'vivado' is not on PATH. Source Vivado's settings first, e.g." >&2
    echo "    source /tools/Xilinx/Vivado/<version>/settings64.sh" >&2
    echo "then run $0 again (this folder is self-contained: it can be copied to the machine that has Vivado)." >&2
    exit 127
fi
cd "$here"
mkdir -p vivado
exec vivado -mode batch -nojournal -log vivado/build.log -source build.tcl -tclargs "$@"
"""


def _readme(board: Board, cfg: EngineConfig, plan: dict[str, Any], ifs: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {a['what']} | `{a['space']}` | `{a['segment']}` | 0x{a['offset']:08X} | {_size(a['range'])} |" for a in plan["addresses"]
    )
    conf = "\n".join(f"- `CONFIG.{k}` = {v}" for k, v in plan["ps_config"].items())
    notes = _notes(board, cfg, plan)
    note_text = "\n".join(f"- {n}" for n in notes) or "- none"
    bp_text = f" with board part `{board.board_part}`" if board.board_part else ""
    return f"""# codenet Vivado project: {board.title} ({board.name})

Generated by `codenet build --board {board.name}`. On a machine with Vivado:

    ./build.sh            # synthesis + implementation: long for the full engine; --bd-only stops after the block design

writes `overlay/{OVERLAY_NAME}.bit` and `overlay/{OVERLAY_NAME}.hwh` (copy both to the board, then
`codenet run MODEL --backend pynq --bitfile {OVERLAY_NAME}.bit`), plus `overlay/utilization.rpt`
and `overlay/timing.rpt`. The Vivado projects go to `vivado/`, the packaged IP to `ip_repo/`.

## Files

- `engine.v`, `engine.json`, `engine.h`: engine `{cfg.name}` ({cfg.lanes} lanes, {cfg.axi_data_bits}-bit AXI, {cfg.clock_mhz} MHz)
- `package_ip.tcl`: engine.v -> IP `{IP_VLNV}` (interfaces `m_axi` AXI4 master, `s_axil` AXI4-Lite slave, `clk`, `rst` active high, `irq`)
- `block_design.tcl`: project on `{board.part}`{bp_text}, block design `{BD_NAME}`
- `build.tcl`: both, then synthesis, implementation, bitstream, and the copy to `overlay/`
- `build.sh`: runs `vivado -mode batch -source build.tcl`
- `build.json`: this summary as data

## Block design

- `{plan["ps_cell"]}` ({board.ps_ip}): `{board.axi_lite_port}` -> `{SMC_LITE}` -> engine `s_axil`;
  engine `m_axi` -> `{SMC_HP}` -> `{board.axi_master_port}` ({plan["hp_bits"]}-bit);
  `{board.engine_clock}` at {cfg.clock_mhz} MHz clocks everything; `{RESET_CELL}` (proc_sys_reset) resets the
  SmartConnects and the engine (`peripheral_reset`, active high); engine `irq` -> `{board.irq}`.

| path | address space | segment | offset | range |
|---|---|---|---|---|
{rows}

Processing-system settings (after the board preset):

{conf}

## Notes

{note_text}

## What was checked here, and what was not

The Tcl was generated, not run: `tests/boards/test_vivado.py` runs it under tclsh with a recording
stand-in for every Vivado command and checks the part, the IP packaging, the PS ports, every
connection and the address map. Whether Vivado accepts every property, meets timing at
{cfg.clock_mhz} MHz and fits the part shows only in a real run (docs/vivado.md).
"""


def _notes(board: Board, cfg: EngineConfig, plan: dict[str, Any]) -> list[str]:
    notes = []
    if cfg.name != board.engine_preset:
        notes.append(f"engine {cfg.name!r} is not the board's preset {board.engine_preset!r}")
    if cfg.clock_mhz != board.engine_clock_mhz:
        notes.append(f"{board.engine_clock} is set to the engine's {cfg.clock_mhz} MHz, not the catalogue's {board.engine_clock_mhz} MHz")
    if plan["hp_bits"] != cfg.axi_data_bits:
        notes.append(
            f"{board.axi_master_port} runs at {plan['hp_bits']} bits; the SmartConnect converts the engine's {cfg.axi_data_bits}-bit beats"
        )
    if plan["ddr_bytes"] < board.dram.size_mb << 20:
        notes.append(
            f"the engine's master maps the first {_size(plan['ddr_bytes'])} of the board's {board.dram.size_mb} MB DDR "
            f"({board.axi_master_port}'s low DDR segment, {cfg.axi_addr_bits}-bit addresses); pynq.allocate's CMA buffers lie there"
        )
    if plan["reg_decoded_bytes"] < board.reg_size:
        decoded = _size(plan["reg_decoded_bytes"])
        notes.append(f"the register window is {_size(board.reg_size)}; the engine decodes {decoded}, which repeats in it")
    if not board.board_part:
        notes.append("no board part: the PS gets no board preset (a PYNQ overlay leaves DDR alone; an FSBL made from it would not)")
    return notes


# =========================================================================== entry point


def generate_project(board: Board | str, out_dir: str | Path, engine_config: EngineConfig | None = None) -> dict[str, Any]:
    """Write the engine, the Tcl, build.sh, README.md and build.json into `out_dir`; returns build.json's content.

    `board` is a Board or a catalogue name; `engine_config` defaults to the board's preset.
    Raises VivadoError for a board this flow does not build (unknown, or not a Zynq).
    """
    from ..hw import gen as hw_gen

    board = resolve_board(board)
    cfg = (engine_config or board.engine_config()).validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    engine_files = hw_gen.generate(cfg, out)
    ports = engine_ports(engine_files["verilog"].read_text())
    ifs = _check_ports(ports)
    if ifs["m_axi_data_bits"] != cfg.axi_data_bits or ifs["s_axil_addr_bits"] != AXIL_ADDR_BITS:
        got = f"{ifs['m_axi_data_bits']}-bit data, {ifs['s_axil_addr_bits']}-bit register addresses"
        raise VivadoError(f"engine.v's ports disagree with the configuration: {got}")
    plan = _plan(board, cfg, ifs)

    files = {
        k: out / v
        for k, v in (
            ("package_ip", "package_ip.tcl"),
            ("block_design", "block_design.tcl"),
            ("build_tcl", "build.tcl"),
            ("build_sh", "build.sh"),
            ("readme", "README.md"),
            ("manifest", "build.json"),
        )
    }
    files["package_ip"].write_text(_tcl_package_ip(board, cfg, ifs, plan))
    files["block_design"].write_text(_tcl_block_design(board, cfg, plan))
    files["build_tcl"].write_text(_tcl_build(board))
    files["build_sh"].write_text(_BUILD_SH.format(board=board.name, overlay=OVERLAY_NAME))
    files["build_sh"].chmod(0o755)
    files["readme"].write_text(_readme(board, cfg, plan, ifs))

    result: dict[str, Any] = {
        "board": board.name,
        "title": board.title,
        "family": board.family,
        "part": board.part,
        "board_part": board.board_part,
        "ps_ip": board.ps_ip,
        "ps_cell": plan["ps_cell"],
        "engine": cfg.name,
        "engine_config": cfg.to_dict(),
        "clock": {"pin": board.engine_clock, "mhz": cfg.clock_mhz},
        "ip_vlnv": IP_VLNV,
        "engine_cell": ENGINE_CELL,
        "interfaces": ifs,
        "ports": {
            "axi_lite": board.axi_lite_port,
            "axi_master": board.axi_master_port,
            "axi_master_bits": plan["hp_bits"],
            "irq": board.irq,
        },
        "ps_config": plan["ps_config"],
        "connections": {"intf": [list(p) for p in plan["intf_nets"]], "nets": plan["nets"]},
        "address_map": [{**a, "offset_hex": f"0x{a['offset']:08X}", "range_hex": f"0x{a['range']:08X}"} for a in plan["addresses"]],
        "overlay": {"bit": str(out / "overlay" / f"{OVERLAY_NAME}.bit"), "hwh": str(out / "overlay" / f"{OVERLAY_NAME}.hwh")},
        "command": f"{out / 'build.sh'}",
        "notes": _notes(board, cfg, plan),
        "files": {**{k: str(v) for k, v in engine_files.items()}, **{k: str(v) for k, v in files.items()}},
    }
    files["manifest"].write_text(json.dumps(result, indent=2) + "\n")
    return result
