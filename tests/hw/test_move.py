"""Move unit (COPY, UPSAMPLE2X) vs golden.upsample_nearest2x / identity, through a DRAM model.

The testbench plays the sequencer and the DMA: each read run (y, x, count) returns the
chunks of those input pixels; each write run is applied to an output byte array together
with the data beats that follow, so the check is on the bytes the engine would write.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import simkit
from test_pointwise import mini

from codenet.hw.move import MoveUnit
from codenet.sw import golden

CFG = mini()
L = CFG.lanes


def run_move(x, upsample, seed=0):
    h, w, c = x.shape
    nbp = -(-c // L)
    ho, wo = (2 * h, 2 * w) if upsample else (h, w)
    dut = MoveUnit(CFG)
    rng = np.random.default_rng(seed)
    prng = random.Random(seed)
    out = np.full((ho, wo, c), -1, np.int64)
    writes = np.zeros((ho, wo), np.int64)

    async def reader(ctx):
        ctx.set(dut.upsample, upsample)
        ctx.set(dut.in_h, h)
        ctx.set(dut.in_w, w)
        ctx.set(dut.nbp, nbp)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(h):
            (run,) = await simkit.get(ctx, dut.rreq, 1, prng, 0.3)
            beats = []
            for col in range(int(run.x), int(run.x) + int(run.count)):
                b = rng.integers(0, 256, size=nbp * L)
                b[:c] = x[int(run.y), col]
                beats += [simkit.bytes_to_beat(b[k * L : (k + 1) * L]) for k in range(nbp)]
            await simkit.put(ctx, dut.rd, beats, prng, 0.2)

    async def writer(ctx):
        n_runs = h * w * 2 if upsample else h
        for _ in range(n_runs):
            (run,) = await simkit.get(ctx, dut.wreq, 1, prng, 0.2)
            for col in range(int(run.x), int(run.x) + int(run.count)):
                beats = await simkit.get(ctx, dut.wd, nbp, prng, 0.2)
                data = np.concatenate([simkit.beat_to_bytes(v, L) for v in beats])
                out[int(run.y), col] = data[:c]
                writes[int(run.y), col] += 1
        await ctx.tick().until(dut.done)

    simkit.run(dut, reader, writer, deadline_cycles=40 * ho * wo * nbp + 500)
    assert (writes == 1).all(), "every output pixel is written exactly once"
    return out


@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 3, 8)])
def test_move(upsample, shape):
    rng = np.random.default_rng(shape[2] + upsample)
    x = rng.integers(0, 256, size=shape)
    got = run_move(x, upsample, seed=shape[0])
    want = golden.upsample_nearest2x(x[None])[0] if upsample else x
    assert np.array_equal(got, want)
