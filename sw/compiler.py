"""The compiler: an integer graph (.cnir) lowered onto one engine configuration.

``compile_graph(graph, config)`` returns a :class:`Program`: the DRAM image regions to load
(the descriptor list, the packed weights and parameters), the address windows the host
grants, where each graph input is written and each graph output read back, and a per-layer
report. It needs numpy alone, so a board's ARM core can compile or load a program.

The plan (docs/compiler.md has the full story):

1. **Placement.** Every tensor lives in a *buffer* (an NHWC block in DRAM) at a set of
   physical channels. Concat inputs are written straight into channel slices of the concat's
   buffer; split and shuffle cost nothing: they only re-map logical channels onto the
   physical channels of their input (docs/engine.md § Compiler guidance).
2. **Layout.** The physical channel order of each buffer is chosen so that what its
   consumers read is contiguous where possible: channels are sorted by the consumer sets
   they belong to (ShuffleNet's "next unit's pass-through half" and "next unit's branch"),
   then by writer. A 1x1 convolution absorbs any order of its input (its weight columns are
   permuted; holes in the range it reads get zero weights) and writes any order (its weight
   rows and parameters are permuted); depthwise, pooling and upsampling pass an order
   through. Whatever is not contiguous is moved by COPY descriptors, one per run.
3. **Tiling.** 1x1/stem convolutions whose weights exceed the weight buffer (or whose output
   exceeds max_channels) are split over output-channel slices; per-channel ops over channel
   runs of at most max_channels; window ops wider than max_width over column strips with a
   halo, computed into a scratch buffer and copied out.
4. **Memory.** Buffers get addresses by liveness (first-fit over descriptor intervals); the
   read-only part (descriptors, weights, parameters) and the activation arena each get one
   window.

A graph the engine cannot run exactly raises :class:`CompileError` naming the node and the
limit.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import engine as E
from . import fsim
from .ir import Graph, node_macs

__all__ = ["CompileError", "Program", "TensorSpec", "LayerInfo", "Region", "Window", "compile_graph", "FORMAT", "FORMAT_VERSION"]

FORMAT = "codenet-program"
FORMAT_VERSION = 1
_BIG = 1 << 62


class CompileError(ValueError):
    """The graph does not fit the engine: names the node and the limit it exceeds."""

    def __init__(self, node: str, limit: str, message: str):
        self.node, self.limit, self.reason = node, limit, message
        super().__init__(f"node {node!r}: {message} (limit: {limit})")


# =========================================================================== the program


@dataclass
class TensorSpec:
    """Where a graph input or output lives: element (y, x, c) at addr + y*rs + x*ps + c."""

    name: str
    addr: int
    h: int
    w: int
    c: int
    ps: int
    rs: int
    dtype: str

    @property
    def extent(self) -> int:
        """Bytes from addr to the last element, inclusive."""
        return (self.h - 1) * self.rs + (self.w - 1) * self.ps + self.c

    def pack(self, image: np.ndarray) -> np.ndarray:
        """The `extent` bytes to write at addr for one (H, W, C) image (padding bytes 0)."""
        a = np.ascontiguousarray(image).view(np.uint8).reshape(self.h, self.w, self.c)
        out = np.zeros(self.h * self.rs, np.uint8)
        np.lib.stride_tricks.as_strided(out, (self.h, self.w, self.c), (self.rs, self.ps, 1), writeable=True)[...] = a
        return out[: self.extent]

    def unpack(self, raw: np.ndarray) -> np.ndarray:
        """The (H, W, C) array of `dtype` from the `extent` bytes read at addr."""
        raw = np.ascontiguousarray(np.asarray(raw, np.uint8).reshape(-1)[: self.extent])
        v = np.lib.stride_tricks.as_strided(raw, (self.h, self.w, self.c), (self.rs, self.ps, 1))
        return v.copy().view(np.dtype(self.dtype))


@dataclass
class Region:
    """Bytes the host loads once, at addr."""

    name: str
    addr: int
    data: np.ndarray


@dataclass
class Window:
    """An address window to grant (WINk_*): [base, base + size), 4 KiB aligned."""

    base: int
    size: int
    read: bool
    write: bool


@dataclass
class LayerInfo:
    """One graph node in the program: what it computes and what its descriptors cost."""

    node: str
    op: str
    macs: int
    first_desc: int
    n_desc: int
    engine_ops: dict[str, int] = field(default_factory=dict)
    bytes_rd: int = 0
    bytes_wr: int = 0
    engine_macs: int = 0
    est_cycles: int = 0


@dataclass
class Program:
    """A compiled engine program; addresses are absolute (see :meth:`relocated`)."""

    config: E.EngineConfig
    graph_name: str
    base: int
    size: int
    prog_addr: int
    prog_len: int
    regions: list[Region]
    windows: list[Window]
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    layers: list[LayerInfo]
    metadata: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ queries
    def region(self, name: str) -> Region:
        for r in self.regions:
            if r.name == name:
                return r
        raise KeyError(name)

    def descriptors(self) -> list[E.Descriptor]:
        raw = self.region("program").data.tobytes()
        return [E.decode_descriptor(raw[k * E.DESC_BYTES : (k + 1) * E.DESC_BYTES], k) for k in range(self.prog_len)]

    def totals(self) -> dict[str, int]:
        """Whole-program sums of the per-layer figures (bytes, MACs, estimated cycles)."""
        keys = ("macs", "engine_macs", "bytes_rd", "bytes_wr", "est_cycles", "n_desc")
        return {k: sum(getattr(layer, k) for layer in self.layers) for k in keys}

    # ------------------------------------------------------------------ relocation
    def relocated(self, base: int) -> Program:
        """The same program at another base address (a multiple of 4 KiB): every address
        field of every descriptor, region, window and tensor moves by the same amount."""
        if base % E.WINDOW_GRANULE:
            raise ValueError(f"a program base must be a multiple of {E.WINDOW_GRANULE}, got 0x{base:x}")
        delta = base - self.base
        if delta == 0:
            return self
        if base + self.size > (1 << self.config.axi_addr_bits):
            raise ValueError(f"a {self.size}-byte program at 0x{base:x} exceeds the engine's {self.config.axi_addr_bits}-bit addresses")
        descs = []
        for d in self.descriptors():
            used = E.OP_FIELDS[d.op]
            kw: dict[str, Any] = {}
            if "in_addr" in used:
                kw["inp"] = E.View(d.inp.addr + delta, d.inp.h, d.inp.w, d.inp.c, d.inp.ps, d.inp.rs)
            if "out_addr" in used:
                kw["out"] = E.View(d.out.addr + delta, d.out.h, d.out.w, d.out.c, d.out.ps, d.out.rs)
            for f in ("side_addr", "weight_addr", "param_addr"):
                if f in used:
                    kw[f] = getattr(d, f) + delta
            descs.append(_replace(d, **kw))
        regions = []
        for r in self.regions:
            data = np.frombuffer(E.encode_program(descs), np.uint8).copy() if r.name == "program" else r.data
            regions.append(Region(r.name, r.addr + delta, data))
        return Program(
            config=self.config,
            graph_name=self.graph_name,
            base=base,
            size=self.size,
            prog_addr=self.prog_addr + delta,
            prog_len=self.prog_len,
            regions=regions,
            windows=[Window(w.base + delta, w.size, w.read, w.write) for w in self.windows],
            inputs={k: _replace(v, addr=v.addr + delta) for k, v in self.inputs.items()},
            outputs={k: _replace(v, addr=v.addr + delta) for k, v in self.outputs.items()},
            layers=list(self.layers),
            metadata=dict(self.metadata),
        )

    # ------------------------------------------------------------------ files
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "contract": list(E.VERSION),
            "config": self.config.to_dict(),
            "graph_name": self.graph_name,
            "base": self.base,
            "size": self.size,
            "prog_addr": self.prog_addr,
            "prog_len": self.prog_len,
            "regions": [
                {"name": r.name, "addr": r.addr, "nbytes": int(r.data.size), "member": f"region{k}"} for k, r in enumerate(self.regions)
            ],
            "windows": [asdict(w) for w in self.windows],
            "inputs": [asdict(v) for v in self.inputs.values()],
            "outputs": [asdict(v) for v in self.outputs.values()],
            "layers": [asdict(layer) for layer in self.layers],
            "metadata": self.metadata,
        }

    def save(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write `<path>.json` (everything but the bytes) and `<path>.npz` (the regions)."""
        stem = _stem(path)
        stem.parent.mkdir(parents=True, exist_ok=True)
        jpath, npath = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".npz")
        np.savez(npath, **{f"region{k}": r.data for k, r in enumerate(self.regions)})
        jpath.write_text(json.dumps(self.to_json(), indent=1))
        return jpath, npath

    @classmethod
    def load(cls, path: str | os.PathLike) -> Program:
        """Read a program written by :meth:`save` (`path` with or without .json/.npz)."""
        stem = _stem(path)
        doc = json.loads(stem.with_name(stem.name + ".json").read_text())
        if doc.get("format") != FORMAT:
            raise ValueError(f"{stem}.json is not a codenet program (format {doc.get('format')!r})")
        if doc.get("version", 0) > FORMAT_VERSION:
            raise ValueError(f"{stem}.json is program format {doc['version']}; this codenet reads up to {FORMAT_VERSION}")
        if tuple(doc.get("contract", ()))[:1] != E.VERSION[:1]:
            raise ValueError(f"{stem}.json targets engine contract {doc.get('contract')}, this codenet speaks {list(E.VERSION)}")
        with np.load(stem.with_name(stem.name + ".npz"), allow_pickle=False) as z:
            regions = []
            for r in doc["regions"]:
                data = z[r["member"]].astype(np.uint8)
                if data.size != r["nbytes"]:
                    raise ValueError(f"region {r['name']!r} holds {data.size} bytes, the program says {r['nbytes']}")
                regions.append(Region(r["name"], int(r["addr"]), data))
        return cls(
            config=E.EngineConfig.from_dict(doc["config"]),
            graph_name=doc["graph_name"],
            base=int(doc["base"]),
            size=int(doc["size"]),
            prog_addr=int(doc["prog_addr"]),
            prog_len=int(doc["prog_len"]),
            regions=regions,
            windows=[Window(**w) for w in doc["windows"]],
            inputs={v["name"]: TensorSpec(**v) for v in doc["inputs"]},
            outputs={v["name"]: TensorSpec(**v) for v in doc["outputs"]},
            layers=[LayerInfo(**layer) for layer in doc["layers"]],
            metadata=doc.get("metadata", {}),
        )


def _stem(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".json", ".npz") else p


def _replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


# =========================================================================== internal model


@dataclass(eq=False)
class _Buf:
    """An NHWC block of DRAM: h x w pixels of `ps` bytes (c channels used)."""

    name: str
    h: int
    w: int
    c: int
    ps: int
    kind: str = "act"  # act | input | output
    first: int = _BIG
    last: int = -1
    addr: int = -1

    @property
    def rs(self) -> int:
        return self.w * self.ps

    @property
    def size(self) -> int:
        return self.h * self.rs

    def touch(self, step: int) -> None:
        self.first = min(self.first, step)
        self.last = max(self.last, step)


@dataclass
class _BV:
    """A view of a buffer: channels [c0, c0 + c), rows y0 + sy*k, columns x0 + sx*k."""

    buf: _Buf
    c0: int
    c: int
    h: int
    w: int
    y0: int = 0
    x0: int = 0
    sy: int = 1
    sx: int = 1

    def resolve(self) -> E.View:
        b = self.buf
        return E.View(b.addr + self.y0 * b.rs + self.x0 * b.ps + self.c0, self.h, self.w, self.c, b.ps * self.sx, b.rs * self.sy)


@dataclass
class _Side:
    buf: _Buf
    c0: int
    x0: int = 0


@dataclass
class _PD:
    """A pending descriptor: addresses still symbolic (buffers, constant-blob offsets)."""

    node: str
    op: E.Op
    inp: _BV
    out: _BV
    fields: dict[str, Any]
    side: _Side | None = None
    weight: int | None = None
    param: int | None = None


@dataclass
class _Place:
    buf: _Buf
    phys: np.ndarray  # physical channel (within the buffer's pixel) of each logical channel


def _ps_rule(c: int, L: int) -> int:
    """Pixel stride: whole beats for wide tensors; a power of two below L so no chunk crosses a beat."""
    if c >= L:
        return -(-c // L) * L
    return 1 << max(0, (c - 1).bit_length())


def _runs(pairs: np.ndarray, cap: int) -> list[tuple[int, int, np.ndarray]]:
    """Split (src, dst, logical) rows, sorted by src, into runs where src and dst both step by 1.

    Returns (src_start, dst_start, logical indices) per run, each at most `cap` long.
    """
    out = []
    start = 0
    n = pairs.shape[0]
    for k in range(1, n + 1):
        brk = k == n or pairs[k, 0] != pairs[k - 1, 0] + 1 or pairs[k, 1] != pairs[k - 1, 1] + 1 or k - start >= cap
        if brk:
            out.append((int(pairs[start, 0]), int(pairs[start, 1]), pairs[start:k, 2].copy()))
            start = k
    return out


def _pair_runs(src: np.ndarray, dst: np.ndarray, cap: int) -> list[tuple[int, int, np.ndarray]]:
    idx = np.arange(src.size, dtype=np.int64)
    pairs = np.stack([src.astype(np.int64), dst.astype(np.int64), idx], axis=1)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    return _runs(pairs, cap)


_WRITERS = ("conv2d", "deform_dw3x3", "deform_dw3x3_offsets", "maxpool2d", "upsample_nearest2x")


# =========================================================================== the compiler


class _Compiler:
    def __init__(self, graph: Graph, cfg: E.EngineConfig, base: int):
        self.g = graph
        self.cfg = cfg
        self.L = cfg.lanes
        self.base = base
        self.shape = {k: tuple(int(s) for s in t.shape) for k, t in graph.tensors.items()}
        self.pds: list[_PD] = []
        self.const: list[np.ndarray] = []
        self.const_size = 0
        self.bufs: dict[str, _Buf] = {}
        self.extra_bufs: list[_Buf] = []
        self.memo: dict[tuple, _Place] = {}
        self.layers: list[LayerInfo] = []

    # ------------------------------------------------------------------ analysis
    def _classify(self, node) -> str:
        """The lowering of a node; refuses what the engine cannot run, naming the node."""
        at = node.attrs
        if node.op == "conv2d":
            oc, kh, kw, cg = node.arrays["weight"].shape
            c = self.shape[node.inputs[0]][2]
            groups = at["groups"]
            sh, sw = at["stride"]
            ph, pw = at["padding"]
            if (kh, kw) == (1, 1):
                if (ph, pw) != (0, 0):
                    raise CompileError(
                        node.name, "padding", f"a 1x1 convolution with padding {[ph, pw]} is not an engine op (padding must be 0)"
                    )
                return "pointwise"
            if (kh, kw) == (3, 3) and (ph, pw) == (1, 1) and sh == sw:
                if groups == 1:
                    if sh not in (1, 2, 4):
                        raise CompileError(node.name, "stride", f"CONV3X3 takes stride 1, 2 or 4, got {sh}")
                    return "dense3x3"
                if groups == c == oc:
                    if sh not in (1, 2):
                        raise CompileError(node.name, "stride", f"DWCONV3X3 takes stride 1 or 2, got {sh}")
                    return "depthwise"
                raise CompileError(
                    node.name, "groups", f"a 3x3 convolution with groups={groups} (C={c}, OC={oc}) is neither dense nor depthwise"
                )
            raise CompileError(
                node.name, "kernel", f"a {kh}x{kw} convolution with stride {[sh, sw]} and padding {[ph, pw]} is not an engine op"
            )
        if node.op == "maxpool2d":
            if (
                list(at["kernel"]) != [3, 3]
                or list(at["padding"]) != [1, 1]
                or at["stride"][0] != at["stride"][1]
                or at["stride"][0] not in (1, 2)
            ):
                raise CompileError(
                    node.name,
                    "kernel",
                    f"max-pool kernel {at['kernel']} stride {at['stride']} padding {at['padding']}: "
                    "the engine pools 3x3 windows, padding 1, stride 1 or 2",
                )
            return "perchannel"
        if node.op == "deform_dw3x3":
            if at["max_dilation"] > self.cfg.max_dilation:
                raise CompileError(
                    node.name, "max_dilation", f"dilation bound D = {at['max_dilation']} exceeds the engine's {self.cfg.max_dilation}"
                )
            return "perchannel"
        if node.op == "deform_dw3x3_offsets":
            r = at["max_offset"]
            if r > 0 and self.cfg.max_offset == 0:
                raise CompileError(
                    node.name, "max_offset", f"offset bound R = {r}: this engine has no bounded-offset sampler (max_offset 0)"
                )
            if r > self.cfg.max_offset:
                raise CompileError(node.name, "max_offset", f"offset bound R = {r} exceeds the engine's {self.cfg.max_offset}")
            return "perchannel"
        if node.op == "upsample_nearest2x":
            return "perchannel"
        if node.op in ("concat", "split", "shuffle"):
            return node.op
        raise CompileError(node.name, "op", f"op {node.op!r} has no engine lowering")

    def _analyse(self) -> None:
        g = self.g
        self.kind = {n.name: self._classify(n) for n in g.nodes}
        self.producer = {t: n for n in g.nodes for t in n.outputs}
        self.node_pos = {n.name: k for k, n in enumerate(g.nodes)}
        outputs = set(g.outputs)
        # homing: which tensors are written straight into a concat's buffer
        self.home: dict[str, tuple[str, int]] = {}
        for node in reversed(g.nodes):
            if node.op != "concat":
                continue
            off = 0
            seen = set()
            for t in node.inputs:
                p = self.producer.get(t)
                homeable = p is not None and (p.op in _WRITERS or p.op == "concat") and t not in outputs
                if homeable and t not in seen and t not in self.home:
                    self.home[t] = (node.outputs[0], off)
                seen.add(t)
                off += self.shape[t][2]
        self._rootmemo: dict[str, tuple[str, np.ndarray]] = {}

    def root(self, t: str) -> tuple[str, np.ndarray]:
        """(root tensor, root-logical channel of each logical channel of t)."""
        if t in self._rootmemo:
            return self._rootmemo[t]
        c = self.shape[t][2]
        if t in self.home:
            x, off = self.home[t]
            r, rl = self.root(x)
            res = (r, rl[off : off + c])
        else:
            p = self.producer.get(t)
            if p is not None and p.op == "split":
                r, rl = self.root(p.inputs[0])
                k = p.outputs.index(t)
                s0 = sum(p.attrs["sections"][:k])
                res = (r, rl[s0 : s0 + c])
            elif p is not None and p.op == "shuffle":
                r, rl = self.root(p.inputs[0])
                grp = p.attrs["groups"]
                perm = np.arange(c).reshape(grp, c // grp).T.reshape(-1)  # out[k*g + i] = in[i*(C/g) + k]
                res = (r, rl[perm])
            else:
                res = (t, np.arange(c, dtype=np.int64))
        self._rootmemo[t] = res
        return res

    # ------------------------------------------------------------------ layout
    def _plan(self) -> None:
        """Choose every root buffer's physical channel order (see the module docstring)."""
        g = self.g
        roots = []
        for t in g.inputs:
            roots.append(t)
        for n in g.nodes:
            for t in n.outputs:
                if self.root(t)[0] == t and t not in roots:
                    roots.append(t)
        self.roots = roots
        # writers of each root: (root-logical channels written, "conv" | "perchannel" | "copy", source tensor)
        self.writers: dict[str, list[tuple[np.ndarray, str, str | None]]] = {r: [] for r in roots}
        for n in g.nodes:
            if n.op in _WRITERS:
                t = n.outputs[0]
                r, rl = self.root(t)
                kind = "conv" if self.kind[n.name] in ("pointwise", "dense3x3") else "perchannel"
                self.writers[r].append((rl, kind, n.inputs[0] if kind == "perchannel" else None))
            elif n.op == "concat":
                r, rl = self.root(n.outputs[0])
                off = 0
                for t in n.inputs:
                    c = self.shape[t][2]
                    if self.home.get(t) != (n.outputs[0], off):
                        self.writers[r].append((rl[off : off + c], "copy", t))
                    off += c
        # consumer sets: what each real use reads, refined by the layout of copy destinations
        sets: dict[str, list[frozenset]] = {r: [] for r in roots}
        refined: dict[str, list[frozenset]] = {r: [] for r in roots}
        copy_uses = []
        for n in g.nodes:
            if n.op in ("split", "shuffle"):
                continue
            off = 0
            for t in n.inputs:
                c = self.shape[t][2]
                if n.op == "concat":
                    if self.home.get(t) != (n.outputs[0], off):
                        copy_uses.append((n, t, off))
                    off += c
                    continue
                r, rl = self.root(t)
                sets[r].append(frozenset(rl.tolist()))
        for t in g.outputs:
            r, rl = self.root(t)
            sets[r].append(frozenset(rl.tolist()))
        for n, t, off in reversed(copy_uses):
            r, rl = self.root(t)
            sets[r].append(frozenset(rl.tolist()))
            dr, drl = self.root(n.outputs[0])
            dsets = self._sorted_sets(sets[dr] + refined[dr])
            dest = drl[off : off + self.shape[t][2]]
            blocks: dict[tuple, list[int]] = {}
            for k, d in enumerate(dest.tolist()):
                blocks.setdefault(tuple(d in s for s in dsets), []).append(int(rl[k]))
            if len(blocks) > 1:
                refined[r].extend(frozenset(b) for b in blocks.values())
        self.sets = sets
        self.refined = refined
        # orders, roots in the order of their last writer (sources are laid out first)
        self.perm: dict[str, np.ndarray] = {}
        last_writer = {}
        for r in roots:
            p = self.producer.get(r)
            last_writer[r] = -1 if p is None else self.node_pos[p.name]
        for n in g.nodes:
            if n.op == "concat":
                r = self.root(n.outputs[0])[0]
                last_writer[r] = max(last_writer[r], self.node_pos[n.name])
            elif n.op in _WRITERS:
                r = self.root(n.outputs[0])[0]
                last_writer[r] = max(last_writer[r], self.node_pos[n.name])
        for r in sorted(roots, key=lambda r: last_writer[r]):
            self.perm[r] = self._order(r)

    @staticmethod
    def _sorted_sets(sets: list[frozenset]) -> list[frozenset]:
        uniq = list(dict.fromkeys(sets))
        return sorted(uniq, key=lambda s: (-len(s), min(s) if s else 0))

    def _order(self, r: str) -> np.ndarray:
        """perm[root-logical channel] = physical channel.

        Sort key per channel: membership of the consumer sets (largest first, so nested sets
        end up contiguous), then, for channels moved in by COPY only, membership of the sets
        refined by where later copies send them (measured: refining conv-written channels
        too splits pw2 of long ShuffleNet stages into many descriptors, each re-reading its
        input, which costs more than the extra COPY runs it saves), then the writer, then the
        writer's own order (a copy or per-channel op follows its source's physical order, so
        both sides of it see runs).
        """
        c = self.shape[r][2]
        if r in self.g.inputs or r in self.g.outputs:
            return np.arange(c, dtype=np.int64)
        sets = self._sorted_sets(self.sets[r])
        refined = self._sorted_sets(self.refined[r])
        wpos = np.full(c, len(self.writers[r]), np.int64)
        wkey = np.arange(c, dtype=np.int64)
        copied = np.zeros(c, bool)
        for k, (rl, kind, src) in enumerate(sorted(self.writers[r], key=lambda w: int(w[0].min()))):
            wpos[rl] = k
            copied[rl] = kind == "copy"
            if kind in ("perchannel", "copy") and src is not None:
                sr = self.root(src)[0]
                if sr != r and sr in self.perm:
                    wkey[rl] = self._phys(src)
                    continue
            wkey[rl] = np.arange(rl.size)
        keys = [
            (tuple(ch not in s for s in sets), tuple(copied[ch] and ch not in s for s in refined), int(wpos[ch]), int(wkey[ch]), ch)
            for ch in range(c)
        ]
        order = [k[-1] for k in sorted(keys)]
        perm = np.empty(c, np.int64)
        perm[order] = np.arange(c)
        return perm

    def _phys(self, t: str) -> np.ndarray:
        r, rl = self.root(t)
        return self.perm[r][rl]

    def buf(self, r: str) -> _Buf:
        if r not in self.bufs:
            h, w, c = self.shape[r]
            kind = "input" if r in self.g.inputs else ("output" if r in self.g.outputs else "act")
            self.bufs[r] = _Buf(r, h, w, c, _ps_rule(c, self.L), kind)
        return self.bufs[r]

    def place(self, t: str) -> _Place:
        r, _ = self.root(t)
        return _Place(self.buf(r), self._phys(t))

    # ------------------------------------------------------------------ emission
    def _blob(self, data: np.ndarray) -> int:
        off = -(-self.const_size // self.L) * self.L
        if off > self.const_size:
            self.const.append(np.zeros(off - self.const_size, np.uint8))
        self.const.append(np.asarray(data, np.uint8).reshape(-1))
        self.const_size = off + data.size
        return off

    def _emit(self, pd: _PD) -> None:
        self.pds.append(pd)

    def _temp(self, name: str, h: int, w: int, c: int, ps: int | None = None) -> _Buf:
        b = _Buf(name, h, w, c, ps if ps is not None else _ps_rule(c, self.L))
        self.extra_bufs.append(b)
        return b

    def _copy_runs(self, node: str, src: _Buf, sphys: np.ndarray, dst: _Buf, dphys: np.ndarray, h: int, w: int) -> None:
        for a, b, idx in _pair_runs(sphys, dphys, self.cfg.max_channels):
            n = idx.size
            self._emit(_PD(node, E.Op.COPY, _BV(src, a, n, h, w), _BV(dst, b, n, h, w), {}))

    def _materialise(self, node: str, t: str, ps1: bool = False) -> _Place:
        """t copied into a fresh buffer in logical channel order (pixel stride 1 if asked)."""
        key = (t, ps1)
        if key not in self.memo:
            p = self.place(t)
            h, w, c = self.shape[t]
            b = self._temp(f"{t}.dense", h, w, c, 1 if ps1 else None)
            self._copy_runs(node, p.buf, p.phys, b, np.arange(c), h, w)
            self.memo[key] = _Place(b, np.arange(c, dtype=np.int64))
        return self.memo[key]

    # --- pointwise ---------------------------------------------------------
    def _lower_pointwise(self, node) -> None:
        x, y = node.inputs[0], node.outputs[0]
        w = node.arrays["weight"][:, 0, 0, :].astype(np.int64)
        groups = node.attrs["groups"]
        cg, ocg = self.shape[x][2] // groups, self.shape[y][2] // groups
        pout = self.place(y)
        for gi in range(groups):
            oc_sl = slice(gi * ocg, (gi + 1) * ocg)
            ich = np.arange(gi * cg, (gi + 1) * cg, dtype=np.int64)
            self._emit_pw(node, E.Op.CONV1X1, ich, pout.buf, pout.phys[oc_sl], w[oc_sl], oc_sl)

    def _lower_dense3x3(self, node) -> None:
        pout = self.place(node.outputs[0])
        w = node.arrays["weight"].astype(np.int64)
        ich = np.arange(self.shape[node.inputs[0]][2], dtype=np.int64)
        self._emit_pw(node, E.Op.CONV3X3, ich, pout.buf, pout.phys, w, slice(None))

    def _conv_fields(self, node, x: str) -> dict[str, Any]:
        at = node.attrs
        return {"relu": bool(at["relu"]), "w8": at["w_bits"] > 4, "in_signed": self.g.tensors[x].dtype == "int8", "shift": int(at["shift"])}

    def _emit_pw(self, node, op: E.Op, ich: np.ndarray, obuf: _Buf, ophys: np.ndarray, w: np.ndarray, oc_sl: slice) -> None:
        """CONV1X1 / CONV3X3 reading logical input channels `ich` of the node's input and
        writing its output channels at `ophys` of obuf (one descriptor per output run/slice).

        The input is read as one contiguous physical range; channels of the range that are
        not inputs (holes) get zero weights. A range wider than the engine takes is first
        compacted by COPY.
        """
        cfg, L = self.cfg, self.L
        x = node.inputs[0]
        cap = L if op == E.Op.CONV3X3 else cfg.max_channels
        limit = "lanes" if op == E.Op.CONV3X3 else "max_channels"
        if ich.size > cap:
            what = (
                f"CONV3X3 takes at most L = {L} input channels"
                if op == E.Op.CONV3X3
                else f"the engine's max_channels is {cfg.max_channels}"
            )
            raise CompileError(node.name, limit, f"{ich.size} input channels: {what}")
        pin = self.place(x)
        iphys = pin.phys[ich]
        if int(iphys.max()) - int(iphys.min()) + 1 > cap:
            pin = self._materialise(node.name, x)
            iphys = pin.phys[ich]
        lo = int(iphys.min())
        span = int(iphys.max()) - lo + 1
        fields = self._conv_fields(node, x)
        w_bits = node.attrs["w_bits"]
        if op == E.Op.CONV1X1:
            wp = np.zeros((w.shape[0], span), np.int64)
            wp[:, iphys - lo] = w
            k_tiles = -(-span // L)
        else:
            wp = np.zeros((w.shape[0], 3, 3, span), np.int64)
            wp[..., iphys - lo] = w
            k_tiles = -(-9 * E.im2col_slot(span) // L)
        per_tile = k_tiles * (2 if fields["w8"] else 1)
        max_oc = min(cfg.max_channels, (cfg.wbuf_depth // per_tile) * L)
        if max_oc < 1:
            raise CompileError(node.name, "wbuf_depth", f"one output tile needs {per_tile} weight words, the buffer holds {cfg.wbuf_depth}")
        bias = node.arrays["bias"].astype(np.int64)[oc_sl]
        mult = node.arrays["mult"].astype(np.int64)[oc_sl]
        y = node.outputs[0]
        ho, wo = self.shape[y][:2]
        h_in, w_in = self.shape[x][:2]
        s = node.attrs["stride"]
        for _, b, idx in _pair_runs(ophys, ophys, max_oc):
            n = idx.size
            wimg = self._blob(E.pack_weights(op, wp[idx], cfg, w_bits))
            pimg = self._blob(E.pack_params(bias[idx], mult[idx], cfg))
            if op == E.Op.CONV1X1:
                inp = _BV(pin.buf, lo, span, ho, wo, sy=s[0], sx=s[1])
                self._emit(_PD(node.name, op, inp, _BV(obuf, b, n, ho, wo), fields, weight=wimg, param=pimg))
            else:
                inp = _BV(pin.buf, lo, span, h_in, w_in)
                self._window(node.name, op, inp, _BV(obuf, b, n, ho, wo), s[0], 1, {**fields, "stride": s[0]}, None, wimg, pimg)

    # --- per-channel ops --------------------------------------------------------
    def _lower_perchannel(self, node) -> None:
        cfg = self.cfg
        x, y = node.inputs[0], node.outputs[0]
        at = node.attrs
        side = None
        weights = None
        fields: dict[str, Any] = {}
        if node.op == "conv2d":
            op, weights, stride, reach = E.Op.DWCONV3X3, node.arrays["weight"][..., 0], at["stride"][0], 1
        elif node.op == "deform_dw3x3":
            op, weights, stride, reach = E.Op.DEFORM_SQUARE, node.arrays["weight"], at["stride"], at["max_dilation"]
            fields["max_dilation"] = at["max_dilation"]
            v = self.place(node.inputs[1])
            if v.buf.ps != 1:
                v = self._materialise(node.name, node.inputs[1], ps1=True)
            side = _Side(v.buf, int(v.phys[0]))
        elif node.op == "deform_dw3x3_offsets":
            r = at["max_offset"]
            weights, stride = node.arrays["weight"], at["stride"]
            if r == 0:  # every offset clamps to 0: a plain depthwise convolution
                op, reach = E.Op.DWCONV3X3, 1
            else:
                op, reach = E.Op.DEFORM_OFFSETS, r + 1
                fields["max_offset"] = r
                off = self.place(node.inputs[1])
                if not np.array_equal(off.phys, off.phys[0] + np.arange(18)):
                    off = self._materialise(node.name, node.inputs[1])
                side = _Side(off.buf, int(off.phys[0]))
        elif node.op == "maxpool2d":
            op, stride, reach = E.Op.MAXPOOL3X3, at["stride"][0], 1
            fields["in_signed"] = self.g.tensors[x].dtype == "int8"
        else:
            op, stride, reach = E.Op.UPSAMPLE2X, 1, 0
        if weights is not None:
            fields.update(self._conv_fields(node, x))
            bias = node.arrays["bias"].astype(np.int64)
            mult = node.arrays["mult"].astype(np.int64)
        if op in E.WINDOW_OPS:
            fields["stride"] = stride
        pin, pout = self.place(x), self.place(y)
        h, w = self.shape[x][:2]
        ho, wo = self.shape[y][:2]
        for a, b, idx in _pair_runs(pin.phys, pout.phys, cfg.max_channels):
            n = idx.size
            wimg = pimg = None
            if weights is not None:
                wimg = self._blob(E.pack_weights(op, weights[idx].astype(np.int64), cfg, node.attrs["w_bits"]))
                pimg = self._blob(E.pack_params(bias[idx], mult[idx], cfg))
            inp, out = _BV(pin.buf, a, n, h, w), _BV(pout.buf, b, n, ho, wo)
            if op in E.WINDOW_OPS:
                self._window(node.name, op, inp, out, stride, reach, fields, side, wimg, pimg)
            else:
                self._emit(_PD(node.name, op, inp, out, fields))

    def _window(self, node: str, op: E.Op, inp: _BV, out: _BV, s: int, reach: int, fields, side, wimg, pimg) -> None:
        """A window op, in column strips with a halo when the input is wider than max_width."""
        mw = self.cfg.max_width
        if inp.w <= mw:
            self._emit(_PD(node, op, inp, out, fields, side, wimg, pimg))
            return
        n_out = (mw - 2 * reach - s) // s + 1
        if n_out < 1:
            raise CompileError(
                node, "max_width", f"input width {inp.w} > max_width {mw}, and a strip cannot hold the {2 * reach}-column halo"
            )
        W, Wo = inp.w, out.w
        oa = 0
        while oa < Wo:
            ob = min(Wo, oa + n_out)
            xs = max(0, oa * s - reach)
            xs -= xs % s
            xe = min(W, (ob - 1) * s + reach + 1)
            assert xe - xs <= mw, (xs, xe, mw)
            ws = xe - xs
            wos = (ws - 1) // s + 1
            ox0 = xs // s
            tmp = self._temp(f"{node}.strip", out.h, wos, out.c)
            sd = None if side is None else _Side(side.buf, side.c0, side.x0 + ox0)
            strip_in = _BV(inp.buf, inp.c0, inp.c, inp.h, ws, inp.y0, inp.x0 + xs * inp.sx, inp.sy, inp.sx)
            self._emit(_PD(node, op, strip_in, _BV(tmp, 0, out.c, out.h, wos), fields, sd, wimg, pimg))
            self._emit(
                _PD(
                    node,
                    E.Op.COPY,
                    _BV(tmp, 0, out.c, out.h, ob - oa, x0=oa - ox0),
                    _BV(out.buf, out.c0, out.c, out.h, ob - oa, out.y0, out.x0 + oa),
                    {},
                )
            )
            oa = ob

    # --- concat -----------------------------------------------------------------
    def _lower_concat(self, node) -> None:
        out = node.outputs[0]
        pout = self.place(out)
        h, w = self.shape[out][:2]
        off = 0
        for t in node.inputs:
            c = self.shape[t][2]
            if self.home.get(t) != (out, off):
                src = self.place(t)
                self._copy_runs(node.name, src.buf, src.phys, pout.buf, pout.phys[off : off + c], h, w)
            off += c

    # ------------------------------------------------------------------ driver
    def run(self) -> Program:
        g = self.g
        self._analyse()
        self._plan()
        for t in g.inputs:
            self.buf(t)
        for node in g.nodes:
            first = len(self.pds)
            kind = self.kind[node.name]
            if kind == "pointwise":
                self._lower_pointwise(node)
            elif kind == "dense3x3":
                self._lower_dense3x3(node)
            elif kind in ("depthwise", "perchannel"):
                self._lower_perchannel(node)
            elif kind == "concat":
                self._lower_concat(node)
            self.layers.append(LayerInfo(node.name, node.op, node_macs(g, node), first, len(self.pds) - first))
        # graph outputs: dense, in logical order, in their own buffers
        out_places = {}
        first = len(self.pds)
        for t in g.outputs:
            p = self.place(t)
            if p.buf.name == t and np.array_equal(p.phys, np.arange(self.shape[t][2])):
                out_places[t] = p
            else:
                h, w, c = self.shape[t]
                b = _Buf(f"{t}.out", h, w, c, _ps_rule(c, self.L), "output")
                self.extra_bufs.append(b)
                self._copy_runs("(outputs)", p.buf, p.phys, b, np.arange(c), h, w)
                out_places[t] = _Place(b, np.arange(c, dtype=np.int64))
        if len(self.pds) > first:
            self.layers.append(LayerInfo("(outputs)", "copy", 0, first, len(self.pds) - first))
        for p in out_places.values():
            p.buf.kind = "output"
        return self._assemble(out_places)

    # ------------------------------------------------------------------ memory + encoding
    def _assemble(self, out_places: dict[str, _Place]) -> Program:
        cfg = self.cfg
        g = self.g
        for k, pd in enumerate(self.pds):
            pd.inp.buf.touch(k)
            pd.out.buf.touch(k)
            if pd.side is not None:
                pd.side.buf.touch(k)
        allbufs = list(self.bufs.values()) + self.extra_bufs
        for b in allbufs:
            if b.kind == "input" or b.name in g.inputs:
                b.first = -1
                b.last = max(b.last, -1)
            if b.kind == "output":
                b.last = _BIG
                b.first = min(b.first, _BIG - 1)
        live = [b for b in allbufs if b.last >= b.first]
        n_desc = len(self.pds) + 1
        prog_addr = self.base
        const_addr = prog_addr + -(-n_desc * E.DESC_BYTES // 64) * 64
        ro_end = -(-(const_addr + self.const_size) // E.WINDOW_GRANULE) * E.WINDOW_GRANULE
        arena = ro_end
        used = _allocate(live, arena)
        arena_size = max(E.WINDOW_GRANULE, -(-(used - arena) // E.WINDOW_GRANULE) * E.WINDOW_GRANULE)
        total = arena + arena_size - self.base
        if arena + arena_size > (1 << cfg.axi_addr_bits):
            big = max(live, key=lambda b: b.size)
            raise CompileError(
                big.name,
                "axi_addr_bits",
                f"the program needs {total} bytes of DRAM from 0x{self.base:x}, beyond {cfg.axi_addr_bits}-bit addresses",
            )
        # resolve and check every descriptor
        descs = []
        for k, pd in enumerate(self.pds):
            kw = dict(pd.fields)
            if pd.side is not None:
                sb = pd.side.buf
                kw.update(side_addr=sb.addr + pd.side.c0 + pd.side.x0 * sb.ps, side_ps=sb.ps, side_rs=sb.rs)
            if pd.weight is not None:
                kw.update(weight_addr=const_addr + pd.weight, param_addr=const_addr + pd.param)
            d = E.Descriptor(pd.op, pd.inp.resolve(), pd.out.resolve(), **kw)
            code, fld, msg = E.check_descriptor(d, cfg, k)
            if code != E.ErrorCode.NONE:
                raise CompileError(pd.node, fld or code.name, f"descriptor {k} ({pd.op.name}) is refused: {msg} ({code.name})")
            descs.append(d)
        descs.append(E.Descriptor(E.Op.END))
        prog = np.frombuffer(E.encode_program(descs), np.uint8).copy()
        blob = np.concatenate(self.const) if self.const else np.zeros(0, np.uint8)
        # per-layer costs, as fsim counts them
        stats = [fsim.descriptor_stats(d, cfg, k) for k, d in enumerate(descs)]
        for layer in self.layers:
            ops = Counter(descs[k].op.name for k in range(layer.first_desc, layer.first_desc + layer.n_desc))
            layer.engine_ops = dict(ops)
            for k in range(layer.first_desc, layer.first_desc + layer.n_desc):
                s = stats[k]
                layer.bytes_rd += s.bytes_rd
                layer.bytes_wr += s.bytes_wr
                layer.engine_macs += s.macs
                layer.est_cycles += s.est_cycles
        end = stats[-1]
        self.layers.append(LayerInfo("(end)", "end", 0, len(descs) - 1, 1, {"END": 1}, end.bytes_rd, 0, 0, fsim.PIPELINE_CYCLES))

        def spec(t: str, p: _Place) -> TensorSpec:
            h, w, c = self.shape[t]
            return TensorSpec(t, p.buf.addr + int(p.phys[0]), h, w, c, p.buf.ps, p.buf.rs, g.tensors[t].dtype)

        inputs = {t: spec(t, _Place(self.bufs[t], np.arange(self.shape[t][2]))) for t in g.inputs}
        outputs = {t: spec(t, out_places[t]) for t in g.outputs}
        meta = {
            "buffers": len(live),
            "arena_bytes": arena_size,
            "weight_bytes": int(self.const_size),
            "graph_metadata": g.metadata,
        }
        return Program(
            config=cfg,
            graph_name=g.name,
            base=self.base,
            size=total,
            prog_addr=prog_addr,
            prog_len=len(descs),
            regions=[Region("program", prog_addr, prog), Region("weights", const_addr, blob)],
            windows=[Window(self.base, ro_end - self.base, True, False), Window(arena, arena_size, True, True)],
            inputs=inputs,
            outputs=outputs,
            layers=self.layers,
            metadata=meta,
        )


def _allocate(bufs: list[_Buf], arena: int, align: int = 64) -> int:
    """First-fit addresses for buffers whose descriptor intervals [first, last] overlap in
    time; returns the end of the highest buffer."""
    placed: list[_Buf] = []
    top = arena
    for b in sorted(bufs, key=lambda b: (b.first, -b.size)):
        active = sorted((p for p in placed if not (p.last < b.first or b.last < p.first)), key=lambda p: p.addr)
        addr = arena
        for p in active:
            if addr + b.size <= p.addr:
                break
            addr = max(addr, -(-(p.addr + p.size) // align) * align)
        b.addr = addr
        placed.append(b)
        top = max(top, addr + b.size)
    return top


def compile_graph(graph: Graph, config: E.EngineConfig | str, *, base: int = 0) -> Program:
    """Lower a validated graph onto an engine configuration (or preset name).

    The program's addresses start at `base` (a multiple of 4 KiB); :meth:`Program.relocated`
    moves a compiled program to wherever the host's buffer lands.
    """
    cfg = E.preset(config) if isinstance(config, str) else config
    cfg.validate()
    if base % E.WINDOW_GRANULE:
        raise ValueError(f"base must be a multiple of {E.WINDOW_GRANULE}, got 0x{base:x}")
    graph.validate()
    return _Compiler(graph, cfg, base).run()
