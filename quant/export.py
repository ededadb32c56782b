"""Export a quantized CoDeNet to the integer graph (`.cnir`) and to QONNX.

`export_cnir` writes exactly the topology `codenet.sw.zoo.build` describes for the same
ArchSpec (node names, ops, order, attributes and shapes), filled with the Brevitas model's
integers: weights ``(OC, KH, KW, IC/g)`` int8, int32 biases at ``s_in * s_w``, per-channel
multipliers and one shift from `intmath.choose_requant(s_in * s_w / s_out)`. With the
quantizers of `codenet.quant.qlayers` (power-of-two activations, dyadic weight scales, round
half up) every ratio is representable, so the golden executor reproduces the model bit for bit
(`compare_golden` measures it).

`export_qonnx` writes the QONNX interchange format through Brevitas for the ``dw`` decoder
only: QONNX has no operator for a per-pixel integer gather (``square``/``bounded``), and the
bilinear ``full`` variant is not deployable at all. Rather than inventing a custom op that no
QONNX tool executes, the exporter refuses those models and names the layer. The QONNX graph is
Brevitas' usual one (float Conv on dequantized ``Quant`` outputs, so a float32 runtime may
round differently in rare cases); its activation ``Quant`` nodes are rewritten to the
contract's rounding (see :func:`_fix_rounding`).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from brevitas.quant_tensor import QuantTensor
from torch import Tensor, nn

from codenet.sw import golden, intmath, ir
from codenet.sw.ir import Graph, Node, TensorInfo
from codenet.sw.zoo import ArchSpec

from .deform import DEFORMABLE
from .models import CoDeNet, DeformBlock, conv_blocks
from .qlayers import is_calibrated, set_integer_path

__all__ = ["ExportError", "Agreement", "export_cnir", "export_qonnx", "compare_golden", "images_to_nhwc"]

HEADS = ("hm", "wh", "reg")
DECODE = {"kind": "centernet", "max_detections": 100, "peak_kernel": 3}


class ExportError(ValueError):
    """The model cannot be written as an integer graph (or QONNX); the message names the layer."""


# --------------------------------------------------------------------------- checks


def _check_exportable(qmodel: nn.Module, what: str) -> CoDeNet:
    if not isinstance(qmodel, CoDeNet):
        raise ExportError(f"{what} exports a codenet.quant.models.CoDeNet, got {type(qmodel).__name__}")
    if qmodel.mode != "quant":
        raise ExportError(f"{what} needs the quantized model (codenet.quant.models.quantize), got a {qmodel.mode!r} model")
    if qmodel.deform == "full":
        layer = next(n for n, b in conv_blocks(qmodel).items() if isinstance(b, DeformBlock))
        raise ExportError(
            f"layer {layer!r} is a bilinear ('full') deformable convolution: fractional offsets have no integer "
            "semantics and no graph op (integer-semantics.md § 7.3), so it is not deployable; "
            "train a 'square', 'bounded' or 'dw' model to export"
        )
    if not is_calibrated(qmodel):
        raise ExportError(f"{what}: activation scales are not set; run codenet.quant.qlayers.calibrate(model, batches) first")
    return qmodel


# --------------------------------------------------------------------------- recording a forward pass


@dataclass
class _Rec:
    inputs: tuple
    output: QuantTensor


def _record(model: CoDeNet, images: Tensor) -> dict[str, _Rec]:
    """Run the model once and keep, per conv-like block, the QuantTensors it received and produced."""
    recs: dict[str, _Rec] = {}
    handles = []
    for name, block in conv_blocks(model).items():

        def hook(mod, inputs, output, name=name):
            recs[name] = _Rec(tuple(inputs), output)

        handles.append(block.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.forward_raw(images)
    finally:
        for h in handles:
            h.remove()
    return recs


def _scalar(t: Tensor, where: str) -> float:
    t = torch.as_tensor(t).detach().reshape(-1)
    if t.numel() != 1:
        raise ExportError(f"{where}: expected one scale per tensor, got {t.numel()}")
    return float(t.double())


# --------------------------------------------------------------------------- graph writer


class _Writer:
    """Appends nodes in the zoo's order and naming (sw/builder.py), with the model's integers."""

    def __init__(self, model: CoDeNet, recs: dict[str, _Rec]):
        self.model, self.recs = model, recs
        self.blocks = conv_blocks(model)
        self.tensors: dict[str, TensorInfo] = {}
        self.nodes: list[Node] = []
        self.inexact: list[str] = []

    def _tensor(self, name: str, shape, dtype: str, scale: float) -> str:
        self.tensors[name] = TensorInfo(name, tuple(int(s) for s in shape), dtype, float(scale))
        return name

    def input(self, name: str, size: int, scale: float) -> str:
        return self._tensor(name, (size, size, 3), "uint8", scale)

    def _weights(self, name: str, x: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, QuantTensor, int]:
        block, rec = self.blocks[name], self.recs.get(name)
        if rec is None:
            raise ExportError(f"layer {name!r} did not run in the model's forward pass")
        qin = rec.inputs[0]
        if not isinstance(qin, QuantTensor):
            raise ExportError(f"layer {name!r}: its input is not quantized (is quantization disabled?)")
        s_in = _scalar(qin.scale, name)
        if not np.isclose(s_in, self.tensors[x].scale, rtol=1e-9, atol=0):
            raise ExportError(f"layer {name!r}: input scale {s_in} differs from tensor {x!r}'s {self.tensors[x].scale}")
        conv = block.conv
        qw = conv.quant_weight()
        w_int = qw.int().detach().cpu().numpy().astype(np.int64)
        w_scale = qw.scale.detach().double().reshape(-1).cpu().numpy()
        if w_scale.size == 1:
            w_scale = np.full(w_int.shape[0], float(w_scale[0]))
        qb = conv.bias_quant(conv.bias, qin, qw)
        if not isinstance(qb, QuantTensor):
            raise ExportError(f"layer {name!r}: the bias is not quantized")
        bias = qb.int().detach().cpu().numpy().astype(np.int64).reshape(-1)
        if bias.min(initial=0) < intmath.ACC_MIN or bias.max(initial=0) > intmath.ACC_MAX:
            raise ExportError(f"layer {name!r}: bias exceeds int32")
        return w_int, bias, w_scale, s_in, rec.output, int(_scalar(qw.bit_width, name))

    def _conv_like(self, name: str, op: str, inputs: list[str], w: np.ndarray, attrs: dict) -> str:
        block = self.blocks[name]
        w_int, bias, w_scale, s_in, out, w_bits = self._weights(name, inputs[0])
        if not isinstance(out, QuantTensor):
            raise ExportError(f"layer {name!r}: its output is not quantized")
        s_out = _scalar(out.scale, name)
        signed, bits = bool(out.signed), int(_scalar(out.bit_width, name))
        relu = bool(block.relu)
        if bits != 8 or signed == relu:
            raise ExportError(f"layer {name!r}: output must be {intmath.out_dtype(relu)}, got {'int' if signed else 'uint'}{bits}")
        ratio = s_in * w_scale / s_out
        rq = intmath.choose_requant(ratio)
        if not np.array_equal(rq.mult.astype(np.float64) / 2.0**rq.shift, ratio):
            self.inexact.append(name)
        arrays = {
            "weight": w(w_int).astype(np.int8),
            "bias": bias.astype(np.int32),
            "mult": rq.mult.astype(np.int32),
            "w_scale": w_scale.astype(np.float32),
        }
        node = Node(name, op, list(inputs), [name], {**attrs, "w_bits": w_bits, "relu": relu, "shift": rq.shift}, arrays)
        self.nodes.append(node)
        n, c, h, wd = out.value.shape
        return self._tensor(name, (h, wd, c), intmath.out_dtype(relu), s_out)

    def conv(self, name: str, x: str) -> str:
        conv = self.blocks[name].conv
        attrs = {"stride": list(conv.stride), "padding": list(conv.padding), "groups": int(conv.groups)}
        return self._conv_like(name, "conv2d", [x], lambda w: w.transpose(0, 2, 3, 1), attrs)

    def deform(self, name: str, x: str, side: str) -> str:
        conv = self.blocks[name].conv
        side_scale = self.tensors[side].scale
        if side_scale != 1.0:
            raise ExportError(
                f"layer {name!r}: side input {side!r} must have the fixed scale 1.0 (its integer is the code), got {side_scale}"
            )
        if conv.kind == "square":
            op, attrs = "deform_dw3x3", {"stride": int(conv.stride[0]), "max_dilation": conv.max_dilation}
        else:
            op, attrs = "deform_dw3x3_offsets", {"stride": int(conv.stride[0]), "max_offset": conv.max_offset}
        return self._conv_like(name, op, [x, side], lambda w: w.reshape(w.shape[0], 3, 3), attrs)

    def _pass(self, name: str, op: str, inputs: list[str], attrs: dict, shapes: list[tuple], n_out: int = 1) -> list[str]:
        t = self.tensors[inputs[0]]
        outs = [name] if n_out == 1 else [f"{name}.{k}" for k in range(n_out)]
        for o, shape in zip(outs, shapes):
            self._tensor(o, shape, t.dtype, t.scale)
        self.nodes.append(Node(name, op, list(inputs), outs, attrs))
        return outs

    def maxpool(self, x: str, name: str) -> str:
        h, w, c = self.tensors[x].shape
        shape = ((h + 2 - 3) // 2 + 1, (w + 2 - 3) // 2 + 1, c)
        return self._pass(name, "maxpool2d", [x], {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1]}, [shape])[0]

    def upsample(self, x: str, name: str) -> str:
        h, w, c = self.tensors[x].shape
        return self._pass(name, "upsample_nearest2x", [x], {}, [(2 * h, 2 * w, c)])[0]

    def concat(self, xs: list[str], name: str) -> str:
        h, w, _ = self.tensors[xs[0]].shape
        scales = {self.tensors[t].scale for t in xs}
        if len(scales) != 1:
            raise ExportError(f"concat {name!r}: inputs {xs} have different scales {sorted(scales)}; they must share one quantizer")
        return self._pass(name, "concat", xs, {}, [(h, w, sum(self.tensors[t].shape[2] for t in xs))])[0]

    def split(self, x: str, sections: list[int], name: str) -> list[str]:
        h, w, _ = self.tensors[x].shape
        return self._pass(name, "split", [x], {"sections": list(sections)}, [(h, w, s) for s in sections], len(sections))

    def shuffle(self, x: str, name: str) -> str:
        return self._pass(name, "shuffle", [x], {"groups": 2}, [self.tensors[x].shape])[0]


def _walk(wr: _Writer, spec: ArchSpec, image: str) -> dict[str, str]:
    """The topology of `codenet.sw.zoo.build`, step for step."""
    x = wr.conv("stem.conv", image)
    if spec.stem == "s2mp":
        x = wr.maxpool(x, "stem.pool")
    for k, (c, reps) in enumerate(zip(spec.stage_channels, spec.stage_repeats)):
        p = f"stage{k + 2}.0"
        a = wr.conv(f"{p}.b1.pw", wr.conv(f"{p}.b1.dw", x))
        y = wr.conv(f"{p}.b2.pw2", wr.conv(f"{p}.b2.dw", wr.conv(f"{p}.b2.pw1", x)))
        x = wr.shuffle(wr.concat([a, y], f"{p}.cat"), f"{p}.shuffle")
        for r in range(1, reps):
            p = f"stage{k + 2}.{r}"
            half = c // 2
            x1, x2 = wr.split(x, [half, half], f"{p}.split")
            y = wr.conv(f"{p}.pw2", wr.conv(f"{p}.dw", wr.conv(f"{p}.pw1", x2)))
            x = wr.shuffle(wr.concat([x1, y], f"{p}.cat"), f"{p}.shuffle")
    x = wr.conv("conv5", x)
    for k in range(len(spec.decoder_channels)):
        p = f"decoder{k}"
        if spec.deform in ("square", "bounded"):
            x = wr.deform(f"{p}.deform", x, wr.conv(f"{p}.offset", x))
        else:
            x = wr.conv(f"{p}.dw", x)
        x = wr.upsample(wr.conv(f"{p}.pw", x), f"{p}.up")
    heads = {}
    for head in HEADS:
        heads[head] = wr.conv(f"head.{head}.out", wr.conv(f"head.{head}.dw", wr.conv(f"head.{head}.pw1", x)))
    return heads


def export_cnir(
    qmodel: CoDeNet,
    spec: ArchSpec | None,
    path: str | os.PathLike | None,
    classes: Sequence[str] | None = None,
    *,
    name: str = "codenet",
    weights: str = "codenet.quant (Brevitas QAT)",
) -> Graph:
    """Write the integer graph of a calibrated quantized model; returns the validated Graph.

    `spec` must describe the model (None: the model's own) but may set another input size
    (any multiple of 32: the weights do not depend on it); `classes` default to
    ``class0..``; `path` None only builds the graph. Raises :class:`ExportError` naming the
    layer for anything the contract cannot express (a ``full`` deformable layer, an
    uncalibrated model, concat inputs of different scales).
    """
    model = _check_exportable(qmodel, "export_cnir")
    spec = model.spec if spec is None else spec
    if replace(spec, input_size=model.spec.input_size) != model.spec:
        raise ExportError(f"spec {spec} does not describe the model ({model.spec}); only input_size may differ")
    classes = [f"class{k}" for k in range(spec.num_classes)] if classes is None else [str(c) for c in classes]
    if len(classes) != spec.num_classes:
        raise ExportError(f"{len(classes)} class names for a model with {spec.num_classes} classes")

    # float64 makes the recorded scales and integers those of the exact (bit-true) forward
    m64 = copy.deepcopy(model).cpu().double().eval()
    s = spec.input_size
    recs = _record(m64, torch.zeros(1, 3, s, s, dtype=torch.float64))
    wr = _Writer(m64, recs)
    with torch.no_grad():
        image_scale = _scalar(m64.input_quant.act_quant.scale(), "image")
        heads = _walk(wr, spec, wr.input("image", s, image_scale))
    meta = {
        "arch": asdict(spec),
        "classes": classes,
        "input_size": [s, s],
        "output_stride": 4,
        "heads": heads,
        "decode": dict(DECODE),
        "weights": weights,
        "quant": {
            "weight_bits": model.weight_bits,
            "first_weight_bits": model.first_weight_bits,
            "act_bits": 8,
            "scales": "power-of-two activations, dyadic per-channel weights",
            "rounding": "half up",
            "requant_exact": not wr.inexact,
            "inexact_layers": list(wr.inexact),
        },
    }
    meta = json.loads(json.dumps(meta))  # as a file gives it back (tuples become lists), like the zoo's
    graph = Graph(name, ["image"], list(heads.values()), wr.tensors, wr.nodes, meta).validate()
    if path is not None:
        ir.save(graph, path)
    return graph


# --------------------------------------------------------------------------- golden comparison


@dataclass
class Agreement:
    """How closely the golden executor reproduces the quantized model, in output LSBs."""

    elements: int = 0
    exact: int = 0
    within_1: int = 0
    max_abs_diff: int = 0
    per_tensor: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def fraction_exact(self) -> float:
        return self.exact / self.elements if self.elements else 1.0

    @property
    def fraction_within_1(self) -> float:
        return self.within_1 / self.elements if self.elements else 1.0

    def add(self, name: str, got: np.ndarray, ref: np.ndarray) -> None:
        d = np.abs(got.astype(np.int64) - ref.astype(np.int64))
        n, ex, w1 = d.size, int((d == 0).sum()), int((d <= 1).sum())
        self.elements += n
        self.exact += ex
        self.within_1 += w1
        self.max_abs_diff = max(self.max_abs_diff, int(d.max(initial=0)))
        self.per_tensor[name] = {
            "elements": n,
            "exact": ex / n if n else 1.0,
            "within_1": w1 / n if n else 1.0,
            "max": int(d.max(initial=0)),
        }


def images_to_nhwc(images: Tensor | np.ndarray) -> np.ndarray:
    """(N,3,H,W) pixel tensor -> the graph's NHWC uint8 input (values must be integers 0..255)."""
    a = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    if a.ndim != 4 or a.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got {a.shape}")
    if a.min() < 0 or a.max() > 255 or not np.array_equal(a, np.round(a)):
        raise ValueError("images must hold integer pixel values 0..255")
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).astype(np.uint8)


def compare_golden(
    qmodel: CoDeNet, graph: Graph, images: Tensor, *, dtype: torch.dtype = torch.float64, all_nodes: bool = False
) -> Agreement:
    """Run the model (on the CPU, in `dtype`) and the golden executor on the same images; count LSB differences.

    Compares the three heads, or with `all_nodes` every convolution-like node too (where a
    difference starts). With the integer path of `codenet.quant.qlayers` both float64 and
    float32 are exact; float32 with the integer path disabled shows Brevitas' float rounding.
    """
    model = _check_exportable(qmodel, "compare_golden")
    m = copy.deepcopy(model).to(device="cpu", dtype=dtype).eval()
    images = images.detach().cpu()
    recs = _record(m, images.to(dtype)) if all_nodes else {}
    with torch.no_grad():
        raw = m.forward_raw(images.to(dtype))
    env = golden.run(graph, images_to_nhwc(images), keep_all=all_nodes)
    agreement = Agreement()
    heads: Mapping[str, str] = graph.metadata["heads"]

    def ints(q: QuantTensor) -> np.ndarray:
        return torch.round(q.value / q.scale).detach().cpu().numpy().transpose(0, 2, 3, 1).astype(np.int64)

    if all_nodes:
        for name, rec in recs.items():
            if name in env and name not in heads.values():
                agreement.add(name, ints(rec.output), env[name])
    for head, tname in heads.items():
        agreement.add(tname, ints(raw[head]), env[tname])
    return agreement


# --------------------------------------------------------------------------- QONNX


class _HeadsTuple(nn.Module):
    """Tuple outputs (hm, wh, reg) as plain tensors, for torch.onnx."""

    def __init__(self, model: CoDeNet):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor):
        out = self.model(images)
        return tuple(out[h] for h in HEADS)


def _fix_rounding(model_proto) -> int:
    """Make every activation Quant node round as the contract does (floor(x/s + 0.5)).

    Brevitas labels them ROUND (half to even), its only name for rounding to nearest, although
    the quantizers round half up. Unsigned ones (after ReLU, x >= 0 where it matters) become
    HALF_UP; signed ones, where QONNX's HALF_UP (away from zero) would differ at negative ties,
    become FLOOR of ``x + s/2`` (an Add in front). Weight and bias quantizers keep ROUND, which
    is what Brevitas computed them with. Returns the number of nodes rewritten.
    """
    import onnx
    from onnx import helper, numpy_helper

    g = model_proto.graph
    inits = {i.name: i for i in g.initializer}
    new_nodes, changed = [], 0
    for node in g.node:
        if node.op_type != "Quant" or node.input[0] in inits:
            new_nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        rounding = next(a for a in node.attribute if a.name == "rounding_mode")
        if int(attrs.get("signed", 1)) == 0:
            rounding.s = b"HALF_UP"
        else:
            scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            half = f"{node.name or node.output[0]}_half_scale"
            shifted = f"{node.input[0]}_plus_half_{changed}"
            g.initializer.append(numpy_helper.from_array((scale * np.float32(0.5)).astype(np.float32), half))
            new_nodes.append(helper.make_node("Add", [node.input[0], half], [shifted], name=f"{node.name}_round_half_up"))
            node.input[0] = shifted
            rounding.s = b"FLOOR"
        new_nodes.append(node)
        changed += 1
    del g.node[:]
    g.node.extend(new_nodes)
    # initializers listed as graph inputs (TorchScript export) are constants, not inputs
    inputs = [i for i in g.input if i.name not in inits]
    del g.input[:]
    g.input.extend(inputs)
    onnx.checker.check_model(model_proto)
    return changed


def export_qonnx(qmodel: CoDeNet, path: str | os.PathLike, *, input_size: int | None = None) -> Path:
    """Write a QONNX model (input ``image``: N,3,H,W pixel values; outputs hm, wh, reg) of a ``dw`` model.

    Uses brevitas.export.export_qonnx with the TorchScript exporter (``dynamo=False``; Brevitas
    picks the dynamo exporter by default on torch >= 2.9). That is the path tested here by
    executing the result with qonnx; the dynamo one also runs but was not checked. Models
    with ``square``/``bounded``/``full`` decoders are refused with the layer's name.
    """
    model = _check_exportable(qmodel, "export_qonnx")
    if model.deform in DEFORMABLE:
        layer = next(n for n, b in conv_blocks(model).items() if isinstance(b, DeformBlock))
        raise ExportError(
            f"layer {layer!r} is a {model.deform!r} deformable convolution: QONNX has no operator for its per-pixel "
            "integer gather, so only 'dw' decoders export to QONNX; use export_cnir for the integer graph"
        )
    import onnx  # needs onnx and onnxoptimizer (Brevitas' ONNX passes)
    from brevitas.export import export_qonnx as brevitas_export_qonnx

    s = input_size or model.spec.input_size
    path = Path(path)
    # trace Brevitas' own float path: standard Conv nodes, float32 throughout
    wrapper = _HeadsTuple(set_integer_path(copy.deepcopy(model).cpu().float().eval(), False))
    brevitas_export_qonnx(
        wrapper,
        args=torch.zeros(1, 3, s, s),
        export_path=str(path),
        dynamo=False,
        input_names=["image"],
        output_names=list(HEADS),
    )
    proto = onnx.load(str(path))
    _fix_rounding(proto)
    onnx.save(proto, str(path))
    return path
