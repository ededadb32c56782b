"""The engine contract: configuration, register map, descriptor format, DRAM images.

This module is the single source of truth that the hardware generator (`codenet.hw`), the
compiler, the numpy functional model (`fsim`) and the driver all read. It is plain Python:
importing it loads the standard library only (numpy is imported inside the functions that
build DRAM images), so it runs on a board's ARM core and inside the HDL generator alike.
The design rationale and the normative meaning of every descriptor field are in
docs/engine.md; the register map is rendered into docs/register-map.md by
:func:`register_map_markdown`.

Vocabulary: ``L`` ("lanes") is the width of the engine in bytes: one AXI data beat, the
pointwise array's input and output channels per cycle and the depthwise unit's channels per
cycle are all ``L``. A *tile* is ``L`` consecutive channels; a *word* of the weight buffer
holds ``L x L`` weights (4 bits each).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ENGINE_ID",
    "VERSION",
    "DESC_BYTES",
    "DESC_WORDS",
    "DESC_MAGIC",
    "NUM_WINDOWS",
    "WINDOW_GRANULE",
    "Op",
    "ErrorCode",
    "MulMap",
    "EngineConfig",
    "EngineConfigError",
    "PRESETS",
    "preset",
    "Field",
    "Register",
    "register_map",
    "reg",
    "DescField",
    "DESC_FIELDS",
    "View",
    "Descriptor",
    "DescriptorError",
    "encode_descriptor",
    "decode_descriptor",
    "check_descriptor",
    "validate_descriptor",
    "encode_program",
    "im2col_slot",
    "weight_words",
    "weight_bytes",
    "param_bytes",
    "pack_weights",
    "pack_params",
    "estimate_cycles",
    "engine_json",
    "c_header",
    "register_map_markdown",
]

#: Value of the ID register: ASCII "CDNE".
ENGINE_ID = 0x43444E45
#: (major, minor, patch) of the engine contract; the VERSION register and engine.json carry it.
VERSION = (0, 1, 0)
#: A descriptor is 16 little-endian 32-bit words.
DESC_WORDS = 16
DESC_BYTES = 4 * DESC_WORDS
#: Upper half of the last descriptor word; the lower half is the descriptor's index (mod 2**16).
DESC_MAGIC = 0xC0DE
#: Address windows the host grants (base + size, read and/or write permission).
NUM_WINDOWS = 4
#: Windows are granted in whole 4 KiB pages: a burst never crosses a page, so a page-granular
#: check of a burst is exactly a check of its bytes.
WINDOW_GRANULE = 4096
#: Largest accumulator shift (intmath.SHIFT_MAX, repeated here so this module needs no numpy).
SHIFT_MAX = 47


class Op(enum.IntEnum):
    """Descriptor operations (docs/engine.md § Descriptor semantics)."""

    END = 0
    CONV1X1 = 1  # pointwise convolution, groups = 1 (stride via the input view)
    CONV3X3 = 2  # dense 3x3 convolution, padding 1, stride 1/2/4, input channels <= L (the stem)
    DWCONV3X3 = 3  # depthwise 3x3, padding 1, stride 1/2
    DEFORM_SQUARE = 4  # depthwise 3x3 with per-pixel dilation from a uint8 map
    DEFORM_OFFSETS = 5  # depthwise 3x3 with per-pixel, per-tap integer offsets in [-R, R]
    MAXPOOL3X3 = 6  # max-pool 3x3, padding 1 (never wins), stride 1/2
    UPSAMPLE2X = 7  # nearest 2x upsample
    COPY = 8  # strided copy of a view: channel gather/compaction, split/shuffle materialisation


#: Ops that compute an accumulator and requantize it.
CONV_OPS = (Op.CONV1X1, Op.CONV3X3, Op.DWCONV3X3, Op.DEFORM_SQUARE, Op.DEFORM_OFFSETS)
#: Ops that run on the window unit (line buffer + 3x3 sampler).
WINDOW_OPS = (Op.CONV3X3, Op.DWCONV3X3, Op.DEFORM_SQUARE, Op.DEFORM_OFFSETS, Op.MAXPOOL3X3)
#: Depthwise ops (one output channel per input channel, weights (C, 3, 3)).
DW_OPS = (Op.DWCONV3X3, Op.DEFORM_SQUARE, Op.DEFORM_OFFSETS)


class ErrorCode(enum.IntEnum):
    """STATUS.ERROR values. Checks run in this order; the first failing one is reported."""

    NONE = 0
    BAD_PROGRAM = 1  # PROG_LEN is 0 or PROG_ADDR is not 64-byte aligned
    BAD_MAGIC = 2  # descriptor word 15 is not DESC_MAGIC << 16 | (index & 0xFFFF)
    BAD_OP = 3  # unknown opcode
    BAD_FIELD = 4  # reserved bits set, a field the op does not use is non-zero, an illegal value
    BAD_VIEW = 5  # a view with a zero dimension, pixel stride < C or row stride < W * pixel stride
    BAD_SHAPE = 6  # output shape inconsistent with the input shape and the op
    LIMIT = 7  # legal, but beyond this engine's configuration (width, channels, D, R, weights)
    READ_WINDOW = 8  # a read outside the windows granted for reading (nothing was issued)
    WRITE_WINDOW = 9  # a write outside the windows granted for writing (nothing was issued)
    BUS_ERROR = 10  # SLVERR or DECERR on the AXI4 master
    WATCHDOG = 11  # no progress for WATCHDOG cycles


ERROR_DOC = {
    ErrorCode.NONE: "no error",
    ErrorCode.BAD_PROGRAM: "PROG_LEN is 0 or PROG_ADDR is not 64-byte aligned",
    ErrorCode.BAD_MAGIC: "descriptor word 15 is not 0xC0DE << 16 | (index & 0xFFFF)",
    ErrorCode.BAD_OP: "unknown opcode",
    ErrorCode.BAD_FIELD: "reserved bits set, a field the op does not use is non-zero, or an illegal field value",
    ErrorCode.BAD_VIEW: "a tensor view has a zero dimension, pixel stride < C, or row stride < W * pixel stride",
    ErrorCode.BAD_SHAPE: "the output view's shape does not follow from the input shape and the op",
    ErrorCode.LIMIT: "legal, but beyond this engine's configuration (width, channels, D, R, weight buffer)",
    ErrorCode.READ_WINDOW: "a read outside the windows granted for reading; the read was not issued",
    ErrorCode.WRITE_WINDOW: "a write outside the windows granted for writing; the write was not issued",
    ErrorCode.BUS_ERROR: "SLVERR or DECERR response on the AXI4 master",
    ErrorCode.WATCHDOG: "no progress (no bus handshake, no unit output) for WATCHDOG cycles",
}


class MulMap(enum.StrEnum):
    """How narrow multiplies are mapped (docs/engine.md § Multipliers)."""

    LUT = "lut"  # plain products, synthesis told to keep them out of DSP blocks
    DSP = "dsp"  # one product per DSP block
    DSP_PACKED2 = "dsp_packed2"  # two 4-bit x 9-bit products sharing the activation in one DSP


# =========================================================================== configuration


class EngineConfigError(ValueError):
    """A bad engine configuration, naming the field."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(f"engine config field {field_name!r}: {message}")


def _is_pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


@dataclass(frozen=True)
class EngineConfig:
    """Parameters of one generated engine. See docs/engine.md § Configurations."""

    name: str = "custom"
    #: pointwise array: input channels consumed per cycle
    pw_ic: int = 16
    #: pointwise array: output channels produced per cycle
    pw_oc: int = 16
    #: depthwise unit: channels per cycle (each lane does the 9 taps in one cycle)
    dw_lanes: int = 16
    #: AXI4 master data width in bits (one beat = one tile of channels)
    axi_data_bits: int = 128
    #: AXI4 master address width in bits (descriptor addresses are 32-bit words)
    axi_addr_bits: int = 32
    #: AXI4 master ID width (the engine always uses ID 0)
    axi_id_bits: int = 4
    #: largest tensor width the line buffer holds (window ops: input W <= max_width)
    max_width: int = 512
    #: largest channel count of any tensor (pixel buffers, parameter buffer)
    max_channels: int = 2304
    #: largest square-deformable dilation D the line buffer supports
    max_dilation: int = 8
    #: largest bounded offset R; 0 = no bounded-offset sampler (DEFORM_OFFSETS refused)
    max_offset: int = 2
    #: pointwise weight buffer depth in words of L*L 4-bit weights
    wbuf_depth: int = 1024
    #: DMA read and write FIFO depth in beats
    dma_fifo_beats: int = 256
    #: longest AXI4 burst the DMA issues, in beats
    max_burst_beats: int = 16
    #: target clock frequency (for cycle -> time conversions and the board flows)
    clock_mhz: int = 250
    #: pointwise multipliers: lut | dsp | dsp_packed2
    pw_mul: str = "dsp_packed2"
    #: depthwise multipliers: lut | dsp
    dw_mul: str = "dsp"

    # ------------------------------------------------------------------ derived
    @property
    def lanes(self) -> int:
        """L: bytes per beat = channels per tile."""
        return self.pw_ic

    @property
    def ktiles_max(self) -> int:
        """Tiles of the largest tensor: max_channels / L."""
        return self.max_channels // self.lanes

    @property
    def reach(self) -> int:
        """K: rows above and below the centre row the sampler can read."""
        return max(self.max_dilation, self.max_offset + 1, 1)

    @property
    def lb_rows(self) -> int:
        """Line-buffer row slots: 2K+1 rows in use plus room to prefetch the next output row.

        Stride 2 needs 2 spare rows; the stride-4 stem (K = 1) needs 3 + 4.
        """
        return max(2 * self.reach + 1 + 2, 3 + 4)

    @property
    def addr_mask(self) -> int:
        return (1 << self.axi_addr_bits) - 1

    def validate(self) -> EngineConfig:
        """Raise :class:`EngineConfigError` naming the first bad field."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type in ("int", int) and (isinstance(v, bool) or not isinstance(v, int)):
                raise EngineConfigError(f.name, f"must be an integer, got {v!r}")
        if not isinstance(self.name, str) or not self.name:
            raise EngineConfigError("name", f"must be a non-empty string, got {self.name!r}")
        if self.pw_ic not in (4, 8, 16, 32):
            raise EngineConfigError("pw_ic", f"must be 4, 8, 16 or 32, got {self.pw_ic}")
        if self.pw_oc != self.pw_ic:
            raise EngineConfigError("pw_oc", f"must equal pw_ic ({self.pw_ic}) in this engine generation, got {self.pw_oc}")
        if self.dw_lanes != self.pw_ic:
            raise EngineConfigError("dw_lanes", f"must equal pw_ic ({self.pw_ic}) in this engine generation, got {self.dw_lanes}")
        if self.axi_data_bits != 8 * self.pw_ic:
            raise EngineConfigError("axi_data_bits", f"must be 8 * pw_ic = {8 * self.pw_ic} (a beat is a tile), got {self.axi_data_bits}")
        if not 16 <= self.axi_addr_bits <= 32:
            raise EngineConfigError("axi_addr_bits", f"must be in [16, 32], got {self.axi_addr_bits}")
        if not 1 <= self.axi_id_bits <= 16:
            raise EngineConfigError("axi_id_bits", f"must be in [1, 16], got {self.axi_id_bits}")
        if not 4 <= self.max_width <= 4096:
            raise EngineConfigError("max_width", f"must be in [4, 4096], got {self.max_width}")
        if self.max_channels % self.lanes or not self.lanes <= self.max_channels <= 65535:
            raise EngineConfigError("max_channels", f"must be a multiple of {self.lanes} in [{self.lanes}, 65535], got {self.max_channels}")
        if not 1 <= self.max_dilation <= 64:
            raise EngineConfigError("max_dilation", f"must be in [1, 64], got {self.max_dilation}")
        if not 0 <= self.max_offset <= 63:
            raise EngineConfigError("max_offset", f"must be in [0, 63], got {self.max_offset}")
        need = 2 * self.ktiles_max
        if not _is_pow2(self.wbuf_depth) or self.wbuf_depth < need:
            raise EngineConfigError(
                "wbuf_depth", f"must be a power of two >= 2 * max_channels / L = {need} (one 8-bit OC tile), got {self.wbuf_depth}"
            )
        if self.max_burst_beats not in (1, 2, 4, 8, 16, 32, 64, 128, 256) or self.max_burst_beats * self.lanes > 4096:
            raise EngineConfigError("max_burst_beats", f"must be a power of two <= 256 and <= 4096 / L, got {self.max_burst_beats}")
        need = max(2 * self.max_burst_beats, self.ktiles_max, 16)
        if not _is_pow2(self.dma_fifo_beats) or self.dma_fifo_beats < need:
            raise EngineConfigError("dma_fifo_beats", f"must be a power of two >= {need} (2 bursts, 1 pixel), got {self.dma_fifo_beats}")
        if not 1 <= self.clock_mhz <= 1000:
            raise EngineConfigError("clock_mhz", f"must be in [1, 1000], got {self.clock_mhz}")
        if self.pw_mul not in [m.value for m in MulMap]:
            raise EngineConfigError("pw_mul", f"must be one of {[m.value for m in MulMap]}, got {self.pw_mul!r}")
        if self.dw_mul not in (MulMap.LUT.value, MulMap.DSP.value):
            raise EngineConfigError("dw_mul", f"must be 'lut' or 'dsp', got {self.dw_mul!r}")
        return self

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------ json
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EngineConfig:
        """Build from a mapping; a "preset" key starts from that preset, other keys override."""
        if not isinstance(d, dict):
            raise EngineConfigError("(root)", f"must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        base: dict[str, Any] = {}
        if "preset" in d:
            name = d.pop("preset")
            if name not in PRESETS:
                raise EngineConfigError("preset", f"unknown preset {name!r}; known: {sorted(PRESETS)}")
            base = PRESETS[name].to_dict()
        known = {f.name for f in dataclasses.fields(cls)}
        for k in d:
            if k not in known:
                raise EngineConfigError(k, f"unknown field; known fields: {sorted(known)}")
        return cls(**{**base, **d})

    @classmethod
    def from_json(cls, text: str) -> EngineConfig:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise EngineConfigError("(root)", f"not valid JSON: {e}") from None
        return cls.from_dict(d)


#: Named configurations (docs/engine.md § Configurations).
PRESETS: dict[str, EngineConfig] = {
    # Fast tests and the demo: 8 lanes, small buffers, a bounded sampler so that every unit is
    # present; the smallest engine that runs codenet-tiny (192 channels, dilations up to 8).
    "tiny": EngineConfig(
        name="tiny",
        pw_ic=8,
        pw_oc=8,
        dw_lanes=8,
        axi_data_bits=64,
        max_width=32,
        max_channels=192,
        max_dilation=8,
        max_offset=1,
        wbuf_depth=64,
        dma_fifo_beats=32,
        max_burst_beats=8,
        clock_mhz=100,
    ),
    # Ultra96-V2 (XCZU3EG): CoDeNet's 16x16 pointwise and 16x9 depthwise MACs at 250 MHz.
    "ultra96": EngineConfig(
        name="ultra96",
        pw_ic=16,
        pw_oc=16,
        dw_lanes=16,
        axi_data_bits=128,
        max_width=512,
        max_channels=2304,
        max_dilation=8,
        max_offset=2,
        wbuf_depth=1024,
        dma_fifo_beats=256,
        max_burst_beats=16,
        clock_mhz=250,
        pw_mul="dsp_packed2",
        dw_mul="dsp",
    ),
    # ULX3S (ECP5-85F): 4 lanes, a 32-bit beat (the board's SDRAM is 16 bits wide). The 8-lane
    # engine fits the 85F (64 % of its LUTs) but nextpnr could not route it here in hours; this one
    # places and routes in minutes (docs/ecp5.md). 16 + 36 products and the requantize stages take
    # 88 of the 156 MULT18X18D.
    "ulx3s": EngineConfig(
        name="ulx3s",
        pw_ic=4,
        pw_oc=4,
        dw_lanes=4,
        axi_data_bits=32,
        max_width=256,
        max_channels=1024,
        max_dilation=8,
        max_offset=0,
        wbuf_depth=512,
        dma_fifo_beats=256,
        max_burst_beats=16,
        clock_mhz=50,
        pw_mul="dsp",
        dw_mul="dsp",
    ),
}
# The smallest engine the generator builds (L = 4, 16 x 16 tensors, D = 1): for place and route and
# the ULX3S bitstream in minutes (tests/boards), not for a model.
PRESETS["micro"] = EngineConfig(
    name="micro",
    pw_ic=4,
    pw_oc=4,
    dw_lanes=4,
    axi_data_bits=32,
    max_width=16,
    max_channels=16,
    max_dilation=1,
    max_offset=0,
    wbuf_depth=8,
    dma_fifo_beats=16,
    max_burst_beats=4,
    clock_mhz=50,
    pw_mul="dsp",
    dw_mul="dsp",
)
# PYNQ-Z2 (XC7Z020: 220 DSP48E1, 140 RAMB36): the ulx3s engine with 8 lanes (a 64-bit beat) at
# 100 MHz, every product in a DSP48E1.
PRESETS["pynqz2"] = dataclasses.replace(
    PRESETS["ulx3s"], name="pynqz2", pw_ic=8, pw_oc=8, dw_lanes=8, axi_data_bits=64, dma_fifo_beats=128, clock_mhz=100
)
# KV260 (K26: 144 RAMB36; Yosys infers none of its 64 URAM): ultra96's 16-lane line buffer takes
# 114 RAMB36 alone whatever max_width is (a 128-bit row is two RAMB36 wide), 170 in all, so the K26
# gets the 8-lane engine at 250 MHz, with ultra96's channel limit so that CoDeNet-2x compiles.
PRESETS["kv260"] = dataclasses.replace(
    PRESETS["pynqz2"], name="kv260", clock_mhz=250, max_channels=2304, wbuf_depth=1024, dma_fifo_beats=512
)


def preset(name: str) -> EngineConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown engine preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None


# =========================================================================== register map


@dataclass(frozen=True)
class Field:
    """A bit field of a register. access: ro | rw | w1c (write 1 to clear) | w1s (write 1: pulse, reads 0).
    `const`: a read-only field that always reads its reset value (identification, configuration)."""

    name: str
    lsb: int
    width: int
    access: str
    reset: int = 0
    doc: str = ""
    const: bool = False

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb


@dataclass(frozen=True)
class Register:
    """A 32-bit AXI4-Lite register. `counter` names the 64-bit counter whose half it is."""

    name: str
    offset: int
    fields: tuple[Field, ...]
    doc: str = ""
    counter: str | None = None
    half: str | None = None  # "lo" | "hi" for counter halves

    @property
    def access(self) -> str:
        kinds = {f.access for f in self.fields}
        return kinds.pop() if len(kinds) == 1 else "mixed"

    @property
    def reset(self) -> int:
        return sum((f.reset << f.lsb) & f.mask for f in self.fields)


#: 64-bit performance counters: (name, doc). Each is a LO/HI register pair.
PERF_COUNTERS: tuple[tuple[str, str], ...] = (
    ("CYCLES", "cycles while BUSY (since the last START)"),
    ("BUSY_PW", "cycles the pointwise array performed a tile step (one L x L multiply-accumulate)"),
    ("BUSY_WIN", "cycles the window unit's sampler issued a pixel (bounded offsets: one of its three tap rows)"),
    ("BUSY_MOVE", "cycles the move unit (COPY, UPSAMPLE2X) passed a beat"),
    ("BUSY_DMA_RD", "cycles an AXI4 read data beat was accepted"),
    ("BUSY_DMA_WR", "cycles an AXI4 write data beat was accepted"),
    ("BYTES_RD", "bytes read from DRAM: read beats x L (whole beats, as on the bus)"),
    ("BYTES_WR", "bytes written to DRAM: strobed bytes of the accepted write beats"),
    ("DESC_DONE", "descriptors completed"),
    ("STALL_DMA", "cycles within an op in which no unit stepped (waiting for data, output space or loads)"),
)

PERF_BASE = 0x100
WIN_BASE = 0x080
WIN_STRIDE = 0x10
CFG_BASE = 0x040

MUL_CODES = {MulMap.LUT.value: 0, MulMap.DSP.value: 1, MulMap.DSP_PACKED2.value: 2}


def _supported_ops(cfg: EngineConfig) -> int:
    mask = 0
    for op in Op:
        if op == Op.DEFORM_OFFSETS and cfg.max_offset == 0:
            continue
        mask |= 1 << int(op)
    return mask


def register_map(cfg: EngineConfig | None = None) -> tuple[Register, ...]:
    """The AXI4-Lite register map. The layout is the same for every configuration; only the
    reset values of the CFG_* registers (configuration read-back) depend on `cfg`."""
    cfg = cfg or PRESETS["ultra96"]
    R, F = Register, Field
    regs: list[Register] = [
        R("ID", 0x000, (F("ID", 0, 32, "ro", ENGINE_ID, 'engine identification, ASCII "CDNE"'),), "identification"),
        R(
            "VERSION",
            0x004,
            (
                F("PATCH", 0, 8, "ro", VERSION[2], "patch version"),
                F("MINOR", 8, 8, "ro", VERSION[1], "minor version"),
                F("MAJOR", 16, 8, "ro", VERSION[0], "major version of the descriptor and register contract"),
            ),
            "contract version",
        ),
        R(
            "CTRL",
            0x008,
            (
                F("START", 0, 1, "w1s", 0, "write 1 to run the program at PROG_ADDR (ignored while BUSY); clears STATUS and the counters"),
                F(
                    "SOFT_RESET",
                    1,
                    1,
                    "w1s",
                    0,
                    "write 1 to abandon any run and return every unit to idle (other registers keep their values)",
                ),
                F("IRQ_EN", 2, 1, "rw", 0, "drive `irq` while any IRQ_STATUS bit is set"),
            ),
            "control",
        ),
        R(
            "STATUS",
            0x00C,
            (
                F("BUSY", 0, 1, "ro", 0, "a program is running"),
                F("DONE", 1, 1, "ro", 0, "the last run finished (successfully or with an error)"),
                F("ERROR", 8, 8, "ro", 0, "ErrorCode of the last run (0 = none)"),
                F("ERR_DESC", 16, 16, "ro", 0, "index of the descriptor that failed (valid when ERROR != 0)"),
            ),
            "status",
        ),
        R(
            "IRQ_STATUS",
            0x010,
            (
                F("DONE", 0, 1, "w1c", 0, "set when a run finishes without error; write 1 to clear"),
                F("ERROR", 1, 1, "w1c", 0, "set when a run ends with an error; write 1 to clear"),
            ),
            "interrupt status (write 1 to clear)",
        ),
        R("PROG_ADDR", 0x014, (F("ADDR", 0, 32, "rw", 0, "byte address of descriptor 0 (64-byte aligned)"),), "program address"),
        R(
            "PROG_LEN",
            0x018,
            (F("LEN", 0, 32, "rw", 0, "descriptor count; a run stops at END or after LEN descriptors"),),
            "program length",
        ),
        R(
            "WATCHDOG",
            0x01C,
            (F("CYCLES", 0, 32, "rw", 1 << 24, "error WATCHDOG after this many cycles without progress; 0 disables"),),
            "watchdog",
        ),
        R(
            "ERR_ADDR",
            0x020,
            (F("ADDR", 0, 32, "ro", 0, "byte address of the access that failed a window check / got a bus error"),),
            "error",
        ),
        R("DESC_INDEX", 0x024, (F("INDEX", 0, 32, "ro", 0, "index of the descriptor being executed (or the last one)"),), "progress"),
        R(
            "CFG_LANES",
            CFG_BASE + 0x00,
            (
                F("LANES", 0, 8, "ro", cfg.lanes, "L: bytes per beat, channels per tile"),
                F("PW_IC", 8, 8, "ro", cfg.pw_ic, "pointwise input channels per cycle"),
                F("PW_OC", 16, 8, "ro", cfg.pw_oc, "pointwise output channels per cycle"),
                F("DW_LANES", 24, 8, "ro", cfg.dw_lanes, "depthwise channels per cycle"),
            ),
            "configuration: lanes",
        ),
        R(
            "CFG_AXI",
            CFG_BASE + 0x04,
            (
                F("DATA_BITS", 0, 16, "ro", cfg.axi_data_bits, "AXI4 master data width"),
                F("ADDR_BITS", 16, 8, "ro", cfg.axi_addr_bits, "AXI4 master address width"),
                F("MAX_BURST", 24, 8, "ro", cfg.max_burst_beats - 1, "longest burst in beats, minus 1"),
            ),
            "configuration: bus",
        ),
        R(
            "CFG_LIMITS",
            CFG_BASE + 0x08,
            (
                F("MAX_WIDTH", 0, 16, "ro", cfg.max_width, "largest input width of a window op"),
                F("MAX_CHANNELS", 16, 16, "ro", cfg.max_channels, "largest channel count"),
            ),
            "configuration: tensor limits",
        ),
        R(
            "CFG_DEFORM",
            CFG_BASE + 0x0C,
            (
                F("MAX_DILATION", 0, 16, "ro", cfg.max_dilation, "largest square-deformable dilation D"),
                F("MAX_OFFSET", 16, 16, "ro", cfg.max_offset, "largest bounded offset R (0: no bounded sampler)"),
            ),
            "configuration: deformable samplers",
        ),
        R(
            "CFG_BUFFERS",
            CFG_BASE + 0x10,
            (
                F("WBUF_DEPTH", 0, 16, "ro", cfg.wbuf_depth, "pointwise weight buffer words (L*L weights each)"),
                F("LB_ROWS", 16, 8, "ro", cfg.lb_rows, "line buffer row slots"),
                F("FIFO_LOG2", 24, 8, "ro", int(math.log2(cfg.dma_fifo_beats)), "log2 of the DMA FIFO depth in beats"),
            ),
            "configuration: buffers",
        ),
        R(
            "CFG_MISC",
            CFG_BASE + 0x14,
            (
                F("CLOCK_MHZ", 0, 16, "ro", cfg.clock_mhz, "target clock"),
                F("PW_MUL", 16, 2, "ro", MUL_CODES[cfg.pw_mul], "pointwise multipliers: 0 lut, 1 dsp, 2 dsp_packed2"),
                F("DW_MUL", 18, 2, "ro", MUL_CODES[cfg.dw_mul], "depthwise multipliers: 0 lut, 1 dsp"),
                F("WINDOWS", 24, 8, "ro", NUM_WINDOWS, "number of address windows"),
            ),
            "configuration: implementation",
        ),
        R("CFG_OPS", CFG_BASE + 0x18, (F("OPS", 0, 32, "ro", _supported_ops(cfg), "bit k set: Op k is supported"),), "configuration: ops"),
    ]
    for k in range(NUM_WINDOWS):
        base = WIN_BASE + WIN_STRIDE * k
        regs += [
            R(f"WIN{k}_BASE", base + 0x0, (F("BASE", 12, 20, "rw", 0, "base address, bits 31:12 (4 KiB pages)"),), f"window {k}: base"),
            R(f"WIN{k}_SIZE", base + 0x4, (F("SIZE", 12, 20, "rw", 0, "size, bits 31:12 (4 KiB pages; 0 = empty)"),), f"window {k}: size"),
            R(
                f"WIN{k}_CTRL",
                base + 0x8,
                (
                    F("READ", 0, 1, "rw", 0, "the engine may read [BASE, BASE + SIZE)"),
                    F("WRITE", 1, 1, "rw", 0, "the engine may write [BASE, BASE + SIZE)"),
                ),
                f"window {k}: permissions",
            ),
        ]
    for k, (name, doc) in enumerate(PERF_COUNTERS):
        off = PERF_BASE + 8 * k
        lo = F("LO", 0, 32, "ro", 0, f"{doc}; bits 31:0 (reading LO latches HI)")
        hi = F("HI", 0, 32, "ro", 0, f"{doc}; bits 63:32 as latched by the last LO read")
        regs.append(R(f"PERF_{name}_LO", off, (lo,), doc, counter=name, half="lo"))
        regs.append(R(f"PERF_{name}_HI", off + 4, (hi,), doc, counter=name, half="hi"))
    constant = {"ID", "VERSION"} | {r.name for r in regs if r.name.startswith("CFG_")}
    return tuple(
        dataclasses.replace(r, fields=tuple(dataclasses.replace(f, const=True) for f in r.fields)) if r.name in constant else r
        for r in regs
    )


def reg(name: str, cfg: EngineConfig | None = None) -> Register:
    """Look a register up by name."""
    for r in register_map(cfg):
        if r.name == name:
            return r
    raise KeyError(name)


#: AXI4-Lite address bits the register file decodes (4 KiB of register space).
AXIL_ADDR_BITS = 12


# =========================================================================== descriptors


@dataclass(frozen=True)
class DescField:
    name: str
    word: int
    lsb: int
    width: int
    doc: str


#: The descriptor layout: 16 little-endian 32-bit words (docs/engine.md § Descriptor format).
DESC_FIELDS: tuple[DescField, ...] = (
    DescField("op", 0, 0, 8, "Op"),
    DescField("relu", 0, 8, 1, "conv ops: clamp to [0, 255] and write uint8 (else [-128, 127], int8)"),
    DescField("w8", 0, 9, 1, "conv ops: 8-bit weights (else 4-bit)"),
    DescField("in_signed", 0, 10, 1, "conv ops and MAXPOOL3X3: input bytes are int8 (else uint8)"),
    DescField("stride", 0, 11, 2, "stride code: 0 -> 1, 1 -> 2, 2 -> 4"),
    DescField("shift", 0, 13, 6, "conv ops: requantization shift S, 0..47"),
    DescField("max_dilation", 1, 0, 9, "DEFORM_SQUARE: D, 1..256 (and <= the engine's max_dilation)"),
    DescField("max_offset", 1, 9, 7, "DEFORM_OFFSETS: R, 0..127 (and <= the engine's max_offset)"),
    DescField("in_addr", 2, 0, 32, "input view: byte address of element (0, 0, 0)"),
    DescField("in_h", 3, 0, 16, "input view: height"),
    DescField("in_w", 3, 16, 16, "input view: width"),
    DescField("in_c", 4, 0, 16, "input view: channels"),
    DescField("in_ps", 4, 16, 16, "input view: pixel stride in bytes (>= in_c)"),
    DescField("in_rs", 5, 0, 32, "input view: row stride in bytes (>= in_w * in_ps)"),
    DescField("out_addr", 6, 0, 32, "output view: byte address of element (0, 0, 0)"),
    DescField("out_h", 7, 0, 16, "output view: height"),
    DescField("out_w", 7, 16, 16, "output view: width"),
    DescField("out_c", 8, 0, 16, "output view: channels"),
    DescField("out_ps", 8, 16, 16, "output view: pixel stride in bytes (>= out_c)"),
    DescField("out_rs", 9, 0, 32, "output view: row stride in bytes (>= out_w * out_ps)"),
    DescField("side_addr", 10, 0, 32, "deform ops: byte address of the dilation map / offsets (Ho, Wo, 1 or 18)"),
    DescField("side_ps", 11, 0, 16, "deform ops: side pixel stride (DEFORM_SQUARE: must be 1; DEFORM_OFFSETS: >= 18)"),
    DescField("side_rs", 12, 0, 32, "deform ops: side row stride in bytes (>= Wo * side_ps)"),
    DescField("weight_addr", 13, 0, 32, "conv ops: byte address of the packed weights (pack_weights)"),
    DescField("param_addr", 14, 0, 32, "conv ops: byte address of the per-channel parameters (pack_params)"),
    DescField("seq", 15, 0, 16, "descriptor index & 0xFFFF"),
    DescField("magic", 15, 16, 16, "0xC0DE"),
)

#: Bits of each word that belong to no field: must be zero (BAD_FIELD).
RESERVED_MASKS: dict[int, int] = {}
for _w in range(DESC_WORDS):
    _used = sum(((1 << f.width) - 1) << f.lsb for f in DESC_FIELDS if f.word == _w)
    if _used != 0xFFFFFFFF:
        RESERVED_MASKS[_w] = 0xFFFFFFFF & ~_used
del _w, _used

STRIDE_CODES = {1: 0, 2: 1, 4: 2}

#: Fields each op may set (every other field, apart from op/seq/magic, must be zero).
_VIEW_IN = ("in_addr", "in_h", "in_w", "in_c", "in_ps", "in_rs")
_VIEW_OUT = ("out_addr", "out_h", "out_w", "out_c", "out_ps", "out_rs")
_CONV = ("relu", "w8", "in_signed", "shift", "weight_addr", "param_addr")
_SIDE = ("side_addr", "side_ps", "side_rs")
OP_FIELDS: dict[Op, tuple[str, ...]] = {
    Op.END: (),
    Op.CONV1X1: _VIEW_IN + _VIEW_OUT + _CONV,
    Op.CONV3X3: _VIEW_IN + _VIEW_OUT + _CONV + ("stride",),
    Op.DWCONV3X3: _VIEW_IN + _VIEW_OUT + _CONV + ("stride",),
    Op.DEFORM_SQUARE: _VIEW_IN + _VIEW_OUT + _CONV + ("stride", "max_dilation") + _SIDE,
    Op.DEFORM_OFFSETS: _VIEW_IN + _VIEW_OUT + _CONV + ("stride", "max_offset") + _SIDE,
    Op.MAXPOOL3X3: _VIEW_IN + _VIEW_OUT + ("in_signed", "stride"),
    Op.UPSAMPLE2X: _VIEW_IN + _VIEW_OUT,
    Op.COPY: _VIEW_IN + _VIEW_OUT,
}
#: Legal stride codes per op (a code outside the set: BAD_FIELD).
OP_STRIDES: dict[Op, tuple[int, ...]] = {
    Op.CONV3X3: (1, 2, 4),
    Op.DWCONV3X3: (1, 2),
    Op.DEFORM_SQUARE: (1, 2),
    Op.DEFORM_OFFSETS: (1, 2),
    Op.MAXPOOL3X3: (1, 2),
}


@dataclass(frozen=True)
class View:
    """A strided NHWC tensor in DRAM: element (y, x, c) lives at addr + y*rs + x*ps + c.

    A channel slice of a wider tensor (concat, split) is a view with ps = the wider tensor's
    pixel stride and addr offset by the first channel.
    """

    addr: int = 0
    h: int = 0
    w: int = 0
    c: int = 0
    ps: int = 0
    rs: int = 0

    @classmethod
    def dense(cls, addr: int, h: int, w: int, c: int) -> View:
        """A contiguous NHWC tensor."""
        return cls(addr, h, w, c, c, w * c)

    def slice_channels(self, c0: int, c: int) -> View:
        """Channels [c0, c0 + c) of this view."""
        if c0 < 0 or c < 1 or c0 + c > self.c:
            raise ValueError(f"channel slice [{c0}, {c0 + c}) is outside a {self.c}-channel view")
        return View(self.addr + c0, self.h, self.w, c, self.ps, self.rs)

    def extent(self) -> tuple[int, int]:
        """[first byte, last byte + 1) touched by the view."""
        return self.addr, self.addr + (self.h - 1) * self.rs + (self.w - 1) * self.ps + self.c

    def element_addresses(self):
        """Byte address of every element, as an (H, W, C) integer array (numpy)."""
        import numpy as np

        y = np.arange(self.h, dtype=np.int64)[:, None, None] * self.rs
        x = np.arange(self.w, dtype=np.int64)[None, :, None] * self.ps
        c = np.arange(self.c, dtype=np.int64)[None, None, :]
        return self.addr + y + x + c


@dataclass(frozen=True)
class Descriptor:
    """One engine operation. `stride` is the stride itself (1, 2 or 4), not its code."""

    op: Op
    inp: View = field(default_factory=View)
    out: View = field(default_factory=View)
    relu: bool = False
    w8: bool = False
    in_signed: bool = False
    stride: int = 1
    shift: int = 0
    max_dilation: int = 0
    max_offset: int = 0
    side_addr: int = 0
    side_ps: int = 0
    side_rs: int = 0
    weight_addr: int = 0
    param_addr: int = 0

    def fields(self) -> dict[str, int]:
        """Raw field values as encoded (stride as its code)."""
        f = {
            "op": int(self.op),
            "relu": int(bool(self.relu)),
            "w8": int(bool(self.w8)),
            "in_signed": int(bool(self.in_signed)),
            "stride": STRIDE_CODES.get(self.stride, -1),
            "shift": self.shift,
            "max_dilation": self.max_dilation,
            "max_offset": self.max_offset,
            "side_addr": self.side_addr,
            "side_ps": self.side_ps,
            "side_rs": self.side_rs,
            "weight_addr": self.weight_addr,
            "param_addr": self.param_addr,
        }
        for p, v in (("in", self.inp), ("out", self.out)):
            f.update({f"{p}_addr": v.addr, f"{p}_h": v.h, f"{p}_w": v.w, f"{p}_c": v.c, f"{p}_ps": v.ps, f"{p}_rs": v.rs})
        return f


class DescriptorError(ValueError):
    """A descriptor the engine would refuse: the error code it would report and the field."""

    def __init__(self, code: ErrorCode, field_name: str | None, message: str, index: int | None = None):
        self.code, self.field, self.index, self.reason = ErrorCode(code), field_name, index, message
        where = f"descriptor {index}: " if index is not None else ""
        fld = f"field {field_name!r}: " if field_name else ""
        super().__init__(f"{where}{fld}{message} ({self.code.name})")


def encode_descriptor(desc: Descriptor, index: int) -> bytes:
    """The 64-byte image of `desc` as descriptor number `index` of a program.

    Only representability is checked here (each field fits its bits, the stride has a code);
    :func:`validate_descriptor` checks meaning against an engine configuration.
    """
    vals = desc.fields()
    if vals["stride"] < 0:
        raise DescriptorError(ErrorCode.BAD_FIELD, "stride", f"must be 1, 2 or 4, got {desc.stride}", index)
    vals["seq"] = index & 0xFFFF
    vals["magic"] = DESC_MAGIC
    words = [0] * DESC_WORDS
    for f in DESC_FIELDS:
        v = vals[f.name]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v >> f.width:
            raise DescriptorError(ErrorCode.BAD_FIELD, f.name, f"{v!r} does not fit {f.width} unsigned bits", index)
        words[f.word] |= v << f.lsb
    return struct.pack("<16I", *words)


def encode_program(descs: list[Descriptor]) -> bytes:
    """Concatenated descriptor images, indices 0..n-1."""
    return b"".join(encode_descriptor(d, k) for k, d in enumerate(descs))


def _raw_fields(words: list[int]) -> dict[str, int]:
    return {f.name: (words[f.word] >> f.lsb) & ((1 << f.width) - 1) for f in DESC_FIELDS}


def decode_descriptor(data: bytes, index: int) -> Descriptor:
    """Parse a 64-byte descriptor image; raises :class:`DescriptorError` for what can be
    decided without an engine configuration (magic, opcode, reserved bits, stride code)."""
    if len(data) != DESC_BYTES:
        raise DescriptorError(ErrorCode.BAD_MAGIC, None, f"a descriptor is {DESC_BYTES} bytes, got {len(data)}", index)
    words = list(struct.unpack("<16I", bytes(data)))
    raw = _raw_fields(words)
    code, fld, msg = _check_encoding(words, raw, index)
    if code != ErrorCode.NONE:
        raise DescriptorError(code, fld, msg, index)
    inv = {v: k for k, v in STRIDE_CODES.items()}
    return Descriptor(
        op=Op(raw["op"]),
        inp=View(raw["in_addr"], raw["in_h"], raw["in_w"], raw["in_c"], raw["in_ps"], raw["in_rs"]),
        out=View(raw["out_addr"], raw["out_h"], raw["out_w"], raw["out_c"], raw["out_ps"], raw["out_rs"]),
        relu=bool(raw["relu"]),
        w8=bool(raw["w8"]),
        in_signed=bool(raw["in_signed"]),
        stride=inv[raw["stride"]],
        shift=raw["shift"],
        max_dilation=raw["max_dilation"],
        max_offset=raw["max_offset"],
        side_addr=raw["side_addr"],
        side_ps=raw["side_ps"],
        side_rs=raw["side_rs"],
        weight_addr=raw["weight_addr"],
        param_addr=raw["param_addr"],
    )


def _check_encoding(words: list[int], raw: dict[str, int], index: int) -> tuple[ErrorCode, str | None, str]:
    if raw["magic"] != DESC_MAGIC or raw["seq"] != index & 0xFFFF:
        return (
            ErrorCode.BAD_MAGIC,
            "magic",
            f"word 15 is 0x{words[15]:08x}, expected 0x{DESC_MAGIC:04x}{index & 0xFFFF:04x}",
        )
    if raw["op"] not in [int(o) for o in Op]:
        return ErrorCode.BAD_OP, "op", f"unknown opcode {raw['op']}"
    for w, mask in RESERVED_MASKS.items():
        if words[w] & mask:
            return ErrorCode.BAD_FIELD, f"word{w}", f"reserved bits 0x{words[w] & mask:08x} are set"
    op = Op(raw["op"])
    allowed = set(OP_FIELDS[op])
    for f in DESC_FIELDS:
        if f.name in ("op", "seq", "magic") or f.name in allowed:
            continue
        if raw[f.name]:
            return ErrorCode.BAD_FIELD, f.name, f"op {op.name} does not use this field; it must be 0, got {raw[f.name]}"
    if raw["stride"] not in [STRIDE_CODES[s] for s in OP_STRIDES.get(op, (1,))]:
        return ErrorCode.BAD_FIELD, "stride", f"code {raw['stride']} is not a legal stride for {op.name}"
    return ErrorCode.NONE, None, ""


def im2col_slot(c: int) -> int:
    """CONV3X3: channels per tap in the im2col vector: the next power of two >= C."""
    return 1 << max(0, (c - 1).bit_length())


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def weight_words(desc: Descriptor, cfg: EngineConfig) -> int:
    """Pointwise weight buffer words a CONV1X1/CONV3X3 needs (OC tiles x IC tiles x (2 if 8-bit))."""
    L = cfg.lanes
    if desc.op == Op.CONV1X1:
        k = desc.inp.c
    elif desc.op == Op.CONV3X3:
        k = 9 * im2col_slot(desc.inp.c)
    else:
        return 0
    return _ceil(desc.out.c, L) * _ceil(k, L) * (2 if desc.w8 else 1)


def weight_bytes(desc: Descriptor, cfg: EngineConfig) -> int:
    """Size of the weight image at `weight_addr`."""
    L = cfg.lanes
    if desc.op in (Op.CONV1X1, Op.CONV3X3):
        return weight_words(desc, cfg) * L * L // 2
    if desc.op in DW_OPS:
        return _ceil(desc.inp.c, L) * (9 if desc.w8 else 5) * L
    return 0


def param_bytes(desc: Descriptor, cfg: EngineConfig) -> int:
    """Size of the parameter image at `param_addr`: 6L bytes per tile of output channels."""
    if desc.op not in CONV_OPS:
        return 0
    return _ceil(desc.out.c, cfg.lanes) * 6 * cfg.lanes


def out_hw(op: Op, h: int, w: int, stride: int) -> tuple[int, int]:
    """Output height and width of an op for an input of h x w."""
    if op in WINDOW_OPS:
        return (h - 1) // stride + 1, (w - 1) // stride + 1
    if op == Op.UPSAMPLE2X:
        return 2 * h, 2 * w
    return h, w


def check_descriptor(desc: Descriptor | bytes, cfg: EngineConfig, index: int = 0) -> tuple[ErrorCode, str | None, str]:
    """(code, field, message) the engine reports for this descriptor; code NONE if it runs.

    The order of the checks is the hardware's: encoding (magic, opcode, reserved and unused
    fields, stride code), then views, then shapes, then the engine's limits.
    """
    if isinstance(desc, (bytes, bytearray)):
        try:
            desc = decode_descriptor(bytes(desc), index)
        except DescriptorError as e:
            return e.code, e.field, e.reason
    else:
        try:
            words = list(struct.unpack("<16I", encode_descriptor(desc, index)))
        except DescriptorError as e:
            return e.code, e.field, e.reason
        code, fld, msg = _check_encoding(words, _raw_fields(words), index)
        if code != ErrorCode.NONE:
            return code, fld, msg
    op = desc.op
    if op == Op.END:
        return ErrorCode.NONE, None, ""
    L = cfg.lanes
    i, o = desc.inp, desc.out
    # ---- field values that need the op's meaning
    if op in CONV_OPS and desc.shift > SHIFT_MAX:
        return ErrorCode.BAD_FIELD, "shift", f"must be <= {SHIFT_MAX}, got {desc.shift}"
    if op == Op.DEFORM_SQUARE and not 1 <= desc.max_dilation <= 256:
        return ErrorCode.BAD_FIELD, "max_dilation", f"must be in [1, 256], got {desc.max_dilation}"
    # ---- views
    for name, v in (("in", i), ("out", o)):
        if v.h < 1 or v.w < 1 or v.c < 1:
            return ErrorCode.BAD_VIEW, f"{name}_h", f"{name} view has a zero dimension ({v.h}x{v.w}x{v.c})"
        if v.ps < v.c:
            return ErrorCode.BAD_VIEW, f"{name}_ps", f"pixel stride {v.ps} < channels {v.c}"
        if v.rs < v.w * v.ps:
            return ErrorCode.BAD_VIEW, f"{name}_rs", f"row stride {v.rs} < width * pixel stride = {v.w * v.ps}"
    if op == Op.DEFORM_SQUARE and desc.side_ps != 1:
        return ErrorCode.BAD_VIEW, "side_ps", f"the dilation map must have pixel stride 1, got {desc.side_ps}"
    if op == Op.DEFORM_OFFSETS and desc.side_ps < 18:
        return ErrorCode.BAD_VIEW, "side_ps", f"the offsets need pixel stride >= 18, got {desc.side_ps}"
    if op in (Op.DEFORM_SQUARE, Op.DEFORM_OFFSETS) and desc.side_rs < o.w * desc.side_ps:
        return ErrorCode.BAD_VIEW, "side_rs", f"side row stride {desc.side_rs} < out_w * side_ps = {o.w * desc.side_ps}"
    # ---- shapes
    ho, wo = out_hw(op, i.h, i.w, desc.stride)
    if (o.h, o.w) != (ho, wo):
        return ErrorCode.BAD_SHAPE, "out_h", f"{op.name} of a {i.h}x{i.w} input gives {ho}x{wo}, the output view is {o.h}x{o.w}"
    if op not in (Op.CONV1X1, Op.CONV3X3) and o.c != i.c:
        return ErrorCode.BAD_SHAPE, "out_c", f"{op.name} keeps the channel count: output has {o.c}, input {i.c}"
    # ---- engine limits
    if i.c > cfg.max_channels or o.c > cfg.max_channels:
        return ErrorCode.LIMIT, "in_c", f"channels {max(i.c, o.c)} exceed the engine's max_channels {cfg.max_channels}"
    if op in WINDOW_OPS and i.w > cfg.max_width:
        return ErrorCode.LIMIT, "in_w", f"width {i.w} exceeds the engine's max_width {cfg.max_width}"
    if op == Op.CONV3X3 and i.c > L:
        return ErrorCode.LIMIT, "in_c", f"CONV3X3 takes at most L = {L} input channels, got {i.c}"
    if op == Op.DEFORM_SQUARE and desc.max_dilation > cfg.max_dilation:
        return ErrorCode.LIMIT, "max_dilation", f"D = {desc.max_dilation} exceeds the engine's {cfg.max_dilation}"
    if op == Op.DEFORM_OFFSETS and (cfg.max_offset == 0 or desc.max_offset > cfg.max_offset):
        return ErrorCode.LIMIT, "max_offset", f"R = {desc.max_offset} exceeds the engine's {cfg.max_offset}"
    if op in (Op.CONV1X1, Op.CONV3X3) and weight_words(desc, cfg) > cfg.wbuf_depth:
        return ErrorCode.LIMIT, "out_c", f"weights need {weight_words(desc, cfg)} words, the buffer holds {cfg.wbuf_depth}"
    return ErrorCode.NONE, None, ""


def validate_descriptor(desc: Descriptor | bytes, cfg: EngineConfig, index: int = 0) -> Descriptor:
    """Raise :class:`DescriptorError` (with the engine's error code) unless `desc` runs on `cfg`."""
    code, fld, msg = check_descriptor(desc, cfg, index)
    if code != ErrorCode.NONE:
        raise DescriptorError(code, fld, msg, index)
    return decode_descriptor(bytes(desc), index) if isinstance(desc, (bytes, bytearray)) else desc


# =========================================================================== DRAM images


def _tile_matrix(wf, L: int, w8: bool):
    """(OC, K) integer weights -> the nibble tensor the pointwise buffer holds, C order.

    4-bit: T[u, t, o, i] = wf[u*L + o, t*L + i].
    8-bit: T[u, t, h, 2*o + b, i] = nibble b (0 low, unsigned; 1 high, signed) of
    wf[u*L + h*L/2 + o, t*L + i]: the pair of lanes (2o, 2o+1) holds one 8-bit weight.
    """
    import numpy as np

    oc, k = wf.shape
    octs, icts = _ceil(oc, L), _ceil(k, L)
    full = np.zeros((octs * L, icts * L), np.int64)
    full[:oc, :k] = wf
    if not w8:
        return full.reshape(octs, L, icts, L).transpose(0, 2, 1, 3)  # (u, t, o, i)
    t8 = full.reshape(octs, 2, L // 2, icts, L).transpose(0, 3, 1, 2, 4)  # (u, t, h, o, i)
    lo = ((t8 & 0xF) ^ 8) - 8  # the low nibble's bits, as the signed value pack_int4 expects
    hi = t8 >> 4
    return np.stack([lo, hi], axis=4).reshape(octs, icts, 2, L, L)  # lanes 2o (lo), 2o+1 (hi)


def pack_weights(op: Op, weight, cfg: EngineConfig, w_bits: int = 4):
    """The exact weight image the engine reads at `weight_addr`, as a uint8 numpy array.

    - CONV1X1: weight (OC, 1, 1, IC) or (OC, IC).
    - CONV3X3: weight (OC, 3, 3, IC), IC <= L; input index q = tap * slot + c with
      tap = 3*i + j and slot = im2col_slot(IC) (unused slots hold zero weights).
    - DWCONV3X3 / DEFORM_*: weight (C, 3, 3) or (C, 3, 3, 1).
    `w_bits` <= 4 packs nibbles (intmath.pack_int4 order), 5..8 packs the 8-bit layout.
    docs/engine.md § Weight images gives the layouts in full.
    """
    import numpy as np

    from . import intmath

    op = Op(op)
    L = cfg.lanes
    w = np.asarray(weight)
    if not np.issubdtype(w.dtype, np.integer):
        raise ValueError(f"weights must be integers, got dtype {w.dtype}")
    w = w.astype(np.int64)
    w8 = w_bits > 4
    lo, hi = intmath.weight_range(8 if w8 else 4)
    if w.size and (w.min() < lo or w.max() > hi):
        raise ValueError(f"{'8' if w8 else '4'}-bit weights must lie in [{lo}, {hi}], got [{w.min()}, {w.max()}]")
    if op == Op.CONV1X1:
        if w.ndim == 4:
            if w.shape[1:3] != (1, 1):
                raise ValueError(f"CONV1X1 weights must be (OC, 1, 1, IC), got {w.shape}")
            w = w[:, 0, 0, :]
        if w.ndim != 2:
            raise ValueError(f"CONV1X1 weights must be (OC, IC), got {w.shape}")
        return intmath.pack_int4(_tile_matrix(w, L, w8))
    if op == Op.CONV3X3:
        if w.ndim != 4 or w.shape[1:3] != (3, 3):
            raise ValueError(f"CONV3X3 weights must be (OC, 3, 3, IC), got {w.shape}")
        oc, _, _, ic = w.shape
        if ic > L:
            raise ValueError(f"CONV3X3 takes at most L = {L} input channels, got {ic}")
        slot = im2col_slot(ic)
        wf = np.zeros((oc, 9, slot), np.int64)
        wf[:, :, :ic] = w.reshape(oc, 9, ic)
        return intmath.pack_int4(_tile_matrix(wf.reshape(oc, 9 * slot), L, w8))
    if op in DW_OPS:
        if w.ndim == 4 and w.shape[3] == 1:
            w = w[..., 0]
        if w.ndim != 3 or w.shape[1:] != (3, 3):
            raise ValueError(f"depthwise weights must be (C, 3, 3), got {w.shape}")
        c = w.shape[0]
        g = _ceil(c, L)
        t = np.zeros((g * L, 9), np.int64)
        t[:c] = w.reshape(c, 9)
        t = t.reshape(g, L, 9).transpose(0, 2, 1)  # (group, tap, lane)
        if w8:
            return t.astype(np.int8).view(np.uint8).reshape(-1).copy()
        out = np.zeros((g, 5 * L), np.uint8)
        for k in range(g):
            p = intmath.pack_int4(t[k])
            out[k, : p.size] = p
        return out.reshape(-1)
    raise ValueError(f"{op.name} takes no weights")


def pack_params(bias, mult, cfg: EngineConfig):
    """Per-channel parameters at `param_addr`: per tile of L channels, L int32 biases then
    L uint16 multipliers, little-endian (6L bytes per tile; padding channels are zero)."""
    import numpy as np

    b = np.asarray(bias, dtype=np.int64).reshape(-1)
    m = np.asarray(mult, dtype=np.int64).reshape(-1)
    if b.shape != m.shape:
        raise ValueError(f"bias and mult must have one entry per channel, got {b.shape} and {m.shape}")
    if b.size and (b.min() < -(2**31) or b.max() > 2**31 - 1):
        raise ValueError("bias must fit int32")
    if m.size and (m.min() < 0 or m.max() > 0xFFFF):
        raise ValueError("mult must fit uint16")
    L = cfg.lanes
    n = _ceil(b.size, L) * L
    bp = np.zeros(n, np.int64)
    mp = np.zeros(n, np.int64)
    bp[: b.size], mp[: m.size] = b, m
    tiles = []
    for k in range(n // L):
        tiles.append(bp[k * L : (k + 1) * L].astype("<i4").view(np.uint8))
        tiles.append(mp[k * L : (k + 1) * L].astype("<u2").view(np.uint8))
    return np.concatenate(tiles) if tiles else np.zeros(0, np.uint8)


# =========================================================================== cycle model


def estimate_cycles(desc: Descriptor, cfg: EngineConfig) -> dict[str, int]:
    """Compute cycles of one descriptor on an unstalled engine (docs/engine.md § Cycles).

    Returns {"compute": ..., "setup_beats": ..., "read_beats": ..., "write_beats": ...}; the
    layer takes about max(compute, read_beats, write_beats) + setup + pipeline latency when
    DRAM keeps up. Beats assume aligned chunks.
    """
    L = cfg.lanes
    i, o = desc.inp, desc.out
    op = desc.op
    px_in, px_out = i.h * i.w, o.h * o.w
    res = {"compute": 0, "setup_beats": 0, "read_beats": 0, "write_beats": 0}
    if op == Op.END:
        return res
    res["setup_beats"] = (weight_bytes(desc, cfg) + param_bytes(desc, cfg)) // L + DESC_BYTES // L
    if op == Op.CONV1X1:
        res["compute"] = px_out * weight_words(desc, cfg)
        res["read_beats"] = px_in * _ceil(i.c, L)
        res["write_beats"] = px_out * _ceil(o.c, L)
    elif op == Op.CONV3X3:
        res["compute"] = px_out * weight_words(desc, cfg)
        res["read_beats"] = px_in
        res["write_beats"] = px_out * _ceil(o.c, L)
    elif op in WINDOW_OPS:
        groups = _ceil(i.c, L)
        per_px = 3 if op == Op.DEFORM_OFFSETS else 1
        res["compute"] = groups * px_out * per_px
        res["read_beats"] = groups * px_in
        if op == Op.DEFORM_SQUARE:
            res["read_beats"] += groups * o.h * _ceil(o.w, L)
        if op == Op.DEFORM_OFFSETS:
            res["read_beats"] += groups * px_out * _ceil(18, L)
        res["write_beats"] = groups * px_out
    elif op == Op.UPSAMPLE2X:
        res["compute"] = px_in * 4 * _ceil(i.c, L)
        res["read_beats"] = px_in * _ceil(i.c, L)
        res["write_beats"] = px_out * _ceil(o.c, L)
    elif op == Op.COPY:
        res["compute"] = px_in * _ceil(i.c, L)
        res["read_beats"] = res["write_beats"] = res["compute"]
    return res


# =========================================================================== generators


def engine_json(cfg: EngineConfig) -> dict[str, Any]:
    """Everything a driver needs to talk to a generated engine, as plain JSON data."""
    return {
        "format": "codenet-engine",
        "version": list(VERSION),
        "id": ENGINE_ID,
        "config": cfg.to_dict(),
        "derived": {"lanes": cfg.lanes, "lb_rows": cfg.lb_rows, "reach": cfg.reach},
        "axil_addr_bits": AXIL_ADDR_BITS,
        "registers": [
            {
                "name": r.name,
                "offset": r.offset,
                "access": r.access,
                "reset": r.reset,
                "doc": r.doc,
                **({"counter": r.counter, "half": r.half} if r.counter else {}),
                "fields": [dataclasses.asdict(f) for f in r.fields],
            }
            for r in register_map(cfg)
        ],
        "descriptor": {
            "bytes": DESC_BYTES,
            "magic": DESC_MAGIC,
            "fields": [dataclasses.asdict(f) for f in DESC_FIELDS],
            "ops": {op.name: int(op) for op in Op},
            "op_fields": {op.name: list(v) for op, v in OP_FIELDS.items()},
            "stride_codes": {str(k): v for k, v in STRIDE_CODES.items()},
        },
        "errors": {e.name: {"code": int(e), "doc": ERROR_DOC[e]} for e in ErrorCode},
        "windows": {"count": NUM_WINDOWS, "granule": WINDOW_GRANULE},
    }


def c_header(cfg: EngineConfig) -> str:
    """A C header with the register offsets and fields, error codes, ops and descriptor layout."""
    p = "CODENET"
    out = [
        "/* Generated by codenet.sw.engine.c_header: do not edit. */",
        f"/* Engine configuration {cfg.name!r}; contract version {'.'.join(map(str, VERSION))}. */",
        "#ifndef CODENET_ENGINE_H",
        "#define CODENET_ENGINE_H",
        "",
        "#include <stdint.h>",
        "",
        f"#define {p}_ID 0x{ENGINE_ID:08X}u",
        f"#define {p}_VERSION_MAJOR {VERSION[0]}",
        f"#define {p}_VERSION_MINOR {VERSION[1]}",
        f"#define {p}_VERSION_PATCH {VERSION[2]}",
        f"#define {p}_LANES {cfg.lanes}",
        f"#define {p}_NUM_WINDOWS {NUM_WINDOWS}",
        f"#define {p}_WINDOW_GRANULE {WINDOW_GRANULE}",
        f"#define {p}_DESC_BYTES {DESC_BYTES}",
        f"#define {p}_DESC_WORDS {DESC_WORDS}",
        f"#define {p}_DESC_MAGIC 0x{DESC_MAGIC:04X}u",
        "",
        "/* Registers: byte offsets, field shifts and masks, reset values. */",
    ]
    for r in register_map(cfg):
        out.append(f"#define {p}_REG_{r.name} 0x{r.offset:03X}u  /* {r.access}: {r.doc} */")
        out.append(f"#define {p}_REG_{r.name}_RESET 0x{r.reset:08X}u")
        for f in r.fields:
            if f.width == 32:
                continue
            out.append(f"#define {p}_{r.name}_{f.name}_SHIFT {f.lsb}")
            out.append(f"#define {p}_{r.name}_{f.name}_MASK 0x{f.mask:08X}u")
    out += ["", "/* Error codes (STATUS.ERROR). */"]
    for e in ErrorCode:
        out.append(f"#define {p}_ERR_{e.name} {int(e)}  /* {ERROR_DOC[e]} */")
    out += ["", "/* Opcodes (descriptor field op). */"]
    for op in Op:
        out.append(f"#define {p}_OP_{op.name} {int(op)}")
    out += ["", "/* Descriptor fields: word index, shift, mask (within the word). */"]
    for f in DESC_FIELDS:
        n = f.name.upper()
        out.append(f"#define {p}_DESC_{n}_WORD {f.word}")
        out.append(f"#define {p}_DESC_{n}_SHIFT {f.lsb}")
        out.append(f"#define {p}_DESC_{n}_MASK 0x{((1 << f.width) - 1) << f.lsb:08X}u  /* {f.doc} */")
    out += [
        "",
        f"typedef struct {{ uint32_t w[{DESC_WORDS}]; }} {p.lower()}_desc_t;",
        "",
        "#endif /* CODENET_ENGINE_H */",
        "",
    ]
    return "\n".join(out)


def register_map_markdown() -> str:
    """docs/register-map.md, generated (tests compare the committed file with this)."""
    cfg_regs = {r.name for r in register_map() if r.name.startswith("CFG_")}
    lines = [
        "# Engine register map",
        "",
        "<!-- Generated by codenet.sw.engine.register_map_markdown(); do not edit by hand.",
        "     Regenerate: python -m codenet.sw.engine > docs/register-map.md -->",
        "",
        f"Contract version {'.'.join(map(str, VERSION))}. The engine's AXI4-Lite slave decodes {AXIL_ADDR_BITS} address bits;",
        "every register is 32 bits wide and must be accessed with full-word writes (WSTRB = 0xF;",
        "other strobes are ignored). Unmapped offsets read 0 and ignore writes. The source of truth",
        "is `codenet.sw.engine.register_map()`; the generated `engine.json` and C header carry the",
        "same data. Design rationale and descriptor semantics: [engine.md](engine.md).",
        "",
        "Access: `ro` read-only; `rw` read/write; `w1c` write 1 to clear; `w1s` write 1 to trigger",
        "(self-clearing, reads 0). The reset values of the `CFG_*` registers depend on the",
        "engine configuration; the column shows them for the `ultra96` preset.",
        "",
        "64-bit performance counters are LO/HI pairs: reading LO returns bits 31:0 and latches",
        "bits 63:32 into HI, so read LO first. Counters are cleared by CTRL.START and count while",
        "STATUS.BUSY.",
        "",
        "`irq` is high while CTRL.IRQ_EN is set and any IRQ_STATUS bit is set.",
        "",
        "## Summary",
        "",
        "| offset | name | access | reset | description |",
        "|---|---|---|---|---|",
    ]
    regs = register_map()
    for r in regs:
        reset = f"0x{r.reset:08X}" + (" (config)" if r.name in cfg_regs else "")
        lines.append(f"| 0x{r.offset:03X} | `{r.name}` | {r.access} | {reset} | {r.doc} |")
    lines += ["", "## Fields", ""]
    for r in regs:
        if r.counter and r.half == "hi":
            continue
        if r.counter:
            lines += [f"### `PERF_{r.counter}` (0x{r.offset:03X} LO, 0x{r.offset + 4:03X} HI)", "", f"{r.doc}.", ""]
            continue
        lines += [f"### `{r.name}` (0x{r.offset:03X})", "", "| bits | field | access | reset | description |", "|---|---|---|---|---|"]
        for f in r.fields:
            bits = f"{f.lsb + f.width - 1}:{f.lsb}" if f.width > 1 else f"{f.lsb}"
            lines.append(f"| {bits} | `{f.name}` | {f.access} | 0x{f.reset:X} | {f.doc} |")
        lines.append("")
    lines += ["## Error codes (`STATUS.ERROR`)", "", "| code | name | meaning |", "|---|---|---|"]
    for e in ErrorCode:
        lines.append(f"| {int(e)} | `{e.name}` | {ERROR_DOC[e]} |")
    lines += [
        "",
        "## Descriptor layout",
        "",
        f"A program is a list of {DESC_BYTES}-byte descriptors ({DESC_WORDS} little-endian 32-bit words) at PROG_ADDR.",
        "Bits not listed are reserved and must be 0; fields an op does not use must be 0",
        "(see [engine.md § Descriptor semantics](engine.md#descriptor-semantics)).",
        "",
        "| word | bits | field | description |",
        "|---|---|---|---|",
    ]
    for f in DESC_FIELDS:
        bits = f"{f.lsb + f.width - 1}:{f.lsb}" if f.width > 1 else f"{f.lsb}"
        lines.append(f"| {f.word} | {bits} | `{f.name}` | {f.doc} |")
    lines += ["", "| opcode | op | fields it uses |", "|---|---|---|"]
    for op in Op:
        lines.append(f"| {int(op)} | `{op.name}` | {', '.join(f'`{x}`' for x in OP_FIELDS[op]) or '—'} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m codenet.sw.engine > docs/register-map.md
    print(register_map_markdown(), end="")
