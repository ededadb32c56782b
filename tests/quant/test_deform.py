"""codenet.quant.deform: the PyTorch deformable ops against the golden integer operators.

The integer variants (``square``, ``bounded``) must compute exactly what
`golden.deform_dw3x3` / `golden.deform_dw3x3_offsets` compute, on integer-valued float64
inputs (exact in float64), including taps that fall off every edge of the image. The
straight-through gradients are checked against independent references: ``square``'s against
dilated ``F.conv2d`` at the integer dilations around the continuous one (the secant),
``bounded``'s against the bilinear float baseline (``full``) at the continuous offsets; and
`torch.nn.functional.grid_sample` is the independent reference for the bilinear sampling itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from codenet.quant import deform
from codenet.quant.deform import (
    DeformConv3x3,
    deform_dw3x3,
    deform_dw3x3_bilinear,
    deform_dw3x3_bounded,
    deform_dw3x3_square,
    side_channels,
)
from codenet.sw import golden

HYP = settings(max_examples=40, deadline=None)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add synchronisation, which on a shared 2-core machine
    (OpenMP spin-waiting against other processes) makes small convolutions 100x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


F64 = torch.float64


def nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)).permute(0, 3, 1, 2)


def nhwc_int(t: torch.Tensor) -> np.ndarray:
    a = t.detach().permute(0, 2, 3, 1).numpy()
    assert np.array_equal(a, np.round(a)), "integer inputs must give an integer-valued result"
    return a.astype(np.int64)


def out_hw(h: int, w: int, s: int) -> tuple[int, int]:
    return (h - 1) // s + 1, (w - 1) // s + 1


@st.composite
def square_case(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 5))
    h, w = draw(st.integers(1, 13)), draw(st.integers(1, 13))
    s, dmax = draw(st.sampled_from([1, 2])), draw(st.integers(1, 8))
    ho, wo = out_hw(h, w, s)
    x = rng.integers(-128, 128, (n, h, w, c))
    wt = rng.integers(-8, 8, (c, 3, 3))
    v = rng.integers(0, dmax + 4, (n, ho, wo, 1))  # codes beyond D - 1 exercise the clamp
    return x, wt, v, s, dmax


@HYP
@given(square_case())
def test_square_equals_golden(case):
    x, w, v, s, dmax = case
    bias = np.arange(w.shape[0]) * 7 - 3
    ref = golden.deform_dw3x3(x, w, golden.dilation_from_map(v[..., 0], dmax), s) + bias
    got = deform_dw3x3_square(nchw(x), torch.from_numpy(w).to(F64), nchw(v), torch.from_numpy(bias).to(F64), s, dmax)
    assert np.array_equal(nhwc_int(got), ref)


@st.composite
def bounded_case(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 5))
    h, w = draw(st.integers(1, 11)), draw(st.integers(1, 11))
    s, r = draw(st.sampled_from([1, 2])), draw(st.integers(0, 4))
    ho, wo = out_hw(h, w, s)
    x = rng.integers(-128, 128, (n, h, w, c))
    wt = rng.integers(-8, 8, (c, 3, 3))
    off = rng.integers(-r - 3, r + 4, (n, ho, wo, 18))  # beyond [-R, R]: clamped by the op
    return x, wt, off, s, r


@HYP
@given(bounded_case())
def test_bounded_equals_golden(case):
    x, w, off, s, r = case
    n, ho, wo, _ = off.shape
    ref = golden.deform_dw3x3_offsets(x, w, np.clip(off, -r, r).reshape(n, ho, wo, 9, 2), s)
    got = deform_dw3x3_bounded(nchw(x), torch.from_numpy(w).to(F64), nchw(off), None, s, r)
    assert np.array_equal(nhwc_int(got), ref)


@pytest.mark.parametrize("stride", [1, 2])
def test_every_edge_and_every_dilation(stride):
    """A fixed case where, for each d in 1..8, taps leave the image on all four sides."""
    rng = np.random.default_rng(stride)
    h, w, c, dmax = 9, 10, 3, 8
    ho, wo = out_hw(h, w, stride)
    x = rng.integers(1, 128, (1, h, w, c))  # no zeros: a sample read as 0 is visibly off-image
    wt = rng.integers(-8, 8, (c, 3, 3))
    v = (np.arange(ho * wo).reshape(1, ho, wo, 1) % (dmax + 2)).astype(np.int64)
    d = golden.dilation_from_map(v[..., 0], dmax)
    assert set(np.unique(d)) == set(range(1, dmax + 1))
    oy, ox = np.meshgrid(np.arange(ho) * stride, np.arange(wo) * stride, indexing="ij")
    assert ((oy - d[0]) < 0).any() and ((oy + d[0]) >= h).any() and ((ox - d[0]) < 0).any() and ((ox + d[0]) >= w).any()
    got = deform_dw3x3_square(nchw(x), torch.from_numpy(wt).to(F64), nchw(v), None, stride, dmax)
    assert np.array_equal(nhwc_int(got), golden.deform_dw3x3(x, wt, d, stride))
    # the per-pixel dilation matters: ignoring it (d = 1 everywhere) gives another result
    assert not np.array_equal(nhwc_int(got), golden.deform_dw3x3(x, wt, np.ones_like(d), stride))


@pytest.mark.parametrize("stride", [1, 2])
def test_unit_dilation_and_zero_offsets_are_depthwise_conv(stride):
    rng = np.random.default_rng(10 + stride)
    x = rng.integers(-128, 128, (2, 7, 6, 4))
    w = rng.integers(-8, 8, (4, 3, 3))
    ref = golden.conv2d(x, w[..., None], None, stride, 1, groups=4)
    ho, wo = out_hw(7, 6, stride)
    wt = torch.from_numpy(w).to(F64)
    assert np.array_equal(nhwc_int(deform_dw3x3_square(nchw(x), wt, torch.zeros(2, 1, ho, wo, dtype=F64), None, stride)), ref)
    assert np.array_equal(nhwc_int(deform_dw3x3_bounded(nchw(x), wt, torch.zeros(2, 18, ho, wo, dtype=F64), None, stride)), ref)
    assert np.array_equal(nhwc_int(deform_dw3x3("dw", nchw(x), wt, None, None, stride)), ref)


def test_fractional_codes_round_half_up():
    """Float-model dilation maps round like the contract: 0.5 -> 1 (d = 2), 0.49 -> 0 (d = 1)."""
    d = deform.dilation_from_map(torch.tensor([0.0, 0.49, 0.5, 1.5, 2.5, 100.0]), 3)
    assert d.tolist() == [1, 1, 2, 3, 3, 3]


def _grid_sample_reference(x: torch.Tensor, w: torch.Tensor, off: torch.Tensor, stride: int) -> torch.Tensor:
    """Depthwise DCNv1 through F.grid_sample (zero padding, align_corners=True): independent of deform.py."""
    n, c, h, wd = x.shape
    ho, wo = off.shape[2:]
    oy = (torch.arange(ho, dtype=F64) * stride).view(1, ho, 1)
    ox = (torch.arange(wo, dtype=F64) * stride).view(1, 1, wo)
    out = torch.zeros(n, c, ho, wo, dtype=F64)
    for t in range(9):
        py = oy + t // 3 - 1 + off[:, 2 * t]
        px = ox + t % 3 - 1 + off[:, 2 * t + 1]
        grid = torch.stack([2 * px / (wd - 1) - 1, 2 * py / (h - 1) - 1], dim=-1)
        out += F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True) * w[:, t // 3, t % 3].view(1, c, 1, 1)
    return out


@pytest.mark.parametrize("stride", [1, 2])
def test_bilinear_matches_grid_sample(stride):
    g = torch.Generator().manual_seed(stride)
    x = torch.randn(2, 3, 8, 9, generator=g, dtype=F64)
    w = torch.randn(3, 3, 3, generator=g, dtype=F64)
    ho, wo = out_hw(8, 9, stride)
    off = torch.randn(2, 18, ho, wo, generator=g, dtype=F64) * 3  # reaches past every edge
    got = deform_dw3x3_bilinear(x, w, off, None, stride)
    torch.testing.assert_close(got, _grid_sample_reference(x, w, off, stride), rtol=1e-12, atol=1e-12)


def test_bilinear_with_integer_offsets_is_bounded():
    g = torch.Generator().manual_seed(3)
    x = torch.randint(-50, 50, (1, 2, 6, 6), generator=g).to(F64)
    w = torch.randint(-8, 8, (2, 3, 3), generator=g).to(F64)
    off = torch.randint(-2, 3, (1, 18, 6, 6), generator=g).to(F64)
    assert torch.equal(deform_dw3x3_bilinear(x, w, off), deform_dw3x3_bounded(x, w, off, max_offset=2))


# --------------------------------------------------------------------------- straight-through gradients


@pytest.mark.parametrize("stride", [1, 2])
def test_square_ste_forward_is_exact_and_gradient_is_the_integer_secant(stride):
    """With v requiring grad the value is still the integer op; d(out)/dv is out(lo + 1) - out(lo), lo = floor(d_c).

    The reference is independent of the sampler: F.conv2d with each uniform dilation 1..D,
    picked per pixel.
    """
    g = torch.Generator().manual_seed(4)
    c, h, dmax = 3, 13, 4
    x = torch.randint(-100, 100, (2, c, h, h), generator=g).to(F64)
    w = torch.randint(-8, 8, (c, 3, 3), generator=g).to(F64)
    ho = (h - 1) // stride + 1
    # away from the integers (where floor jumps) and from the clamp's ends
    v = torch.rand(2, 1, ho, ho, generator=g, dtype=F64) * 4.6 - 0.8
    v = torch.where((v - torch.round(v)).abs() < 0.05, v + 0.1, v).requires_grad_()
    out = deform_dw3x3_square(x, w, v, None, stride, dmax)
    assert torch.equal(out, deform_dw3x3_square(x, w, v.detach(), None, stride, dmax))
    cot = torch.randn(out.shape, generator=g, dtype=F64)
    (gv,) = torch.autograd.grad(out, v, cot)

    by_d = torch.stack([F.conv2d(x, w.view(c, 1, 3, 3), None, stride, d, d, c) for d in range(1, dmax + 2)])  # d = 1..D+1
    vd = v.detach()[:, 0]
    lo = (1 + torch.clamp(vd, 0, dmax - 1)).floor().long().clamp(max=dmax - 1)  # d_c = D has slope D - (D-1)
    n_i, y_i, x_i = torch.meshgrid(torch.arange(2), torch.arange(ho), torch.arange(ho), indexing="ij")
    pick = lambda d: by_d[d - 1, n_i, :, y_i, x_i].permute(0, 3, 1, 2)  # noqa: E731
    slope = pick(lo + 1) - pick(lo)
    inside = ((vd > 0) & (vd < dmax - 1)).unsqueeze(1).to(F64)  # clamp stops the gradient outside
    ref = (cot * slope).sum(1, keepdim=True) * inside
    torch.testing.assert_close(gv, ref)
    assert gv.abs().sum() > 0
    # and the forward is the dilated conv at the rounded dilation
    d = 1 + torch.clamp(torch.floor(vd + 0.5), 0, dmax - 1).long()
    torch.testing.assert_close(out, pick(d))


def test_bounded_ste_gradient_is_bilinear():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 7, 7, generator=g, dtype=F64)
    w = torch.randn(2, 3, 3, generator=g, dtype=F64)
    off = (torch.randn(1, 18, 7, 7, generator=g, dtype=F64) * 2).requires_grad_()
    out = deform_dw3x3_bounded(x, w, off, None, 1, 2)
    assert torch.equal(out, deform_dw3x3_bounded(x, w, off.detach(), None, 1, 2))
    cot = torch.randn(out.shape, generator=g, dtype=F64)
    (got,) = torch.autograd.grad(out, off, cot)
    off2 = off.detach().clone().requires_grad_()
    (ref,) = torch.autograd.grad(deform_dw3x3_bilinear(x, w, torch.clamp(off2, -2, 2)), off2, cot)
    torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("kind", ["full", "bounded", "square"])
def test_gradients_reach_the_offset_conv(kind):
    torch.manual_seed(6)
    x = torch.randn(2, 4, 8, 8)
    offset = torch.nn.Conv2d(4, side_channels(kind), 1)
    torch.nn.init.normal_(offset.weight, std=0.5)
    torch.nn.init.constant_(offset.bias, 1.3)
    layer = DeformConv3x3(4, kind, max_dilation=4, max_offset=2)
    side = torch.relu(offset(x)) if kind == "square" else offset(x)
    layer(x, side).square().sum().backward()
    assert offset.weight.grad is not None and offset.weight.grad.abs().sum() > 0
    assert layer.weight.grad.abs().sum() > 0


def test_bad_shapes_are_refused():
    x = torch.zeros(1, 2, 5, 5)
    with pytest.raises(ValueError, match="dilation map"):
        deform_dw3x3_square(x, torch.zeros(2, 3, 3), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="offsets"):
        deform_dw3x3_bounded(x, torch.zeros(2, 3, 3), torch.zeros(1, 9, 5, 5))
    with pytest.raises(ValueError, match="weight"):
        deform_dw3x3_square(x, torch.zeros(3, 3, 3), torch.zeros(1, 1, 5, 5))
    with pytest.raises(ValueError, match="unknown deform kind"):
        deform_dw3x3("circle", x, torch.zeros(2, 3, 3), None)
    with pytest.raises(ValueError):
        DeformConv3x3(2, "dw")
