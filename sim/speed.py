"""Measure how fast the DRAM model's harness simulates: ``python -m codenet.sim.speed``.

Why a script and not a test: speeds depend on the machine and its load, so they are reported
(docs/simulation.md keeps the numbers), never asserted. Builds tb_axi_dram through the cached
runner (the build time is reported when this call compiles it), runs sim/speed_bench.py, and
prints simulated cycles per wall-clock second for an idle clock, the HDL traffic generator
(Python only waits for done) and a Python-driven cocotbext-axi master, plus bulk load/dump times
and the host-side hex conversion speed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from codenet.sim import dram, runner


def hex_speed(nbytes: int, word_bytes: int) -> dict[str, float]:
    """Seconds to turn ``nbytes`` into hex text and back, host side only."""
    data = np.random.default_rng(1).integers(0, 256, nbytes, dtype=np.uint8)
    t0 = time.perf_counter()
    text = dram.hex_lines(data, word_bytes)
    t1 = time.perf_counter()
    back = dram.parse_hex(text, word_bytes)
    t2 = time.perf_counter()
    assert np.array_equal(back, data)
    return {"bytes": nbytes, "to_hex_s": t1 - t0, "from_hex_s": t2 - t1}


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Build, run, print a table; return the numbers."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=2_000_000, help="cycles per measurement (default 2M)")
    ap.add_argument("--width", type=int, default=64, help="AXI data width in bits (default 64)")
    ap.add_argument("--mem-mib", type=int, default=16, help="DRAM model size in MiB (default 16)")
    ap.add_argument("--timing", choices=sorted(dram.PRESETS), default="ultra96", help="DRAM timing preset (default ultra96)")
    ap.add_argument("--bulk-mib", type=int, default=8, help="size of the bulk load/dump measured (default 8)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON only")
    args = ap.parse_args(argv)

    timing = dram.PRESETS[args.timing]
    b = runner.build(
        runner.hdl("tb_axi_dram.sv", "axi_dram.sv", "axi_traffic_gen.sv"),
        "tb_axi_dram",
        parameters={"DATA_WIDTH": args.width, "MEM_BYTES": args.mem_mib << 20, **timing.parameters()},
    )
    with tempfile.TemporaryDirectory(prefix="codenet-speed-") as tmp:
        out = Path(tmp) / "speed.json"
        t0 = time.perf_counter()
        runner.run_built(
            b,
            "codenet.sim.speed_bench",
            test_dir=tmp,
            extra_env={
                "SPEED_CYCLES": str(args.cycles),
                "SPEED_OUT": str(out),
                "SPEED_BULK_BYTES": str(min(args.bulk_mib, args.mem_mib) << 20),
            },
        )
        total = time.perf_counter() - t0
        res: dict[str, object] = json.loads(out.read_text())
    res["build"] = {"dir": str(b.build_dir), "built_now": b.built, "seconds": round(b.seconds, 1)}
    res["config"] = {"width": args.width, "mem_mib": args.mem_mib, "timing": args.timing}
    res["run_wall_s"] = total
    res["hex"] = hex_speed(args.bulk_mib << 20, args.width // 8)
    if args.json:
        print(json.dumps(res, indent=2))
        return res
    print(f"tb_axi_dram, {args.width}-bit AXI, {args.mem_mib} MiB, timing {args.timing}")
    how = f"compiled now in {b.seconds:.1f} s" if b.built else "from cache"
    print(f"build: {how} ({b.build_dir})")
    for name in ("idle", "generator", "python_master"):
        r = res[name]
        assert isinstance(r, dict)
        print(f"{name:>14}: {r['cycles']:>12,.0f} cycles in {r['wall_s']:7.2f} s = {r['cycles_per_s']:>12,.0f} cycles/s")
    g = res["generator"]
    assert isinstance(g, dict)
    print(f"{'':>14}  generator moved {g['bytes_per_cycle']:.2f} B/cycle, read errors {g['rd_errors']}")
    bulk, hx = res["bulk"], res["hex"]
    assert isinstance(bulk, dict) and isinstance(hx, dict)
    mib = bulk["bytes"] / 2**20
    print(f"{'bulk':>14}: load {mib:.0f} MiB {bulk['load_s']:.2f} s, dump {bulk['dump_s']:.2f} s (round trip ok: {bulk['round_trip_ok']})")
    print(f"{'hex (host)':>14}: {hx['bytes'] / 2**20:.0f} MiB to hex {hx['to_hex_s']:.3f} s, from hex {hx['from_hex_s']:.3f} s")
    return res


if __name__ == "__main__":
    main()
