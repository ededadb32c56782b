"""Per-layer performance of a compiled program on a device backend, with a board's DRAM.

:func:`profile` runs one frame through a :class:`~codenet.sw.runtime.Runtime` and breaks it
down by graph layer (the compiler's ``Program.layers``: each node's descriptor range):

- on the ``rtl`` backend the figures are **measured**: the engine's own counters (CYCLES,
  BUSY_*, BYTES_*) of the Verilated engine on the HDL DRAM model with the board's latency
  and bandwidth. A frame's cycles come from one whole-program run; a layer's from running
  that layer's descriptors as a program of their own, in order, on the frame's DRAM state
  (so every layer reads exactly what it reads inside the frame; the outputs of this replay
  are checked against the whole run). Each replayed layer pays its own descriptor fetch and
  pipeline fill and loses the overlap with its neighbours, so the layers add up to about, not
  exactly, the frame;
- on the ``fsim`` backend they are **estimated**: fsim's per-descriptor cycle model
  (docs/engine.md § Cycles, DRAM keeping up) raised to the DRAM bound of the descriptor's
  bytes at the board's bandwidth where that is larger; latency is not modelled. Traffic
  and unit steps are exact either way.

A layer is *memory*-bound when moving its bytes at the DRAM's rate takes longer than its
unit steps, else *compute*-bound; unit steps are max(BUSY_PW, BUSY_WIN) + BUSY_MOVE (the
stem's im2col sampler and the pointwise array step in the same cycles; a layer's other
descriptors, such as the COPYs of column strips, run after each other). MAC utilisation is the
graph's MACs over cycles x the peak of the unit that runs the layer (pointwise array
``pw_ic x pw_oc`` for 1x1 and stem convolutions, ``9 x dw_lanes`` for depthwise and
deformable ones). FPS is the engine clock over the frame's cycles, batch 1, host work
(writing the image, reading and decoding the heads) not counted.

numpy only: it drives any Device through the HAL.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from codenet.sw import engine as E
from codenet.sw.compiler import Program
from codenet.sw.driver import Device
from codenet.sw.runtime import Runtime

__all__ = ["LayerPerf", "FramePerf", "profile", "dram_assumptions", "PW_OPS", "WIN_OPS"]

PW_OPS = {"CONV1X1", "CONV3X3"}
WIN_OPS = {"DWCONV3X3", "DEFORM_SQUARE", "DEFORM_OFFSETS"}


@dataclass
class LayerPerf:
    """One graph layer: what it computes and what it cost."""

    name: str
    op: str
    engine_ops: dict[str, int]
    macs: int
    cycles: int
    busy: int  # unit steps: max(BUSY_PW, BUSY_WIN) + BUSY_MOVE
    bytes_rd: int
    bytes_wr: int
    mac_util: float | None  # None: a layer without MACs
    bound: str  # "compute" | "memory" | "-" (no descriptor: addressing only)

    @property
    def dram_bytes(self) -> int:
        return self.bytes_rd + self.bytes_wr


@dataclass
class FramePerf:
    """A frame on a backend: totals, per-layer rows, and the assumptions behind the numbers."""

    backend: str
    engine: str
    clock_mhz: int
    dram: str
    bytes_per_cycle: float
    cycles_per_frame: int
    counters: dict[str, int]
    layers: list[LayerPerf]
    measured: bool
    assumptions: list[str]

    @property
    def fps(self) -> float:
        return self.clock_mhz * 1e6 / self.cycles_per_frame if self.cycles_per_frame else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fps"] = self.fps
        d["layers"] = [asdict(lay) | {"dram_bytes": lay.dram_bytes} for lay in self.layers]
        return d


def _peak(cfg: E.EngineConfig, ops: dict[str, int]) -> int:
    if any(o in PW_OPS for o in ops):
        return cfg.pw_ic * cfg.pw_oc
    if any(o in WIN_OPS for o in ops):
        return 9 * cfg.dw_lanes
    return 0


def _bound(busy: int, nbytes: int, rd: int, wr: int, bpc: float, lanes: int) -> str:
    mem = nbytes / bpc if np.isfinite(bpc) else max(rd, wr) / lanes  # unlimited DRAM: the bus, one beat per channel
    return "memory" if mem > busy else "compute"


def dram_assumptions(dram: str, timing, cfg: E.EngineConfig, about: str = "") -> list[str]:
    """What the figures assume about memory and clock, in words."""
    bpc = timing.bytes_per_cycle
    bw = "unlimited (one beat per cycle and channel)" if not np.isfinite(bpc) else f"{bpc:.2f} B/cycle shared by reads and writes"
    lines = [
        f"engine {cfg.name!r} at {cfg.clock_mhz} MHz (its configured clock), {cfg.lanes}-byte AXI beats, batch 1",
        f"DRAM model {dram!r}: {about + '; ' if about else ''}{bw}; read latency {timing.read_latency} cycles, "
        f"write response {timing.write_latency} cycles",
        "DRAM budgets are peak transfer rates: a real controller reaches ~70-85 % of peak (refresh, turnarounds)",
        "FPS = clock / cycles per frame; host work (image write, head read-back, decode) is not counted",
    ]
    return lines


def profile(
    device: Device,
    program: Program,
    image: np.ndarray | dict[str, np.ndarray],
    *,
    backend: str,
    dram: str,
    timing,
    about: str = "",
    per_layer: bool = True,
    frames: np.ndarray | None = None,
    timeout_s: float = 3600.0,
) -> tuple[FramePerf, dict[str, np.ndarray]]:
    """Run `image` (one image, (1, H, W, C) or a mapping) on `device`; return the frame's
    performance and the outputs. `frames` (N, H, W, C) adds more whole-frame runs whose
    cycles are averaged into cycles_per_frame."""
    cfg = program.config
    bpc = timing.bytes_per_cycle
    fsim_stats = hasattr(device, "stats")  # fsim: per-descriptor estimates; others: replay per layer
    with Runtime(device, program, timeout_s=timeout_s) as rt:
        outs = rt.run(image)
        whole = dict(rt.counters[-1])
        stats = list(device.stats) if fsim_stats else None
        if frames is not None and len(frames):
            rt.run(frames)
        p = rt.program
        if fsim_stats:
            per_frame = [_fsim_frame_cycles(stats, bpc)]
            if frames is not None and len(frames):
                per_frame = [per_frame[0]] * (1 + len(frames))  # estimates do not depend on data beyond traffic
        else:
            per_frame = [c["CYCLES"] for c in rt.counters]
        layers: list[LayerPerf] = []
        if per_layer:
            layer_counters = _fsim_layers(p, stats, bpc) if fsim_stats else _replay_layers(device, rt, image, outs)
            for lay in p.layers:
                if lay.op == "end":
                    continue
                c = layer_counters.get(lay.node)
                if c is None:  # no descriptor: concat / split / shuffle as addressing
                    layers.append(LayerPerf(lay.node, lay.op, dict(lay.engine_ops), lay.macs, 0, 0, 0, 0, None, "-"))
                    continue
                busy = max(c["BUSY_PW"], c["BUSY_WIN"]) + c["BUSY_MOVE"]  # the stem's sampler and array step together
                peak = _peak(cfg, lay.engine_ops)
                util = lay.macs / (c["CYCLES"] * peak) if peak and c["CYCLES"] and lay.macs else None
                bound = _bound(busy, c["BYTES_RD"] + c["BYTES_WR"], c["BYTES_RD"], c["BYTES_WR"], bpc, cfg.lanes)
                layers.append(
                    LayerPerf(
                        lay.node, lay.op, dict(lay.engine_ops), lay.macs, c["CYCLES"], busy, c["BYTES_RD"], c["BYTES_WR"], util, bound
                    )
                )
    measured = not fsim_stats
    assumptions = dram_assumptions(dram, timing, cfg, about)
    if measured:
        assumptions.insert(
            0,
            f"cycles measured on the {backend} backend: the engine's CYCLES counter, Verilated engine on the HDL DRAM model; "
            "per-layer rows replay each layer's descriptors as a program of its own, in order, on the frame's DRAM state "
            "(each pays its own descriptor fetch and pipeline fill, so their sum differs slightly from the frame)",
        )
    else:
        assumptions.insert(
            0,
            f"cycles estimated on the {backend} backend: fsim's per-descriptor model (docs/engine.md § Cycles), raised to "
            "bytes / DRAM bandwidth per descriptor where larger; DRAM latency not modelled; traffic and unit steps exact",
        )
    frame = FramePerf(
        backend=backend,
        engine=cfg.name,
        clock_mhz=cfg.clock_mhz,
        dram=dram,
        bytes_per_cycle=float(bpc),
        cycles_per_frame=int(round(sum(per_frame) / len(per_frame))),
        counters=whole,
        layers=layers,
        measured=measured,
        assumptions=assumptions,
    )
    return frame, outs


def _desc_cycles(st, bpc: float) -> int:
    mem = (st.bytes_rd + st.bytes_wr) / bpc if np.isfinite(bpc) else 0
    return int(max(st.est_cycles, np.ceil(mem)))


def _fsim_frame_cycles(stats, bpc: float) -> int:
    return sum(_desc_cycles(st, bpc) for st in stats)


def _fsim_layers(p: Program, stats, bpc: float) -> dict[str, dict[str, int]]:
    out = {}
    for lay in p.layers:
        if not lay.n_desc:
            continue
        sel = stats[lay.first_desc : lay.first_desc + lay.n_desc]
        out[lay.node] = {
            "CYCLES": sum(_desc_cycles(st, bpc) for st in sel),
            "BUSY_PW": sum(st.busy_pw for st in sel),
            "BUSY_WIN": sum(st.busy_win for st in sel),
            "BUSY_MOVE": sum(st.busy_move for st in sel),
            "BYTES_RD": sum(st.bytes_rd for st in sel),
            "BYTES_WR": sum(st.bytes_wr for st in sel),
        }
    return out


def _replay_layers(device: Device, rt: Runtime, image, whole_outs: dict[str, np.ndarray]) -> dict[str, dict[str, int]]:
    """Each layer's descriptors as their own program, in order, on the frame's DRAM state."""
    p = rt.program
    descs = p.descriptors()
    if len(p.windows) >= E.NUM_WINDOWS:
        raise ValueError("the program uses every window; no room for the per-layer programs")
    longest = max((lay.n_desc for lay in p.layers), default=1)
    scratch = device.alloc(E.DESC_BYTES * longest)
    try:
        span = -(-scratch.size // E.WINDOW_GRANULE) * E.WINDOW_GRANULE
        windows = [*p.windows, (scratch.phys_addr, span, True, False)]
        ins = image if isinstance(image, dict) else {next(iter(p.inputs)): image}
        for name, s in p.inputs.items():  # the input buffer may have been reused during the frame
            device.write(rt.buffer, s.addr - p.base, s.pack(np.asarray(ins[name])[0]))
        out: dict[str, dict[str, int]] = {}
        for lay in p.layers:
            if not lay.n_desc or lay.op == "end":
                continue
            chunk = descs[lay.first_desc : lay.first_desc + lay.n_desc]
            device.write(scratch, 0, E.encode_program(chunk))
            out[lay.node] = device.run(scratch.phys_addr, len(chunk), windows, timeout_s=rt.timeout_s)
        for name, s in p.outputs.items():
            got = s.unpack(device.read(rt.buffer, s.addr - p.base, s.extent))
            if not np.array_equal(got, whole_outs[name][0]):
                raise RuntimeError(f"the per-layer replay computed a different {name!r} than the whole-frame run")
        return out
    finally:
        device.free(scratch)
