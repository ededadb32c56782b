"""Golden integer executor (codenet.sw.golden) checked against independent PyTorch float64.

Every tensor here is integer valued and every intermediate stays far below 2**53, so the
float64 PyTorch reference is exact and all comparisons are exact equality.  The golden
module is only ever the system under test; expectations come from torch, from exact Python
integers/fractions, from naive loops, or from values worked out by hand.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from codenet.sw import golden

F64 = torch.float64
HYP = settings(max_examples=40, deadline=None)


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module", autouse=True)
def _single_torch_thread():
    """Tiny tensors: one intra-op thread avoids oversubscription on small/shared CI boxes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def nchw(x: np.ndarray) -> torch.Tensor:
    """NHWC integer numpy -> NCHW float64 torch (exact for |v| < 2**53)."""
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).permute(0, 3, 1, 2)


def nhwc(t: torch.Tensor) -> np.ndarray:
    """NCHW float64 torch -> NHWC float64 numpy."""
    return t.permute(0, 2, 3, 1).contiguous().numpy()


def assert_exact(got, expected, dtype=None) -> None:
    """Exact comparison of a golden output with a float64 reference; optional dtype check."""
    expected = np.asarray(expected, dtype=np.float64)
    assert isinstance(got, np.ndarray), f"golden returned {type(got).__name__}, not ndarray"
    # The reference itself must be integer valued, otherwise the oracle is broken.
    assert np.array_equal(expected, np.round(expected)), "reference is not integer valued"
    assert got.shape == expected.shape, f"shape {got.shape} != expected {expected.shape}"
    if dtype is not None:
        assert got.dtype == np.dtype(dtype), f"dtype {got.dtype} != expected {np.dtype(dtype)}"
    assert np.issubdtype(got.dtype, np.integer), f"non-integer dtype {got.dtype}"
    exp_i = expected.astype(np.int64)
    got_i = got.astype(np.int64)
    if not np.array_equal(got_i, exp_i):
        bad = np.argwhere(got_i != exp_i)
        first = tuple(int(v) for v in bad[0])
        raise AssertionError(f"{len(bad)} of {got.size} elements differ; first at {first}: golden={got_i[first]} expected={exp_i[first]}")


def rand_act(rng: np.random.Generator, shape, signed: bool) -> np.ndarray:
    """uint8 0..255 or int8 -128..127 activation tensor."""
    if signed:
        return rng.integers(-128, 128, size=shape).astype(np.int8)
    return rng.integers(0, 256, size=shape).astype(np.uint8)


def rand_weight(rng: np.random.Generator, shape, bits: int) -> np.ndarray:
    """Signed `bits`-bit weights stored as int8."""
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1)
    return rng.integers(lo, hi, size=shape).astype(np.int8)


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


# --------------------------------------------------------------------------- conv2d


def ref_conv2d(x, w, bias, stride, padding, groups):
    """torch conv2d in float64 on NCHW, weights (OC,KH,KW,Cg) -> (OC,Cg,KH,KW)."""
    wt = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float64)).permute(0, 3, 1, 2)
    bt = None if bias is None else torch.from_numpy(np.asarray(bias, dtype=np.float64))
    y = F.conv2d(nchw(x), wt, bt, stride=pair(stride), padding=pair(padding), groups=groups)
    return nhwc(y)


GROUP_KINDS = ("dense", "g2", "dw", "dw_x2")


def make_conv_case(rng, *, kernel, stride, padding, gkind, signed, wbits, with_bias, n=None):
    """Random conv problem with a valid shape for the requested configuration."""
    kh, kw = pair(kernel)
    ph, pw = pair(padding)
    n = int(rng.integers(1, 3)) if n is None else n
    if gkind == "dense":
        c, oc, groups = int(rng.integers(1, 17)), int(rng.integers(1, 17)), 1
    elif gkind == "g2":
        c, oc, groups = 2 * int(rng.integers(1, 9)), 2 * int(rng.integers(1, 9)), 2
    elif gkind == "dw":
        c = int(rng.integers(1, 17))
        oc, groups = c, c
    elif gkind == "dw_x2":
        c = int(rng.integers(1, 9))
        oc, groups = 2 * c, c
    else:  # pragma: no cover - programming error in the test itself
        raise AssertionError(gkind)
    h = int(rng.integers(max(1, kh - 2 * ph), 21))
    wd = int(rng.integers(max(1, kw - 2 * pw), 21))
    x = rand_act(rng, (n, h, wd, c), signed)
    w = rand_weight(rng, (oc, kh, kw, c // groups), wbits)
    bias = rng.integers(-(2**20), 2**20 + 1, size=oc).astype(np.int32) if with_bias else None
    return x, w, bias, groups


def check_conv(x, w, bias, stride, padding, groups):
    """Run golden.conv2d, verify it left its inputs alone and matches torch exactly."""
    x0, w0 = x.copy(), w.copy()
    b0 = None if bias is None else bias.copy()
    got = golden.conv2d(x, w, bias=bias, stride=stride, padding=padding, groups=groups)
    assert np.array_equal(x, x0) and np.array_equal(w, w0), "conv2d mutated its inputs"
    if bias is not None:
        assert np.array_equal(bias, b0), "conv2d mutated bias"
    exp = ref_conv2d(x, w, bias, stride, padding, groups)
    n, h, wd, _ = x.shape
    oc, kh, kw, _ = w.shape
    (sh, sw), (ph, pw) = pair(stride), pair(padding)
    assert exp.shape == (n, (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1, oc)
    assert_exact(got, exp, np.int64)


KERNELS = [(1, 1), (3, 3), (5, 5), (1, 3), (3, 1), (2, 5)]


@pytest.mark.parametrize("stride", [1, 2, 3, 4])
@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: f"k{k[0]}x{k[1]}")
def test_conv2d_kernel_stride_grid(kernel, stride):
    """Every kernel shape x stride, padding 0..2, random groups/dtypes (seeded)."""
    rng = np.random.default_rng(1000 + 10 * KERNELS.index(kernel) + stride)
    for padding in (0, 1, 2):
        for _ in range(2):
            x, w, bias, groups = make_conv_case(
                rng,
                kernel=kernel,
                stride=stride,
                padding=padding,
                gkind=GROUP_KINDS[int(rng.integers(4))],
                signed=bool(rng.integers(2)),
                wbits=int(rng.choice([4, 8])),
                with_bias=bool(rng.integers(2)),
            )
            check_conv(x, w, bias, stride, padding, groups)


GROUP_CASES = list(itertools.product(GROUP_KINDS, (False, True), (4, 8), (False, True)))


@pytest.mark.parametrize(("gkind", "signed", "wbits", "with_bias"), GROUP_CASES)
def test_conv2d_groups_dtypes_bias(gkind, signed, wbits, with_bias):
    """Every grouping x input signedness x weight width x bias, random geometry."""
    rng = np.random.default_rng(1500 + GROUP_CASES.index((gkind, signed, wbits, with_bias)))
    for _ in range(3):
        kernel = KERNELS[int(rng.integers(len(KERNELS)))]
        stride, padding = int(rng.integers(1, 5)), int(rng.integers(0, 3))
        x, w, bias, groups = make_conv_case(
            rng,
            kernel=kernel,
            stride=stride,
            padding=padding,
            gkind=gkind,
            signed=signed,
            wbits=wbits,
            with_bias=with_bias,
        )
        check_conv(x, w, bias, stride, padding, groups)


@pytest.mark.parametrize("seed", range(40))
def test_conv2d_seeded_sweep(seed):
    """Fully random configuration per seed, including (h, w) tuple stride/padding."""
    rng = np.random.default_rng(seed)
    kernel = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
    stride = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    padding = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
    if seed % 2:  # odd seeds: scalar stride / padding arguments
        stride, padding = stride[0], padding[0]
    x, w, bias, groups = make_conv_case(
        rng,
        kernel=kernel,
        stride=stride,
        padding=padding,
        gkind=GROUP_KINDS[seed % 4],
        signed=bool(rng.integers(2)),
        wbits=int(rng.choice([4, 8])),
        with_bias=bool(rng.integers(2)),
    )
    check_conv(x, w, bias, stride, padding, groups)


def test_conv2d_extreme_values_do_not_wrap():
    """All-255 uint8 input x all -128 weights: products must not wrap in 8/16/32 bits."""
    x = np.full((1, 6, 6, 16), 255, np.uint8)
    w = np.full((16, 5, 5, 16), -128, np.int8)
    bias = np.full(16, -(2**20), np.int32)
    got = golden.conv2d(x, w, bias=bias)
    expected = 255 * -128 * 5 * 5 * 16 - 2**20  # hand computed, every output identical
    assert_exact(got, np.full((1, 2, 2, 16), expected), np.int64)
    x8 = np.full((1, 3, 3, 4), -128, np.int8)
    w8 = np.full((4, 3, 3, 4), -128, np.int8)
    assert_exact(golden.conv2d(x8, w8), np.full((1, 1, 1, 4), 128 * 128 * 36), np.int64)


@pytest.mark.parametrize("kernel", [(1, 1), (3, 3), (5, 5)], ids=lambda k: f"k{k[0]}x{k[1]}")
@pytest.mark.parametrize("seed", range(3))
def test_conv2d_large_accumulators_exact(seed, kernel):
    """Dense conv with many input channels and near-extreme same-sign values.

    Accumulators exceed 2**24 (still inside int32 and exact in float64) with non-round
    values, so a float32 (24-bit mantissa) or narrow-product shortcut fails.
    """
    rng = np.random.default_rng(1700 + seed)
    c = 768 if kernel == (1, 1) else 128
    x = rng.integers(200, 256, size=(1, 6, 6, c)).astype(np.uint8)
    w = rng.integers(100, 128, size=(4, *kernel, c)).astype(np.int8)
    w[1] = -w[1]  # one large negative channel
    bias = rng.integers(-(2**20), 2**20, size=4).astype(np.int32)
    exp = ref_conv2d(x, w, bias, 1, 1, 1)
    assert np.abs(exp).max() > 2**24  # the case really is large
    assert_exact(golden.conv2d(x, w, bias=bias, padding=1), exp, np.int64)


def test_conv2d_out_of_contract_int64_exact():
    """Beyond the int32 contract golden promises exact int64 (no float64 rounding past 2**53).

    Reference: exact Python-int loop (float64 torch cannot represent these sums).
    """
    rng = np.random.default_rng(1800)
    x = rng.integers(2**30, 2**31, size=(1, 3, 4, 6), dtype=np.int64)
    w = rng.integers(2**19, 2**20, size=(2, 3, 3, 6), dtype=np.int64)
    got = golden.conv2d(x, w, padding=1)
    exp = np.zeros((1, 3, 4, 2), dtype=object)
    xl, wl = x.tolist(), w.tolist()
    for y in range(3):
        for xx in range(4):
            for o in range(2):
                tot = 0
                for i in range(3):
                    for j in range(3):
                        sy, sx = y + i - 1, xx + j - 1
                        if 0 <= sy < 3 and 0 <= sx < 4:
                            tot += sum(a * b for a, b in zip(xl[0][sy][sx], wl[o][i][j]))
                exp[0, y, xx, o] = tot
    assert max(abs(v) for v in exp.ravel()) > 2**53
    assert got.dtype == np.int64 and got.shape == exp.shape
    assert got.tolist() == exp.tolist()


def test_conv2d_hand_computed():
    """Tiny case worked out by hand: stride 2, padding 1, 3x3 all-ones kernel."""
    x = np.arange(1, 17, dtype=np.uint8).reshape(1, 4, 4, 1)
    w = np.ones((1, 3, 3, 1), np.int8)
    # Windows centred on (0,0), (0,2), (2,0), (2,2) of [[1..4],[5..8],[9..12],[13..16]].
    expected = np.array(
        [1 + 2 + 5 + 6, 2 + 3 + 4 + 6 + 7 + 8, 5 + 6 + 9 + 10 + 13 + 14, sum(range(1, 17)) - (1 + 2 + 3 + 4 + 5 + 9 + 13)]
    ).reshape(1, 2, 2, 1)
    assert np.array_equal(ref_conv2d(x, w, None, 2, 1, 1), expected)  # oracle sanity
    assert_exact(golden.conv2d(x, w, stride=2, padding=1), expected, np.int64)


@st.composite
def conv_problems(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    gkind = draw(st.sampled_from(GROUP_KINDS))
    signed = draw(st.booleans())
    wbits = draw(st.sampled_from([4, 8]))
    with_bias = draw(st.booleans())
    rng = np.random.default_rng(seed)
    x, w, bias, groups = make_conv_case(
        rng,
        kernel=kernel,
        stride=stride,
        padding=padding,
        gkind=gkind,
        signed=signed,
        wbits=wbits,
        with_bias=with_bias,
    )
    return x, w, bias, stride, padding, groups


@HYP
@given(conv_problems())
def test_conv2d_hypothesis(problem):
    """Random shapes/configs via hypothesis; exact match with torch."""
    x, w, bias, stride, padding, groups = problem
    check_conv(x, w, bias, stride, padding, groups)


# --------------------------------------------------------------------------- deform_dw3x3 (dilation)


def ref_dw3x3_dilated(x, w, dilation, stride):
    """Per-pixel dilation via one torch dilated depthwise conv per distinct d, then masking."""
    n, h, wd, c = x.shape
    ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
    xt = nchw(x)
    wt = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float64))[:, None]  # (C,1,3,3)
    out = torch.zeros((n, c, ho, wo), dtype=F64)
    for d in np.unique(dilation):
        d = int(d)
        y = F.conv2d(xt, wt, stride=stride, padding=d, dilation=d, groups=c)
        assert tuple(y.shape[2:]) == (ho, wo)
        mask = torch.from_numpy(np.asarray(dilation) == d)[:, None]
        out = torch.where(mask, y, out)
    return nhwc(out)


def make_dw_case(rng, h, wd, stride, dmax, n=None, c=None, signed=None, wbits=None):
    n = int(rng.integers(1, 3)) if n is None else n
    c = int(rng.integers(1, 17)) if c is None else c
    signed = bool(rng.integers(2)) if signed is None else signed
    wbits = int(rng.choice([4, 8])) if wbits is None else wbits
    x = rand_act(rng, (n, h, wd, c), signed)
    w = rand_weight(rng, (c, 3, 3), wbits)
    ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
    dil = rng.integers(1, dmax + 1, size=(n, ho, wo))
    return x, w, dil


def check_dw_dilated(x, w, dil, stride):
    x0, w0, d0 = x.copy(), w.copy(), dil.copy()
    got = golden.deform_dw3x3(x, w, dil, stride=stride)
    assert np.array_equal(x, x0) and np.array_equal(w, w0) and np.array_equal(dil, d0)
    assert_exact(got, ref_dw3x3_dilated(x, w, dil, stride), np.int64)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("seed", range(30))
def test_deform_dw3x3_seeded_sweep(seed, stride):
    """Random per-pixel dilation 1..8 on odd/even/degenerate image sizes."""
    rng = np.random.default_rng(seed)
    sizes = [1, 2, 3, 4, 5, 7, 8, 11, 16, 17, 20]
    h = sizes[seed % len(sizes)]
    wd = int(rng.choice(sizes))
    x, w, dil = make_dw_case(rng, h, wd, stride, dmax=8)
    check_dw_dilated(x, w, dil.astype(np.int32 if seed % 3 == 0 else np.int64), stride)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("seed", range(6))
def test_deform_dw3x3_dilation_larger_than_image(seed, stride):
    """Dilations beyond the image extent: off-centre taps fall off every edge."""
    rng = np.random.default_rng(500 + seed)
    h, wd = int(rng.integers(1, 8)), int(rng.integers(1, 8))
    x, w, dil = make_dw_case(rng, h, wd, stride, dmax=1)
    dil = rng.choice([1, 2, max(h, wd), max(h, wd) + 1, 25, 64], size=dil.shape)
    check_dw_dilated(x, w, dil, stride)
    # With every dilation >= image size only the centre tap can hit the image.
    big = np.full_like(dil, max(h, wd) + 3)
    centre = x[:, ::stride, ::stride, :].astype(np.int64) * w[:, 1, 1].astype(np.int64)
    assert_exact(golden.deform_dw3x3(x, w, big, stride=stride), centre, np.int64)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("seed", range(8))
def test_deform_dw3x3_all_ones_is_plain_depthwise(seed, stride):
    """dilation == 1 everywhere is an ordinary padding-1 depthwise 3x3 conv (torch)."""
    rng = np.random.default_rng(700 + seed)
    h, wd = int(rng.integers(1, 21)), int(rng.integers(1, 21))
    x, w, dil = make_dw_case(rng, h, wd, stride, dmax=1)
    c = x.shape[3]
    wt = torch.from_numpy(w.astype(np.float64))[:, None]
    exp = nhwc(F.conv2d(nchw(x), wt, stride=stride, padding=1, groups=c))
    assert_exact(golden.deform_dw3x3(x, w, np.ones_like(dil), stride=stride), exp, np.int64)


def test_deform_dw3x3_hand_computed():
    """3x3 image 1..9, all-ones kernel: d=1 at centre sums all 9, d=2 sees only the centre."""
    x = np.arange(1, 10, dtype=np.uint8).reshape(1, 3, 3, 1)
    w = np.ones((1, 3, 3), np.int8)
    dil = np.array([[[1, 1, 1], [1, 2, 1], [1, 1, 3]]])
    expected = np.array([[12, 21, 16], [27, 5, 33], [24, 39, 9]]).reshape(1, 3, 3, 1)
    # pixel (1,1) d=2 -> only 5; pixel (2,2) d=3 -> only 9; others are plain 3x3 sums.
    assert np.array_equal(ref_dw3x3_dilated(x, w, dil, 1), expected)  # oracle sanity
    assert_exact(golden.deform_dw3x3(x, w, dil, stride=1), expected, np.int64)


def test_deform_dw3x3_extreme_values_do_not_wrap():
    """uint8 255 x int8 -128 over 9 taps must be accumulated in a wide type."""
    x = np.full((1, 4, 4, 3), 255, np.uint8)
    w = np.full((3, 3, 3), -128, np.int8)
    dil = np.ones((1, 4, 4), np.int64)
    got = golden.deform_dw3x3(x, w, dil)
    assert got[0, 1, 1, 0] == 9 * 255 * -128 and got[0, 0, 0, 0] == 4 * 255 * -128
    assert_exact(got, ref_dw3x3_dilated(x, w, dil, 1), np.int64)


@pytest.mark.parametrize("bad", [0, -1, -5])
def test_deform_dw3x3_rejects_dilation_below_one(bad):
    """A dilation < 1 is meaningless and must raise ValueError."""
    rng = np.random.default_rng(9)
    x, w, dil = make_dw_case(rng, 6, 5, 1, dmax=3, n=1)
    dil = dil.copy()
    dil[0, 2, 3] = bad
    with pytest.raises(ValueError):
        golden.deform_dw3x3(x, w, dil)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("which", ["no_batch", "batch_1", "h_plus_1", "w_minus_1", "swapped", "extra_axis"])
def test_deform_dw3x3_rejects_wrong_dilation_shape(which, stride):
    """A dilation map whose shape is not (N, Ho, Wo) must raise ValueError."""
    rng = np.random.default_rng(11)
    x, w, dil = make_dw_case(rng, 7, 5, stride, dmax=3, n=2)
    n, ho, wo = dil.shape
    shape = {
        "no_batch": (ho, wo),
        "batch_1": (1, ho, wo),  # would silently broadcast over the batch of 2
        "h_plus_1": (n, ho + 1, wo),
        "w_minus_1": (n, ho, wo - 1),
        "swapped": (n, wo, ho),
        "extra_axis": (n, ho, wo, 1),
    }[which]
    with pytest.raises(ValueError):
        golden.deform_dw3x3(x, w, np.ones(shape, np.int64), stride=stride)


@st.composite
def dw_problems(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    h, wd = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    stride = draw(st.sampled_from([1, 2]))
    dmax = draw(st.integers(1, 24))
    rng = np.random.default_rng(seed)
    x, w, dil = make_dw_case(rng, h, wd, stride, dmax)
    return x, w, dil, stride


@HYP
@given(dw_problems())
def test_deform_dw3x3_hypothesis(problem):
    """Random shapes and dilation ranges (up to 24, past the image) vs torch."""
    x, w, dil, stride = problem
    check_dw_dilated(x, w, dil, stride)


# --------------------------------------------------------------------------- deform_dw3x3_offsets


def _pow2_plus_1(n: int) -> int:
    """Smallest 2**k + 1 >= max(n, 2): makes align_corners normalisation exact in binary."""
    k = 0
    while 2**k + 1 < max(n, 2):
        k += 1
    return 2**k + 1


def ref_offsets_grid_sample(x, w, offsets, stride, mode):
    """torch grid_sample at integer positions, one call per tap, zeros outside.

    The image is zero-padded on the bottom/right to 2**k + 1 pixels so that the
    align_corners=True normalisation p -> 2p/(size-1) - 1 and back is exact in float64
    (and size-1 >= 1 even for H or W == 1).  Extra zero pixels read as outside-the-image.
    """
    n, h, wd, c = x.shape
    ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
    hp, wp = _pow2_plus_1(h), _pow2_plus_1(wd)
    xt = F.pad(nchw(x), (0, wp - wd, 0, hp - h))
    wt = torch.from_numpy(np.asarray(w, dtype=np.float64))  # (C,3,3)
    off = torch.from_numpy(np.asarray(offsets, dtype=np.float64))
    ys = (torch.arange(ho, dtype=F64) * stride)[None, :, None]
    xs = (torch.arange(wo, dtype=F64) * stride)[None, None, :]
    out = torch.zeros((n, c, ho, wo), dtype=F64)
    for t in range(9):
        i, j = divmod(t, 3)
        py = ys + (i - 1) + off[..., t, 0]
        px = xs + (j - 1) + off[..., t, 1]
        grid = torch.stack([2 * px / (wp - 1) - 1, 2 * py / (hp - 1) - 1], dim=-1)
        s = F.grid_sample(xt, grid, mode=mode, padding_mode="zeros", align_corners=True)
        out += s * wt[:, i, j][None, :, None, None]
    return nhwc(out)


def ref_offsets_loop(x, w, offsets, stride):
    """Straightforward Python-int loop reference (small shapes only)."""
    n, h, wd, c = x.shape
    ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
    xi = x.astype(np.int64)
    wi = w.astype(np.int64)
    out = np.zeros((n, ho, wo, c), np.int64)
    for b in range(n):
        for y in range(ho):
            for xx in range(wo):
                for t in range(9):
                    i, j = divmod(t, 3)
                    sy = y * stride + i - 1 + int(offsets[b, y, xx, t, 0])
                    sx = xx * stride + j - 1 + int(offsets[b, y, xx, t, 1])
                    if 0 <= sy < h and 0 <= sx < wd:
                        out[b, y, xx] += wi[:, i, j] * xi[b, sy, sx]
    return out


def make_offset_case(rng, h, wd, stride, r, n=None, c=None):
    n = int(rng.integers(1, 3)) if n is None else n
    c = int(rng.integers(1, 17)) if c is None else c
    x = rand_act(rng, (n, h, wd, c), bool(rng.integers(2)))
    w = rand_weight(rng, (c, 3, 3), int(rng.choice([4, 8])))
    ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
    off = rng.integers(-r, r + 1, size=(n, ho, wo, 9, 2))
    return x, w, off


def check_offsets(x, w, off, stride, mode="nearest"):
    x0, w0, o0 = x.copy(), w.copy(), off.copy()
    got = golden.deform_dw3x3_offsets(x, w, off, stride=stride)
    assert np.array_equal(x, x0) and np.array_equal(w, w0) and np.array_equal(off, o0)
    assert_exact(got, ref_offsets_grid_sample(x, w, off, stride, mode), np.int64)


def test_offsets_reference_hand_computed():
    """Check the grid_sample oracle itself (both modes) and golden on a hand-worked case."""
    x = np.arange(1, 10, dtype=np.uint8).reshape(1, 3, 3, 1)  # [[1,2,3],[4,5,6],[7,8,9]]
    w = np.arange(1, 10, dtype=np.int8).reshape(1, 3, 3)  # tap t has weight t+1
    off = np.zeros((1, 3, 3, 9, 2), np.int64)
    # Output (1,1): every tap is pulled onto pixel (0,0) -> 1 * (1+..+9) = 45.
    for t in range(9):
        i, j = divmod(t, 3)
        off[0, 1, 1, t] = (-i, -j)
    # Output (0,0): tap 4 (centre, weight 5) moves to (2,2)=9, tap 0 moves off-image (dy=-5).
    off[0, 0, 0, 4] = (2, 2)
    off[0, 0, 0, 0] = (-5, 0)
    # Zero-offset (0,0) taps in-image: t5 (0,1)=2 w6, t7 (1,0)=4 w8, t8 (1,1)=5 w9.
    v00 = 5 * 9 + 6 * 2 + 8 * 4 + 9 * 5
    expected = ref_offsets_loop(x, w, np.zeros_like(off), 1)
    expected[0, 1, 1, 0] = 45
    expected[0, 0, 0, 0] = v00
    assert v00 == 134
    assert np.array_equal(ref_offsets_loop(x, w, off, 1), expected)
    assert expected[0, 2, 2, 0] == 1 * 5 + 2 * 6 + 4 * 8 + 5 * 9  # plain corner, by hand
    for mode in ("nearest", "bilinear"):
        assert np.array_equal(ref_offsets_grid_sample(x, w, off, 1, mode), expected), mode
    assert_exact(golden.deform_dw3x3_offsets(x, w, off, stride=1), expected, np.int64)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("seed", range(24))
def test_offsets_seeded_sweep(seed, stride, mode):
    """Random offsets in [-R, R], R = 1..4, odd/even/degenerate sizes, vs grid_sample."""
    rng = np.random.default_rng(2000 + seed)
    r = 1 + seed % 4
    sizes = [1, 2, 3, 5, 6, 9, 12, 16, 20]
    h, wd = sizes[seed % len(sizes)], int(rng.choice(sizes))
    x, w, off = make_offset_case(rng, h, wd, stride, r)
    check_offsets(x, w, off.astype(np.int32 if seed % 2 else np.int64), stride, mode)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("seed", range(8))
def test_offsets_leave_image(seed, stride):
    """Large offsets (up to +-40) send many taps far outside every edge."""
    rng = np.random.default_rng(3000 + seed)
    h, wd = int(rng.integers(1, 12)), int(rng.integers(1, 12))
    x, w, off = make_offset_case(rng, h, wd, stride, 40)
    check_offsets(x, w, off, stride, "nearest")
    assert np.array_equal(golden.deform_dw3x3_offsets(x, w, off, stride=stride), ref_offsets_loop(x, w, off, stride))


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("seed", range(8))
def test_offsets_zero_is_plain_depthwise(seed, stride):
    """All-zero offsets equal a torch padding-1 depthwise 3x3 conv."""
    rng = np.random.default_rng(4000 + seed)
    h, wd = int(rng.integers(1, 21)), int(rng.integers(1, 21))
    x, w, off = make_offset_case(rng, h, wd, stride, 0)
    assert not off.any()
    wt = torch.from_numpy(w.astype(np.float64))[:, None]
    exp = nhwc(F.conv2d(nchw(x), wt, stride=stride, padding=1, groups=x.shape[3]))
    assert_exact(golden.deform_dw3x3_offsets(x, w, off, stride=stride), exp, np.int64)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("seed", range(4))
def test_offsets_emulate_dilation(seed, stride):
    """Offsets (i-1)(d-1), (j-1)(d-1) reproduce a dilated conv (torch, dilation d)."""
    rng = np.random.default_rng(5000 + seed)
    h, wd = int(rng.integers(1, 16)), int(rng.integers(1, 16))
    d = int(rng.integers(1, 6))
    x, w, off = make_offset_case(rng, h, wd, stride, 0)
    for t in range(9):
        i, j = divmod(t, 3)
        off[..., t, 0] = (i - 1) * (d - 1)
        off[..., t, 1] = (j - 1) * (d - 1)
    wt = torch.from_numpy(w.astype(np.float64))[:, None]
    exp = nhwc(F.conv2d(nchw(x), wt, stride=stride, padding=d, dilation=d, groups=x.shape[3]))
    assert_exact(golden.deform_dw3x3_offsets(x, w, off, stride=stride), exp, np.int64)


@st.composite
def offset_problems(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    h, wd = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    stride = draw(st.sampled_from([1, 2]))
    r = draw(st.sampled_from([0, 1, 2, 3, 4, 12]))
    rng = np.random.default_rng(seed)
    x, w, off = make_offset_case(rng, h, wd, stride, r, c=int(rng.integers(1, 6)))
    return x, w, off, stride


@HYP
@given(offset_problems())
def test_offsets_hypothesis_vs_loop(problem):
    """Random shapes/offset ranges vs the naive Python loop reference."""
    x, w, off, stride = problem
    assert_exact(
        golden.deform_dw3x3_offsets(x, w, off, stride=stride),
        ref_offsets_loop(x, w, off, stride),
        np.int64,
    )


# --------------------------------------------------------------------------- requantize


def ref_requant_torch(acc, mult, shift, relu):
    """floor(acc*M / 2**S + 1/2), clamped; exact in float64 since |acc*M| < 2**47."""
    a = torch.from_numpy(np.asarray(acc, dtype=np.float64))
    m = torch.from_numpy(np.asarray(mult, dtype=np.float64))
    y = torch.floor(a * m / 2.0**shift + 0.5)
    lo, hi = (0, 255) if relu else (-128, 127)
    return torch.clamp(y, lo, hi).numpy()


def ref_requant_scalar(a: int, m: int, s: int, relu: bool) -> int:
    """Exact rational rounding half up with Python ints / Fractions."""
    v = math.floor(Fraction(a * m, 2**s) + Fraction(1, 2))
    lo, hi = (0, 255) if relu else (-128, 127)
    return min(max(v, lo), hi)


def check_requant(acc, mult, shift, relu):
    a0, m0 = acc.copy(), mult.copy()
    got = golden.requantize(acc, mult, shift, relu)
    assert np.array_equal(acc, a0) and np.array_equal(mult, m0), "requantize mutated inputs"
    assert_exact(got, ref_requant_torch(acc, mult, shift, relu), np.uint8 if relu else np.int8)
    return got


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("seed", range(40))
def test_requantize_seeded_sweep(seed, relu):
    """Random M, S with acc scaled so outputs land mostly in range, plus saturation."""
    rng = np.random.default_rng(6000 + seed)
    shape = [(7,), (3, 5), (2, 4, 3, 6), (1, 1, 1, 16)][seed % 4]
    c = shape[-1]
    shift = int(rng.integers(0, 48))
    mult = rng.integers(0, 2**16, size=c)
    mult[rng.integers(c)] = int(rng.choice([0, 1, 2**16 - 1]))
    # Target range of acc*M/2**S about +-400 (covers rounding and both clamps).
    span = max(1, min(2**31 - 1, int(400 * 2**shift / max(1, int(mult.max())))))
    acc = rng.integers(-span, span + 1, size=shape)
    acc.flat[0] = 2**31 - 1
    acc.flat[-1] = -(2**31)
    acc_dtype = [np.int64, np.int32][seed % 2]
    mult_dtype = [np.int64, np.int32, np.uint16, np.int64][seed % 4]
    check_requant(acc.astype(acc_dtype), mult.astype(mult_dtype), shift, relu)


@pytest.mark.parametrize("shift", list(range(1, 48)))
def test_requantize_ties_round_up(shift):
    """Exact .5 results round toward +inf for every shift (negative ties too)."""
    rows = []
    m_exp = min(shift - 1, 15)
    a_exp = shift - 1 - m_exp
    mult = 2**m_exp
    for k in (-4, -3, -2, -1, 0, 1, 2, 3):  # value = (2k+1)/2
        a = (2 * k + 1) * 2**a_exp
        if -(2**31) <= a < 2**31:
            rows.append(a)
    if a_exp >= 31:  # shift 47: only -2**31 * 2**15 = -2**46 -> -0.5 is representable
        rows.append(-(2**31))
    acc = np.array(rows, np.int64).reshape(-1, 1)
    for relu in (False, True):
        got = golden.requantize(acc, np.array([mult]), shift, relu)
        exp = [[ref_requant_scalar(int(a), mult, shift, relu)] for a in acc[:, 0]]
        assert_exact(got, exp, np.uint8 if relu else np.int8)


@pytest.mark.parametrize(
    ("acc", "mult", "shift", "relu", "expected"),
    [
        (-5, 1, 1, False, -2),  # -2.5 -> -2
        (5, 1, 1, False, 3),  # 2.5 -> 3
        (-3, 1, 1, False, -1),  # -1.5 -> -1
        (-1, 1, 1, False, 0),  # -0.5 -> 0
        (1, 1, 1, False, 1),  # 0.5 -> 1
        (-7, 3, 2, False, -5),  # -21/4 = -5.25 -> -5
        (-9, 3, 2, False, -7),  # -27/4 = -6.75 -> -7
        (10, 3, 2, False, 8),  # 30/4 = 7.5 -> 8
        (-10, 3, 2, False, -7),  # -7.5 -> -7
        (-10, 3, 2, True, 0),  # relu clamps negatives to 0
        (1000, 7, 5, False, 127),  # 218.75 saturates int8
        (1000, 7, 5, True, 219),  # 218.75 -> 219 must not wrap in uint8
        (-1000, 7, 5, False, -128),
        (300, 1, 0, True, 255),  # S == 0: no rounding term, plain clamp
        (-129, 1, 0, False, -128),
        (-128, 1, 0, False, -128),
        (127, 1, 0, False, 127),
        (255, 1, 0, True, 255),
        (3, 5, 0, False, 15),
        (2**31 - 1, 2**16 - 1, 47, False, 1),  # (2**47 - ...)/2**47 ~ 0.99998 -> 1
        (-(2**31), 2**16 - 1, 47, False, -1),  # ~ -0.99998 -> -1
        (-(2**31), 2**15, 47, False, 0),  # exactly -0.5 -> 0
        (2**30, 2**15, 46, False, 1),  # exactly 0.5 -> 1
        (2**31 - 1, 2**16 - 1, 0, True, 255),
        (-(2**31), 2**16 - 1, 0, False, -128),
        (2**31 - 1, 0, 0, False, 0),  # M == 0
        (-(2**31), 2**16 - 1, 30, False, -128),  # ~ -131070 saturates
        (2**31 - 1, 2**16 - 1, 39, True, 255),  # ~ 255.99 -> 256 -> 255
        (2**31 - 1, 2**16 - 1, 40, True, 128),  # ~ 127.998 -> 128, fits uint8
        (2**31 - 1, 2**16 - 1, 40, False, 127),
    ],
)
def test_requantize_hand_table(acc, mult, shift, relu, expected):
    """Hand-computed values: ties, S == 0, saturation, the int32 x uint16 extremes."""
    assert ref_requant_scalar(acc, mult, shift, relu) == expected  # oracle sanity
    for acc_dtype in (np.int64, np.int32):
        got = golden.requantize(np.array([acc], acc_dtype), np.array([mult]), shift, relu)
        assert_exact(got, [expected], np.uint8 if relu else np.int8)


def test_requantize_per_channel_broadcast():
    """mult broadcasts over the LAST axis only (channels), on an NHWC tensor."""
    acc = np.array([[[[10, 10, 10]], [[-10, -10, -10]]]], np.int64)  # (1,2,1,3)
    mult = np.array([1, 2, 3])
    got = golden.requantize(acc, mult, 1, False)
    assert_exact(got, [[[[5, 10, 15]], [[-5, -10, -15]]]], np.int8)


@st.composite
def requant_problems(draw):
    c = draw(st.integers(1, 6))
    rows = draw(st.integers(1, 5))
    shift = draw(st.integers(0, 47))
    relu = draw(st.booleans())
    mult = draw(st.lists(st.integers(0, 2**16 - 1), min_size=c, max_size=c))
    acc = draw(
        st.lists(
            st.lists(st.integers(-(2**31), 2**31 - 1), min_size=c, max_size=c),
            min_size=rows,
            max_size=rows,
        )
    )
    return acc, mult, shift, relu


@HYP
@given(requant_problems())
def test_requantize_hypothesis_vs_fractions(problem):
    """Arbitrary int32 acc, uint16 mult, any shift vs exact Fraction arithmetic."""
    acc, mult, shift, relu = problem
    got = golden.requantize(np.array(acc, np.int64), np.array(mult, np.int64), shift, relu)
    exp = [[ref_requant_scalar(a, m, shift, relu) for a, m in zip(row, mult)] for row in acc]
    assert_exact(got, exp, np.uint8 if relu else np.int8)


# --------------------------------------------------------------------------- maxpool2d


def ref_maxpool(x, k, s, p):
    return nhwc(F.max_pool2d(nchw(x), kernel_size=k, stride=s, padding=p))


@pytest.mark.parametrize(("k", "s", "p"), list(itertools.product([2, 3], [1, 2], [0, 1])))
@pytest.mark.parametrize("seed", range(5))
def test_maxpool2d_grid(seed, k, s, p):
    """Every (k, s, p) combination on uint8, int8 and all-negative int8 inputs."""
    rng = np.random.default_rng(7000 + seed)
    n, c = int(rng.integers(1, 3)), int(rng.integers(1, 17))
    h = int(rng.integers(max(1, k - 2 * p), 21))
    wd = int(rng.integers(max(1, k - 2 * p), 21))
    xs = [
        rand_act(rng, (n, h, wd, c), False),
        rand_act(rng, (n, h, wd, c), True),
        rng.integers(-128, 0, size=(n, h, wd, c)).astype(np.int8),  # padding must never win
    ]
    for x in xs:
        assert_exact(golden.maxpool2d(x, k, stride=s, padding=p), ref_maxpool(x, k, s, p), x.dtype)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_maxpool2d_default_stride_is_kernel(seed, k):
    """stride=None means stride == kernel (floor mode)."""
    rng = np.random.default_rng(7500 + seed)
    x = rand_act(rng, (1, int(rng.integers(k, 15)), int(rng.integers(k, 15)), 5), bool(seed % 2))
    assert_exact(golden.maxpool2d(x, k), ref_maxpool(x, k, k, 0), x.dtype)


def test_maxpool2d_negative_padding_hand():
    """All -100 int8 with padding 1: a zero-padding bug would return 0s, not -100."""
    x = np.full((1, 3, 3, 2), -100, np.int8)
    got = golden.maxpool2d(x, 2, stride=2, padding=1)
    assert_exact(got, np.full((1, 2, 2, 2), -100), np.int8)


@st.composite
def pool_problems(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    k = draw(st.sampled_from([2, 3]))
    s = draw(st.sampled_from([1, 2]))
    p = draw(st.sampled_from([0, 1]))
    h = draw(st.integers(max(1, k - 2 * p), 20))
    wd = draw(st.integers(max(1, k - 2 * p), 20))
    signed = draw(st.booleans())
    rng = np.random.default_rng(seed)
    x = rand_act(rng, (draw(st.integers(1, 2)), h, wd, draw(st.integers(1, 16))), signed)
    return x, k, s, p


@HYP
@given(pool_problems())
def test_maxpool2d_hypothesis(problem):
    x, k, s, p = problem
    assert_exact(golden.maxpool2d(x, k, stride=s, padding=p), ref_maxpool(x, k, s, p), x.dtype)


# --------------------------------------------------------------------------- upsample / shuffle / concat / split


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int64])
@pytest.mark.parametrize("seed", range(8))
def test_upsample_nearest2x(seed, dtype):
    """Nearest 2x upsampling vs F.interpolate, dtype preserved."""
    rng = np.random.default_rng(8000 + seed)
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 21)), int(rng.integers(1, 21)), int(rng.integers(1, 17)))
    info = np.iinfo(dtype)
    x = rng.integers(max(info.min, -(2**40)), min(info.max, 2**40), size=shape).astype(dtype)
    exp = nhwc(F.interpolate(nchw(x), scale_factor=2, mode="nearest"))
    assert_exact(golden.upsample_nearest2x(x), exp, dtype)


def torch_shuffle(x: np.ndarray, g: int) -> np.ndarray:
    t = nchw(x)
    n, c, h, w = t.shape
    return nhwc(t.reshape(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w))


@pytest.mark.parametrize("seed", range(20))
def test_channel_shuffle(seed):
    """ShuffleNet shuffle equals the PyTorch view/transpose/reshape idiom."""
    rng = np.random.default_rng(9000 + seed)
    g = int(rng.choice([1, 2, 3, 4]))
    c = g * int(rng.integers(1, 5))
    x = rand_act(rng, (int(rng.integers(1, 3)), int(rng.integers(1, 9)), int(rng.integers(1, 9)), c), bool(seed % 2))
    assert_exact(golden.channel_shuffle(x, g), torch_shuffle(x, g), x.dtype)


def test_channel_shuffle_hand():
    """C=6, g=2: channel order [0,3,1,4,2,5]; g=3: [0,2,4,1,3,5]."""
    x = np.arange(6, dtype=np.uint8).reshape(1, 1, 1, 6)
    assert_exact(golden.channel_shuffle(x, 2), [[[[0, 3, 1, 4, 2, 5]]]], np.uint8)
    assert_exact(golden.channel_shuffle(x, 3), [[[[0, 2, 4, 1, 3, 5]]]], np.uint8)


@pytest.mark.parametrize("seed", range(20))
def test_concat_and_split(seed):
    """concat == torch.cat on channels; split == torch.split with explicit sections."""
    rng = np.random.default_rng(9500 + seed)
    n, h, w = int(rng.integers(1, 3)), int(rng.integers(1, 9)), int(rng.integers(1, 9))
    dtype = [np.uint8, np.int8][seed % 2]
    sections = [int(v) for v in rng.integers(1, 7, size=int(rng.integers(1, 5)))]
    xs = [rand_act(rng, (n, h, w, c), dtype == np.int8) for c in sections]
    cat = golden.concat(xs)
    assert_exact(cat, nhwc(torch.cat([nchw(a) for a in xs], dim=1)), dtype)
    parts = golden.split(cat, sections)
    assert isinstance(parts, list) and len(parts) == len(sections)
    for got, ref in zip(parts, torch.split(nchw(cat), sections, dim=1)):
        assert_exact(got, nhwc(ref), dtype)
    # Round trip through golden must give back exactly the inputs.
    for got, orig in zip(parts, xs):
        assert np.array_equal(got, orig)


# --------------------------------------------------------------------------- pipeline


def _pick_shift(acc_ref: np.ndarray, mult: np.ndarray, target: int, positive: bool) -> int:
    """Shift mapping the largest acc*M (or |acc*M|) into (target/2, target] (from the torch acc)."""
    prod = acc_ref * mult
    peak = max(float(np.max(prod if positive else np.abs(prod))), 1.0)
    return int(min(47, max(0, math.ceil(math.log2(peak / target)))))


@pytest.mark.parametrize("seed", range(10))
def test_pipeline_conv_requant_pool_upsample(seed):
    """conv -> requant(relu, uint8) -> maxpool -> upsample -> conv -> requant(int8), vs torch.

    Each golden stage consumes golden's own previous output, so dtype mistakes (uint8 wrap on
    multiply, int8 overflow in pooling, narrow accumulators) surface against the pure torch chain.
    """
    rng = np.random.default_rng(10_000 + seed)
    n, h, wd, c = int(rng.integers(1, 3)), int(rng.integers(6, 17)), int(rng.integers(6, 17)), 8
    oc1, oc2 = 12, 6
    x = rand_act(rng, (n, h, wd, c), False)
    w1 = rand_weight(rng, (oc1, 3, 3, c), 8)
    b1 = rng.integers(-(2**16), 2**16, size=oc1).astype(np.int32)
    w2 = rand_weight(rng, (oc2, 3, 3, oc1 // 2), 4)  # groups=2 second conv
    b2 = rng.integers(-(2**12), 2**12, size=oc2).astype(np.int32)
    m1 = rng.integers(2**14, 2**16, size=oc1)
    m2 = rng.integers(2**14, 2**16, size=oc2)
    k, ps = (2, 2) if seed % 2 else (3, 2)
    pp = seed % 2

    # ---- torch float64 reference chain
    w1t = torch.from_numpy(w1.astype(np.float64)).permute(0, 3, 1, 2)
    w2t = torch.from_numpy(w2.astype(np.float64)).permute(0, 3, 1, 2)
    acc1 = F.conv2d(nchw(x), w1t, torch.from_numpy(b1.astype(np.float64)), stride=1, padding=1)
    s1 = _pick_shift(nhwc(acc1), m1, 300, positive=True)
    q1 = torch.clamp(torch.floor(acc1 * torch.from_numpy(m1.astype(np.float64))[:, None, None] / 2.0**s1 + 0.5), 0, 255)
    p1 = F.max_pool2d(q1, kernel_size=k, stride=ps, padding=pp)
    u1 = F.interpolate(p1, scale_factor=2, mode="nearest")
    acc2 = F.conv2d(u1, w2t, torch.from_numpy(b2.astype(np.float64)), stride=2, padding=1, groups=2)
    s2 = _pick_shift(nhwc(acc2), m2, 200, positive=False)
    q2 = torch.clamp(torch.floor(acc2 * torch.from_numpy(m2.astype(np.float64))[:, None, None] / 2.0**s2 + 0.5), -128, 127)

    # The reference must actually exercise the interesting ranges.
    q1n = nhwc(q1)
    assert (q1n > 127).any() and (q1n == 0).any()

    # ---- golden chain
    g_acc1 = golden.conv2d(x, w1, bias=b1, stride=1, padding=1)
    assert_exact(g_acc1, nhwc(acc1), np.int64)
    g_q1 = golden.requantize(g_acc1, m1, s1, True)
    assert_exact(g_q1, q1n, np.uint8)
    g_p1 = golden.maxpool2d(g_q1, k, stride=ps, padding=pp)
    assert_exact(g_p1, nhwc(p1), np.uint8)
    g_u1 = golden.upsample_nearest2x(g_p1)
    assert_exact(g_u1, nhwc(u1), np.uint8)
    g_acc2 = golden.conv2d(g_u1, w2, bias=b2, stride=2, padding=1, groups=2)
    assert_exact(g_acc2, nhwc(acc2), np.int64)
    g_q2 = golden.requantize(g_acc2, m2, s2, False)
    assert_exact(g_q2, nhwc(q2), np.int8)
    # int8 pooling of a signed map (negative values + padding) at the end of the chain.
    g_p2 = golden.maxpool2d(g_q2, 2, stride=1, padding=1)
    assert_exact(g_p2, nhwc(F.max_pool2d(q2, kernel_size=2, stride=1, padding=1)), np.int8)
