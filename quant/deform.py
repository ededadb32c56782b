"""Depthwise deformable 3x3 convolutions in PyTorch, for training and for the quantized model.

Four variants (``KINDS``) share one module, :class:`DeformConv3x3`, whose weight is that of a
depthwise ``nn.Conv2d`` (C, 1, 3, 3), so that batch-norm folding, Brevitas quantization and
export treat it like any depthwise convolution:

- ``full``: the float baseline (depthwise DCNv1): a fractional (dy, dx) per pixel and tap,
  bilinear sampling. Not deployable: it has no integer semantics (integer-semantics.md § 7.3).
- ``bounded``: integer offsets per pixel and tap, clamped to [-R, R] (§ 7.2).
- ``square``: CoDeNet's operator, one integer dilation per pixel, d = 1 + min(v, D - 1) (§ 7.1).
- ``dw``: plain depthwise 3x3 (no side input); kept here so that a model names its variant once.

``bounded`` and ``square`` sample at *integer* positions in the forward pass, exactly as
`codenet.sw.golden.deform_dw3x3_offsets` / `deform_dw3x3` do (zero outside the image), so a
quantized model computes the integer operator itself. Rounding has no useful gradient, so the
backward pass is a straight-through estimator: the offset/dilation gets the gradient of
bilinear sampling at the *continuous* (unrounded) position, while the input and the weight get
the exact gradient of the integer-position forward. The forward value is untouched by the
estimator (it adds ``g - g.detach()``, which is exactly zero), which keeps the quantized forward
bit-exact.

Layouts (NCHW, as PyTorch): side inputs have the output's spatial size (Ho, Wo) =
((H - 1) // s + 1, (W - 1) // s + 1). Offsets have 18 channels, tap t = 3*i + j (row-major),
channel 2t = dy and 2t + 1 = dx; the dilation map has 1 channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "KINDS",
    "DEFORMABLE",
    "side_channels",
    "round_half_up",
    "dilation_from_map",
    "deform_dw3x3",
    "deform_dw3x3_square",
    "deform_dw3x3_bounded",
    "deform_dw3x3_bilinear",
    "DeformConv3x3",
]

#: Every decoder variant a model may use.
KINDS = ("full", "bounded", "square", "dw")
#: The variants that need an offset convolution (a side input).
DEFORMABLE = ("full", "bounded", "square")


def side_channels(kind: str) -> int:
    """Channels of the offset conv's output: 18 (dy, dx per tap) or 1 (dilation map)."""
    if kind in ("full", "bounded"):
        return 18
    if kind == "square":
        return 1
    raise ValueError(f"deform kind {kind!r} has no side input; deformable kinds are {DEFORMABLE}")


def round_half_up(x: Tensor) -> Tensor:
    """floor(x + 0.5): the contract's rounding (ties toward +infinity), no gradient."""
    return torch.floor(x + 0.5)


def dilation_from_map(v: Tensor, max_dilation: int) -> Tensor:
    """d = 1 + min(round(v), D - 1) with v clamped at 0, as an integer tensor (golden.dilation_from_map)."""
    if max_dilation < 1:
        raise ValueError(f"max_dilation must be >= 1, got {max_dilation}")
    return (1 + torch.clamp(round_half_up(v.detach()), 0, max_dilation - 1)).long()


def _out_size(x: Tensor, stride: int) -> tuple[int, int]:
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    return (x.shape[2] - 1) // stride + 1, (x.shape[3] - 1) // stride + 1


def _weight9(weight: Tensor, channels: int) -> Tensor:
    """(C,1,3,3) or (C,3,3) -> (C, 9), tap t = 3*i + j."""
    if weight.shape not in ((channels, 1, 3, 3), (channels, 3, 3)):
        raise ValueError(f"weight must have shape ({channels},1,3,3) or ({channels},3,3), got {tuple(weight.shape)}")
    return weight.reshape(channels, 9)


def _check_side(side: Tensor, x: Tensor, ho: int, wo: int, channels: int, what: str) -> None:
    want = (x.shape[0], channels, ho, wo)
    if tuple(side.shape) != want:
        raise ValueError(f"{what} must have shape (N,{channels},Ho,Wo) = {want}, got {tuple(side.shape)}")


def _gather(x: Tensor, py: Tensor, px: Tensor) -> Tensor:
    """x (N,C,H,W) at integer positions py, px (N,Ho,Wo) -> (N,C,Ho,Wo); 0 outside the image."""
    n, c, h, w = x.shape
    inside = (py >= 0) & (py < h) & (px >= 0) & (px < w)
    idx = torch.where(inside, py * w + px, torch.full_like(py, h * w))  # h*w: the appended zero
    flat = F.pad(x.reshape(n, c, h * w), (0, 1))
    out = torch.gather(flat, 2, idx.reshape(n, 1, -1).expand(n, c, -1))
    return out.reshape(n, c, *py.shape[1:])


def _bilinear(x: Tensor, py: Tensor, px: Tensor) -> Tensor:
    """Bilinear sample of x at real positions (N,Ho,Wo); corners outside the image read 0."""
    y0, x0 = torch.floor(py), torch.floor(px)
    fy, fx = (py - y0).unsqueeze(1), (px - x0).unsqueeze(1)
    y0, x0 = y0.long(), x0.long()
    return (
        _gather(x, y0, x0) * (1 - fy) * (1 - fx)
        + _gather(x, y0, x0 + 1) * (1 - fy) * fx
        + _gather(x, y0 + 1, x0) * fy * (1 - fx)
        + _gather(x, y0 + 1, x0 + 1) * fy * fx
    )


def _grid(x: Tensor, stride: int) -> tuple[Tensor, Tensor]:
    ho, wo = _out_size(x, stride)
    oy = (torch.arange(ho, device=x.device) * stride).view(1, ho, 1)
    ox = (torch.arange(wo, device=x.device) * stride).view(1, 1, wo)
    return oy, ox


def _tap_sum(x: Tensor, w9: Tensor, positions, sample) -> Tensor:
    """sum over taps t of w9[:, t] * sample(x, *positions(t))."""
    acc = None
    for t in range(9):
        term = sample(x, *positions(t)) * w9[:, t].view(1, -1, 1, 1)
        acc = term if acc is None else acc + term
    return acc


def _finish(out: Tensor, bias: Tensor | None) -> Tensor:
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def deform_dw3x3_square(x: Tensor, weight: Tensor, v: Tensor, bias: Tensor | None = None, stride: int = 1, max_dilation: int = 8) -> Tensor:
    """Square-deformable depthwise 3x3 (integer-semantics.md § 7.1), v (N,1,Ho,Wo) the dilation map.

    Forward: tap (i, j) of output (y, x) reads (y*s + (i-1)*d, x*s + (j-1)*d), d = 1 + min(round(v), D-1).
    Backward (straight-through): v gets the secant of the integer operator between the two
    integer dilations around d_c = 1 + clamp(v, 0, D-1), i.e. out(floor(d_c) + 1) - out(floor(d_c)).
    The rounded d is one of those two, so the estimator costs one extra set of 9 gathers (the
    bilinear tangent it replaced cost 36) and training runs about twice as fast.
    """
    c = x.shape[1]
    ho, wo = _out_size(x, stride)
    _check_side(v, x, ho, wo, 1, "the dilation map v")
    w9 = _weight9(weight, c)
    oy, ox = _grid(x, stride)
    d = dilation_from_map(v[:, 0], max_dilation)
    out = _tap_sum(x, w9, lambda t: (oy + (t // 3 - 1) * d, ox + (t % 3 - 1) * d), _gather)
    if v.requires_grad and torch.is_grad_enabled() and max_dilation > 1:
        dc = 1 + torch.clamp(v[:, 0], 0, max_dilation - 1)
        lo = torch.clamp(torch.floor(dc.detach()), max=max_dilation - 1).long()
        # the neighbour of d on the other side of d_c: lo + 1 when d rounded down, lo when up
        other = torch.where(d == lo, lo + 1, lo)
        o = _tap_sum(x.detach(), w9.detach(), lambda t: (oy + (t // 3 - 1) * other, ox + (t % 3 - 1) * other), _gather)
        hi_minus_lo = torch.where((d == lo).unsqueeze(1), o - out.detach(), out.detach() - o)
        frac = (dc - lo).unsqueeze(1)
        out = out + hi_minus_lo * (frac - frac.detach())
    return _finish(out, bias)


def deform_dw3x3_bounded(
    x: Tensor, weight: Tensor, offsets: Tensor, bias: Tensor | None = None, stride: int = 1, max_offset: int = 2
) -> Tensor:
    """Bounded-offset deformable depthwise 3x3 (§ 7.2), offsets (N,18,Ho,Wo) = (dy, dx) per tap.

    Forward: tap (i, j) reads (y*s + i - 1 + dy, x*s + j - 1 + dx), dy, dx = clamp(round(off), -R, R).
    Backward (straight-through): offsets get the bilinear gradient at clamp(off, -R, R).
    """
    c = x.shape[1]
    ho, wo = _out_size(x, stride)
    _check_side(offsets, x, ho, wo, 18, "offsets")
    if max_offset < 0:
        raise ValueError(f"max_offset must be >= 0, got {max_offset}")
    w9 = _weight9(weight, c)
    oy, ox = _grid(x, stride)
    off = torch.clamp(round_half_up(offsets.detach()), -max_offset, max_offset).long()
    out = _tap_sum(x, w9, lambda t: (oy + t // 3 - 1 + off[:, 2 * t], ox + t % 3 - 1 + off[:, 2 * t + 1]), _gather)
    if offsets.requires_grad and torch.is_grad_enabled():
        oc = torch.clamp(offsets, -max_offset, max_offset)
        g = _tap_sum(x.detach(), w9.detach(), lambda t: (oy + t // 3 - 1 + oc[:, 2 * t], ox + t % 3 - 1 + oc[:, 2 * t + 1]), _bilinear)
        out = out + (g - g.detach())
    return _finish(out, bias)


def deform_dw3x3_bilinear(x: Tensor, weight: Tensor, offsets: Tensor, bias: Tensor | None = None, stride: int = 1) -> Tensor:
    """Bilinear deformable depthwise 3x3 (depthwise DCNv1): the float baseline, not deployable (§ 7.3)."""
    c = x.shape[1]
    ho, wo = _out_size(x, stride)
    _check_side(offsets, x, ho, wo, 18, "offsets")
    w9 = _weight9(weight, c)
    oy, ox = _grid(x, stride)
    oy, ox = oy.to(x.dtype), ox.to(x.dtype)
    out = _tap_sum(x, w9, lambda t: (oy + t // 3 - 1 + offsets[:, 2 * t], ox + t % 3 - 1 + offsets[:, 2 * t + 1]), _bilinear)
    return _finish(out, bias)


def deform_dw3x3(
    kind: str,
    x: Tensor,
    weight: Tensor,
    side: Tensor | None,
    bias: Tensor | None = None,
    stride: int = 1,
    max_dilation: int = 8,
    max_offset: int = 2,
) -> Tensor:
    """Dispatch on the variant; ``dw`` ignores `side` and is a depthwise conv with padding 1."""
    if kind == "square":
        return deform_dw3x3_square(x, weight, side, bias, stride, max_dilation)
    if kind == "bounded":
        return deform_dw3x3_bounded(x, weight, side, bias, stride, max_offset)
    if kind == "full":
        return deform_dw3x3_bilinear(x, weight, side, bias, stride)
    if kind == "dw":
        c = x.shape[1]
        return F.conv2d(x, weight.reshape(c, 1, 3, 3), bias, stride, 1, groups=c)
    raise ValueError(f"unknown deform kind {kind!r}; known: {KINDS}")


class DeformConv3x3(nn.Conv2d):
    """Depthwise deformable 3x3 with the parameters of a depthwise ``nn.Conv2d`` (C,1,3,3).

    Subclassing Conv2d keeps batch-norm folding, parameter counting and weight copying the
    same as for the other convolutions; only the sampling differs. ``forward(x, side)``.
    """

    def __init__(self, channels: int, kind: str, stride: int = 1, bias: bool = False, max_dilation: int = 8, max_offset: int = 2):
        if kind not in DEFORMABLE:
            raise ValueError(f"DeformConv3x3 kind must be one of {DEFORMABLE}, got {kind!r}")
        super().__init__(channels, channels, 3, stride, 1, groups=channels, bias=bias)
        self.kind = kind
        self.max_dilation = int(max_dilation)
        self.max_offset = int(max_offset)

    def forward(self, x: Tensor, side: Tensor) -> Tensor:  # type: ignore[override]
        return deform_dw3x3(self.kind, x, self.weight, side, self.bias, self.stride[0], self.max_dilation, self.max_offset)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kind={self.kind}, max_dilation={self.max_dilation}, max_offset={self.max_offset}"
