"""The integer graph (`.cnir`): the hand-over point from training to hardware.

A `.cnir` file is a zip archive holding `graph.json` (format, version, tensors, nodes,
metadata) and one `.npy` member per node array. It is readable with numpy alone, and
loading validates everything: a file that loads is one every backend can execute.
The normative description is docs/cnir-format.md; the integer meaning of each op is
docs/integer-semantics.md.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import intmath

FORMAT = "cnir"
#: Bump on any change a reader must know about, together with every reader and the docs.
VERSION = 1

__all__ = ["CnirError", "Graph", "Node", "TensorInfo", "load", "save", "FORMAT", "VERSION", "OPS"]


# What the zip layer can raise on a damaged archive (an odd "version needed" field gives
# NotImplementedError, an encrypted member RuntimeError, a bad name UnicodeDecodeError).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError, UnicodeDecodeError, struct.error)


class CnirError(ValueError):
    """A bad graph or file, naming where: the file, the node and the field."""

    def __init__(self, message: str, *, path: str | None = None, node: str | None = None, field: str | None = None):
        self.path, self.node, self.field, self.reason = path, node, field, message
        where = []
        if path:
            where.append(str(path))
        if node:
            where.append(f"node {node!r}")
        if field:
            where.append(f"field {field!r}")
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


@dataclass
class TensorInfo:
    """An activation tensor: per-image shape (H, W, C), 8-bit dtype, one scale, zero point 0."""

    name: str
    shape: tuple[int, int, int]
    dtype: str
    scale: float


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Graph:
    name: str
    inputs: list[str]
    outputs: list[str]
    tensors: dict[str, TensorInfo]
    nodes: list[Node]
    metadata: dict[str, Any] = field(default_factory=dict)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def validate(self) -> Graph:
        """Check the whole graph against the contract; raises :class:`CnirError`."""
        _validate_graph(self)
        return self

    def macs(self) -> dict[str, int]:
        """Multiply-accumulates per image, by node name (0 for data-movement ops)."""
        return {n.name: node_macs(self, n) for n in self.nodes}

    def param_count(self) -> int:
        """Weights plus biases, the count papers report."""
        return sum(int(n.arrays[k].size) for n in self.nodes for k in ("weight", "bias") if k in n.arrays)

    def weight_bytes(self) -> float:
        """Model size at its weight bit widths plus int32 biases."""
        total = 0.0
        for n in self.nodes:
            if "weight" in n.arrays:
                total += n.arrays["weight"].size * n.attrs["w_bits"] / 8 + n.arrays["bias"].size * 4
        return total


# --------------------------------------------------------------------------- op schemas

_CONV_ATTRS = {"relu": bool, "shift": int, "w_bits": int}


@dataclass(frozen=True)
class OpSpec:
    """What an op must carry; `arity` is the input count (None: one or more)."""

    attrs: dict[str, type]
    arrays: tuple[str, ...]
    arity: int | None
    n_outputs: int | None = 1  # None: given by the attributes (split)


OPS: dict[str, OpSpec] = {
    "conv2d": OpSpec({**_CONV_ATTRS, "stride": list, "padding": list, "groups": int}, ("weight", "bias", "mult", "w_scale"), 1),
    "deform_dw3x3": OpSpec({**_CONV_ATTRS, "stride": int, "max_dilation": int}, ("weight", "bias", "mult", "w_scale"), 2),
    "deform_dw3x3_offsets": OpSpec({**_CONV_ATTRS, "stride": int, "max_offset": int}, ("weight", "bias", "mult", "w_scale"), 2),
    "maxpool2d": OpSpec({"kernel": list, "stride": list, "padding": list}, (), 1),
    "upsample_nearest2x": OpSpec({}, (), 1),
    "concat": OpSpec({}, (), None),
    "split": OpSpec({"sections": list}, (), 1, None),
    "shuffle": OpSpec({"groups": int}, (), 1),
}

# array field -> (required numpy dtype kind, stored dtype)
_ARRAY_DTYPES = {"weight": np.int8, "bias": np.int32, "mult": np.int32, "w_scale": np.float32}


def node_macs(graph: Graph, node: Node) -> int:
    if node.op not in ("conv2d", "deform_dw3x3", "deform_dw3x3_offsets"):
        return 0
    ho, wo, oc = graph.tensors[node.outputs[0]].shape
    w = node.arrays["weight"]
    per_out = int(np.prod(w.shape[1:]))
    return ho * wo * oc * per_out


# --------------------------------------------------------------------------- validation


def _fail(node: str | None, fld: str | None, msg: str):
    raise CnirError(msg, node=node, field=fld)


def _check_int(v: Any, node: str, fld: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        _fail(node, fld, f"must be an integer, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        _fail(node, fld, f"{v} is outside [{lo}, {hi}]")
    return int(v)


def _check_pair(v: Any, node: str, fld: str, lo: int) -> tuple[int, int]:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        _fail(node, fld, f"must be a pair [h, w], got {v!r}")
    return _check_int(v[0], node, fld, lo), _check_int(v[1], node, fld, lo)


def _validate_tensor(t: TensorInfo) -> None:
    where = f"tensor {t.name}"
    if not isinstance(t.shape, (tuple, list)) or len(t.shape) != 3:
        _fail(where, "shape", f"must be [H, W, C], got {t.shape!r}")
    for v in t.shape:
        _check_int(v, where, "shape", 1, 1 << 20)
    if t.dtype not in intmath.ACT_RANGE:
        _fail(where, "dtype", f"must be one of {sorted(intmath.ACT_RANGE)}, got {t.dtype!r}")
    if isinstance(t.scale, bool) or not isinstance(t.scale, (int, float)) or not math.isfinite(t.scale) or t.scale <= 0:
        _fail(where, "scale", f"must be a positive finite number, got {t.scale!r}")


def _same_scale(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b))


def _validate_arrays(node: Node, spec: OpSpec) -> None:
    extra = set(node.arrays) - set(spec.arrays)
    if extra:
        _fail(node.name, sorted(extra)[0], f"op {node.op} takes no such array")
    for name in spec.arrays:
        if name not in node.arrays:
            _fail(node.name, name, "array is missing")
        a = node.arrays[name]
        if not isinstance(a, np.ndarray):
            _fail(node.name, name, f"must be a numpy array, got {type(a).__name__}")
        want = np.dtype(_ARRAY_DTYPES[name])
        if a.dtype != want:
            _fail(node.name, name, f"must have dtype {want.name}, got {a.dtype.name}")


def _validate_conv_like(g: Graph, node: Node, x: TensorInfo) -> tuple[int, int, int]:
    """Checks common to the three convolution ops; returns the output shape."""
    a, at = node.arrays, node.attrs
    w_bits = _check_int(at["w_bits"], node.name, "w_bits", 2, 8)
    _check_int(at["shift"], node.name, "shift", 0, intmath.SHIFT_MAX)
    w = a["weight"]
    if node.op == "conv2d":
        if w.ndim != 4:
            _fail(node.name, "weight", f"must be (OC, KH, KW, IC/groups), got shape {w.shape}")
        groups = _check_int(at["groups"], node.name, "groups", 1)
        sh, sw = _check_pair(at["stride"], node.name, "stride", 1)
        ph, pw = _check_pair(at["padding"], node.name, "padding", 0)
        oc, kh, kw, cg = w.shape
        if min(w.shape) < 1:
            _fail(node.name, "weight", f"every dimension must be at least 1, got shape {w.shape}")
        if x.shape[2] % groups or oc % groups:
            _fail(node.name, "groups", f"{groups} does not divide input channels {x.shape[2]} and output channels {oc}")
        if cg * groups != x.shape[2]:
            _fail(
                node.name,
                "weight",
                f"has {cg} input channels per group; input {node.inputs[0]!r} has {x.shape[2]} channels / {groups} groups",
            )
        ho, wo = (x.shape[0] + 2 * ph - kh) // sh + 1, (x.shape[1] + 2 * pw - kw) // sw + 1
        if ho < 1 or wo < 1:
            _fail(node.name, "weight", f"kernel {kh}x{kw} does not fit input {x.shape[0]}x{x.shape[1]} with padding [{ph}, {pw}]")
        out = (ho, wo, oc)
    else:
        s = _check_int(at["stride"], node.name, "stride", 1, 2)
        if w.shape != (x.shape[2], 3, 3):
            _fail(node.name, "weight", f"must have shape (C, 3, 3) = ({x.shape[2]}, 3, 3), got {w.shape}")
        out = ((x.shape[0] - 1) // s + 1, (x.shape[1] - 1) // s + 1, x.shape[2])
        side = g.tensors[node.inputs[1]]
        if node.op == "deform_dw3x3":
            _check_int(at["max_dilation"], node.name, "max_dilation", 1, 256)
            want_shape, want_dtype = (out[0], out[1], 1), "uint8"
        else:
            _check_int(at["max_offset"], node.name, "max_offset", 0, 127)
            want_shape, want_dtype = (out[0], out[1], 18), "int8"
        if side.scale != 1.0:
            msg = f"input {side.name!r} holds raw integers (dilations or offsets) and must have scale 1.0, got {side.scale}"
            _fail(node.name, "inputs", msg)
        if tuple(side.shape) != want_shape or side.dtype != want_dtype:
            _fail(
                node.name,
                "inputs",
                f"input {side.name!r} must be a {want_dtype} tensor of shape {list(want_shape)}, got {side.dtype} {list(side.shape)}",
            )
    oc = out[2]
    lo, hi = intmath.weight_range(w_bits)
    if w.size and (int(w.min()) < lo or int(w.max()) > hi):
        _fail(node.name, "weight", f"values [{w.min()}, {w.max()}] exceed the {w_bits}-bit range [{lo}, {hi}]")
    for name, want in (("bias", (oc,)), ("mult", (oc,)), ("w_scale", (oc,))):
        if a[name].shape != want:
            _fail(node.name, name, f"must have shape {want}, got {a[name].shape}")
    m = a["mult"]
    if m.size and (int(m.min()) < 0 or int(m.max()) > intmath.MULT_MAX):
        _fail(node.name, "mult", f"values [{m.min()}, {m.max()}] exceed [0, {intmath.MULT_MAX}]")
    ws = a["w_scale"]
    if not np.all(np.isfinite(ws)) or np.any(ws <= 0):
        _fail(node.name, "w_scale", "must be positive and finite")
    bound = intmath.acc_bound(w, x.dtype, a["bias"])
    if bound > intmath.ACC_MAX:
        _fail(node.name, "weight", f"worst-case accumulator {bound} exceeds int32 ({intmath.ACC_MAX})")
    return out


def _validate_node(g: Graph, node: Node) -> list[tuple[tuple[int, int, int], str, float | None]]:
    """Validate one node; returns (shape, dtype, scale-or-None) expected of each output."""
    spec = OPS.get(node.op)
    if spec is None:
        _fail(node.name, "op", f"unknown op {node.op!r}; known ops: {sorted(OPS)}")
    if spec.arity is not None and len(node.inputs) != spec.arity:
        _fail(node.name, "inputs", f"op {node.op} takes {spec.arity} input(s), got {len(node.inputs)}")
    if spec.arity is None and not node.inputs:
        _fail(node.name, "inputs", f"op {node.op} needs at least one input")
    if not isinstance(node.attrs, dict):
        _fail(node.name, "attrs", "must be a mapping")
    for k, typ in spec.attrs.items():
        if k not in node.attrs:
            _fail(node.name, k, "attribute is missing")
        v = node.attrs[k]
        ok = (
            isinstance(v, (list, tuple))
            if typ is list
            else (isinstance(v, bool) if typ is bool else isinstance(v, typ) and not isinstance(v, bool))
        )
        if not ok:
            _fail(node.name, k, f"must be of type {typ.__name__}, got {v!r}")
    extra = set(node.attrs) - set(spec.attrs)
    if extra:
        _fail(node.name, sorted(extra)[0], f"op {node.op} takes no such attribute")
    _validate_arrays(node, spec)

    ins = [g.tensors[i] for i in node.inputs]
    x = ins[0]
    at = node.attrs
    if node.op in ("conv2d", "deform_dw3x3", "deform_dw3x3_offsets"):
        shape = _validate_conv_like(g, node, x)
        return [(shape, intmath.out_dtype(at["relu"]), None)]
    if node.op == "maxpool2d":
        kh, kw = _check_pair(at["kernel"], node.name, "kernel", 1)
        sh, sw = _check_pair(at["stride"], node.name, "stride", 1)
        ph, pw = _check_pair(at["padding"], node.name, "padding", 0)
        if ph > kh // 2 or pw > kw // 2:
            _fail(node.name, "padding", f"[{ph}, {pw}] exceeds half the kernel [{kh}, {kw}]")
        ho, wo = (x.shape[0] + 2 * ph - kh) // sh + 1, (x.shape[1] + 2 * pw - kw) // sw + 1
        if ho < 1 or wo < 1:
            _fail(node.name, "kernel", f"window {kh}x{kw} does not fit input {x.shape[0]}x{x.shape[1]}")
        return [((ho, wo, x.shape[2]), x.dtype, x.scale)]
    if node.op == "upsample_nearest2x":
        return [((2 * x.shape[0], 2 * x.shape[1], x.shape[2]), x.dtype, x.scale)]
    if node.op == "concat":
        for t in ins[1:]:
            if tuple(t.shape[:2]) != tuple(x.shape[:2]) or t.dtype != x.dtype:
                _fail(
                    node.name,
                    "inputs",
                    f"{t.name!r} ({t.dtype} {list(t.shape)}) does not match {x.name!r} ({x.dtype} {list(x.shape)}) in H, W and dtype",
                )
            if not _same_scale(t.scale, x.scale):
                _fail(node.name, "inputs", f"concat inputs must share one scale: {t.name!r} has {t.scale}, {x.name!r} has {x.scale}")
        return [((x.shape[0], x.shape[1], sum(t.shape[2] for t in ins)), x.dtype, x.scale)]
    if node.op == "split":
        secs = [_check_int(s, node.name, "sections", 1) for s in at["sections"]]
        if sum(secs) != x.shape[2]:
            _fail(node.name, "sections", f"{secs} sum to {sum(secs)}, input has {x.shape[2]} channels")
        if len(node.outputs) != len(secs):
            _fail(node.name, "outputs", f"{len(secs)} sections need {len(secs)} outputs, got {len(node.outputs)}")
        return [((x.shape[0], x.shape[1], s), x.dtype, x.scale) for s in secs]
    if node.op == "shuffle":
        groups = _check_int(at["groups"], node.name, "groups", 1)
        if x.shape[2] % groups:
            _fail(node.name, "groups", f"{groups} does not divide {x.shape[2]} channels")
        return [(tuple(x.shape), x.dtype, x.scale)]
    raise AssertionError(node.op)  # every op in OPS is handled above


def _validate_graph(g: Graph) -> None:
    if not isinstance(g.name, str):
        _fail(None, "name", "graph name must be a string")
    for name, t in g.tensors.items():
        if t.name != name:
            _fail(f"tensor {name}", "name", f"is filed under {name!r} but named {t.name!r}")
        _validate_tensor(t)
    if not g.inputs:
        _fail(None, "inputs", "graph has no inputs")
    if not g.outputs:
        _fail(None, "outputs", "graph has no outputs")
    if len(set(g.outputs)) != len(g.outputs):
        _fail(None, "outputs", f"graph outputs {g.outputs} name a tensor twice")
    defined: set[str] = set()
    for name in g.inputs:
        if name not in g.tensors:
            _fail(None, "inputs", f"graph input {name!r} is not a declared tensor")
        if name in defined:
            _fail(None, "inputs", f"graph input {name!r} is listed twice")
        defined.add(name)
    seen_nodes: set[str] = set()
    for node in g.nodes:
        if not isinstance(node.name, str) or not node.name:
            _fail(None, "nodes", f"node name must be a non-empty string, got {node.name!r}")
        if node.name in seen_nodes:
            _fail(node.name, "name", "node name is used twice")
        seen_nodes.add(node.name)
        for i in node.inputs:
            if i not in g.tensors:
                _fail(node.name, "inputs", f"tensor {i!r} is not declared")
            if i not in defined:
                _fail(node.name, "inputs", f"tensor {i!r} is used before any node produces it (nodes must be in execution order)")
        expected = _validate_node(g, node)
        if len(node.outputs) != len(expected):
            _fail(node.name, "outputs", f"op {node.op} produces {len(expected)} output(s), got {len(node.outputs)}")
        for out, (shape, dtype, scale) in zip(node.outputs, expected):
            if out not in g.tensors:
                _fail(node.name, "outputs", f"tensor {out!r} is not declared")
            if out in defined:
                _fail(node.name, "outputs", f"tensor {out!r} is produced twice")
            t = g.tensors[out]
            if tuple(t.shape) != tuple(shape):
                _fail(node.name, "outputs", f"tensor {out!r} is declared {list(t.shape)} but the op produces {list(shape)}")
            if t.dtype != dtype:
                _fail(node.name, "outputs", f"tensor {out!r} is declared {t.dtype} but the op produces {dtype}")
            if scale is not None and not _same_scale(t.scale, scale):
                _fail(node.name, "outputs", f"tensor {out!r} has scale {t.scale} but op {node.op} keeps its input scale {scale}")
            defined.add(out)
    for name in g.outputs:
        if name not in defined:
            _fail(None, "outputs", f"graph output {name!r} is never produced")
    orphans = set(g.tensors) - defined
    if orphans:
        _fail(f"tensor {sorted(orphans)[0]}", "name", "is declared but neither a graph input nor produced by any node")
    try:
        json.dumps(g.metadata)
    except (TypeError, ValueError) as e:
        _fail(None, "metadata", f"must be JSON-serialisable: {e}")


# --------------------------------------------------------------------------- file format


def _member(index: int, fld: str) -> str:
    return f"arrays/{index:05d}.{fld}.npy"


def _to_json(g: Graph) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": g.name,
        "inputs": list(g.inputs),
        "outputs": list(g.outputs),
        "tensors": [
            {"name": t.name, "shape": [int(s) for s in t.shape], "dtype": t.dtype, "scale": float(t.scale)} for t in g.tensors.values()
        ],
        "nodes": [
            {
                "name": n.name,
                "op": n.op,
                "inputs": list(n.inputs),
                "outputs": list(n.outputs),
                "attrs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in n.attrs.items()},
                "arrays": {k: {"member": _member(i, k), "dtype": a.dtype.name, "shape": list(a.shape)} for k, a in n.arrays.items()},
            }
            for i, n in enumerate(g.nodes)
        ],
        "metadata": g.metadata,
    }


def save(graph: Graph, path: str | os.PathLike) -> Path:
    """Validate and write atomically: a crash never leaves a half-written `.cnir` behind."""
    graph.validate()
    path = Path(path)
    doc = _to_json(graph)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("graph.json", json.dumps(doc, indent=1))
            for i, n in enumerate(graph.nodes):
                for k, a in n.arrays.items():
                    buf = io.BytesIO()
                    np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
                    z.writestr(_member(i, k), buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _req(d: Any, key: str, typ: type | tuple[type, ...], node: str | None, where: str) -> Any:
    if not isinstance(d, dict):
        _fail(node, where, f"must be an object, got {type(d).__name__}")
    if key not in d:
        _fail(node, key if where == "graph" else f"{where}.{key}", "is missing")
    v = d[key]
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        name = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        _fail(node, key if where == "graph" else f"{where}.{key}", f"must be {name}, got {type(v).__name__}")
    return v


def _read_member(z: zipfile.ZipFile, spec: Any, node: str, fld: str) -> np.ndarray:
    member = _req(spec, "member", str, node, f"arrays.{fld}")
    dtype = _req(spec, "dtype", str, node, f"arrays.{fld}")
    shape = _req(spec, "shape", list, node, f"arrays.{fld}")
    try:
        raw = z.read(member)
    except KeyError:
        _fail(node, fld, f"archive member {member!r} is missing (truncated file?)")
    except _ZIP_ERRORS as e:
        _fail(node, fld, f"archive member {member!r} is corrupt: {e}")
    try:
        arr = np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        _fail(node, fld, f"member {member!r} is not a valid .npy array: {e}")
    if arr.dtype.name != dtype or list(arr.shape) != shape:
        _fail(node, fld, f"array is {arr.dtype.name} {list(arr.shape)} but graph.json says {dtype} {shape}")
    return arr


def _from_json(doc: Any, z: zipfile.ZipFile) -> Graph:
    if not isinstance(doc, dict):
        _fail(None, "graph.json", "top level must be an object")
    fmt = doc.get("format")
    if fmt != FORMAT:
        _fail(None, "format", f"is {fmt!r}, expected {FORMAT!r}: not a codenet integer graph")
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        _fail(None, "version", f"must be an integer, got {version!r}")
    if version > VERSION:
        _fail(None, "version", f"file is version {version}, this codenet reads up to version {VERSION}; upgrade codenet")
    if version < 1:
        _fail(None, "version", f"{version} is not a valid version")
    name = _req(doc, "name", str, None, "graph")
    inputs = _req(doc, "inputs", list, None, "graph")
    outputs = _req(doc, "outputs", list, None, "graph")
    metadata = _req(doc, "metadata", dict, None, "graph")
    tensors: dict[str, TensorInfo] = {}
    for k, t in enumerate(_req(doc, "tensors", list, None, "graph")):
        where = f"tensors[{k}]"
        tname = _req(t, "name", str, None, where)
        if tname in tensors:
            _fail(f"tensor {tname}", "name", "is declared twice")
        tensors[tname] = TensorInfo(
            tname,
            tuple(_req(t, "shape", list, f"tensor {tname}", "tensor")),
            _req(t, "dtype", str, f"tensor {tname}", "tensor"),
            _req(t, "scale", (int, float), f"tensor {tname}", "tensor"),
        )
    nodes = []
    for k, n in enumerate(_req(doc, "nodes", list, None, "graph")):
        nname = _req(n, "name", str, f"#{k}", "node")
        arrays_spec = _req(n, "arrays", dict, nname, "node")
        node = Node(
            nname,
            _req(n, "op", str, nname, "node"),
            [_as_name(v, nname, "inputs") for v in _req(n, "inputs", list, nname, "node")],
            [_as_name(v, nname, "outputs") for v in _req(n, "outputs", list, nname, "node")],
            dict(_req(n, "attrs", dict, nname, "node")),
            {fld: _read_member(z, spec, nname, fld) for fld, spec in arrays_spec.items()},
        )
        nodes.append(node)
    return Graph(
        name, [_as_name(v, None, "inputs") for v in inputs], [_as_name(v, None, "outputs") for v in outputs], tensors, nodes, metadata
    )


def _as_name(v: Any, node: str | None, fld: str) -> str:
    if not isinstance(v, str):
        _fail(node, fld, f"tensor names must be strings, got {v!r}")
    return v


def load(path: str | os.PathLike) -> Graph:
    """Read and validate a `.cnir` file; any problem raises :class:`CnirError` naming the file."""
    path = Path(path)
    try:
        try:
            z = zipfile.ZipFile(path)
        except FileNotFoundError:
            raise CnirError("no such file") from None
        except _ZIP_ERRORS as e:
            raise CnirError(f"not a .cnir archive (truncated or corrupt zip): {e}") from None
        with z:
            try:
                raw = z.read("graph.json")
            except KeyError:
                raise CnirError("archive has no graph.json: not a .cnir file") from None
            except _ZIP_ERRORS as e:
                raise CnirError(f"graph.json is corrupt: {e}") from None
            try:
                doc = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise CnirError(f"graph.json is not valid JSON: {e}", field="graph.json") from None
            graph = _from_json(doc, z)
        graph.validate()
    except CnirError as e:
        raise CnirError(e.reason, path=str(path), node=e.node, field=e.field) from None
    return graph
