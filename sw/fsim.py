"""The engine's functional model (`fsim`): descriptors in, DRAM bytes out, in numpy.

This is the engine of docs/engine.md seen from its ports: an AXI4-Lite register file and a
DRAM byte array. Writing CTRL.START runs the descriptor list at PROG_ADDR exactly as
§ Program execution and § Descriptor semantics specify, using nothing but the DRAM image
and the registers (it never sees the compiler's intermediate data), so it is an independent
check of the compiler and a stand-in for the hardware behind the same driver interface.

What it models, and how faithfully:

- **Results** (normative): bit-exact per docs/engine.md § Descriptor semantics, reading the
  weight and parameter images from DRAM in the documented layouts (the unpackers here are an
  independent inverse of ``engine.pack_weights`` / ``pack_params``).
- **Checks** (normative): the descriptor checks are ``engine.check_descriptor`` (the single
  source of truth the hardware mirrors), the address-window checks are done per DMA chunk
  with the chunks the hardware's sequencer issues (controller and window unit of
  ``codenet.hw``), in issue order. One simplification: the model checks every chunk of a
  descriptor before it writes anything, so a failing descriptor writes nothing at all,
  where the hardware may already have written part of its (in-window) output.
- **Counters**: BYTES_RD / BYTES_WR, BUSY_DMA_RD / BUSY_DMA_WR and DESC_DONE are exact
  (bus beats: the L-aligned beats each chunk spans). BUSY_PW / BUSY_WIN / BUSY_MOVE are the
  unit steps of docs/engine.md § Cycles. CYCLES and STALL_DMA are an **estimate** (the
  § Cycles formulas with DRAM keeping up); the model has no clock.
- **Faults** for testing the driver: ``stall`` makes the bus stop answering (the run hangs,
  or ends in WATCHDOG when the watchdog is on); addresses outside the DRAM array give
  BUS_ERROR (a DECERR on the real bus).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import engine as E

__all__ = [
    "Dram",
    "FsimEngine",
    "DescStats",
    "Traffic",
    "OverlapError",
    "descriptor_traffic",
    "descriptor_stats",
    "unpack_weights",
    "unpack_params",
    "PIPELINE_CYCLES",
]

#: Fetch, check and pipeline cycles per descriptor (docs/engine.md § Cycles: "about 30").
PIPELINE_CYCLES = 30


# =========================================================================== DRAM


class Dram:
    """A byte-addressed memory covering physical addresses [base, base + size)."""

    def __init__(self, size: int, base: int = 0):
        if size <= 0 or base < 0:
            raise ValueError(f"DRAM size must be positive and base non-negative, got size={size}, base={base}")
        self.base = int(base)
        self.size = int(size)
        self.data = np.zeros(self.size, np.uint8)  # calloc: untouched pages cost nothing

    def contains(self, addr: int, nbytes: int) -> bool:
        return self.base <= addr and addr + nbytes <= self.base + self.size

    def write(self, addr: int, data) -> None:
        b = np.frombuffer(bytes(data), np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else np.asarray(data, np.uint8)
        b = b.reshape(-1)
        if not self.contains(addr, b.size):
            raise ValueError(f"write of {b.size} bytes at 0x{addr:x} is outside DRAM [0x{self.base:x}, 0x{self.base + self.size:x})")
        self.data[addr - self.base : addr - self.base + b.size] = b

    def read(self, addr: int, nbytes: int) -> np.ndarray:
        if not self.contains(addr, nbytes):
            raise ValueError(f"read of {nbytes} bytes at 0x{addr:x} is outside DRAM [0x{self.base:x}, 0x{self.base + self.size:x})")
        return self.data[addr - self.base : addr - self.base + nbytes].copy()

    def view(self, v: E.View, rows: int | None = None) -> np.ndarray:
        """The (rows, W, C) uint8 elements of view `v` (rows defaults to v.h), without copying."""
        rows = v.h if rows is None else rows
        off = v.addr - self.base
        return as_strided(self.data[off:], shape=(rows, v.w, v.c), strides=(v.rs, v.ps, 1), writeable=True)


# =========================================================================== DMA traffic


@dataclass
class _Cmds:
    """DMA commands sharing (nbytes, count, stride): chunk k of command i at addr[i] + k * stride."""

    addr: np.ndarray
    nbytes: int
    count: int
    stride: int

    @classmethod
    def one(cls, addr: int, nbytes: int, count: int = 1, stride: int = 0) -> _Cmds:
        return cls(np.array([addr], np.int64), nbytes, count, stride)

    @classmethod
    def rows(cls, base: int, n: int, step: int, nbytes: int, count: int, stride: int) -> _Cmds:
        return cls(base + np.arange(n, dtype=np.int64) * step, nbytes, count, stride)


@dataclass
class Traffic:
    """The DMA commands of one descriptor, in issue order: reads, then writes."""

    reads: list[_Cmds] = field(default_factory=list)
    writes: list[_Cmds] = field(default_factory=list)

    def beats(self, lanes: int, which: str) -> int:
        return sum(_beats(c, lanes) for c in (self.reads if which == "rd" else self.writes))

    def nbytes(self, which: str) -> int:
        return sum(c.addr.size * c.nbytes * c.count for c in (self.reads if which == "rd" else self.writes))


def _beats(c: _Cmds, lanes: int) -> int:
    """Bus beats of a command batch: each chunk costs the L-aligned beats its bytes span."""
    if c.addr.size == 0 or c.count == 0 or c.nbytes == 0:
        return 0
    period = lanes // math.gcd(c.stride % lanes or lanes, lanes)
    k = np.arange(min(c.count, period), dtype=np.int64)
    first = c.addr[:, None] + k[None, :] * c.stride
    per = (first + c.nbytes - 1) // lanes - first // lanes + 1  # (commands, period)
    full, rest = divmod(c.count, period)
    total = per.sum(axis=1) * full + (per[:, :rest].sum(axis=1) if rest else 0)
    return int(total.sum())


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _reach(desc: E.Descriptor) -> int:
    if desc.op == E.Op.DEFORM_SQUARE:
        return desc.max_dilation
    if desc.op == E.Op.DEFORM_OFFSETS:
        return desc.max_offset + 1
    return 1


def _rows_read(desc: E.Descriptor) -> int:
    """Input rows a window op requests: up to the last one any output row can read."""
    last = (desc.out.h - 1) * desc.stride + _reach(desc)
    return min(desc.inp.h, last + 1)


def descriptor_traffic(desc: E.Descriptor, cfg: E.EngineConfig) -> Traffic:
    """The chunks the engine's sequencer issues for `desc` (excluding the descriptor fetch).

    Mirrors codenet.hw's controller: pointwise ops load parameters then weights, then one
    command per input row (in_w chunks of in_c bytes) and one per output row; window ops run
    per group of L channels: the group's weights and parameters (MAC ops), the side rows
    (dilation map: one chunk per row; offsets: one 18-byte chunk per pixel), the input rows
    up to the last one read (min(L, C - gL) bytes per pixel), one write command per output
    row; COPY reads and writes row by row; UPSAMPLE2X reads rows and writes each pixel as
    two 2-pixel chunks (rows 2y and 2y + 1).
    """
    L = cfg.lanes
    op = desc.op
    i, o = desc.inp, desc.out
    t = Traffic()
    if op == E.Op.END:
        return t
    if op in (E.Op.CONV1X1, E.Op.CONV3X3):
        t.reads.append(_Cmds.one(desc.param_addr, E.param_bytes(desc, cfg)))
        t.reads.append(_Cmds.one(desc.weight_addr, E.weight_bytes(desc, cfg)))
        if op == E.Op.CONV1X1:
            t.reads.append(_Cmds.rows(i.addr, i.h, i.rs, i.c, i.w, i.ps))
        else:
            t.reads.append(_Cmds.rows(i.addr, _rows_read(desc), i.rs, i.c, i.w, i.ps))
        t.writes.append(_Cmds.rows(o.addr, o.h, o.rs, o.c, o.w, o.ps))
    elif op in E.WINDOW_OPS:
        per = 9 * L if desc.w8 else 5 * L
        rows = _rows_read(desc)
        for g in range(_ceil(i.c, L)):
            n = min(L, i.c - g * L)
            if op in E.DW_OPS:
                t.reads.append(_Cmds.one(desc.weight_addr + g * per, per))
                t.reads.append(_Cmds.one(desc.param_addr + g * 6 * L, 6 * L))
            if op == E.Op.DEFORM_SQUARE:
                t.reads.append(_Cmds.rows(desc.side_addr, o.h, desc.side_rs, o.w, 1, 0))
            elif op == E.Op.DEFORM_OFFSETS:
                t.reads.append(_Cmds.rows(desc.side_addr, o.h, desc.side_rs, 18, o.w, desc.side_ps))
            t.reads.append(_Cmds.rows(i.addr + g * L, rows, i.rs, n, i.w, i.ps))
            t.writes.append(_Cmds.rows(o.addr + g * L, o.h, o.rs, n, o.w, o.ps))
    elif op == E.Op.COPY:
        t.reads.append(_Cmds.rows(i.addr, i.h, i.rs, i.c, i.w, i.ps))
        t.writes.append(_Cmds.rows(o.addr, o.h, o.rs, o.c, o.w, o.ps))
    elif op == E.Op.UPSAMPLE2X:
        t.reads.append(_Cmds.rows(i.addr, i.h, i.rs, i.c, i.w, i.ps))
        yy = np.arange(o.h, dtype=np.int64)[:, None] * o.rs
        xx = np.arange(i.w, dtype=np.int64)[None, :] * (2 * o.ps)
        t.writes.append(_Cmds((o.addr + yy + xx).reshape(-1), o.c, 2, o.ps))
    return t


def _unit_steps(desc: E.Descriptor, cfg: E.EngineConfig) -> dict[str, int]:
    """Unit steps (docs/engine.md § Cycles): pointwise tile steps, sampler issues, move beats."""
    L = cfg.lanes
    i, o = desc.inp, desc.out
    op = desc.op
    s = {"pw": 0, "win": 0, "move": 0}
    if op in (E.Op.CONV1X1, E.Op.CONV3X3):
        s["pw"] = o.h * o.w * E.weight_words(desc, cfg)
        if op == E.Op.CONV3X3:
            s["win"] = o.h * o.w
    elif op in E.WINDOW_OPS:
        s["win"] = _ceil(i.c, L) * o.h * o.w * (3 if op == E.Op.DEFORM_OFFSETS else 1)
    elif op == E.Op.UPSAMPLE2X:
        s["move"] = 4 * i.h * i.w * _ceil(i.c, L)
    elif op == E.Op.COPY:
        s["move"] = i.h * i.w * _ceil(i.c, L)
    return s


def _macs(desc: E.Descriptor) -> int:
    """Multiply-accumulates the descriptor performs (its views' channels, zero weights included)."""
    i, o = desc.inp, desc.out
    px = o.h * o.w
    if desc.op == E.Op.CONV1X1:
        return px * o.c * i.c
    if desc.op == E.Op.CONV3X3:
        return px * o.c * 9 * i.c
    if desc.op in E.DW_OPS:
        return px * o.c * 9
    return 0


@dataclass
class DescStats:
    """What one descriptor cost: exact bus traffic, unit steps, MACs, and an estimated cycle count."""

    index: int
    op: str
    bytes_rd: int
    bytes_wr: int
    beats_rd: int
    beats_wr: int
    macs: int
    busy_pw: int
    busy_win: int
    busy_move: int
    est_cycles: int


def descriptor_stats(desc: E.Descriptor, cfg: E.EngineConfig, index: int = 0, traffic: Traffic | None = None) -> DescStats:
    """Cost of one descriptor, including its 64-byte fetch. `est_cycles` is an estimate:
    setup loads + window fill + max(compute, read beats, write beats) + pipeline."""
    L = cfg.lanes
    t = traffic if traffic is not None else descriptor_traffic(desc, cfg)
    fetch = E.DESC_BYTES // L
    brd, bwr = t.beats(L, "rd"), t.beats(L, "wr")
    steps = _unit_steps(desc, cfg)
    est = 0
    if desc.op != E.Op.END:
        setup = (E.weight_bytes(desc, cfg) + E.param_bytes(desc, cfg)) // L if desc.op in (E.Op.CONV1X1, E.Op.CONV3X3) else 0
        fill = 0
        if desc.op in E.WINDOW_OPS:
            groups = 1 if desc.op == E.Op.CONV3X3 else _ceil(desc.inp.c, L)
            fill = groups * ((_reach(desc) + 1) * desc.inp.w + (15 if desc.w8 else 11) * (desc.op in E.DW_OPS))
        compute = max(steps["pw"], steps["win"], steps["move"])
        est = fetch + setup + fill + max(compute, brd - setup, bwr) + PIPELINE_CYCLES
    return DescStats(
        index=index,
        op=desc.op.name,
        bytes_rd=(brd + fetch) * L,
        bytes_wr=t.nbytes("wr"),
        beats_rd=brd + fetch,
        beats_wr=bwr,
        macs=_macs(desc),
        busy_pw=steps["pw"],
        busy_win=steps["win"],
        busy_move=steps["move"],
        est_cycles=est,
    )


# =========================================================================== DRAM images -> arrays


def _nibbles(b: np.ndarray, count: int) -> np.ndarray:
    """Signed 4-bit values, element 2k in bits 3:0 of byte k (docs/integer-semantics.md § 3.4)."""
    b = np.asarray(b, np.uint8)
    nib = np.empty(2 * b.size, np.int64)
    nib[0::2] = b & 0xF
    nib[1::2] = b >> 4
    return ((nib[:count] ^ 8) - 8).astype(np.int64)


def _pw_matrix(raw: np.ndarray, oc: int, k: int, L: int, w8: bool) -> np.ndarray:
    """(OC, K) weights from a pointwise weight image (docs/engine.md § Weight images)."""
    octs, icts = _ceil(oc, L), _ceil(k, L)
    if not w8:
        t = _nibbles(raw, octs * icts * L * L).reshape(octs, icts, L, L)  # (u, t, o, i)
        full = t.transpose(0, 2, 1, 3).reshape(octs * L, icts * L)
    else:
        t = _nibbles(raw, octs * icts * 2 * L * L).reshape(octs, icts, 2, L // 2, 2, L)  # (u, t, h, o, b, i)
        lo = t[..., 0, :] & 0xF  # the low nibble reads as unsigned
        hi = t[..., 1, :]
        w = 16 * hi + lo  # (u, t, h, o, i)
        full = w.transpose(0, 2, 3, 1, 4).reshape(octs * L, icts * L)
    return full[:oc, :k]


def unpack_weights(op: E.Op, raw: np.ndarray, out_c: int, in_c: int, cfg: E.EngineConfig, w8: bool) -> np.ndarray:
    """Inverse of engine.pack_weights: CONV1X1 -> (OC, IC), CONV3X3 -> (OC, 3, 3, IC), depthwise -> (C, 3, 3)."""
    L = cfg.lanes
    op = E.Op(op)
    if op == E.Op.CONV1X1:
        return _pw_matrix(raw, out_c, in_c, L, w8)
    if op == E.Op.CONV3X3:
        slot = E.im2col_slot(in_c)
        m = _pw_matrix(raw, out_c, 9 * slot, L, w8)
        return m.reshape(out_c, 9, slot)[:, :, :in_c].reshape(out_c, 3, 3, in_c)
    if op in E.DW_OPS:
        g = _ceil(in_c, L)
        per = 9 * L if w8 else 5 * L
        raw = np.asarray(raw, np.uint8)[: g * per].reshape(g, per)
        if w8:
            t = raw[:, : 9 * L].view(np.int8).astype(np.int64).reshape(g, 9, L)
        else:
            t = np.stack([_nibbles(raw[k], 9 * L).reshape(9, L) for k in range(g)])
        return t.transpose(0, 2, 1).reshape(g * L, 3, 3)[:in_c]
    raise ValueError(f"{op.name} has no weights")


def unpack_params(raw: np.ndarray, channels: int, cfg: E.EngineConfig) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of engine.pack_params: (bias int64, mult int64) for `channels` channels."""
    L = cfg.lanes
    tiles = _ceil(channels, L)
    raw = np.asarray(raw, np.uint8)[: tiles * 6 * L].reshape(tiles, 6 * L)
    bias = raw[:, : 4 * L].copy().view("<i4").astype(np.int64).reshape(-1)
    mult = raw[:, 4 * L :].copy().view("<u2").astype(np.int64).reshape(-1)
    return bias[:channels], mult[:channels]


# =========================================================================== op semantics


def _requant(acc: np.ndarray, mult: np.ndarray, shift: int, relu: bool) -> np.ndarray:
    """docs/engine.md § Requantize: clamp((acc * M + 2**(S-1)) >> S, lo, hi), as bytes."""
    prod = acc * mult + ((1 << (shift - 1)) if shift else 0)
    y = prod >> shift
    return np.clip(y, 0, 255).astype(np.uint8) if relu else np.clip(y, -128, 127).astype(np.int8).view(np.uint8)


def _as_int(x: np.ndarray, signed: bool) -> np.ndarray:
    return (x.view(np.int8) if signed else x).astype(np.int64)


def _taps(x: np.ndarray, ys: np.ndarray, xs: np.ndarray, h: int, w: int, fill: int = 0):
    """x[(ys, xs)] for (Ho, Wo) coordinates; out-of-image positions read `fill`. x is (rows, W, C)."""
    rows = x.shape[0]
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w) & (ys < rows)
    flat = np.concatenate([x.reshape(-1, x.shape[2]), np.full((1, x.shape[2]), fill, x.dtype)])
    idx = np.where(inside, ys * w + xs, rows * w)
    return flat[idx]


def _window_coords(desc: E.Descriptor, side: np.ndarray | None, max_offset: int):
    """Per tap t = 3i + j: (ys, xs) input coordinates of every output pixel, (Ho, Wo) each."""
    s = desc.stride
    ho, wo = desc.out.h, desc.out.w
    oy = (np.arange(ho, dtype=np.int64) * s)[:, None]
    ox = (np.arange(wo, dtype=np.int64) * s)[None, :]
    coords = []
    for i in range(3):
        for j in range(3):
            if desc.op == E.Op.DEFORM_SQUARE:
                d = 1 + np.minimum(side.astype(np.int64), desc.max_dilation - 1)
                coords.append((oy + (i - 1) * d, ox + (j - 1) * d))
            elif desc.op == E.Op.DEFORM_OFFSETS:
                t = 3 * i + j
                dy = np.clip(side[..., 2 * t].view(np.int8).astype(np.int64), -max_offset, max_offset)
                dx = np.clip(side[..., 2 * t + 1].view(np.int8).astype(np.int64), -max_offset, max_offset)
                coords.append((oy + i - 1 + dy, ox + j - 1 + dx))
            else:
                coords.append((np.broadcast_to(oy + i - 1, (ho, wo)), np.broadcast_to(ox + j - 1, (ho, wo))))
    return coords


def compute(desc: E.Descriptor, cfg: E.EngineConfig, dram: Dram) -> np.ndarray:
    """The (Ho, Wo, C) output bytes of a checked descriptor, read from `dram` alone."""
    op = desc.op
    i, o = desc.inp, desc.out
    if op in (E.Op.COPY, E.Op.UPSAMPLE2X):
        x = dram.view(i).copy()
        return x if op == E.Op.COPY else x.repeat(2, axis=0).repeat(2, axis=1)
    if op in E.CONV_OPS:
        wraw = dram.read(desc.weight_addr, E.weight_bytes(desc, cfg))
        praw = dram.read(desc.param_addr, E.param_bytes(desc, cfg))
        bias, mult = unpack_params(praw, o.c, cfg)
    if op == E.Op.CONV1X1:
        w = unpack_weights(op, wraw, o.c, i.c, cfg, desc.w8)
        x = _as_int(dram.view(i), desc.in_signed).reshape(-1, i.c)
        acc = (x.astype(np.float64) @ w.T.astype(np.float64)).astype(np.int64)  # exact: |sum| < 2**53
        return _requant(acc + bias, mult, desc.shift, desc.relu).reshape(o.h, o.w, o.c)
    rows = _rows_read(desc)
    x = dram.view(i, rows).copy()
    if op == E.Op.CONV3X3:
        w = unpack_weights(op, wraw, o.c, i.c, cfg, desc.w8)
        xi = _as_int(x, desc.in_signed)
        cols = np.stack([_taps(xi, ys, xs, i.h, i.w) for ys, xs in _window_coords(desc, None, 0)], axis=2)  # (Ho, Wo, 9, C)
        acc = (cols.reshape(-1, 9 * i.c).astype(np.float64) @ w.reshape(o.c, -1).T.astype(np.float64)).astype(np.int64)
        return _requant(acc + bias, mult, desc.shift, desc.relu).reshape(o.h, o.w, o.c)
    side = None
    if op == E.Op.DEFORM_SQUARE:
        side = dram.view(E.View(desc.side_addr, o.h, o.w, 1, 1, desc.side_rs))[..., 0].copy()
    elif op == E.Op.DEFORM_OFFSETS:
        side = dram.view(E.View(desc.side_addr, o.h, o.w, 18, desc.side_ps, desc.side_rs)).copy()
    coords = _window_coords(desc, side, desc.max_offset)
    if op == E.Op.MAXPOOL3X3:
        xi = _as_int(x, desc.in_signed)
        best = None
        for ys, xs in coords:
            t = _taps(xi, ys, xs, i.h, i.w, fill=-(1 << 20))  # outside the image never wins
            best = t if best is None else np.maximum(best, t)
        return (best & 0xFF).astype(np.uint8)
    w = unpack_weights(op, wraw, o.c, i.c, cfg, desc.w8).reshape(o.c, 9)
    xi = _as_int(x, desc.in_signed)
    acc = np.zeros((o.h, o.w, o.c), np.int64) + bias
    for t, (ys, xs) in enumerate(coords):
        acc += _taps(xi, ys, xs, i.h, i.w) * w[:, t]
    return _requant(acc, mult, desc.shift, desc.relu)


# =========================================================================== the engine


class OverlapError(RuntimeError):
    """Strict mode: a descriptor's output overlaps bytes it reads (docs/engine.md: unspecified
    on the hardware, which reads and writes concurrently; the model would hide it)."""


def _overlap(desc: E.Descriptor, traffic: Traffic, fetch_addr: int) -> int | None:
    """The first output byte that the descriptor also reads, or None."""
    o = desc.out
    lo, hi = o.extent()
    reads = traffic.reads + [_Cmds.one(fetch_addr, E.DESC_BYTES)]
    hits = []
    for c in reads:
        if c.addr.size == 0 or c.count == 0:
            continue
        rlo, rhi = int(c.addr.min()), int(c.addr.max()) + (c.count - 1) * c.stride + c.nbytes
        if rhi > lo and rlo < hi:
            hits.append(c)
    if not hits:
        return None
    written = o.element_addresses().reshape(-1)
    for c in hits:
        starts = (c.addr[:, None] + np.arange(c.count, dtype=np.int64)[None, :] * c.stride).reshape(-1)
        read = (starts[:, None] + np.arange(c.nbytes, dtype=np.int64)[None, :]).reshape(-1)
        both = np.intersect1d(written, read)
        if both.size:
            return int(both[0])
    return None


class _Fail(Exception):
    def __init__(self, code: E.ErrorCode, addr: int = 0):
        self.code, self.addr = code, addr


class FsimEngine:
    """The engine behind its register file: `read_reg`/`write_reg` by byte offset, DRAM in `dram`.

    `faults` (a set, mutable at any time): ``"stall"`` = the bus stops answering at the next
    START (BUSY stays set until SOFT_RESET, or WATCHDOG ends the run if enabled).
    `stats` holds a :class:`DescStats` per executed descriptor of the last run.
    """

    def __init__(self, cfg: E.EngineConfig, dram: Dram, *, strict: bool = False):
        self.cfg = cfg.validate()
        self.dram = dram
        #: raise OverlapError for a descriptor whose output overlaps what it reads
        self.strict = strict
        self.faults: set[str] = set()
        self.stats: list[DescStats] = []
        self._regs = {r.offset: r for r in E.register_map(cfg)}
        self._by_name = {r.name: r.offset for r in self._regs.values()}
        self._val = {off: r.reset for off, r in self._regs.items()}
        self._counters = {name: 0 for name, _ in E.PERF_COUNTERS}
        self._hi_latch = {name: 0 for name, _ in E.PERF_COUNTERS}

    # ------------------------------------------------------------------ register file
    def offset(self, name: str) -> int:
        return self._by_name[name]

    def read_reg(self, offset: int) -> int:
        r = self._regs.get(offset)
        if r is None:
            return 0  # unmapped offsets read 0
        if r.counter:
            v = self._counters[r.counter]
            if r.half == "lo":
                self._hi_latch[r.counter] = (v >> 32) & 0xFFFFFFFF
                return v & 0xFFFFFFFF
            return self._hi_latch[r.counter]
        if any(f.const for f in r.fields):
            return r.reset
        value = self._val[offset]
        return sum(value & f.mask for f in r.fields if f.access in ("ro", "rw", "w1c"))

    def write_reg(self, offset: int, value: int) -> None:
        r = self._regs.get(offset)
        if r is None:
            return
        value &= 0xFFFFFFFF
        cur = self._val[offset]
        pulses = []
        for f in r.fields:
            if f.const or f.access == "ro":
                continue
            bits = value & f.mask
            if f.access == "rw":
                cur = (cur & ~f.mask) | bits
            elif f.access == "w1c":
                cur &= ~bits
            elif f.access == "w1s" and bits:
                pulses.append(f.name)
        self._val[offset] = cur
        if r.name == "CTRL":
            if "SOFT_RESET" in pulses:
                self._soft_reset()
            if "START" in pulses:
                self._start()

    # ------------------------------------------------------------------ helpers
    def _get(self, reg: str, fld: str | None = None) -> int:
        off = self._by_name[reg]
        v = self._val[off]
        if fld is None:
            return v
        f = next(f for f in self._regs[off].fields if f.name == fld)
        return (v & f.mask) >> f.lsb

    def _set(self, reg: str, fld: str, value: int) -> None:
        off = self._by_name[reg]
        f = next(f for f in self._regs[off].fields if f.name == fld)
        self._val[off] = (self._val[off] & ~f.mask) | ((value << f.lsb) & f.mask)

    @property
    def busy(self) -> bool:
        return bool(self._get("STATUS", "BUSY"))

    def _soft_reset(self) -> None:
        self._set("STATUS", "BUSY", 0)

    def _windows(self) -> list[tuple[int, int, bool, bool]]:
        out = []
        for k in range(E.NUM_WINDOWS):
            base = self._get(f"WIN{k}_BASE", "BASE") << 12
            size = self._get(f"WIN{k}_SIZE", "SIZE") << 12
            out.append((base, base + size, bool(self._get(f"WIN{k}_CTRL", "READ")), bool(self._get(f"WIN{k}_CTRL", "WRITE"))))
        return out

    # ------------------------------------------------------------------ checks
    def _check_cmds(self, cmds: list[_Cmds], write: bool, wins) -> None:
        """Raise _Fail for the first chunk (in issue order) outside every permitted window."""
        limit = 1 << self.cfg.axi_addr_bits
        allowed = [(lo, hi) for lo, hi, r, w in wins if (w if write else r) and hi > lo]
        code = E.ErrorCode.WRITE_WINDOW if write else E.ErrorCode.READ_WINDOW
        for c in cmds:
            if c.addr.size == 0 or c.count == 0:
                continue
            a = c.addr & 0xFFFFFFFF
            lo = int(a.min())
            hi = int(a.max()) + (c.count - 1) * c.stride + c.nbytes
            if c.nbytes and hi <= limit and any(wl <= lo and hi <= wh for wl, wh in allowed):
                continue  # fast path: the whole batch lies in one window
            starts = (a[:, None] + np.arange(c.count, dtype=np.int64)[None, :] * c.stride).reshape(-1)
            ends = starts + c.nbytes
            ok = np.zeros(starts.shape, bool)
            for wl, wh in allowed:
                ok |= (starts >= wl) & (ends <= wh)
            ok &= (ends <= limit) & (c.nbytes != 0)
            if not ok.all():
                raise _Fail(code, int(starts[np.argmin(ok)]))

    def _check_bus(self, cmds: list[_Cmds]) -> None:
        """DECERR for chunks outside the DRAM array: BUS_ERROR."""
        lo_d, hi_d = self.dram.base, self.dram.base + self.dram.size
        for c in cmds:
            if c.addr.size == 0 or c.count == 0:
                continue
            a = c.addr & 0xFFFFFFFF
            first = a[:, None] + np.arange(c.count, dtype=np.int64)[None, :] * c.stride
            bad = (first < lo_d) | (first + c.nbytes > hi_d)
            if bad.any():
                raise _Fail(E.ErrorCode.BUS_ERROR, int(first.reshape(-1)[np.argmax(bad.reshape(-1))]))

    # ------------------------------------------------------------------ run
    def _start(self) -> None:
        if self.busy:
            return  # START is ignored while busy
        for name in self._counters:
            self._counters[name] = 0
        self._val[self._by_name["STATUS"]] = 0
        self._set("ERR_ADDR", "ADDR", 0)
        self.stats = []
        if "stall" in self.faults:
            if self._get("WATCHDOG", "CYCLES"):
                self._counters["CYCLES"] = self._get("WATCHDOG", "CYCLES")
                self._finish(E.ErrorCode.WATCHDOG, self._get("DESC_INDEX", "INDEX"))
            else:
                self._set("STATUS", "BUSY", 1)  # hangs until SOFT_RESET
            return
        prog_addr, prog_len = self._get("PROG_ADDR", "ADDR"), self._get("PROG_LEN", "LEN")
        if prog_len == 0 or prog_addr % 64:
            self._finish(E.ErrorCode.BAD_PROGRAM, 0)
            return
        wins = self._windows()
        L = self.cfg.lanes
        cnt = self._counters
        for index in range(prog_len):
            self._set("DESC_INDEX", "INDEX", index)
            try:
                fetch = [_Cmds.one((prog_addr + E.DESC_BYTES * index) & 0xFFFFFFFF, E.DESC_BYTES)]
                self._check_cmds(fetch, False, wins)
                self._check_bus(fetch)
                raw = self.dram.read(int(fetch[0].addr[0]), E.DESC_BYTES).tobytes()
                cnt["BUSY_DMA_RD"] += E.DESC_BYTES // L
                cnt["BYTES_RD"] += E.DESC_BYTES
                code, _, _ = E.check_descriptor(raw, self.cfg, index)
                if code != E.ErrorCode.NONE:
                    raise _Fail(code)
                desc = E.decode_descriptor(raw, index)
                if desc.op == E.Op.END:
                    cnt["CYCLES"] += PIPELINE_CYCLES
                    self._finish(E.ErrorCode.NONE, index)
                    return
                traffic = descriptor_traffic(desc, self.cfg)
                self._check_cmds(traffic.reads, False, wins)
                self._check_cmds(traffic.writes, True, wins)
                self._check_bus(traffic.reads)
                self._check_bus(traffic.writes)
                if self.strict:
                    hit = _overlap(desc, traffic, int(fetch[0].addr[0]))
                    if hit is not None:
                        self._finish(E.ErrorCode.NONE, index)
                        raise OverlapError(f"descriptor {index} ({desc.op.name}) writes byte 0x{hit:x}, which it also reads")
                result = compute(desc, self.cfg, self.dram)
                self.dram.view(desc.out)[...] = result
            except _Fail as f:
                if f.code in (E.ErrorCode.READ_WINDOW, E.ErrorCode.WRITE_WINDOW, E.ErrorCode.BUS_ERROR):
                    self._set("ERR_ADDR", "ADDR", f.addr & 0xFFFFFFFF)
                self._finish(f.code, index)
                return
            st = descriptor_stats(desc, self.cfg, index, traffic)
            self.stats.append(st)
            cnt["BUSY_DMA_RD"] += st.beats_rd - E.DESC_BYTES // L
            cnt["BYTES_RD"] += st.bytes_rd - E.DESC_BYTES
            cnt["BUSY_DMA_WR"] += st.beats_wr
            cnt["BYTES_WR"] += st.bytes_wr
            cnt["BUSY_PW"] += st.busy_pw
            cnt["BUSY_WIN"] += st.busy_win
            cnt["BUSY_MOVE"] += st.busy_move
            cnt["CYCLES"] += st.est_cycles
            cnt["STALL_DMA"] += max(0, st.est_cycles - max(st.busy_pw, st.busy_win, st.busy_move))
            cnt["DESC_DONE"] += 1
        self._finish(E.ErrorCode.NONE, prog_len - 1)

    def _finish(self, code: E.ErrorCode, index: int) -> None:
        self._set("STATUS", "BUSY", 0)
        self._set("STATUS", "DONE", 1)
        self._set("STATUS", "ERROR", int(code))
        self._set("STATUS", "ERR_DESC", index & 0xFFFF if code else 0)
        if code:
            self._set("IRQ_STATUS", "ERROR", 1)
        else:
            self._set("IRQ_STATUS", "DONE", 1)

    def counters(self) -> dict[str, int]:
        """The 64-bit performance counters (CYCLES and STALL_DMA are estimates)."""
        return dict(self._counters)
