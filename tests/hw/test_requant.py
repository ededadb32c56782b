"""Requantize stage vs golden.requantize: exact, including negative ties and S = 0."""

from __future__ import annotations

import random

import numpy as np
import pytest
import simkit

from codenet.hw.requant import Requant
from codenet.sw import golden

LANES = 4


def _run(accs, mults, shift, relu, p_idle=0.3, p_stall=0.3, seed=0):
    dut = Requant(LANES)
    rng = random.Random(seed)
    n = len(accs)
    got = []

    async def driver(ctx):
        ctx.set(dut.shift, shift)
        ctx.set(dut.relu, relu)
        await simkit.put(ctx, dut.i, [{"acc": list(a), "mult": list(m)} for a, m in zip(accs, mults)], rng, p_idle)

    async def sink(ctx):
        got.extend(await simkit.get(ctx, dut.o, n, rng, p_stall, convert=lambda v: [int(x) for x in v]))

    simkit.run(dut, driver, sink, deadline_cycles=20 * n + 100)
    assert len(got) == n
    return np.array(got, np.int64)


@pytest.mark.parametrize("relu", [False, True])
def test_requant_matches_golden_random(relu):
    rng = np.random.default_rng(10 + relu)
    n = 24
    shift = 0
    rows = []
    for shift in (0, 1, 7, 16, 31, 47):
        acc = rng.integers(-(2**31), 2**31, size=(n, LANES))
        acc[: n // 2] //= 2**20  # plenty of small values so the clamp does not hide everything
        mult = rng.integers(0, 2**16, size=(n, LANES))
        got = _run(acc, mult, shift, relu, seed=shift)
        want = np.stack([golden.requantize(acc[r], mult[r], shift, relu) for r in range(n)]).astype(np.int64)
        if not relu:
            want = want & 0xFF  # the engine writes two's complement bytes
        assert np.array_equal(got, want), (shift, np.argwhere(got != want)[:5])
        rows.append(shift)
    assert rows == [0, 1, 7, 16, 31, 47]


def test_requant_ties_and_table_of_the_contract():
    """The worked examples of docs/integer-semantics.md § 5.4 (acc, M, S) -> y."""
    table = [
        (-5, 1, 1, -2, 0),
        (5, 1, 1, 3, 3),
        (-3, 1, 1, -1, 0),
        (-1, 1, 1, 0, 0),
        (-7, 3, 2, -5, 0),
        (-6, 3, 2, -4, 0),
        (-5, 3, 2, -4, 0),
        (6, 3, 2, 5, 5),
        (1000, 3, 2, 127, 255),
        (-1000, 3, 2, -128, 0),
    ]
    for relu in (False, True):
        for shift in (1, 2):
            rows = [t for t in table if t[2] == shift]
            acc = np.array([[t[0]] * LANES for t in rows])
            mult = np.array([[t[1]] * LANES for t in rows])
            got = _run(acc, mult, shift, relu, p_idle=0, p_stall=0)
            want = np.array([[(t[4] if relu else t[3]) & 0xFF] * LANES for t in rows])
            assert np.array_equal(got, want)
    acc = np.array([[-5, 5, 300, -300]])
    got = _run(acc, np.ones((1, LANES), np.int64), 0, False, p_idle=0, p_stall=0)
    assert got.tolist() == [[(-5) & 0xFF, 5, 127, 0x80]]
