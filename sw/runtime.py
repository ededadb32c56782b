"""The runtime: a compiled program on a device, run image by image.

``Runtime(device, program)`` allocates one device buffer for the whole program, moves the
program to the buffer's physical address, loads the descriptors and the weights once, and
then ``run(images)`` writes each image, starts the engine, and reads the graph outputs
back. Outputs come back exactly as ``golden.run`` returns them (same names, dtypes and
shapes), so the two can be compared with ``np.array_equal``. ``run_graph`` does all of it
in one call, compiling (or loading) the program first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from . import engine as E
from .compiler import Program, compile_graph
from .driver import Device, open_device
from .ir import Graph

__all__ = ["Runtime", "GraphRun", "run_graph", "RuntimeInputError"]


class RuntimeInputError(ValueError):
    """Inputs that do not match the program (name, dtype, shape, batch)."""


class GraphRun(NamedTuple):
    """What run_graph returns: the outputs (by name, like golden.run) and one counter dict per image."""

    outputs: dict[str, np.ndarray]
    counters: list[dict[str, int]]
    program: Program


class Runtime:
    """A program loaded on a device. Weights are written once; each run writes only inputs."""

    def __init__(self, device: Device | str, program: Program, *, timeout_s: float = 60.0, **device_kwargs: Any):
        self._owns_device = isinstance(device, str)  # opened here by name: closed by close()
        if isinstance(device, str):
            if device in ("fsim", "rtl"):  # simulators are built for the program's configuration
                device_kwargs.setdefault("config", program.config)
            if device.startswith("remote://"):  # a device served by `codenet serve` (docs/deploy.md)
                device, device_kwargs = "remote", {"url": device, **device_kwargs}
            device = open_device(device, **device_kwargs)
        self.device = device
        self.timeout_s = timeout_s
        device.check_config(program.config)
        self.buffer = device.alloc(program.size)
        self.program = program.relocated(self.buffer.phys_addr)
        for r in self.program.regions:
            device.write(self.buffer, r.addr - self.program.base, r.data)
        #: counters of each image run so far (CYCLES and STALL_DMA are estimates on fsim)
        self.counters: list[dict[str, int]] = []

    def _offset(self, addr: int) -> int:
        return addr - self.program.base

    def _inputs(self, inputs: np.ndarray | Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        specs = self.program.inputs
        if not isinstance(inputs, Mapping):
            if len(specs) != 1:
                raise RuntimeInputError(f"the program has inputs {list(specs)}; pass a mapping by name")
            inputs = {next(iter(specs)): inputs}
        unknown = set(inputs) - set(specs)
        if unknown:
            raise RuntimeInputError(f"unknown input(s) {sorted(unknown)}; the program's inputs are {list(specs)}")
        out, batch = {}, None
        for name, s in specs.items():
            if name not in inputs:
                raise RuntimeInputError(f"input {name!r} is missing")
            a = np.asarray(inputs[name])
            if a.dtype != np.dtype(s.dtype) or a.ndim != 4 or a.shape[1:] != (s.h, s.w, s.c):
                raise RuntimeInputError(
                    f"input {name!r}: expected a {s.dtype} array of shape (N,{s.h},{s.w},{s.c}), got {a.dtype} {a.shape}"
                )
            if batch is not None and a.shape[0] != batch:
                raise RuntimeInputError(f"input {name!r}: batch {a.shape[0]} differs from the other inputs' {batch}")
            batch = a.shape[0]
            out[name] = a
        return out, int(batch or 0)

    def run(self, inputs: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run a batch, image by image; returns the graph outputs as golden.run does."""
        ins, n = self._inputs(inputs)
        p = self.program
        outs = {name: np.empty((n, s.h, s.w, s.c), np.dtype(s.dtype)) for name, s in p.outputs.items()}
        for k in range(n):
            for name, s in p.inputs.items():
                self.device.write(self.buffer, self._offset(s.addr), s.pack(ins[name][k]))
            counters = self.device.run(p.prog_addr, p.prog_len, p.windows, timeout_s=self.timeout_s)
            self.counters.append(counters)
            for name, s in p.outputs.items():
                outs[name][k] = s.unpack(self.device.read(self.buffer, self._offset(s.addr), s.extent))
        return outs

    def close(self) -> None:
        """Free the device buffer (and close the device if it was opened here, by name)."""
        if self.buffer is not None:
            self.device.free(self.buffer)
            self.buffer = None
        if self._owns_device:  # a remote device's session, a simulator process: given back now, not at GC
            self._owns_device = False
            self.device.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_graph(
    graph: Graph | None,
    images: np.ndarray | Mapping[str, np.ndarray],
    *,
    device: Device | str = "fsim",
    config: E.EngineConfig | str = "ultra96",
    program: Program | str | os.PathLike | None = None,
    timeout_s: float = 60.0,
    **device_kwargs: Any,
) -> GraphRun:
    """Compile `graph` for `config` (or use / load a precompiled `program`), run `images` on
    `device` (a Device or a backend name) and return (outputs, per-image counters, program)."""
    if program is None:
        if graph is None:
            raise ValueError("run_graph needs a graph or a program")
        program = compile_graph(graph, config)
    elif not isinstance(program, Program):
        program = Program.load(program)
    rt = Runtime(device, program, timeout_s=timeout_s, **device_kwargs)
    try:
        outs = rt.run(images)
    finally:
        rt.close()
    return GraphRun(outs, rt.counters, program)
