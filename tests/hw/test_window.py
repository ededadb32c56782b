"""Window unit (line buffer + samplers) vs the golden executor, bit-exact.

A small in-order "DMA" testbench serves the unit's requests from numpy tensors (with random
delays, random garbage in lanes beyond the channel count), and the output beats are compared
with golden.deform_dw3x3 / deform_dw3x3_offsets / conv2d / maxpool2d + requantize.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import simkit
from amaranth import Module, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from test_pointwise import image_beats, mini

from codenet.hw.pointwise import PointwiseArray
from codenet.hw.window import NB_OFF, Req, WindowUnit, WinMode
from codenet.sw import engine as E
from codenet.sw import golden

CFG = mini()
L = CFG.lanes


class Layer:
    """What the DMA model serves: input (H, W, C) bytes, weight/param images, side rows."""

    def __init__(self, x, mode, stride, wimg=None, pimg=None, side=None, w8=False):
        self.x = np.asarray(x, np.int64) & 0xFF
        self.mode, self.stride, self.wimg, self.pimg, self.side, self.w8 = mode, stride, wimg, pimg, side, w8
        h, w, c = self.x.shape
        self.ho, self.wo = (h - 1) // stride + 1, (w - 1) // stride + 1
        self.groups = 1 if mode == WinMode.IM2COL else -(-c // L)

    def beats(self, kind, group, index, rng):
        h, w, c = self.x.shape
        if kind == Req.WEIGHTS:
            per = (9 if self.w8 else 5) * L
            return image_beats(self.wimg[group * per : (group + 1) * per], L)
        if kind == Req.PARAMS:
            return image_beats(self.pimg[group * 6 * L : (group + 1) * 6 * L], L)
        if kind == Req.ROW:
            assert 0 <= index < h, index
            out = []
            for col in range(w):
                b = rng.integers(0, 256, size=L)
                part = self.x[index, col, group * L : group * L + L]
                b[: part.size] = part
                out.append(simkit.bytes_to_beat(b))
            return out
        assert kind == Req.SIDE and 0 <= index < self.ho
        if self.mode == WinMode.SQUARE:
            row = self.side[index]  # (Wo,) uint8
            pad = np.concatenate([row, rng.integers(0, 256, size=(-row.size) % L)])
            return image_beats(pad, L)
        nb = NB_OFF[L]
        out = []
        for col in range(self.wo):
            b = rng.integers(0, 256, size=nb * L)
            b[:18] = self.side[index, col] & 0xFF
            out += image_beats(b, L)
        return out


class Case:
    """One op for the shared simulation: the layer, the unit's settings, the expected output."""

    def __init__(self, name, layer, want, *, dmax=0, rmax=0, in_signed=False, relu=False, shift=0, cs_log2=0, pw=None):
        self.name, self.layer, self.want, self.pw = name, layer, want, pw
        self.settings = dict(dmax=dmax, rmax=rmax, in_signed=in_signed, relu=relu, shift=shift, cs_log2=cs_log2)
        self.got = None
        self.served = []

    @property
    def n_out(self):
        lay = self.layer
        if self.pw is not None:
            return lay.ho * lay.wo * self.pw["oct"]
        ict = -(-9 * (1 << self.settings["cs_log2"]) // L) if lay.mode == WinMode.IM2COL else 1
        return lay.groups * lay.ho * lay.wo * ict


class Harness(wiring.Component):
    """The window unit, and a pointwise array that takes its output when `to_pw` is set (the stem)."""

    def __init__(self):
        self.win = WindowUnit(CFG)
        self.pw = PointwiseArray(CFG)
        super().__init__({"to_pw": In(1), "out": Out(stream.Signature(unsigned(8 * L)))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.win = win = self.win
        m.submodules.pw = pw = self.pw
        wo, pix, out = win.out, pw.pix, self.out
        with m.If(self.to_pw):
            m.d.comb += [pix.valid.eq(wo.valid), pix.payload.eq(wo.payload), wo.ready.eq(pix.ready)]
            m.d.comb += [out.valid.eq(pw.out.valid), out.payload.eq(pw.out.payload), pw.out.ready.eq(out.ready)]
        with m.Else():
            m.d.comb += [out.valid.eq(wo.valid), out.payload.eq(wo.payload), wo.ready.eq(out.ready)]
        return m


def run_cases(cases: list[Case], seed=0) -> None:
    """Run every case, one after the other, in one simulation (elaboration dominates the cost)."""
    dut = Harness()
    unit = dut.win
    rng = np.random.default_rng(seed)
    prng = random.Random(seed)
    current = {}

    async def dma(ctx):
        for case in cases:
            layer, st = case.layer, case.settings
            h, w, _ = layer.x.shape
            ctx.set(unit.mode, layer.mode)
            ctx.set(unit.stride_log2, {1: 0, 2: 1, 4: 2}[layer.stride])
            ctx.set(unit.in_h, h)
            ctx.set(unit.in_w, w)
            ctx.set(unit.groups, layer.groups)
            ctx.set(unit.w8, layer.w8)
            for k, v in st.items():
                ctx.set(getattr(unit, k), v)
            ctx.set(dut.to_pw, case.pw is not None)
            if case.pw is not None:
                p = dut.pw
                for k, v in (("ict", case.pw["ict"]), ("oct", case.pw["oct"]), ("w8", 1), ("in_signed", 0)):
                    ctx.set(getattr(p, k), v)
                ctx.set(p.shift, st["shift"])
                ctx.set(p.relu, st["relu"])
                ctx.set(p.clear, 1)
                await ctx.tick()
                ctx.set(p.clear, 0)
                await simkit.put(ctx, p.wload, image_beats(case.pw["wimg"], L))
                await simkit.put(ctx, p.pload, image_beats(case.pw["pimg"], L))
            current["case"] = case
            ctx.set(unit.start, 1)
            await ctx.tick()
            ctx.set(unit.start, 0)
            queue: list[int] = []
            delay = 0
            while True:
                ctx.set(unit.req.ready, 1)
                if queue and delay == 0:
                    ctx.set(unit.rd.valid, 1)
                    ctx.set(unit.rd.payload, queue[0])
                else:
                    ctx.set(unit.rd.valid, 0)
                _, _, rv, rp, dv, dr, done = await ctx.tick().sample(
                    unit.req.valid, unit.req.payload, unit.rd.valid, unit.rd.ready, unit.done
                )
                if rv:
                    case.served.append((int(rp.kind), int(rp.group), int(rp.index)))
                    queue += layer.beats(Req(int(rp.kind)), int(rp.group), int(rp.index), rng)
                if dv and dr:
                    queue.pop(0)
                    delay = 1 if prng.random() < 0.15 else 0
                elif delay:
                    delay -= 1
                if done and case.got is not None:
                    assert not queue, "data left over at the end"
                    break
            ctx.set(unit.rd.valid, 0)

    async def sink(ctx):
        for case in cases:
            beats = await simkit.get(ctx, dut.out, case.n_out, prng, 0.15)
            case.got = np.array([simkit.beat_to_bytes(v, L) for v in beats], np.int64)

    total = sum(c.n_out for c in cases)
    simkit.run(dut, dma, sink, deadline_cycles=60 * total + 3000 * len(cases))


def dw_expected(acc, bias, mult, shift, relu):
    return golden.requantize(acc + bias, mult, shift, relu).astype(np.int64) & 0xFF


def by_groups(want, groups):
    """(Ho, Wo, C) -> the unit's output order: group-major, then pixels, L lanes per beat."""
    ho, wo, c = want.shape
    pad = np.zeros((ho, wo, groups * L), np.int64)
    pad[..., :c] = want
    return pad.reshape(ho, wo, groups, L).transpose(2, 0, 1, 3).reshape(-1, L)


def rand_dw(rng, c, w_bits):
    lo, hi = (-8, 7) if w_bits == 4 else (-128, 127)
    w = rng.integers(lo, hi + 1, size=(c, 3, 3))
    bias = rng.integers(-500, 500, size=c)
    mult = rng.integers(2**12, 2**16, size=c)
    return w, bias, mult


def case_dw(name, stride, w_bits, in_signed, relu, shape, seed):
    rng = np.random.default_rng(seed)
    c = shape[2]
    x = rng.integers(-128, 128, size=shape) if in_signed else rng.integers(0, 256, size=shape)
    wt, bias, mult = rand_dw(rng, c, w_bits)
    layer = Layer(x, WinMode.DW, stride, E.pack_weights(E.Op.DWCONV3X3, wt, CFG, w_bits), E.pack_params(bias, mult, CFG), w8=w_bits == 8)
    shift = 14 if w_bits == 4 else 18
    acc = golden.conv2d(x[None], wt[..., None], None, stride, 1, groups=c)[0]
    want = by_groups(dw_expected(acc, bias, mult, shift, relu), layer.groups)
    return Case(name, layer, want, in_signed=in_signed, relu=relu, shift=shift)


def case_square(name, stride, shape, vmax, dmax, seed):
    rng = np.random.default_rng(seed)
    h, w, c = shape
    x = rng.integers(0, 256, size=shape)
    wt, bias, mult = rand_dw(rng, c, 4)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    v = rng.integers(0, vmax + 1, size=(ho, wo))  # values beyond D-1 clamp to D
    v[0, 0], v[-1, -1] = 255, 0
    layer = Layer(x, WinMode.SQUARE, stride, E.pack_weights(E.Op.DEFORM_SQUARE, wt, CFG), E.pack_params(bias, mult, CFG), side=v)
    d = golden.dilation_from_map(v[None], dmax)
    acc = golden.deform_dw3x3(x[None], wt, d, stride)[0]
    if dmax == 1:  # d = 1 everywhere is the ordinary depthwise convolution: check against conv2d
        acc = golden.conv2d(x[None], wt[..., None], None, stride, 1, groups=c)[0]
    want = by_groups(dw_expected(acc, bias, mult, 13, True), layer.groups)
    return Case(name, layer, want, dmax=dmax, relu=True, shift=13)


def case_offsets(name, stride, shape, seed):
    rng = np.random.default_rng(seed)
    h, w, c = shape
    rmax = CFG.max_offset
    x = rng.integers(-128, 128, size=shape)
    wt, bias, mult = rand_dw(rng, c, 4)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    off = rng.integers(-3, 4, size=(ho, wo, 18))  # clamped to [-R, R] by the op
    off[0, 0, :] = -128
    layer = Layer(x, WinMode.OFFSETS, stride, E.pack_weights(E.Op.DEFORM_OFFSETS, wt, CFG), E.pack_params(bias, mult, CFG), side=off)
    offsets = np.clip(off, -rmax, rmax).reshape(1, ho, wo, 9, 2)
    acc = golden.deform_dw3x3_offsets(x[None], wt, offsets, stride)[0]
    want = by_groups(dw_expected(acc, bias, mult, 12, False), layer.groups)
    return Case(name, layer, want, rmax=rmax, in_signed=True, relu=False, shift=12)


def case_pool(name, stride, in_signed, shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 0, size=shape) if in_signed else rng.integers(0, 256, size=shape)  # padding must not win
    layer = Layer(x, WinMode.MAXPOOL, stride)
    want = golden.maxpool2d(x[None].astype(np.int8 if in_signed else np.uint8), 3, stride, 1)[0].astype(np.int64) & 0xFF
    return Case(name, layer, by_groups(want, layer.groups), in_signed=in_signed)


def case_im2col(name, stride, shape, seed):
    rng = np.random.default_rng(seed)
    h, w, c = shape
    slot = E.im2col_slot(c)
    x = rng.integers(0, 256, size=shape)
    layer = Layer(x, WinMode.IM2COL, stride)
    ict = -(-9 * slot // L)
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    want = np.zeros((layer.ho, layer.wo, ict * L), np.int64)
    for y in range(layer.ho):
        for xx in range(layer.wo):
            win = xp[y * stride : y * stride + 3, xx * stride : xx * stride + 3].reshape(9, c)
            v = np.zeros((9, slot), np.int64)
            v[:, :c] = win
            want[y, xx, : 9 * slot] = v.reshape(-1)
    case = Case(name, layer, want.reshape(-1, L), cs_log2=slot.bit_length() - 1)
    case.compare_mask = np.zeros((layer.ho, layer.wo, ict * L), bool)
    case.compare_mask[..., : 9 * slot] = (np.arange(9 * slot) % slot < c)[None, None]  # lanes past C carry DMA garbage
    case.compare_mask = case.compare_mask.reshape(-1, L)
    return case


def case_stem(name, stride, shape, oc, seed):
    """The stem: 3x3 conv on a 3-channel image, 8-bit weights, via im2col into the MAC array."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    x = rng.integers(0, 256, size=shape)
    wt = rng.integers(-128, 128, size=(oc, 3, 3, c))
    bias = rng.integers(-5000, 5000, size=oc)
    mult = rng.integers(2**12, 2**16, size=oc)
    shift = 22
    layer = Layer(x, WinMode.IM2COL, stride)
    slot = E.im2col_slot(c)
    desc = E.Descriptor(E.Op.CONV3X3, E.View.dense(0, h, w, c), E.View.dense(0, layer.ho, layer.wo, oc), w8=True, stride=stride)
    assert E.check_descriptor(desc, CFG)[0] == E.ErrorCode.NONE  # the weights fit this engine's buffer
    wimg, pimg = E.pack_weights(E.Op.CONV3X3, wt, CFG, 8), E.pack_params(bias, mult, CFG)
    pw = {"ict": -(-9 * slot // L), "oct": -(-oc // L), "wimg": wimg, "pimg": pimg}
    acc = golden.conv2d(x[None], wt, bias, stride, 1)[0]
    want = golden.requantize(acc, mult, shift, True).astype(np.int64)
    pad = np.zeros((layer.ho, layer.wo, pw["oct"] * L), np.int64)
    pad[..., :oc] = want
    case = Case(name, layer, pad.reshape(-1, L), cs_log2=slot.bit_length() - 1, shift=shift, relu=True, pw=pw)
    case.compare_lanes = oc
    return case


def all_cases():
    return [
        case_dw("dw-s1-w4-u8-relu", 1, 4, False, True, (5, 6, 6), 1),
        case_dw("dw-s2-w8-i8", 2, 8, True, False, (6, 5, 3), 2),
        case_dw("dw-s2-w4-i8-relu-odd", 2, 4, True, True, (7, 7, 4), 3),
        case_square("square-s1", 1, (7, 8, 5), 5, CFG.max_dilation, 4),
        case_square("square-s2", 2, (7, 8, 5), 5, CFG.max_dilation, 5),
        case_square("square-d1-is-depthwise", 1, (5, 5, 4), 3, 1, 6),
        case_offsets("offsets-s1", 1, (6, 6, 3), 7),
        case_offsets("offsets-s2", 2, (6, 5, 3), 8),
        case_pool("maxpool-s2-u8", 2, False, (5, 6, 6), 9),
        case_pool("maxpool-s2-i8", 2, True, (6, 5, 3), 10),
        case_pool("maxpool-s1-i8", 1, True, (4, 4, 4), 11),
        case_im2col("im2col-s1", 1, (5, 4, 3), 12),
        case_im2col("im2col-s4", 4, (6, 5, 3), 13),
        case_stem("stem-s2", 2, (7, 6, 3), 6, 14),
        case_stem("stem-s4", 4, (9, 6, 3), 4, 15),
    ]


CASES = all_cases()


@pytest.fixture(scope="module")
def ran():
    run_cases(CASES, seed=1)
    return {c.name: c for c in CASES}


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_window_case(ran, name):
    case = ran[name]
    want = case.want
    got = case.got
    assert got is not None and got.shape == want.shape, (None if got is None else got.shape, want.shape)
    c = getattr(case, "compare_lanes", L)
    mask = getattr(case, "compare_mask", None)
    if mask is None:
        mask = np.zeros(want.shape, bool)
        if case.layer.mode != WinMode.IM2COL and case.pw is None:  # per group: lanes past C are don't-care
            cc = case.layer.x.shape[2]
            lanes = np.arange(case.layer.groups * L).reshape(case.layer.groups, 1, L) < cc
            mask = np.broadcast_to(lanes, (case.layer.groups, want.shape[0] // case.layer.groups, L)).reshape(-1, L)
        else:
            mask[:, :c] = True
    bad = np.argwhere((got != want) & mask)
    assert not bad.size, f"{len(bad)} mismatches, first at {bad[:4].tolist()}: got {got[tuple(bad[0])]}, want {want[tuple(bad[0])]}"
    rows = [r for r in case.served if r[0] == Req.ROW]
    for g in range(case.layer.groups):
        idx = [r[2] for r in rows if r[1] == g]
        assert idx == sorted(set(idx)), "each input row is loaded once, in order"


# ------------------------------------------------------------------ the taps' offsets


@pytest.mark.parametrize("k", [-1, 0, 1])
def test_tap_offset_is_a_negation_or_a_wire_not_a_multiplier(k):
    """`(i - 1) * dil` for the top row / left column became a multiplier in Yosys (`-1 * v` is not
    simplified), a MULT18X18D on the ulx3s engine's critical path at 37 MHz; `_times` must give
    k * v for every v and put no `$mul` cell in the netlist."""
    from amaranth.back import rtlil
    from amaranth.sim import Simulator

    from codenet.hw.window import _times

    class Top(wiring.Component):
        def __init__(self):
            super().__init__({"v": In(unsigned(4)), "o": Out(range(-16, 16))})

        def elaborate(self, platform):
            m = Module()
            m.d.comb += self.o.eq(_times(k, self.v))
            return m

    top = Top()
    assert "$mul" not in rtlil.convert(Top())
    seen = []

    async def bench(ctx):
        for v in range(16):
            ctx.set(top.v, v)
            seen.append((v, ctx.get(top.o)))

    sim = Simulator(top)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [(v, k * v) for v in range(16)]


def test_tap_offset_refuses_other_indices():
    from amaranth import Signal

    from codenet.hw.window import _times

    with pytest.raises(ValueError, match="tap index"):
        _times(2, Signal(4))
