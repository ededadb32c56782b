"""Build valid integer graphs with random weights, calibrated on the fly.

Random graphs are what the engine and its tests need before (or without) a trained model:
the zoo's CoDeNet configurations, single-layer test cases, benchmarks. Each requantization
is calibrated on a sample batch as the graph grows, so activations use their 8-bit range
instead of collapsing to 0 or saturating, which would make bit-exact comparisons weak.
"""

from __future__ import annotations

import json

import numpy as np

from . import golden, intmath
from .ir import Graph, Node, TensorInfo

__all__ = ["GraphBuilder"]


class GraphBuilder:
    """Append nodes in execution order; every method returns the new tensor's name."""

    def __init__(self, name: str, seed: int = 0, *, percentile: float = 99.5):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.percentile = percentile
        self.tensors: dict[str, TensorInfo] = {}
        self.nodes: list[Node] = []
        self.inputs: list[str] = []
        self.values: dict[str, np.ndarray] = {}  # calibration activations
        self._count: dict[str, int] = {}

    # ----------------------------------------------------------------- helpers
    def _name(self, prefix: str, name: str | None) -> str:
        if name is None:
            k = self._count.get(prefix, 0)
            self._count[prefix] = k + 1
            name = f"{prefix}{k}"
        if any(n.name == name for n in self.nodes) or name in self.tensors:
            raise ValueError(f"name {name!r} is already used in graph {self.name!r}")
        return name

    def _add(self, node: Node, outs: list[np.ndarray], scales: list[float]) -> list[str]:
        for tname, value, scale in zip(node.outputs, outs, scales):
            self.tensors[tname] = TensorInfo(tname, tuple(int(s) for s in value.shape[1:]), value.dtype.name, float(scale))
            self.values[tname] = value
        self.nodes.append(node)
        return node.outputs

    def scale(self, t: str) -> float:
        return self.tensors[t].scale

    def input(self, name: str, shape: tuple[int, int, int], dtype: str = "uint8", scale: float = 1 / 255, batch: int = 1) -> str:
        lo, hi = intmath.act_range(dtype)
        self.tensors[name] = TensorInfo(name, tuple(shape), dtype, scale)
        self.values[name] = self.rng.integers(lo, hi + 1, size=(batch, *shape)).astype(dtype)
        self.inputs.append(name)
        return name

    def _calibrate(self, acc: np.ndarray, target: float, s_in: float, out_scale: float | None, w_bits: int):
        """Per-channel M/2**S mapping the acc percentile to `target`, and consistent scales."""
        spread = np.percentile(np.abs(acc.reshape(-1, acc.shape[-1])), self.percentile, axis=0)
        ratio = target / np.maximum(spread, 1.0)
        rq = intmath.choose_requant(ratio)
        real = np.maximum(rq.real(), 2.0**-rq.shift)  # a zero multiplier still needs a positive scale
        if out_scale is None:
            out_scale = s_in * (1.0 / 2 ** (w_bits - 1)) / float(np.median(real))
        w_scale = (real * out_scale / s_in).astype(np.float32)
        return rq, w_scale, out_scale

    def _conv_node(self, op, name, inputs, acc, attrs, weight, relu, out_scale, target, s_in):
        """Finish a convolution from its bias-free accumulator: centre, calibrate, requantize.

        The bias centres each channel on its calibration median, as a folded batch-norm
        would, so ReLU layers keep about half their outputs alive in a random network.
        """
        if target is None:
            target = 200.0 if relu else 100.0
        centre = np.median(acc.reshape(-1, acc.shape[-1]), axis=0)
        jitter = self.rng.integers(-8, 9, size=acc.shape[-1])
        bias = np.clip(np.round(-centre) + jitter, -(2**30), 2**30).astype(np.int64)
        acc = acc + bias
        rq, w_scale, s_out = self._calibrate(acc, target, s_in, out_scale, attrs["w_bits"])
        y = golden.requantize(acc, rq.mult, rq.shift, relu)
        arrays = {"weight": weight.astype(np.int8), "bias": bias.astype(np.int32), "mult": rq.mult.astype(np.int32), "w_scale": w_scale}
        node = Node(name, op, inputs, [name], {**attrs, "relu": relu, "shift": rq.shift}, arrays)
        return self._add(node, [y], [s_out])[0]

    def _weights(self, shape: tuple[int, ...], w_bits: int) -> np.ndarray:
        lo, hi = intmath.weight_range(w_bits)
        return self.rng.integers(lo, hi + 1, size=shape)

    # ----------------------------------------------------------------- ops
    def conv(
        self,
        x: str,
        oc: int,
        k: int | tuple[int, int] = 1,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | None = None,
        groups: int = 1,
        relu: bool = True,
        w_bits: int = 4,
        name: str | None = None,
        out_scale: float | None = None,
        target: float | None = None,
    ) -> str:
        kh, kw = (k, k) if isinstance(k, int) else k
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        if padding is None:
            padding = (kh // 2, kw // 2)
        ph, pw = (padding, padding) if isinstance(padding, int) else padding
        name = self._name("conv", name)
        c = self.tensors[x].shape[2]
        w = self._weights((oc, kh, kw, c // groups), w_bits)
        acc = golden.conv2d(self.values[x], w, None, (sh, sw), (ph, pw), groups)
        attrs = {"stride": [sh, sw], "padding": [ph, pw], "groups": groups, "w_bits": w_bits}
        return self._conv_node("conv2d", name, [x], acc, attrs, w, relu, out_scale, target, self.scale(x))

    def dwconv(self, x: str, stride: int = 1, relu: bool = False, **kw) -> str:
        c = self.tensors[x].shape[2]
        return self.conv(x, c, 3, stride, 1, groups=c, relu=relu, **kw)

    def deform(
        self,
        x: str,
        v: str,
        stride: int = 1,
        max_dilation: int = 8,
        relu: bool = False,
        w_bits: int = 4,
        name: str | None = None,
        out_scale: float | None = None,
    ) -> str:
        name = self._name("deform", name)
        c = self.tensors[x].shape[2]
        w = self._weights((c, 3, 3), w_bits)
        d = golden.dilation_from_map(self.values[v][..., 0], max_dilation)
        acc = golden.deform_dw3x3(self.values[x], w, d, stride)
        attrs = {"stride": stride, "max_dilation": max_dilation, "w_bits": w_bits}
        return self._conv_node("deform_dw3x3", name, [x, v], acc, attrs, w, relu, out_scale, None, self.scale(x))

    def deform_offsets(
        self,
        x: str,
        off: str,
        stride: int = 1,
        max_offset: int = 2,
        relu: bool = False,
        w_bits: int = 4,
        name: str | None = None,
        out_scale: float | None = None,
    ) -> str:
        name = self._name("deform", name)
        c = self.tensors[x].shape[2]
        w = self._weights((c, 3, 3), w_bits)
        o = self.values[off]
        offsets = np.clip(o.astype(np.int64), -max_offset, max_offset).reshape(*o.shape[:3], 9, 2)
        acc = golden.deform_dw3x3_offsets(self.values[x], w, offsets, stride)
        attrs = {"stride": stride, "max_offset": max_offset, "w_bits": w_bits}
        return self._conv_node("deform_dw3x3_offsets", name, [x, off], acc, attrs, w, relu, out_scale, None, self.scale(x))

    def dilation_map(self, x: str, max_dilation: int = 8, stride: int = 1, name: str | None = None) -> str:
        """The 1x1 "offset" convolution that predicts the square-deformable dilation map."""
        return self.conv(x, 1, 1, stride, 0, relu=True, name=name, target=1.5 * (max_dilation - 1), out_scale=1.0)

    def offset_map(self, x: str, max_offset: int = 2, stride: int = 1, name: str | None = None) -> str:
        """The 1x1 convolution that predicts the bounded offsets (dy, dx per tap)."""
        return self.conv(x, 18, 1, stride, 0, relu=False, name=name, target=1.5 * max_offset, out_scale=1.0)

    def _passthrough(
        self, op: str, prefix: str, inputs: list[str], attrs: dict, outs: list[np.ndarray], name: str | None, n_out: int = 1
    ) -> list[str]:
        name = self._name(prefix, name)
        names = [name] if n_out == 1 else [f"{name}.{k}" for k in range(n_out)]
        return self._add(Node(name, op, inputs, names, attrs), outs, [self.scale(inputs[0])] * n_out)

    def maxpool(self, x: str, k: int = 3, stride: int = 2, padding: int = 1, name: str | None = None) -> str:
        y = golden.maxpool2d(self.values[x], k, stride, padding)
        return self._passthrough(
            "maxpool2d", "pool", [x], {"kernel": [k, k], "stride": [stride, stride], "padding": [padding, padding]}, [y], name
        )[0]

    def upsample(self, x: str, name: str | None = None) -> str:
        return self._passthrough("upsample_nearest2x", "up", [x], {}, [golden.upsample_nearest2x(self.values[x])], name)[0]

    def concat(self, xs: list[str], name: str | None = None) -> str:
        return self._passthrough("concat", "cat", list(xs), {}, [golden.concat([self.values[t] for t in xs])], name)[0]

    def split(self, x: str, sections: list[int], name: str | None = None) -> list[str]:
        outs = golden.split(self.values[x], sections)
        return self._passthrough("split", "split", [x], {"sections": list(sections)}, outs, name, len(sections))

    def shuffle(self, x: str, groups: int = 2, name: str | None = None) -> str:
        return self._passthrough("shuffle", "shuffle", [x], {"groups": groups}, [golden.channel_shuffle(self.values[x], groups)], name)[0]

    def finish(self, outputs: list[str], metadata: dict | None = None) -> Graph:
        # through JSON once, so the in-memory graph equals what a .cnir file gives back
        meta = json.loads(json.dumps(metadata or {}))
        g = Graph(self.name, list(self.inputs), list(outputs), dict(self.tensors), list(self.nodes), meta)
        return g.validate()
