"""The graph executor against an independent PyTorch interpretation of the same graph.

The reference below reads the graph's nodes and computes every op with torch float64
primitives (convolution, dilated convolution selected per pixel, explicit gathers), so
the executor's wiring (attribute handling, side inputs, clamping, requantization) is
checked against the contract and not against itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from codenet.sw import golden, ir, zoo
from codenet.sw.builder import GraphBuilder


def _nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(torch.float64).permute(0, 3, 1, 2)


def _nhwc(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 2, 3, 1)


def _requant(acc: torch.Tensor, node: ir.Node) -> torch.Tensor:
    """round-half-up(acc * M / 2**S), clamped: exact in float64 since |acc*M| < 2**48."""
    m = torch.from_numpy(node.arrays["mult"].astype(np.float64))
    y = torch.floor(acc * m / 2.0 ** node.attrs["shift"] + 0.5)
    return y.clamp(0, 255) if node.attrs["relu"] else y.clamp(-128, 127)


def _dw_taps(x: torch.Tensor, w: np.ndarray, rows, cols) -> torch.Tensor:
    """sum_t w[:, t] * x[n, rows[t], cols[t], :] with zeros outside: x NHWC float64."""
    n, h, wd, c = x.shape
    out = 0
    for t in range(9):
        r, q = rows[t], cols[t]
        inside = (r >= 0) & (r < h) & (q >= 0) & (q < wd)
        rr, qq = r.clamp(0, h - 1), q.clamp(0, wd - 1)
        bidx = torch.arange(n)[:, None, None].expand_as(rr)
        vals = x[bidx, rr, qq] * inside[..., None]
        out = out + vals * torch.from_numpy(w[:, t // 3, t % 3].astype(np.float64))
    return out


def torch_reference(graph: ir.Graph, image: np.ndarray) -> dict[str, np.ndarray]:
    env = {graph.inputs[0]: torch.from_numpy(image).to(torch.float64)}
    for node in graph.nodes:
        xs = [env[i] for i in node.inputs]
        at, ar = node.attrs, node.arrays
        if node.op == "conv2d":
            w = torch.from_numpy(ar["weight"].astype(np.float64)).permute(0, 3, 1, 2)
            acc = F.conv2d(
                xs[0].permute(0, 3, 1, 2),
                w,
                torch.from_numpy(ar["bias"].astype(np.float64)),
                tuple(at["stride"]),
                tuple(at["padding"]),
                1,
                at["groups"],
            )
            outs = [_requant(_nhwc(acc), node)]
        elif node.op == "deform_dw3x3":
            x = xs[0]
            s, dmax = at["stride"], at["max_dilation"]
            d = 1 + torch.clamp(xs[1][..., 0], max=dmax - 1)
            w = torch.from_numpy(ar["weight"].astype(np.float64))[:, None]
            acc = 0
            for dv in range(1, dmax + 1):
                conv = _nhwc(F.conv2d(x.permute(0, 3, 1, 2), w, None, s, dv, dv, x.shape[3]))
                acc = acc + conv * (d == dv)[..., None]
            acc = acc + torch.from_numpy(ar["bias"].astype(np.float64))
            outs = [_requant(acc, node)]
        elif node.op == "deform_dw3x3_offsets":
            x, off = xs
            s, r = at["stride"], at["max_offset"]
            off = off.clamp(-r, r).long()
            ho, wo = off.shape[1:3]
            oy = (torch.arange(ho) * s)[None, :, None]
            ox = (torch.arange(wo) * s)[None, None, :]
            rows = [oy + t // 3 - 1 + off[..., 2 * t] for t in range(9)]
            cols = [ox + t % 3 - 1 + off[..., 2 * t + 1] for t in range(9)]
            acc = _dw_taps(x, ar["weight"], rows, cols) + torch.from_numpy(ar["bias"].astype(np.float64))
            outs = [_requant(acc, node)]
        elif node.op == "maxpool2d":
            outs = [_nhwc(F.max_pool2d(xs[0].permute(0, 3, 1, 2), tuple(at["kernel"]), tuple(at["stride"]), tuple(at["padding"])))]
        elif node.op == "upsample_nearest2x":
            outs = [_nhwc(F.interpolate(xs[0].permute(0, 3, 1, 2), scale_factor=2, mode="nearest"))]
        elif node.op == "concat":
            outs = [torch.cat(xs, dim=3)]
        elif node.op == "split":
            outs = list(torch.split(xs[0], at["sections"], dim=3))
        elif node.op == "shuffle":
            n, h, w, c = xs[0].shape
            g = at["groups"]
            outs = [xs[0].permute(0, 3, 1, 2).reshape(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w).permute(0, 2, 3, 1)]
        else:  # pragma: no cover - a new op needs a reference here
            raise NotImplementedError(node.op)
        env.update(zip(node.outputs, outs))
    return {k: env[k].numpy() for k in graph.outputs}


def random_graph(seed: int) -> ir.Graph:
    """A random small graph: random sizes, strides, dilation bounds and offset ranges."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder(f"rand{seed}", seed)
    h, w = (int(v) for v in rng.integers(8, 20, size=2))
    x = b.input("image", (h, w, 3))
    c = 2 * int(rng.integers(2, 7))
    x = b.conv(x, c, int(rng.choice([1, 3, 5])), int(rng.integers(1, 3)), None, w_bits=8)
    if rng.random() < 0.5:
        x = b.maxpool(x, int(rng.choice([2, 3])), int(rng.integers(1, 3)), int(rng.integers(0, 2)))
    dmax = int(rng.integers(1, 10))
    v = b.dilation_map(x, dmax, stride=1)
    x = b.deform(x, v, max_dilation=dmax, relu=bool(rng.random() < 0.5))
    if rng.random() < 0.5:
        stride = int(rng.integers(1, 3))
        hh, ww, _ = b.tensors[x].shape
        v2 = b.conv(x, 1, 1, stride, 0, relu=True, target=float(dmax + 2), out_scale=1.0)
        x = b.deform(x, v2, stride=stride, max_dilation=dmax)
    r = int(rng.integers(0, 4))
    off = b.offset_map(x, r)
    x = b.deform_offsets(x, off, max_offset=r, relu=True)
    a, z = b.split(x, [c // 2, c // 2])
    z = b.conv(z, c // 2, 1, out_scale=b.scale(a))
    x = b.shuffle(b.concat([a, z]), 2)
    x = b.conv(x, c, 3, 1, 1, groups=c // 2, relu=bool(rng.random() < 0.5))
    x = b.upsample(x)
    y = b.conv(x, 3, 1, relu=False)
    return b.finish([y, v])


@pytest.mark.parametrize("seed", range(12))
def test_executor_matches_torch_on_random_graphs(seed):
    g = random_graph(seed)
    image = np.random.default_rng(100 + seed).integers(0, 256, size=(2, *g.tensors["image"].shape)).astype(np.uint8)
    got = golden.run(g, image)
    ref = torch_reference(g, image)
    for k in g.outputs:
        assert got[k].dtype == np.dtype(g.tensors[k].dtype)
        assert np.array_equal(got[k].astype(np.int64), ref[k].astype(np.int64)), k
    vmap = got[g.outputs[1]]
    assert np.unique(vmap).size >= 2, "the dilation map should select several dilations"


def test_executor_matches_torch_on_the_tiny_detector():
    g = zoo.build("codenet-tiny", seed=7)
    image = np.random.default_rng(0).integers(0, 256, size=(1, *g.tensors["image"].shape)).astype(np.uint8)
    got = golden.run(g, image)
    ref = torch_reference(g, image)
    for k in g.outputs:
        assert np.array_equal(got[k].astype(np.int64), ref[k].astype(np.int64)), k
        assert np.unique(got[k]).size > 20, "calibration should spread the outputs"


def test_keep_all_and_timings():
    g = zoo.build("codenet-tiny", seed=1)
    image = np.zeros((1, *g.tensors["image"].shape), np.uint8)
    timings: dict[str, float] = {}
    env = golden.run(g, image, keep_all=True, timings=timings)
    assert set(env) == set(g.tensors)
    assert set(timings) == {n.name for n in g.nodes}


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((1, 128, 128, 3), np.int8), "uint8"),
        (np.zeros((1, 64, 128, 3), np.uint8), r"\(N,128,128,3\)"),
        (np.zeros((128, 128, 3), np.uint8), "shape"),
        ({"img": np.zeros((1, 128, 128, 3), np.uint8)}, "unknown input"),
    ],
)
def test_executor_names_bad_inputs(bad, match):
    g = zoo.build("codenet-tiny", seed=1)
    with pytest.raises(golden.GraphRunError, match=match):
        golden.run(g, bad)
