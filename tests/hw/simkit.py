"""Small helpers for Amaranth-simulator unit tests of the engine's units (async testbenches)."""

from __future__ import annotations

import random

from amaranth.sim import Simulator


def run(dut, *benches, deadline_cycles: int = 200_000, clock: float = 1e-8, chunk: int = 64) -> int:
    """Simulate `dut` until every testbench in `benches` has returned; returns the cycles run.

    More than `deadline_cycles` cycles is a failure (a hang). The simulation advances in
    chunks and stops after the chunk in which the last bench returned, so no coroutine is
    left suspended (a suspended one would be torn down at garbage collection)."""
    sim = Simulator(dut)
    sim.add_clock(clock)
    done = [False] * len(benches)

    def wrap(k, fn):
        async def bench(ctx):
            await fn(ctx)
            done[k] = True

        return bench

    for k, b in enumerate(benches):
        sim.add_testbench(wrap(k, b))
    cycles = 0
    while not all(done):
        if cycles >= deadline_cycles:
            names = [b.__name__ for b, d in zip(benches, done) if not d]
            raise AssertionError(f"testbenches {names} did not finish within {deadline_cycles} cycles")
        cycles += chunk
        sim.run_until(cycles * clock)
    return cycles


async def put(ctx, port, payloads, rng: random.Random | None = None, p_idle: float = 0.0, stop=None) -> bool:
    """Send each payload on stream `port` (valid/ready), optionally idling at random.
    With `stop` (a signal), give up as soon as it is high; returns False if it gave up."""
    for p in payloads:
        while rng is not None and rng.random() < p_idle:
            ctx.set(port.valid, 0)
            await ctx.tick()
        ctx.set(port.payload, p)
        ctx.set(port.valid, 1)
        while True:
            if stop is None:
                await ctx.tick().until(port.ready)
                break
            _, _, ready, halt = await ctx.tick().sample(port.ready, stop)
            if ready:
                break
            if halt:
                ctx.set(port.valid, 0)
                return False
    ctx.set(port.valid, 0)
    return True


async def get(ctx, port, count: int, rng: random.Random | None = None, p_stall: float = 0.0, convert=None):
    """Receive `count` payloads from stream `port`, optionally stalling at random."""
    out = []
    while len(out) < count:
        ready = not (rng is not None and rng.random() < p_stall)
        ctx.set(port.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
        if ready and valid:
            out.append(convert(payload) if convert else payload)
    ctx.set(port.ready, 0)
    return out


def beat_to_bytes(value: int, lanes: int) -> list[int]:
    return [(value >> (8 * k)) & 0xFF for k in range(lanes)]


def bytes_to_beat(bs) -> int:
    v = 0
    for k, b in enumerate(bs):
        v |= (int(b) & 0xFF) << (8 * k)
    return v
