"""The board catalogue: what the toolkit knows of each board, read from ``boards.toml``.

Facts live in data, not in code, so adding a board is adding a table. Every field is checked
on load and a bad one is named (file, board, field). The synthesis, Vivado, bitstream and
deployment commands all take their part, budgets, clocks and ports from here.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..sw.engine import PRESETS, EngineConfig

__all__ = ["Board", "Dram", "BoardError", "BOARDS", "CATALOGUE", "get_board", "load_catalogue", "board_names"]

CATALOGUE = Path(__file__).with_name("boards.toml")

FAMILIES = ("zynqmp", "zynq7", "ecp5")
SYNTH_TARGETS = {"zynqmp": "xcup", "zynq7": "xc7", "ecp5": "ecp5"}
PS_IPS = {"zynqmp": "zynq_ultra_ps_e", "zynq7": "processing_system7", "ecp5": ""}
BUDGET_CLASSES = {
    "zynqmp": ("LUT", "FF", "DSP", "BRAM36", "URAM"),
    "zynq7": ("LUT", "FF", "DSP", "BRAM36", "URAM"),
    "ecp5": ("LUT", "FF", "DSP", "BRAM"),
}


class BoardError(ValueError):
    """A catalogue entry that cannot be used, naming the file, the board and the field."""


@dataclass(frozen=True)
class Dram:
    kind: str
    width_bits: int
    mt_s: int
    size_mb: int

    @property
    def peak_mb_s(self) -> float:
        """Peak transfer rate in MB/s (width x transfers, no refresh or turnaround)."""
        return self.width_bits / 8 * self.mt_s


@dataclass(frozen=True)
class Board:
    name: str
    title: str
    family: str
    part: str
    synth_target: str
    engine_preset: str
    budget: Mapping[str, int]
    pl_clocks_mhz: Mapping[str, int]
    engine_clock: str
    dram: Dram
    axi_master_port: str
    axi_master_bits: int
    axi_lite_port: str
    reg_base: int
    reg_size: int
    board_part: str | None = None
    ps_ip: str | None = None
    irq: str | None = None
    overlay: str = "pynq"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def engine_clock_mhz(self) -> int:
        return self.pl_clocks_mhz[self.engine_clock]

    @property
    def is_zynq(self) -> bool:
        return self.family in ("zynqmp", "zynq7")

    def engine_config(self) -> EngineConfig:
        """The board's default engine (its preset)."""
        return PRESETS[self.engine_preset]

    def dram_bytes_per_cycle(self) -> float:
        """Peak DRAM bytes per engine clock cycle: the figure the simulation's DRAM model takes."""
        return self.dram.peak_mb_s / self.engine_clock_mhz

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "family": self.family,
            "part": self.part,
            "board_part": self.board_part,
            "ps_ip": self.ps_ip,
            "synth_target": self.synth_target,
            "engine_preset": self.engine_preset,
            "budget": dict(self.budget),
            "pl_clocks_mhz": dict(self.pl_clocks_mhz),
            "engine_clock": self.engine_clock,
            "engine_clock_mhz": self.engine_clock_mhz,
            "dram": {
                "kind": self.dram.kind,
                "width_bits": self.dram.width_bits,
                "mt_s": self.dram.mt_s,
                "size_mb": self.dram.size_mb,
                "peak_mb_s": self.dram.peak_mb_s,
            },
            "axi_master_port": self.axi_master_port,
            "axi_master_bits": self.axi_master_bits,
            "axi_lite_port": self.axi_lite_port,
            "reg_base": self.reg_base,
            "reg_size": self.reg_size,
            "irq": self.irq,
            "overlay": self.overlay,
        }


def _parse(name: str, t: Mapping[str, Any], src: str) -> Board:
    def bad(fld: str, why: str) -> BoardError:
        return BoardError(f"{src}: board {name!r}, field {fld!r}: {why}")

    def get(fld: str, typ: type | tuple[type, ...], table: Mapping[str, Any] = t, prefix: str = "") -> Any:
        if fld not in table:
            raise bad(prefix + fld, "missing")
        v = table[fld]
        if not isinstance(v, typ) or isinstance(v, bool):
            raise bad(prefix + fld, f"must be {typ.__name__ if isinstance(typ, type) else ' or '.join(x.__name__ for x in typ)}, got {v!r}")
        return v

    known = {
        "title",
        "family",
        "part",
        "board_part",
        "ps_ip",
        "synth_target",
        "engine_preset",
        "budget",
        "pl_clocks",
        "engine_clock",
        "dram",
        "axi",
        "reg_base",
        "reg_size",
        "irq",
        "overlay",
    }
    for k in t:
        if k not in known:
            raise bad(k, f"unknown field; known: {', '.join(sorted(known))}")
    family = get("family", str)
    if family not in FAMILIES:
        raise bad("family", f"must be one of {FAMILIES}, got {family!r}")
    target = get("synth_target", str)
    if target != SYNTH_TARGETS[family]:
        raise bad("synth_target", f"a {family} board synthesizes for {SYNTH_TARGETS[family]!r}, got {target!r}")
    ps_ip = t.get("ps_ip", "")
    if ps_ip != PS_IPS[family]:
        raise bad("ps_ip", f"a {family} board's processing system is {PS_IPS[family] or 'none'!r}, got {ps_ip!r}")
    preset_name = get("engine_preset", str)
    if preset_name not in PRESETS:
        raise bad("engine_preset", f"unknown engine preset {preset_name!r}; known: {', '.join(sorted(PRESETS))}")
    budget = get("budget", dict)
    want = BUDGET_CLASSES[family]
    if set(budget) != set(want):
        raise bad("budget", f"a {family} board's budget has exactly {', '.join(want)}, got {', '.join(budget)}")
    for k, v in budget.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise bad(f"budget.{k}", f"must be a count >= 0, got {v!r}")
    clocks = get("pl_clocks", dict)
    if not clocks:
        raise bad("pl_clocks", "at least one clock")
    for k, v in clocks.items():
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 1000:
            raise bad(f"pl_clocks.{k}", f"must be MHz in [1, 1000], got {v!r}")
    engine_clock = get("engine_clock", str)
    if engine_clock not in clocks:
        raise bad("engine_clock", f"{engine_clock!r} is not one of pl_clocks ({', '.join(clocks)})")
    if clocks[engine_clock] != PRESETS[preset_name].clock_mhz:
        raise bad(
            "engine_clock",
            f"{engine_clock} is {clocks[engine_clock]} MHz but preset {preset_name} runs at {PRESETS[preset_name].clock_mhz} MHz",
        )
    d = get("dram", dict)
    dram = Dram(
        get("kind", str, d, "dram."), get("width_bits", int, d, "dram."), get("mt_s", int, d, "dram."), get("size_mb", int, d, "dram.")
    )
    if dram.width_bits not in (8, 16, 32, 64, 128) or dram.mt_s <= 0 or dram.size_mb <= 0:
        raise bad("dram", f"width_bits must be 8..128 (a power of two), mt_s and size_mb positive: {dram}")
    axi = get("axi", dict)
    master_bits = get("master_bits", int, axi, "axi.")
    if master_bits != PRESETS[preset_name].axi_data_bits and family != "ecp5":
        # the HP port is configured to the engine's data width; a mismatch needs a width converter we do not generate
        raise bad(
            "axi.master_bits", f"{master_bits} differs from preset {preset_name}'s axi_data_bits {PRESETS[preset_name].axi_data_bits}"
        )
    reg_base, reg_size = get("reg_base", int), get("reg_size", int)
    if reg_base < 0 or reg_base % 4096 or reg_size <= 0 or reg_size & (reg_size - 1):
        raise bad("reg_base", f"base must be 4 KiB aligned and size a power of two, got 0x{reg_base:x} / 0x{reg_size:x}")
    overlay = t.get("overlay", "pynq")
    if overlay not in ("pynq", "bitstream"):
        raise bad("overlay", f"must be 'pynq' or 'bitstream', got {overlay!r}")
    return Board(
        name=name,
        title=get("title", str),
        family=family,
        part=get("part", str),
        synth_target=target,
        engine_preset=preset_name,
        budget=dict(budget),
        pl_clocks_mhz=dict(clocks),
        engine_clock=engine_clock,
        dram=dram,
        axi_master_port=get("master", str, axi, "axi."),
        axi_master_bits=master_bits,
        axi_lite_port=get("lite", str, axi, "axi."),
        reg_base=reg_base,
        reg_size=reg_size,
        board_part=t.get("board_part") or None,
        ps_ip=ps_ip or None,
        irq=t.get("irq") or None,
        overlay=overlay,
    )


def load_catalogue(path: str | Path = CATALOGUE) -> dict[str, Board]:
    """Read and check a catalogue file (the packaged one by default)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise BoardError(f"{path}: not valid TOML: {e}") from None
    boards = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise BoardError(f"{path}: {name!r} must be a table of board facts")
        boards[name] = _parse(name, table, str(path))
    return boards


BOARDS: dict[str, Board] = load_catalogue()


def board_names() -> list[str]:
    return list(BOARDS)


def get_board(name: str) -> Board:
    """A board by name; an unknown one names the known boards."""
    try:
        return BOARDS[name]
    except KeyError:
        raise BoardError(f"unknown board {name!r}; known: {', '.join(BOARDS)}") from None
