"""The functional model (sw/fsim.py) on hand-built descriptor programs, without the compiler.

Every op against the golden executor (channel slices, padded pixel strides, signed inputs,
8-bit weights, strides 1/2/4), nothing written outside the output views, the image
unpackers against engine.pack_*, descriptor validation identical to check_descriptor
(random corruptions), window and bus errors with memory untouched outside the windows,
BAD_PROGRAM, programs without END, counters, register semantics and the stall fault.
"""

from __future__ import annotations

import numpy as np
import pytest

from codenet.sw import engine as E
from codenet.sw import fsim, golden
from codenet.sw.driver import config_from_registers

TINY = E.preset("tiny")
U96 = E.preset("ultra96")
BASE = 0x10000
SIZE = 0x40000


class Mem:
    """A DRAM full of garbage with a bump allocator and a descriptor list: a stand-in compiler."""

    def __init__(self, cfg: E.EngineConfig, seed: int = 0, size: int = SIZE, base: int = BASE):
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        self.dram = fsim.Dram(size, base)
        self.dram.data[:] = self.rng.integers(0, 256, size, dtype=np.uint8)
        self.top = base + 0x2000  # [base, base + 0x2000): the program
        self.descs: list[E.Descriptor] = []
        self.checks: list[tuple[str, E.View, np.ndarray]] = []

    def alloc(self, n: int, align: int = 16) -> int:
        self.top = -(-self.top // align) * align
        a = self.top
        self.top += n
        assert self.top <= self.dram.base + self.dram.size
        return a

    def put(self, arr) -> int:
        b = (np.asarray(arr).astype(np.int64) & 0xFF).astype(np.uint8).reshape(-1)
        a = self.alloc(b.size)
        self.dram.write(a, b)
        return a

    def tensor(self, x, pad_ps: int = 0, pad_rs: int = 0, odd: int = 0) -> E.View:
        h, w, c = x.shape
        ps = c + pad_ps
        rs = w * ps + pad_rs
        v = E.View(self.alloc(h * rs + odd) + odd, h, w, c, ps, rs)
        self.dram.view(v)[...] = (np.asarray(x).astype(np.int64) & 0xFF).astype(np.uint8)
        return v

    def out_view(self, h: int, w: int, c: int, ps: int | None = None, c0: int = 0) -> E.View:
        ps = ps or c
        return E.View(self.alloc(h * w * ps) + c0, h, w, c, ps, w * ps)

    def add(self, desc: E.Descriptor, name: str | None = None, want=None) -> None:
        code, fld, msg = E.check_descriptor(desc, self.cfg, len(self.descs))
        assert code == E.ErrorCode.NONE, (code, fld, msg)
        self.descs.append(desc)
        if want is not None:
            self.checks.append((name, desc.out, (np.asarray(want).astype(np.int64) & 0xFF).astype(np.uint8)))

    def program(self, end: bool = True) -> tuple[int, int]:
        descs = self.descs + ([E.Descriptor(E.Op.END)] if end else [])
        img = E.encode_program(descs)
        self.dram.write(BASE, np.frombuffer(img, np.uint8))
        return BASE, len(descs)


def start(eng: fsim.FsimEngine, prog_addr: int, prog_len: int, windows=((BASE, SIZE, 1, 1),), watchdog: int | None = None) -> dict:
    """Drive the registers like a driver: windows, program, START; returns STATUS fields + counters."""
    for k in range(E.NUM_WINDOWS):
        base, size, r, w = windows[k] if k < len(windows) else (0, 0, 0, 0)
        eng.write_reg(eng.offset(f"WIN{k}_BASE"), base)
        eng.write_reg(eng.offset(f"WIN{k}_SIZE"), size)
        eng.write_reg(eng.offset(f"WIN{k}_CTRL"), r | w << 1)
    eng.write_reg(eng.offset("PROG_ADDR"), prog_addr)
    eng.write_reg(eng.offset("PROG_LEN"), prog_len)
    if watchdog is not None:
        eng.write_reg(eng.offset("WATCHDOG"), watchdog)
    eng.write_reg(eng.offset("IRQ_STATUS"), 0b11)
    eng.write_reg(eng.offset("CTRL"), 0b101)
    st = eng.read_reg(eng.offset("STATUS"))
    return {
        "busy": st & 1,
        "done": st >> 1 & 1,
        "error": st >> 8 & 0xFF,
        "err_desc": st >> 16,
        "irq": eng.read_reg(eng.offset("IRQ_STATUS")),
        "err_addr": eng.read_reg(eng.offset("ERR_ADDR")),
        "counters": eng.counters(),
    }


def conv_params(rng, oc):
    return rng.integers(-800, 800, size=oc), rng.integers(2**13, 2**16, size=oc)


def ops_program(cfg: E.EngineConfig, seed: int) -> Mem:
    """One descriptor per op, random shapes, each with its golden expectation."""
    rng = np.random.default_rng(seed)
    L = cfg.lanes
    m = Mem(cfg, seed)
    # CONV1X1 into a channel slice (concat), padded input pixels, 8-bit weights, int8 input
    ic, oc = int(rng.integers(1, 2 * L + 3)), int(rng.integers(1, 2 * L + 3))
    h, w = int(rng.integers(1, 6)), int(rng.integers(1, 7))
    x = rng.integers(-128, 128, size=(h, w, ic))
    wt = rng.integers(-128, 128, size=(oc, 1, 1, ic))
    b, mlt = conv_params(rng, oc)
    want = golden.requantize(golden.conv2d(x[None], wt, b)[0], mlt, 18, False)
    m.add(
        E.Descriptor(
            E.Op.CONV1X1, m.tensor(x, pad_ps=3, odd=1), m.out_view(h, w, oc, ps=oc + 5, c0=2), in_signed=True, w8=True, shift=18,
            weight_addr=m.put(E.pack_weights(E.Op.CONV1X1, wt, cfg, 8)), param_addr=m.put(E.pack_params(b, mlt, cfg)),
        ),
        "conv1x1", want,
    )  # fmt: skip
    # CONV1X1 with a strided input view (a stride-2 1x1 convolution), 4-bit weights
    x = rng.integers(0, 256, size=(5, 7, ic))
    wt = rng.integers(-8, 8, size=(oc, 1, 1, ic))
    b, mlt = conv_params(rng, oc)
    v = m.tensor(x)
    want = golden.requantize(golden.conv2d(x[None], wt, b, 2)[0], mlt, 15, True)
    m.add(
        E.Descriptor(
            E.Op.CONV1X1, E.View(v.addr, 3, 4, ic, 2 * v.ps, 2 * v.rs), m.out_view(3, 4, oc), relu=True, shift=15,
            weight_addr=m.put(E.pack_weights(E.Op.CONV1X1, wt, cfg)), param_addr=m.put(E.pack_params(b, mlt, cfg)),
        ),
        "conv1x1-s2", want,
    )  # fmt: skip
    # CONV3X3 (stem) with stride 1, 2 and 4
    for s, w8 in ((1, False), (2, True), (4, True)):
        c = int(rng.integers(1, L + 1))
        h, w = int(rng.integers(1, 10)), int(rng.integers(1, 11))
        img = rng.integers(0, 256, size=(h, w, c))
        ws = rng.integers(-128, 128, size=(5, 3, 3, c)) if w8 else rng.integers(-8, 8, size=(5, 3, 3, c))
        b, mlt = conv_params(rng, 5)
        ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
        want = golden.requantize(golden.conv2d(img[None], ws, b, s, 1)[0], mlt, 20, True)
        m.add(
            E.Descriptor(
                E.Op.CONV3X3, m.tensor(img, pad_ps=1), m.out_view(ho, wo, 5), relu=True, w8=w8, stride=s, shift=20,
                weight_addr=m.put(E.pack_weights(E.Op.CONV3X3, ws, cfg, 8 if w8 else 4)), param_addr=m.put(E.pack_params(b, mlt, cfg)),
            ),
            f"stem-s{s}", want,
        )  # fmt: skip
    # DWCONV3X3, 8-bit weights, more than one group
    c = int(rng.integers(L + 1, 3 * L))
    x = rng.integers(-128, 128, size=(4, 5, c))
    wd = rng.integers(-128, 128, size=(c, 3, 3))
    b, mlt = conv_params(rng, c)
    for s in (1, 2):
        want = golden.requantize(golden.conv2d(x[None], wd[..., None], b, s, 1, groups=c)[0], mlt, 16, False)
        m.add(
            E.Descriptor(
                E.Op.DWCONV3X3, m.tensor(x, pad_ps=2), m.out_view((4 - 1) // s + 1, (5 - 1) // s + 1, c), in_signed=True, w8=True,
                stride=s, shift=16, weight_addr=m.put(E.pack_weights(E.Op.DWCONV3X3, wd, cfg, 8)),
                param_addr=m.put(E.pack_params(b, mlt, cfg)),
            ),
            f"dw-s{s}", want,
        )  # fmt: skip
    # DEFORM_SQUARE, map values beyond D
    dmax = cfg.max_dilation
    for s in (1, 2):
        c = int(rng.integers(1, 2 * L + 2))
        h, w = int(rng.integers(1, 9)), int(rng.integers(1, 9))
        ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
        x = rng.integers(0, 256, size=(h, w, c))
        wd = rng.integers(-8, 8, size=(c, 3, 3))
        b, mlt = conv_params(rng, c)
        vmap = rng.integers(0, dmax + 3, size=(ho, wo))
        vv = m.tensor(vmap[..., None], pad_rs=3)
        d = golden.dilation_from_map(vmap[None], dmax)
        want = golden.requantize(golden.deform_dw3x3(x[None], wd, d, s)[0] + b, mlt, 12, True)
        m.add(
            E.Descriptor(
                E.Op.DEFORM_SQUARE, m.tensor(x), m.out_view(ho, wo, c), relu=True, stride=s, shift=12, max_dilation=dmax,
                side_addr=vv.addr, side_ps=1, side_rs=vv.rs,
                weight_addr=m.put(E.pack_weights(E.Op.DEFORM_SQUARE, wd, cfg)), param_addr=m.put(E.pack_params(b, mlt, cfg)),
            ),
            f"deform-square-s{s}", want,
        )  # fmt: skip
    # DEFORM_OFFSETS, offsets beyond R (clamped), offsets with a padded pixel stride
    r = cfg.max_offset
    for s in (1, 2):
        c = int(rng.integers(1, 2 * L + 2))
        h, w = int(rng.integers(1, 8)), int(rng.integers(1, 8))
        ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
        x = rng.integers(-128, 128, size=(h, w, c))
        wd = rng.integers(-8, 8, size=(c, 3, 3))
        b, mlt = conv_params(rng, c)
        off = rng.integers(-r - 2, r + 3, size=(ho, wo, 18))
        ov = m.tensor(off, pad_ps=3)
        offs = np.clip(off, -r, r).reshape(1, ho, wo, 9, 2)
        want = golden.requantize(golden.deform_dw3x3_offsets(x[None], wd, offs, s)[0] + b, mlt, 11, False)
        m.add(
            E.Descriptor(
                E.Op.DEFORM_OFFSETS, m.tensor(x), m.out_view(ho, wo, c), in_signed=True, stride=s, shift=11, max_offset=r,
                side_addr=ov.addr, side_ps=ov.ps, side_rs=ov.rs,
                weight_addr=m.put(E.pack_weights(E.Op.DEFORM_OFFSETS, wd, cfg)), param_addr=m.put(E.pack_params(b, mlt, cfg)),
            ),
            f"deform-offsets-s{s}", want,
        )  # fmt: skip
    # MAXPOOL3X3, int8 and uint8
    for signed, s in ((True, 2), (False, 1)):
        c = int(rng.integers(1, 2 * L))
        lo, hi = (-128, 128) if signed else (0, 256)
        x = rng.integers(lo, hi, size=(5, 6, c))
        want = golden.maxpool2d(x[None].astype(np.int8 if signed else np.uint8), 3, s, 1)[0]
        m.add(
            E.Descriptor(E.Op.MAXPOOL3X3, m.tensor(x), m.out_view((5 - 1) // s + 1, (6 - 1) // s + 1, c), in_signed=signed, stride=s),
            "maxpool",
            want,
        )
    # UPSAMPLE2X into a channel slice
    x = rng.integers(0, 256, size=(2, 3, 5))
    m.add(E.Descriptor(E.Op.UPSAMPLE2X, m.tensor(x), m.out_view(4, 6, 5, ps=9, c0=3)), "upsample", golden.upsample_nearest2x(x[None])[0])
    # COPY: a channel slice (split materialisation)
    x = rng.integers(0, 256, size=(3, 2, 6))
    m.add(E.Descriptor(E.Op.COPY, m.tensor(x).slice_channels(1, 3), m.out_view(3, 2, 3)), "copy-slice", x[..., 1:4])
    return m


@pytest.mark.parametrize("cfg", [TINY, U96], ids=lambda c: c.name)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_op_matches_golden(cfg, seed):
    m = ops_program(cfg, seed)
    before = m.dram.data.copy()
    eng = fsim.FsimEngine(cfg, m.dram)
    st = start(eng, *m.program())
    assert st["error"] == 0 and st["done"] == 1 and st["busy"] == 0 and st["irq"] == 0b01, st
    allowed = np.zeros(m.dram.size, bool)
    allowed[:0x2000] = True  # the program
    for name, view, want in m.checks:
        got = m.dram.view(view)
        assert np.array_equal(got, want), name
        allowed[view.element_addresses().reshape(-1) - BASE] = True
    changed = np.flatnonzero(m.dram.data != before)
    assert allowed[changed].all(), f"bytes outside the outputs changed: {changed[~allowed[changed]][:8]}"
    c = st["counters"]
    assert c["DESC_DONE"] == len(m.descs)
    assert c["BYTES_WR"] == sum(int(np.prod(v.element_addresses().shape)) for _, v, _ in m.checks)
    assert c["BYTES_RD"] == cfg.lanes * c["BUSY_DMA_RD"]
    assert c["CYCLES"] > 0 and c["BUSY_PW"] > 0 and c["BUSY_WIN"] > 0 and c["BUSY_MOVE"] > 0
    assert len(eng.stats) == len(m.descs) and sum(s.est_cycles for s in eng.stats) == c["CYCLES"] - fsim.PIPELINE_CYCLES


@pytest.mark.parametrize("cfg", [TINY, U96, E.preset("ulx3s")], ids=lambda c: c.name)
def test_unpackers_invert_the_packers(cfg):
    rng = np.random.default_rng(4)
    L = cfg.lanes
    for w8 in (False, True):
        lo, hi = (-128, 128) if w8 else (-8, 8)
        bits = 8 if w8 else 4
        oc, ic = int(rng.integers(1, 3 * L)), int(rng.integers(1, 3 * L))
        w = rng.integers(lo, hi, size=(oc, ic))
        assert np.array_equal(fsim.unpack_weights(E.Op.CONV1X1, E.pack_weights(E.Op.CONV1X1, w, cfg, bits), oc, ic, cfg, w8), w)
        c = int(rng.integers(1, L + 1))
        w = rng.integers(lo, hi, size=(oc, 3, 3, c))
        assert np.array_equal(fsim.unpack_weights(E.Op.CONV3X3, E.pack_weights(E.Op.CONV3X3, w, cfg, bits), oc, c, cfg, w8), w)
        w = rng.integers(lo, hi, size=(ic, 3, 3))
        for op in E.DW_OPS:
            assert np.array_equal(fsim.unpack_weights(op, E.pack_weights(op, w, cfg, bits), ic, ic, cfg, w8), w)
    b, m = rng.integers(-(2**31), 2**31, size=oc), rng.integers(0, 2**16, size=oc)
    gb, gm = fsim.unpack_params(E.pack_params(b, m, cfg), oc, cfg)
    assert np.array_equal(gb, b) and np.array_equal(gm, m)


def test_nibble_order_is_the_documented_one():
    """docs/integer-semantics.md § 3.4's worked example, read back by the model."""
    assert fsim._nibbles(np.array([0xE1, 0x87, 0x03], np.uint8), 5).tolist() == [1, -2, 7, -8, 3]


def _mutate(rng, raw: bytes) -> bytes:
    words = list(np.frombuffer(raw, "<u4").astype(np.int64))
    if rng.random() < 0.3:
        k = int(rng.integers(0, 16 * 32))
        words[k // 32] ^= 1 << (k % 32)
    else:
        f = E.DESC_FIELDS[int(rng.integers(0, len(E.DESC_FIELDS)))]
        mask = (1 << f.width) - 1
        v = int(rng.choice([0, 1, 2, 3, 17, 18, 47, 48, 257, mask, int(rng.integers(0, mask + 1))])) & mask
        words[f.word] = (words[f.word] & ~(mask << f.lsb)) | (v << f.lsb)
    return np.array(words, "<u4").tobytes()


def test_descriptor_checks_are_check_descriptor():
    """Random corruptions of valid descriptors: fsim reports exactly check_descriptor's code."""
    rng = np.random.default_rng(11)
    base = ops_program(TINY, 0)
    valid = [E.encode_descriptor(d, 0) for d in base.descs] + [E.encode_descriptor(E.Descriptor(E.Op.END), 0)]
    eng = fsim.FsimEngine(TINY, base.dram)
    codes = set()
    for k in range(150):
        raw = _mutate(rng, valid[k % len(valid)])
        want = E.check_descriptor(raw, TINY, 0)[0]
        base.dram.write(BASE, np.frombuffer(raw, np.uint8))
        before = base.dram.data.copy()
        st = start(eng, BASE, 1, windows=((BASE, 0x1000, 1, 0),))  # nothing is writable
        if want == E.ErrorCode.NONE:
            # accepted: it runs into the windows (its data is outside the one granted page)
            assert st["error"] in (0, E.ErrorCode.READ_WINDOW, E.ErrorCode.WRITE_WINDOW), (k, st)
        else:
            assert st["error"] == want and st["err_desc"] == 0 and st["irq"] == 0b10, (k, E.ErrorCode(want).name, st)
        assert np.array_equal(base.dram.data, before)
        codes.add(int(want))
    assert len(codes) >= 6, codes


def test_bad_magic_names_the_descriptor_index():
    m = Mem(TINY)
    good = E.Descriptor(E.Op.COPY, m.tensor(np.zeros((1, 1, 4))), m.out_view(1, 1, 4))
    img = E.encode_descriptor(good, 0) + E.encode_descriptor(good, 2)  # the second carries index 2
    m.dram.write(BASE, np.frombuffer(img, np.uint8))
    st = start(fsim.FsimEngine(TINY, m.dram), BASE, 2)
    assert st["error"] == E.ErrorCode.BAD_MAGIC and st["err_desc"] == 1 and st["counters"]["DESC_DONE"] == 1


@pytest.mark.parametrize("prog_addr, prog_len", [(BASE, 0), (BASE + 32, 1)])
def test_bad_program(prog_addr, prog_len):
    st = start(fsim.FsimEngine(TINY, Mem(TINY).dram), prog_addr, prog_len)
    assert st["error"] == E.ErrorCode.BAD_PROGRAM and st["done"] == 1 and st["irq"] == 0b10


def test_program_without_end_runs_prog_len_descriptors():
    m = Mem(TINY)
    x = np.arange(12).reshape(2, 2, 3)
    src = m.tensor(x)
    outs = [m.out_view(2, 2, 3) for _ in range(3)]
    for o in outs:
        m.add(E.Descriptor(E.Op.COPY, src, o))
    at, _ = m.program(end=False)
    eng = fsim.FsimEngine(TINY, m.dram)
    st = start(eng, at, 2)  # the third COPY is never run
    assert st["error"] == 0 and st["counters"]["DESC_DONE"] == 2
    assert np.array_equal(m.dram.view(outs[1]), x) and not np.array_equal(m.dram.view(outs[2]), x)


@pytest.mark.parametrize("which", ["read", "write", "weights", "side", "program"])
def test_window_errors_touch_nothing_outside(which):
    """An access outside the granted windows: the right error, ERR_ADDR in the failing chunk,
    and not one byte changed outside the writable window."""
    cfg = TINY
    m = Mem(cfg, seed=3)
    rng = m.rng
    x = rng.integers(0, 256, size=(4, 4, 4))
    wd = rng.integers(-8, 8, size=(4, 3, 3))
    b, mlt = conv_params(rng, 4)
    vmap = rng.integers(0, 3, size=(4, 4))
    inp = m.tensor(x)
    side = m.tensor(vmap[..., None])
    wimg = m.put(E.pack_weights(E.Op.DEFORM_SQUARE, wd, cfg))
    pimg = m.put(E.pack_params(b, mlt, cfg))
    out = E.View(BASE + 0x20000 - 24, 4, 4, 4, 4, 16)  # straddles the end of the writable window
    if which != "write":
        out = E.View(BASE + 0x18000, 4, 4, 4, 4, 16)
    ro = (BASE, 0x10000, 1, 0)  # program, tensors, weights: read-only
    rw = (BASE + 0x18000, 0x8000, 1, 1)
    if which == "read":
        inp = E.View(BASE + 0x10000 - 40, 4, 4, 4, 4, 16)  # runs past the read window
    kw = dict(side_addr=side.addr, side_ps=1, side_rs=side.rs, weight_addr=wimg, param_addr=pimg)
    if which == "weights":
        kw["weight_addr"] = BASE + 0x10000 - 8
    if which == "side":
        kw["side_addr"] = BASE + 0x14000
    m.add(E.Descriptor(E.Op.DEFORM_SQUARE, inp, out, shift=10, max_dilation=3, **kw))
    at, n = m.program()
    windows = (ro, rw)
    if which == "program":
        windows = ((BASE + 0x1000, 0xF000, 1, 0), rw)
    before = m.dram.data.copy()
    st = start(fsim.FsimEngine(cfg, m.dram), at, n, windows)
    want = E.ErrorCode.WRITE_WINDOW if which == "write" else E.ErrorCode.READ_WINDOW
    assert st["error"] == want and st["err_desc"] == 0 and st["irq"] == 0b10, st
    lo_ok, hi_ok = BASE + 0x18000, BASE + 0x20000
    changed = np.flatnonzero(m.dram.data != before) + BASE
    assert ((changed >= lo_ok) & (changed < hi_ok)).all()
    expect_near = {
        "read": BASE + 0x10000 - 40,
        "write": BASE + 0x20000 - 24,
        "weights": BASE + 0x10000 - 8,
        "side": BASE + 0x14000,
        "program": BASE,
    }
    assert expect_near[which] <= st["err_addr"] < expect_near[which] + 64 + 16, hex(st["err_addr"])


def test_bus_error_beyond_dram():
    m = Mem(TINY)
    src = m.tensor(np.ones((2, 2, 4)))
    m.add(E.Descriptor(E.Op.COPY, src, E.View(BASE + SIZE - 8, 2, 2, 4, 4, 8)))
    at, n = m.program()
    st = start(fsim.FsimEngine(TINY, m.dram), at, n, windows=((BASE, 2 * SIZE, 1, 1),))
    assert st["error"] == E.ErrorCode.BUS_ERROR and st["err_addr"] >= BASE + SIZE - 8


def test_unaligned_chunks_cost_extra_beats():
    """BYTES_RD counts whole bus beats: a 3-byte chunk straddling a beat boundary costs two."""
    t = fsim._Cmds.one(BASE + 14, 3)
    assert fsim._beats(t, 16) == 2 and fsim._beats(fsim._Cmds.one(BASE + 12, 3), 16) == 1
    rows = fsim._Cmds.rows(BASE + 1, 2, 100, 3, 16, 3)  # 16 chunks of 3 bytes at stride 3, from offset 1
    want = sum(((a + 2) // 16 - a // 16 + 1) for y in range(2) for a in [1 + 100 * y + 3 * k for k in range(16)])
    assert fsim._beats(rows, 16) == want


def test_registers():
    eng = fsim.FsimEngine(U96, fsim.Dram(0x1000))
    rd = lambda name: eng.read_reg(eng.offset(name))  # noqa: E731
    assert rd("ID") == E.ENGINE_ID
    assert rd("VERSION") == E.VERSION[0] << 16 | E.VERSION[1] << 8 | E.VERSION[2]
    eng.write_reg(eng.offset("ID"), 0)  # read-only
    assert rd("ID") == E.ENGINE_ID
    back = config_from_registers(rd)
    for f in (
        "lanes",
        "max_width",
        "max_channels",
        "max_dilation",
        "max_offset",
        "wbuf_depth",
        "dma_fifo_beats",
        "max_burst_beats",
        "clock_mhz",
    ):
        assert getattr(back, f) == getattr(U96, f), f
    assert rd("WATCHDOG") == 1 << 24 and rd("PROG_ADDR") == 0
    eng.write_reg(eng.offset("PROG_ADDR"), 0x12345678)
    assert rd("PROG_ADDR") == 0x12345678
    eng.write_reg(eng.offset("CTRL"), 0b100)  # IRQ_EN
    assert rd("CTRL") == 0b100
    # a failed run sets IRQ_STATUS.ERROR; write 1 to clear
    eng.write_reg(eng.offset("PROG_LEN"), 0)
    eng.write_reg(eng.offset("CTRL"), 0b101)
    assert rd("IRQ_STATUS") == 0b10 and rd("STATUS") >> 8 & 0xFF == E.ErrorCode.BAD_PROGRAM
    eng.write_reg(eng.offset("IRQ_STATUS"), 0b10)
    assert rd("IRQ_STATUS") == 0
    # 64-bit counters: reading LO latches HI
    eng._counters["BYTES_RD"] = 0x1_2345_6789
    lo = rd("PERF_BYTES_RD_LO")
    eng._counters["BYTES_RD"] = 0x7_0000_0000
    assert lo == 0x2345_6789 and rd("PERF_BYTES_RD_HI") == 1
    assert rd("CFG_OPS") & (1 << int(E.Op.DEFORM_OFFSETS))
    assert eng.read_reg(0xFFC) == 0  # unmapped


def test_stall_fault_watchdog_and_soft_reset():
    m = Mem(TINY)
    m.add(E.Descriptor(E.Op.COPY, m.tensor(np.ones((1, 1, 4))), m.out_view(1, 1, 4)))
    at, n = m.program()
    eng = fsim.FsimEngine(TINY, m.dram)
    eng.faults.add("stall")
    st = start(eng, at, n, watchdog=500)
    assert st["error"] == E.ErrorCode.WATCHDOG and st["busy"] == 0 and st["irq"] == 0b10
    st = start(eng, at, n, watchdog=0)  # no watchdog: the run hangs
    assert st["busy"] == 1 and st["done"] == 0
    eng.write_reg(eng.offset("CTRL"), 0b10)  # SOFT_RESET
    assert eng.read_reg(eng.offset("STATUS")) & 1 == 0
    eng.faults.clear()
    st = start(eng, at, n)
    assert st["error"] == 0 and st["counters"]["DESC_DONE"] == 1


def test_strict_mode_flags_an_output_overlapping_its_input():
    """docs/engine.md: an op's output must not overlap what it reads; strict fsim says so."""
    m = Mem(TINY)
    x = np.arange(24).reshape(2, 3, 4)
    src = m.tensor(x)
    m.add(E.Descriptor(E.Op.COPY, src, E.View(src.addr + 4, 2, 3, 4, 4, 12)))  # shifted by one pixel
    at, n = m.program()
    with pytest.raises(fsim.OverlapError, match="descriptor 0"):
        start(fsim.FsimEngine(TINY, m.dram, strict=True), at, n)
    st = start(fsim.FsimEngine(TINY, m.dram), at, n)  # the lenient model just computes
    assert st["error"] == 0
