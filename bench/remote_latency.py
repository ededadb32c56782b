"""What remote:// costs on loopback: the same frames on a local device and through `codenet serve`.

    python bench/remote_latency.py                      # rtl, engine tiny, a small graph, 5 frames
    python bench/remote_latency.py --backend fsim --json

The server runs as its own process (``python -m codenet.sw.serve --port 0``), as it would on a
board; the local device is opened in this process (an rtl device's simulator is a process of its
own either way). Reported per frame (best and median of the frames, after one warm-up frame):
wall time of ``Runtime.run`` for one image (write the input, run, read the outputs), and per
request: an empty round trip (ping), one register read, and the input write / output read.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from codenet.sw import engine as E
from codenet.sw import golden, zoo
from codenet.sw.builder import GraphBuilder
from codenet.sw.compiler import compile_graph
from codenet.sw.driver import open_device
from codenet.sw.remote import RemoteDevice
from codenet.sw.runtime import Runtime


def small_graph():
    """A few layers that fit every preset (the tiny engine included)."""
    b = GraphBuilder("small", 1)
    x = b.input("x", (16, 16, 8))
    y = b.conv(x, 16, relu=True, name="pw")
    z = b.dwconv(y, 2, relu=True, name="dw")
    return b.finish([b.upsample(b.conv(z, 8, relu=False, name="head"), name="up")])


def start_server(backend: str, engine: str, token_file: Path) -> tuple[subprocess.Popen, str]:
    """`python -m codenet.sw.serve` on 127.0.0.1, any free port; returns (process, url)."""
    cmd = [sys.executable, "-m", "codenet.sw.serve", "--backend", backend, "--engine", engine]
    cmd += ["--port", "0", "--token-file", str(token_file)]
    if backend == "rtl":
        cmd += ["--dram", "ideal"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    lines = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 600:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit(f"the server exited:\n{''.join(lines)}")
        lines.append(line)
        m = re.search(r"listening on (remote://\S+)", line)
        if m:
            return proc, m.group(1)
    proc.terminate()
    raise SystemExit("the server did not start within 10 minutes")


def _times(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def measure(devs: dict, prog, images: np.ndarray, reps: int) -> tuple[dict, dict]:
    """Per-frame and per-request wall times (seconds) on each device, interleaved (local, remote, local, ...)
    so that a machine whose load changes during the run weighs on both alike."""
    (name,) = prog.inputs
    rts = {k: Runtime(d, prog, timeout_s=600) for k, d in devs.items()}
    res: dict = {k: {"frame_s": [], "read32_s": [], "write_input_s": [], "read_output_s": []} for k in devs}
    outs = {}
    try:
        for rt in rts.values():
            rt.run({name: images[:1]})  # warm-up
        for i in range(len(images)):
            for k, rt in rts.items():
                t0 = time.perf_counter()
                rt.run({name: images[i : i + 1]})
                res[k]["frame_s"].append(time.perf_counter() - t0)
        reg = E.reg("PROG_LEN").offset
        for _ in range(reps):
            for k, rt in rts.items():
                dev = devs[k]
                spec = rt.program.inputs[name]  # the relocated program's addresses
                out_spec = next(iter(rt.program.outputs.values()))
                packed = spec.pack(images[0])
                r = res[k]
                t0 = time.perf_counter()
                dev._read32(reg)
                t1 = time.perf_counter()
                dev.write(rt.buffer, spec.addr - rt.program.base, packed)
                t2 = time.perf_counter()
                dev.read(rt.buffer, out_spec.addr - rt.program.base, out_spec.extent)
                t3 = time.perf_counter()
                r["read32_s"].append(t1 - t0)
                r["write_input_s"].append(t2 - t1)
                r["read_output_s"].append(t3 - t2)
                r["input_bytes"], r["output_bytes"] = int(np.asarray(packed).nbytes), int(out_spec.extent)
                if isinstance(dev, RemoteDevice):
                    r.setdefault("ping_s", []).extend(_times(dev.ping, 1))
        for k, rt in rts.items():
            outs[k] = rt.run({name: images})
            res[k]["cycles_per_frame"] = int(rt.counters[-1]["CYCLES"])
    finally:
        for rt in rts.values():
            rt.close()
    return res, outs


def summarize(r: dict) -> dict:
    s = {k: v for k, v in r.items() if not k.endswith("_s")}
    for k, v in r.items():
        if k.endswith("_s"):
            s[k[:-2] + "_ms"] = {"best": round(min(v) * 1e3, 3), "median": round(statistics.median(v) * 1e3, 3)}
    return s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=["rtl", "fsim"], default="rtl")
    p.add_argument("--engine", default="tiny", help="engine preset (the graph must fit it)")
    p.add_argument("--model", default="small", help="small (a few layers) or a zoo name (random weights)")
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--reps", type=int, default=50, help="repetitions of each single request")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    a = p.parse_args(argv)
    cfg = E.preset(a.engine)
    g = small_graph() if a.model == "small" else zoo.build(a.model, seed=0)
    prog = compile_graph(g, cfg)
    (name,) = g.inputs
    t = g.tensors[name]
    images = np.random.default_rng(0).integers(0, 256, size=(a.frames, *t.shape)).astype(t.dtype)
    want = golden.run(g, images)
    kw = {"dram": "ideal"} if a.backend == "rtl" else {}

    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(a.backend, a.engine, Path(tmp) / "token")
        local_dev = open_device(a.backend, config=cfg, **kw)
        try:
            with RemoteDevice(url, token_file=Path(tmp) / "token") as dev:
                res, outs = measure({"local": local_dev, "remote": dev}, prog, images, a.reps)
        finally:
            local_dev.close()
            proc.terminate()
            proc.wait(timeout=30)
    local, remote = res["local"], res["remote"]
    local_out, remote_out = outs["local"], outs["remote"]
    exact = all(np.array_equal(local_out[k], want[k]) and np.array_equal(remote_out[k], want[k]) for k in want)
    report = {
        "backend": a.backend,
        "engine": cfg.name,
        "model": g.name,
        "frames": a.frames,
        "bit_exact_vs_golden": exact,
        "same_cycles": local["cycles_per_frame"] == remote["cycles_per_frame"],
        "local": summarize(local),
        "remote": summarize(remote),
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "note": "loopback TCP, server in its own process; wall times, best and median; local and remote interleaved",
    }
    if a.json:
        print(json.dumps(report, indent=2))
        return 0 if exact else 1
    lo, re_ = report["local"], report["remote"]
    print(f"{g.name} on {a.backend} (engine {cfg.name}), {a.frames} frames, {local['cycles_per_frame']:,} engine cycles per frame")
    print(f"bit-exact with golden on both: {exact}; same cycle count: {report['same_cycles']}")
    print(f"{'per':<28}{'local best':>12}{'remote best':>13}{'local med':>11}{'remote med':>12}{'overhead med':>14}")
    rows = [
        ("frame (Runtime.run, 1 image)", "frame_ms"),
        ("register read", "read32_ms"),
        (f"input write ({local['input_bytes']} B)", "write_input_ms"),
        (f"output read ({local['output_bytes']} B)", "read_output_ms"),
    ]
    for label, k in rows:
        lb, rb, lm, rm = lo[k]["best"], re_[k]["best"], lo[k]["median"], re_[k]["median"]
        print(f"{label:<28}{lb:>10.3f}ms{rb:>11.3f}ms{lm:>9.3f}ms{rm:>10.3f}ms{rm - lm:>+12.3f}ms")
    print(f"{'empty round trip (ping)':<28}{'':>12}{re_['ping_ms']['best']:>11.3f}ms{'':>11}{re_['ping_ms']['median']:>10.3f}ms")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
