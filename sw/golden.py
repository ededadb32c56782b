"""The golden executor: the integer contract in numpy, bit-exact by construction.

Every backend (functional model, RTL simulation, board) is judged against these functions,
so they favour obvious correctness first and vectorised speed second. The normative text is
docs/integer-semantics.md; each function cites the section it implements.

Activations are NHWC integer arrays. Convolutions return the raw accumulator as int64
(the contract keeps it within int32 for validated graphs; int64 here means an out-of-contract
input is computed exactly instead of wrapping).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import intmath

__all__ = [
    "conv2d",
    "deform_dw3x3",
    "deform_dw3x3_offsets",
    "dilation_from_map",
    "requantize",
    "maxpool2d",
    "upsample_nearest2x",
    "concat",
    "split",
    "channel_shuffle",
    "run",
    "GraphRunError",
]

# float64 holds every integer below 2**53 exactly, so a BLAS product of integer-valued
# matrices is exact as long as no partial sum can reach that magnitude.
_F64_EXACT = 2**53


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    try:
        a, b = value
        return int(a), int(b)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None


def _int_array(a: np.ndarray, name: str, ndim: int | None = None) -> np.ndarray:
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    return a


def _absmax(a: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int64)).max()) if a.size else 0


# --------------------------------------------------------------------------- convolution


def conv2d(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    groups: int = 1,
) -> np.ndarray:
    """Grouped 2-D convolution with zero padding (§ Convolution).

    x (N,H,W,C), w (OC,KH,KW,C//groups), bias (OC,) -> int64 accumulator (N,Ho,Wo,OC).
    """
    x = _int_array(x, "x", 4)
    w = _int_array(w, "w", 4)
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    n, h, wd, c = x.shape
    oc, kh, kw, cg = w.shape
    if min(w.shape) < 1:
        raise ValueError(f"w must have no empty dimension, got shape {w.shape}")
    if groups < 1 or c % groups or oc % groups:
        raise ValueError(f"groups={groups} must divide input channels {c} and output channels {oc}")
    if cg != c // groups:
        raise ValueError(f"w has {cg} input channels per group, expected {c // groups} (C={c}, groups={groups})")
    if sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"stride must be >= 1 and padding >= 0, got stride={stride}, padding={padding}")
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"kernel {kh}x{kw} does not fit input {h}x{wd} with padding {padding}")
    if bias is not None:
        bias = _int_array(bias, "bias", 1)
        if bias.shape[0] != oc:
            raise ValueError(f"bias has {bias.shape[0]} entries, expected {oc}")

    if cg == 1 and kh * kw <= 49:
        acc = _conv_depthwise(x, w, groups, (sh, sw), (ph, pw), (ho, wo))
    else:
        acc = _conv_matmul(x, w, groups, (sh, sw), (ph, pw), (ho, wo))
    if bias is not None:
        acc += bias.astype(np.int64)
    return acc


def _pad(x: np.ndarray, ph: int, pw: int, value: int = 0) -> np.ndarray:
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=value)


def _conv_depthwise(x, w, groups, stride, padding, out_hw) -> np.ndarray:
    """One input channel per group: a sum of shifted, scaled copies, exact in int64."""
    sh, sw = stride
    ho, wo = out_hw
    oc, kh, kw, _ = w.shape
    mult = oc // groups  # output channels per input channel (channel multiplier)
    xp = _pad(x.astype(np.int64), *padding)
    if mult > 1:
        xp = np.repeat(xp, mult, axis=3)
    acc = np.zeros((x.shape[0], ho, wo, oc), np.int64)
    w64 = w.astype(np.int64)
    for i in range(kh):
        for j in range(kw):
            tap = xp[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :]
            acc += tap * w64[:, i, j, 0]
    return acc


def _conv_matmul(x, w, groups, stride, padding, out_hw) -> np.ndarray:
    """im2col + matrix product per group; float64 BLAS where provably exact, else int64."""
    sh, sw = stride
    ho, wo = out_hw
    n = x.shape[0]
    oc, kh, kw, cg = w.shape
    ocg = oc // groups
    exact_f64 = _absmax(x) * max(_absmax(w), 1) * kh * kw * cg < _F64_EXACT
    dtype = np.float64 if exact_f64 else np.int64
    xp = _pad(x.astype(dtype), *padding)
    acc = np.empty((n * ho * wo, oc), np.int64)
    for g in range(groups):
        xg = xp[..., g * cg : (g + 1) * cg]
        if kh == 1 and kw == 1:
            cols = xg[:, : sh * (ho - 1) + 1 : sh, : sw * (wo - 1) + 1 : sw, :].reshape(-1, cg)
        else:
            win = sliding_window_view(xg, (kh, kw), axis=(1, 2))  # (N,H',W',cg,kh,kw)
            win = win[:, : sh * (ho - 1) + 1 : sh, : sw * (wo - 1) + 1 : sw]
            cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(-1, kh * kw * cg)
        wg = w[g * ocg : (g + 1) * ocg].reshape(ocg, -1).astype(dtype)
        acc[:, g * ocg : (g + 1) * ocg] = cols @ wg.T
    return acc.reshape(n, ho, wo, oc)


# --------------------------------------------------------------------------- deformable


def dilation_from_map(v: np.ndarray, max_dilation: int) -> np.ndarray:
    """d = 1 + min(v, D - 1): the square-deformable layer's per-pixel dilation (§ Square-deformable)."""
    v = _int_array(v, "v")
    if max_dilation < 1:
        raise ValueError(f"max_dilation must be >= 1, got {max_dilation}")
    if v.size and v.min() < 0:
        raise ValueError("the dilation map must be unsigned")
    return 1 + np.minimum(v.astype(np.int64), max_dilation - 1)


def _check_dw3x3(x, w, stride) -> tuple[int, int, int]:
    x = _int_array(x, "x", 4)
    w = _int_array(w, "w", 3)
    if w.shape != (x.shape[3], 3, 3):
        raise ValueError(f"w must have shape (C,3,3) = ({x.shape[3]},3,3), got {w.shape}")
    if int(stride) < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    s = int(stride)
    return s, (x.shape[1] - 1) // s + 1, (x.shape[2] - 1) // s + 1


def _gather_taps(x: np.ndarray, w: np.ndarray, coords: Callable[[int, int], tuple]) -> np.ndarray:
    """Sum over the 9 taps of w[c,i,j] * x[n, yy, xx, c], reading 0 outside the image.

    `coords(i, j)` gives the (N,Ho,Wo) source row and column of tap (i, j).
    """
    n, h, wd, c = x.shape
    flat = np.concatenate([x.reshape(-1, c).astype(np.int64), np.zeros((1, c), np.int64)])
    base = (np.arange(n) * (h * wd))[:, None, None]
    w64 = w.astype(np.int64)
    acc = None
    for i in range(3):
        for j in range(3):
            yy, xx = coords(i, j)
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < wd)
            idx = np.where(inside, base + yy * wd + xx, n * h * wd)
            term = flat[idx] * w64[:, i, j]
            acc = term if acc is None else acc + term
    return acc


def deform_dw3x3(x: np.ndarray, w: np.ndarray, dilation: np.ndarray, stride: int = 1) -> np.ndarray:
    """Depthwise 3x3 with a per-output-pixel square dilation (§ Square-deformable).

    Tap (i, j) of output (y, x) reads (y*s + (i-1)*d, x*s + (j-1)*d), d = dilation[n, y, x].
    """
    s, ho, wo = _check_dw3x3(x, w, stride)
    d = _int_array(dilation, "dilation", 3)
    if d.shape != (x.shape[0], ho, wo):
        raise ValueError(f"dilation must have shape (N,Ho,Wo) = {(x.shape[0], ho, wo)}, got {d.shape}")
    if d.size and d.min() < 1:
        raise ValueError(f"dilation must be >= 1, got minimum {d.min()}")
    d = d.astype(np.int64)
    oy = (np.arange(ho) * s)[None, :, None]
    ox = (np.arange(wo) * s)[None, None, :]
    return _gather_taps(x, w, lambda i, j: (oy + (i - 1) * d, ox + (j - 1) * d))


def deform_dw3x3_offsets(x: np.ndarray, w: np.ndarray, offsets: np.ndarray, stride: int = 1) -> np.ndarray:
    """Depthwise 3x3 with an integer offset per pixel and tap (§ Bounded-offset deformable).

    offsets (N,Ho,Wo,9,2) holds (dy, dx) per tap t = 3*i + j; tap (i, j) reads
    (y*s + i - 1 + dy, x*s + j - 1 + dx).
    """
    s, ho, wo = _check_dw3x3(x, w, stride)
    off = _int_array(offsets, "offsets", 5)
    if off.shape != (x.shape[0], ho, wo, 9, 2):
        raise ValueError(f"offsets must have shape (N,Ho,Wo,9,2) = {(x.shape[0], ho, wo, 9, 2)}, got {off.shape}")
    off = off.astype(np.int64)
    oy = (np.arange(ho) * s)[None, :, None]
    ox = (np.arange(wo) * s)[None, None, :]
    return _gather_taps(x, w, lambda i, j: (oy + i - 1 + off[..., 3 * i + j, 0], ox + j - 1 + off[..., 3 * i + j, 1]))


# --------------------------------------------------------------------------- requantize


def requantize(acc: np.ndarray, mult: np.ndarray | int, shift: int, relu: bool) -> np.ndarray:
    """y = clamp((acc*M + 2**(S-1)) >> S, lo, hi), arithmetic shift (§ Requantization).

    `mult` is per output channel (broadcast on the last axis) or a scalar. Returns uint8
    (relu) or int8.
    """
    acc = _int_array(acc, "acc")
    m = _int_array(np.asarray(mult), "mult")
    shift = int(shift)
    if shift < 0 or shift > 62:
        raise ValueError(f"shift must be in [0, 62], got {shift}")
    if m.size and m.min() < 0:
        raise ValueError("mult must be non-negative")
    if m.ndim > 1 or (m.ndim == 1 and acc.ndim and m.shape[0] not in (1, acc.shape[-1])):
        raise ValueError(f"mult must be a scalar or have one entry per channel ({acc.shape[-1]}), got {m.shape}")
    rnd = (1 << (shift - 1)) if shift else 0
    if _absmax(acc) * _absmax(m) + rnd >= 2**63:
        raise ValueError("acc * mult overflows int64; the accumulator is outside the contract")
    prod = acc.astype(np.int64) * m.astype(np.int64) + rnd
    y = prod >> shift
    lo, hi = intmath.act_range(intmath.out_dtype(relu))
    return np.clip(y, lo, hi).astype(np.uint8 if relu else np.int8)


# --------------------------------------------------------------------------- data movement


def maxpool2d(
    x: np.ndarray, kernel: int | Sequence[int], stride: int | Sequence[int] | None = None, padding: int | Sequence[int] = 0
) -> np.ndarray:
    """Max-pool; padded positions never win (§ Max-pool). Keeps x's dtype and scale."""
    x = _int_array(x, "x", 4)
    kh, kw = _pair(kernel, "kernel")
    sh, sw = _pair(kernel if stride is None else stride, "stride")
    ph, pw = _pair(padding, "padding")
    if kh < 1 or kw < 1 or sh < 1 or sw < 1:
        raise ValueError(f"kernel and stride must be >= 1, got kernel={kernel}, stride={stride}")
    if not (0 <= ph <= kh // 2 and 0 <= pw <= kw // 2):
        raise ValueError(f"padding must be in [0, kernel//2], got padding={padding} for kernel={kernel}")
    n, h, wd, c = x.shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"pool window {kh}x{kw} does not fit input {h}x{wd}")
    # the dtype's minimum can only tie with a real element, never beat it
    xp = _pad(x, ph, pw, value=np.iinfo(x.dtype).min)
    out = None
    for i in range(kh):
        for j in range(kw):
            tap = xp[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :]
            out = tap.copy() if out is None else np.maximum(out, tap)
    return out


def upsample_nearest2x(x: np.ndarray) -> np.ndarray:
    """y[2i+a, 2j+b] = x[i, j] for a, b in {0, 1} (§ Upsample)."""
    x = _int_array(x, "x", 4)
    n, h, w, c = x.shape
    return np.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c)).reshape(n, 2 * h, 2 * w, c)


def concat(xs: Sequence[np.ndarray]) -> np.ndarray:
    """Channel concatenation; inputs share dtype and scale, so no arithmetic (§ Concat)."""
    xs = [_int_array(a, f"xs[{k}]", 4) for k, a in enumerate(xs)]
    if not xs:
        raise ValueError("concat needs at least one input")
    if len({a.dtype for a in xs}) != 1 or len({a.shape[:3] for a in xs}) != 1:
        raise ValueError(f"concat inputs must share dtype and N,H,W; got {[(a.dtype.name, a.shape) for a in xs]}")
    return np.concatenate(xs, axis=3)


def split(x: np.ndarray, sections: Sequence[int]) -> list[np.ndarray]:
    """Channel split into consecutive groups of the given sizes (§ Split)."""
    x = _int_array(x, "x", 4)
    sections = [int(s) for s in sections]
    if any(s < 1 for s in sections) or sum(sections) != x.shape[3]:
        raise ValueError(f"split sections {sections} must be positive and sum to {x.shape[3]} channels")
    return np.split(x, np.cumsum(sections)[:-1], axis=3)


def channel_shuffle(x: np.ndarray, groups: int) -> np.ndarray:
    """ShuffleNet shuffle: output channel k*g + i takes input channel i*(C/g) + k (§ Shuffle)."""
    x = _int_array(x, "x", 4)
    n, h, w, c = x.shape
    if groups < 1 or c % groups:
        raise ValueError(f"groups={groups} must divide {c} channels")
    return x.reshape(n, h, w, groups, c // groups).swapaxes(3, 4).reshape(n, h, w, c)


# --------------------------------------------------------------------------- graph executor


class GraphRunError(ValueError):
    """Bad executor input (wrong name, shape or dtype), named precisely."""


def _requant_node(node, acc: np.ndarray) -> np.ndarray:
    return requantize(acc, node.arrays["mult"], node.attrs["shift"], node.attrs["relu"])


def _exec_conv2d(node, x):
    acc = conv2d(x, node.arrays["weight"], node.arrays["bias"], node.attrs["stride"], node.attrs["padding"], node.attrs["groups"])
    return [_requant_node(node, acc)]


def _exec_deform(node, x, v):
    d = dilation_from_map(v[..., 0], node.attrs["max_dilation"])
    acc = deform_dw3x3(x, node.arrays["weight"], d, node.attrs["stride"]) + node.arrays["bias"].astype(np.int64)
    return [_requant_node(node, acc)]


def _exec_deform_offsets(node, x, off):
    r = node.attrs["max_offset"]
    n, ho, wo, _ = off.shape
    offsets = np.clip(off.astype(np.int64), -r, r).reshape(n, ho, wo, 9, 2)
    acc = deform_dw3x3_offsets(x, node.arrays["weight"], offsets, node.attrs["stride"]) + node.arrays["bias"].astype(np.int64)
    return [_requant_node(node, acc)]


_EXEC: dict[str, Callable] = {
    "conv2d": _exec_conv2d,
    "deform_dw3x3": _exec_deform,
    "deform_dw3x3_offsets": _exec_deform_offsets,
    "maxpool2d": lambda n, x: [maxpool2d(x, n.attrs["kernel"], n.attrs["stride"], n.attrs["padding"])],
    "upsample_nearest2x": lambda n, x: [upsample_nearest2x(x)],
    "concat": lambda n, *xs: [concat(xs)],
    "split": lambda n, x: split(x, n.attrs["sections"]),
    "shuffle": lambda n, x: [channel_shuffle(x, n.attrs["groups"])],
}


def run(
    graph,
    inputs: np.ndarray | Mapping[str, np.ndarray],
    *,
    keep_all: bool = False,
    timings: dict[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """Execute a validated :class:`codenet.sw.ir.Graph` on a batch.

    `inputs` is one NHWC array (for a single-input graph) or a mapping by input name.
    Returns the graph outputs by name, or every tensor with `keep_all`. When `timings` is
    given, it receives the wall time of each node by node name.
    """
    if not isinstance(inputs, Mapping):
        if len(graph.inputs) != 1:
            raise GraphRunError(f"graph has inputs {graph.inputs}; pass a mapping by name")
        inputs = {graph.inputs[0]: inputs}
    unknown = set(inputs) - set(graph.inputs)
    if unknown:
        raise GraphRunError(f"unknown input(s) {sorted(unknown)}; the graph's inputs are {graph.inputs}")
    env: dict[str, np.ndarray] = {}
    batch = None
    for name in graph.inputs:
        if name not in inputs:
            raise GraphRunError(f"input {name!r} is missing")
        t = graph.tensors[name]
        a = np.asarray(inputs[name])
        if a.dtype != np.dtype(t.dtype) or a.ndim != 4 or tuple(a.shape[1:]) != tuple(t.shape):
            raise GraphRunError(
                f"input {name!r}: expected a {t.dtype} array of shape (N,{','.join(map(str, t.shape))}), got {a.dtype} {a.shape}"
            )
        if batch is not None and a.shape[0] != batch:
            raise GraphRunError(f"input {name!r}: batch {a.shape[0]} differs from the other inputs' {batch}")
        batch = a.shape[0]
        env[name] = a
    for node in graph.nodes:
        start = time.perf_counter()
        outs = _EXEC[node.op](node, *(env[i] for i in node.inputs))
        for name, value in zip(node.outputs, outs):
            env[name] = value
        if timings is not None:
            timings[node.name] = time.perf_counter() - start
    if keep_all:
        return env
    return {name: env[name] for name in graph.outputs}
