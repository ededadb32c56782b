"""Pointwise MAC array vs golden.conv2d + golden.requantize, bit-exact, for each multiplier mapping.

Weights and parameters go in as the DRAM images of codenet.sw.engine (pack_weights,
pack_params); pixels as beats with random bytes in the unused lanes (the DMA delivers
whatever follows a pixel in memory there).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import simkit
from amaranth import Module, Signal, signed
from amaranth.sim import Simulator

from codenet.hw.pointwise import PointwiseArray, packed_split_bits, shift_add_mul
from codenet.sw import engine as E
from codenet.sw import golden

MINI = dict(pw_ic=4, pw_oc=4, dw_lanes=4, axi_data_bits=32, max_width=16, max_channels=16, max_dilation=3, max_offset=1, wbuf_depth=64)
MINI.update(dma_fifo_beats=16, max_burst_beats=8)


def mini(**kw) -> E.EngineConfig:
    return E.EngineConfig(name="mini", **{**MINI, **kw})


def image_beats(img: np.ndarray, L: int) -> list[int]:
    img = np.asarray(img, np.uint8)
    assert img.size % L == 0
    return [simkit.bytes_to_beat(img[k : k + L]) for k in range(0, img.size, L)]


def pixel_beats(x: np.ndarray, L: int, rng: np.random.Generator) -> list[int]:
    """x (P, IC) bytes -> ict beats per pixel, garbage after the last channel."""
    p, ic = x.shape
    ict = -(-ic // L)
    buf = rng.integers(0, 256, size=(p, ict * L))
    buf[:, :ic] = x.astype(np.int64) & 0xFF
    return [simkit.bytes_to_beat(buf[q, k * L : (k + 1) * L]) for q in range(p) for k in range(ict)]


def run_pointwise(cfg, w, bias, mult, shift, relu, x, in_signed, w_bits, seed=0, op=E.Op.CONV1X1, xcols=None):
    """Drive one layer through the array; returns (P, OC) output bytes as signed/unsigned ints."""
    L = cfg.lanes
    dut = PointwiseArray(cfg)
    rng = np.random.default_rng(seed)
    prng = random.Random(seed)
    oc = w.shape[0]
    wimg = E.pack_weights(op, w, cfg, w_bits)
    pimg = E.pack_params(bias, mult, cfg)
    cols = x if xcols is None else xcols
    ict = -(-cols.shape[1] // L)
    octs = -(-oc // L)
    pix = pixel_beats(cols, L, rng)
    n_out = cols.shape[0] * octs
    got = []
    steps = []

    async def driver(ctx):
        ctx.set(dut.ict, ict)
        ctx.set(dut.oct, octs)
        ctx.set(dut.w8, w_bits > 4)
        ctx.set(dut.in_signed, in_signed)
        ctx.set(dut.shift, shift)
        ctx.set(dut.relu, relu)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        await simkit.put(ctx, dut.wload, image_beats(wimg, L))
        await simkit.put(ctx, dut.pload, image_beats(pimg, L))
        await simkit.put(ctx, dut.pix, pix, prng, 0.2)

    async def sink(ctx):
        while len(got) < n_out:
            ready = prng.random() >= 0.2
            ctx.set(dut.out.ready, ready)
            _, _, valid, payload, step = await ctx.tick().sample(dut.out.valid, dut.out.payload, dut.mac_step)
            steps.append(step)
            if ready and valid:
                got.append(payload)

    sim_cycles = 40 * (len(pix) + n_out * ict * 2) + 400
    simkit.run(dut, driver, sink, deadline_cycles=sim_cycles)
    assert len(got) == n_out
    out = np.array([simkit.beat_to_bytes(v, L) for v in got], np.int64).reshape(cols.shape[0], octs * L)[:, :oc]
    assert sum(steps) == cols.shape[0] * octs * ict * (2 if w_bits > 4 else 1)
    return out


def expected(x, w, bias, mult, shift, relu, **conv):
    acc = golden.conv2d(x, w, bias, **conv)
    y = golden.requantize(acc, mult, shift, relu).astype(np.int64)
    return y & 0xFF


def rand_layer(rng, ic, oc, w_bits, in_signed):
    lo, hi = (-128, 127) if in_signed else (0, 255)
    wl, wh = (-8, 7) if w_bits == 4 else (-128, 127)
    w = rng.integers(wl, wh + 1, size=(oc, 1, 1, ic))
    w.flat[0] = wl  # the most negative weight must work too
    bias = rng.integers(-2000, 2000, size=oc)
    mult = rng.integers(1, 2**16, size=oc)
    return lo, hi, w, bias, mult


@pytest.mark.parametrize("pw_mul", ["lut", "dsp_packed2"])
@pytest.mark.parametrize("w_bits", [4, 8])
def test_pointwise_random(pw_mul, w_bits):
    cfg = mini(pw_mul=pw_mul)
    rng = np.random.default_rng([w_bits, len(pw_mul)])
    for ic, oc, in_signed, relu in [(7, 6, False, True), (4, 3, True, False), (9, 8, True, True)]:
        lo, hi, w, bias, mult = rand_layer(rng, ic, oc, w_bits, in_signed)
        x = rng.integers(lo, hi + 1, size=(1, 2, 2, ic))
        x.flat[0] = lo
        shift = 16 if w_bits == 4 else 20
        got = run_pointwise(cfg, w, bias, mult, shift, relu, x.reshape(-1, ic), in_signed, w_bits, seed=ic)
        want = expected(x, w, bias, mult, shift, relu).reshape(-1, oc)
        assert np.array_equal(got, want), (ic, oc, in_signed, relu, got, want)


def test_shift_add_mul_is_a_product():
    """The 'lut' mapping's multiplier: every 9-bit activation times every 5-bit weight."""
    m = Module()
    x, w, p = Signal(signed(9)), Signal(signed(5)), Signal(signed(14))
    m.d.comb += p.eq(shift_add_mul(x, w))
    sim = Simulator(m)
    bad = []

    async def bench(ctx):
        for xv in range(-256, 256):
            ctx.set(x, xv)
            for wv in range(-16, 16):
                ctx.set(w, wv)
                if ctx.get(p) != xv * wv:
                    bad.append((xv, wv, ctx.get(p)))

    sim.add_testbench(bench)
    sim.run()
    assert not bad, bad[:5]


def test_pointwise_dsp_mapping_and_extremes():
    """Each multiplier mapping on all-extreme operands (they stress the packed split bound too)."""
    ic, oc = 8, 4
    for pw_mul in ("lut", "dsp", "dsp_packed2"):
        cfg = mini(pw_mul=pw_mul)
        w = np.full((oc, 1, 1, ic), -8)
        w[1] = 7
        w[2, 0, 0, ::2] = -8
        w[2, 0, 0, 1::2] = 7
        x = np.full((1, 1, 3, ic), 255)
        x[0, 0, 1] = 0
        x[0, 0, 2, ::2] = 255
        bias = np.zeros(oc, np.int64)
        mult = np.full(oc, 1)
        got = run_pointwise(cfg, w, bias, mult, 7, False, x.reshape(-1, ic), False, 4, seed=3)
        assert np.array_equal(got, expected(x, w, bias, mult, 7, False).reshape(-1, oc))
    # the split point of the packed mapping bounds the worst-case low sum of one input tile
    for lanes in (4, 8, 16, 32):
        assert lanes * 255 * 8 < 2 ** (packed_split_bits(lanes) - 1)
