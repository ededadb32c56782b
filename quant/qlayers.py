"""Brevitas quantizers and layers whose fake-quantized forward *is* the integer contract.

The design goal is that the quantized PyTorch model and the golden executor run on the same
`.cnir` compute the same integers, not merely close ones. The contract requantizes with
``y = clamp((acc * M + 2**(S-1)) >> S)`` (integer-semantics.md § 5), so:

- **Activations: 8 bit, one power-of-two scale per tensor** (Brevitas "fixed point":
  learned log2 scale, ceil-rounded), unsigned after ReLU, signed otherwise, zero point 0.
- **Weights: 4 bit (stem 8 bit), symmetric, per output channel, with a dyadic scale**: the
  per-channel abs-max scale is snapped to ``m[oc] / 2**k`` with ``m`` a 16-bit integer and one
  ``k`` per layer (:class:`DyadicStatsScaling`). With power-of-two activation scales the
  requantization ratio ``s_in * s_w[oc] / s_out`` is then exactly ``M[oc] / 2**S`` and
  `intmath.choose_requant` recovers ``M = m`` without approximation.
- **Rounding: half up** (``floor(x + 0.5)``, ties toward +infinity) in every activation
  quantizer (:class:`RoundHalfUpSte`), as § 5.4 requires; Brevitas' default is half-to-even.
- **Bias: int32 at scale ``s_in * s_w``** (Brevitas ``Int32Bias``).
- **Side inputs of the deformable layers**: the dilation map (uint8) and the bounded offsets
  (int8) have the fixed scale 1.0, so the integer a quantizer produces is the dilation code
  or the offset itself (§ 7).

Everything is dyadic, so the fake-quantized forward can be computed exactly. The
convolutions here (:class:`IntQuantConv2d`, :class:`QuantDeformConv3x3`) do it on purpose:
they convolve the *integers* (``x / s_in``, ``w / s_w``; exact in float32 while every partial
sum stays below 2**24, which bounds 1x1 layers to ~9,400 input channels at 4 bits, far above
CoDeNet's 2,153) and rescale ``(acc + bias) * s_in * s_w`` in float64, so the activation
quantizer rounds the exact real number ``acc * M / 2**S``. A plain Brevitas QuantConv2d
convolves the dequantized float32 values instead; products such as ``x * w * m`` need up to
31 bits, the rounding errors flip a few outputs by one LSB, and in a deep network (and through
a flipped dilation code) those flips grow. With the integer path the model in float32 or
float64 reproduces the golden executor bit for bit (`codenet.quant.export.compare_golden`).
The rewrite is an identity, so gradients are unchanged.

Concat inputs must share one scale (§ 10): the model passes one activation-quantizer
*instance* to every layer whose output meets at a concat (a ShuffleNetV2 stage), see
`codenet.quant.models`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
from brevitas.core.scaling import ScalingImplType
from brevitas.core.scaling.runtime import StatsFromParameterScaling
from brevitas.function.ops_ste import round_ste
from brevitas.inject.enum import RestrictValueType, ScalingPerOutputType
from brevitas.nn import QuantConv2d, QuantIdentity, QuantReLU
from brevitas.quant import Int32Bias
from brevitas.quant.base import IntQuant, MaxStatsScaling, NarrowIntQuant, PerChannelFloatScaling8bit, UintQuant
from brevitas.quant.fixed_point import Int8ActPerTensorFixedPoint, Uint8ActPerTensorFixedPoint
from brevitas.quant.solver import ActQuantSolver, WeightQuantSolver
from brevitas.quant_tensor import QuantTensor
from torch import Tensor, nn

from codenet.sw import intmath

from .deform import DEFORMABLE, deform_dw3x3

__all__ = [
    "RoundHalfUpSte",
    "DyadicStatsScaling",
    "IntWeightPerChannelDyadic",
    "Uint8ActPoT",
    "Int8ActPoT",
    "Uint8ActUnitScale",
    "Int8ActUnitScale",
    "IntQuantConv2d",
    "mse_weight_clip",
    "set_integer_path",
    "quant_conv",
    "quant_act",
    "unit_scale_act",
    "QuantDeformConv3x3",
    "value_of",
    "calibrate",
    "is_calibrated",
]


# --------------------------------------------------------------------------- rounding


class _RoundHalfUp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return torch.floor(x + 0.5)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad


class RoundHalfUpSte(nn.Module):
    """floor(x + 0.5) with a straight-through gradient: the contract's rounding (§ 5.4).

    An autograd Function rather than ``x + (r - x).detach()``, which is not exactly ``r`` in
    floating point and would break bit-exactness.
    """

    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return _RoundHalfUp.apply(x)


# --------------------------------------------------------------------------- dyadic weight scales


class DyadicStatsScaling(StatsFromParameterScaling):
    """Per-channel abs-max weight scale snapped to m[oc] / 2**k (m < 2**mult_bits, one k per layer).

    k is the largest exponent that keeps the largest channel's m within `mult_bits` bits,
    exactly the shift `intmath.choose_requant` picks for this layer (up to the power-of-two
    activation scales), so the exported multipliers equal m and requantization is exact.
    The gradient passes straight through the snapping.
    """

    def __init__(
        self,
        scaling_stats_impl: nn.Module,
        scaling_stats_input_view_shape_impl: nn.Module,
        scaling_stats_input_concat_dim: int,
        tracked_parameter_list: list[nn.Parameter],
        scaling_shape: tuple[int, ...],
        restrict_scaling_impl: nn.Module,
        scaling_min_val: float | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
        mult_bits: int = intmath.MULT_BITS,
    ) -> None:
        super().__init__(
            scaling_stats_impl,
            scaling_stats_input_view_shape_impl,
            scaling_stats_input_concat_dim,
            tracked_parameter_list,
            scaling_shape,
            restrict_scaling_impl=restrict_scaling_impl,
            scaling_min_val=scaling_min_val,
            dtype=dtype,
            device=device,
        )
        self.mult_bits = int(mult_bits)
        # per-channel clip factor in (0, 1] on the abs-max (1 = plain abs-max); set by mse_weight_clip
        self.register_buffer("clip", torch.ones(scaling_shape, dtype=dtype, device=device))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        # checkpoints from before the clip factor quantized at the plain abs-max. Brevitas rebuilds
        # the quantizer on load (config.REINIT_ON_STATE_DICT_LOAD), which resets the factors too,
        # but not when that is off
        if prefix + "clip" in missing_keys:
            missing_keys.remove(prefix + "clip")
            self.clip.fill_(1.0)

    def forward(self, x: Tensor | None, threshold: Tensor | None = None) -> Tensor:
        scale = super().forward(x, threshold) * self.clip
        mmax = float(2**self.mult_bits - 1)
        peak = scale.detach().max()
        k = torch.floor(torch.log2(mmax / peak))
        # guard the float log2: the largest channel must round to at most mmax
        k = torch.where(torch.round(peak * torch.exp2(k)) > mmax, k - 1, k)
        p = torch.exp2(k)  # exact power of two
        m = torch.clamp(round_ste(scale * p), min=1.0)
        return m / p


class IntWeightPerChannelDyadic(NarrowIntQuant, MaxStatsScaling, PerChannelFloatScaling8bit, WeightQuantSolver):
    """Symmetric narrow-range per-output-channel weights with dyadic scales (set bit_width with .let)."""

    bit_width = 4
    scaling_impl = DyadicStatsScaling
    mult_bits = intmath.MULT_BITS


# --------------------------------------------------------------------------- activation quantizers


class Uint8ActPoT(Uint8ActPerTensorFixedPoint):
    """uint8 after ReLU, one learned power-of-two scale per tensor, round half up."""

    float_to_int_impl = RoundHalfUpSte


class Int8ActPoT(Int8ActPerTensorFixedPoint):
    """int8 (no ReLU), one learned power-of-two scale per tensor, round half up."""

    float_to_int_impl = RoundHalfUpSte


class Uint8ActUnitScale(UintQuant, ActQuantSolver):
    """uint8 with the fixed scale 1.0: the integer is the value (the square-deformable dilation map)."""

    scaling_impl_type = ScalingImplType.CONST
    restrict_scaling_type = RestrictValueType.FP
    scaling_per_output_type = ScalingPerOutputType.TENSOR
    bit_width = 8
    max_val = 255.0  # / 255 (unsigned int threshold) = 1.0
    float_to_int_impl = RoundHalfUpSte


class Int8ActUnitScale(IntQuant, ActQuantSolver):
    """int8 in [-128, 127] with the fixed scale 1.0 (bounded-deformable offsets)."""

    scaling_impl_type = ScalingImplType.CONST
    restrict_scaling_type = RestrictValueType.FP
    scaling_per_output_type = ScalingPerOutputType.TENSOR
    bit_width = 8
    min_val = -128.0
    max_val = 128.0  # / 128 (signed int threshold) = 1.0
    float_to_int_impl = RoundHalfUpSte


def _integer_operands(x, quant_weight) -> tuple[Tensor, Tensor, Tensor] | None:
    """(x_int, w_int, s_in * s_w per output channel) when both operands are quantized, else None."""
    if not (isinstance(x, QuantTensor) and isinstance(quant_weight, QuantTensor)):
        return None
    if x.scale is None or quant_weight.scale is None or x.scale.numel() != 1:
        return None
    # exact: power-of-two activation scales, dyadic weight scales; round_ste only guards and keeps the gradient
    xi = round_ste(x.value / x.scale)
    wi = round_ste(quant_weight.value / quant_weight.scale)
    return xi, wi, (x.scale * quant_weight.scale).reshape(-1)


def _rescale(acc: Tensor, scale: Tensor, quant_bias) -> Tensor:
    """(acc + bias_int) * s_in * s_w in float64: exact for every in-contract accumulator and bias."""
    acc = acc.double()
    if quant_bias is not None:
        if isinstance(quant_bias, QuantTensor):
            b = round_ste(quant_bias.value / quant_bias.scale).double()
        else:  # bias quantization disabled: a float bias at the accumulator's scale
            b = quant_bias.double() / scale.double()
        acc = acc + b.reshape(1, -1, 1, 1)
    return acc * scale.double().reshape(1, -1, 1, 1)


class IntQuantConv2d(QuantConv2d):
    """QuantConv2d that convolves the integers and rescales in float64 (see the module docstring).

    The output is float64 (the exact real accumulator); the activation quantizer that follows
    rounds it and :class:`codenet.quant.models.ConvBlock` casts the 8-bit result back to the
    model's dtype, which holds it exactly. Unquantized operands (calibration) take the usual path.
    """

    #: False restores Brevitas' float path (QONNX export traces that one, in the model's dtype).
    integer_path: bool = True

    def inner_forward_impl(self, x, quant_weight, quant_bias):
        ops = _integer_operands(x, quant_weight) if self.integer_path else None
        if ops is None:
            return super().inner_forward_impl(x, quant_weight, quant_bias)
        xi, wi, scale = ops
        return _rescale(self._conv_forward(xi, wi, None), scale, quant_bias)


@torch.no_grad()
def mse_weight_clip(model: nn.Module, *, max_bits: int = 4, grid: int = 61, lowest: float = 0.4) -> nn.Module:
    """Clip each low-bit layer's per-channel weight range where the weight MSE is least.

    Abs-max scaling lets one large weight stretch a 4-bit channel's 15 levels over a range most
    weights never use. A grid search picks a clip factor in [`lowest`, 1] per output channel
    (ties keep the widest range). On the shipped detector's float model, W4A8 AP50 after
    calibration and before QAT went from 0.742 to 0.762 (float 0.781; 500 validation images).
    Layers wider than `max_bits` (the 8-bit stem) keep abs-max. The factors are buffers: saved
    with the model and fixed during QAT, while the abs-max they scale follows the weights.
    """
    factors = torch.linspace(1.0, lowest, grid, dtype=torch.float64)
    for m in model.modules():
        if not isinstance(m, IntQuantConv2d):
            continue
        impl = m.weight_quant.tensor_quant.scaling_impl
        bits = int(m.weight_quant.bit_width())  # no need to quantize the weights to read it
        if not isinstance(impl, DyadicStatsScaling) or bits > max_bits:
            continue
        w = m.weight.detach().double().reshape(m.weight.shape[0], -1)
        top = float(2 ** (bits - 1) - 1)  # narrow range
        peak = w.abs().amax(dim=1).clamp(min=torch.finfo(torch.float64).tiny)
        best_err = torch.full_like(peak, float("inf"))
        best = torch.ones_like(peak)
        for a in factors:
            step = (a * peak / top)[:, None]
            err = ((torch.clamp(torch.round(w / step), -top, top) * step - w) ** 2).sum(dim=1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best = torch.where(better, a, best)
        impl.clip.copy_(best.reshape(impl.clip.shape).to(impl.clip.dtype))
    return model


def set_integer_path(model: nn.Module, enabled: bool) -> nn.Module:
    """Switch every integer-path convolution of `model` on (exact, the default) or off.

    Off is Brevitas' plain float32 fake-quant: about 1.4x faster QAT steps on a CPU, identical
    gradients, and forward values that differ from the integer contract by rare one-LSB flips
    (which a deep or deformable network can amplify). Evaluate and export with it on. On a GPU,
    exactness also needs exact float32 convolutions: ``torch.backends.cudnn.allow_tf32 = False``
    (TF32 keeps 10 mantissa bits), and cuDNN may still choose FFT/Winograd algorithms, so
    `codenet.quant.export.compare_golden` runs on the CPU.
    """
    for m in model.modules():
        if isinstance(m, IntQuantConv2d):
            m.integer_path = bool(enabled)
    return model


def quant_conv(cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, groups: int = 1, *, weight_bits: int = 4) -> IntQuantConv2d:
    """A QuantConv2d with dyadic per-channel weights and an int32 bias at s_in * s_w, float output.

    The output stays unquantized: the activation quantizer that follows (possibly shared with
    other layers) defines the output scale.
    """
    return IntQuantConv2d(
        cin,
        cout,
        k,
        stride=stride,
        padding=padding,
        groups=groups,
        bias=True,
        weight_quant=IntWeightPerChannelDyadic,
        weight_bit_width=weight_bits,
        bias_quant=Int32Bias,
        return_quant_tensor=False,
    )


def quant_act(relu: bool) -> nn.Module:
    """The 8-bit power-of-two output quantizer of a layer: QuantReLU (uint8) or QuantIdentity (int8)."""
    if relu:
        return QuantReLU(act_quant=Uint8ActPoT, return_quant_tensor=True)
    return QuantIdentity(act_quant=Int8ActPoT, return_quant_tensor=True)


def unit_scale_act(relu: bool) -> nn.Module:
    """A fixed-scale-1.0 output quantizer (the offset conv of ``square`` (relu) and ``bounded``)."""
    if relu:
        return QuantReLU(act_quant=Uint8ActUnitScale, return_quant_tensor=True)
    return QuantIdentity(act_quant=Int8ActUnitScale, return_quant_tensor=True)


def value_of(x: Tensor | QuantTensor) -> Tensor:
    """The (dequantized) value of a QuantTensor, or the tensor itself."""
    return x.value if isinstance(x, QuantTensor) else x


class QuantDeformConv3x3(IntQuantConv2d):
    """Deformable depthwise 3x3 with Brevitas weight and bias quantization, ``forward(x, side)``.

    It reuses QuantConv2d's machinery (weight, int32 bias at the input's scale, enabling and
    disabling for calibration) and replaces only the convolution itself by the deformable
    gather of `codenet.quant.deform`, on the integers like :class:`IntQuantConv2d`. The side input is read as its value: with the fixed
    scale 1.0 that is the integer dilation code or offset.
    """

    def __init__(self, channels: int, kind: str, stride: int = 1, max_dilation: int = 8, max_offset: int = 2, *, weight_bits: int = 4):
        if kind not in DEFORMABLE:
            raise ValueError(f"QuantDeformConv3x3 kind must be one of {DEFORMABLE}, got {kind!r}")
        super().__init__(
            channels,
            channels,
            3,
            stride=stride,
            padding=1,
            groups=channels,
            bias=True,
            weight_quant=IntWeightPerChannelDyadic,
            weight_bit_width=weight_bits,
            bias_quant=Int32Bias,
            return_quant_tensor=False,
        )
        self.kind = kind
        self.max_dilation = int(max_dilation)
        self.max_offset = int(max_offset)
        self._side: Tensor | None = None

    def forward(self, x: Tensor | QuantTensor, side: Tensor | QuantTensor) -> Tensor:  # type: ignore[override]
        self._side = value_of(side)
        try:
            return self.forward_impl(x)
        finally:
            self._side = None

    def inner_forward_impl(self, x, quant_weight, quant_bias):
        ops = _integer_operands(x, quant_weight) if self.integer_path else None
        if ops is None:
            bias = None if quant_bias is None else value_of(quant_bias)
            return deform_dw3x3(
                self.kind, value_of(x), value_of(quant_weight), self._side, bias, self.stride[0], self.max_dilation, self.max_offset
            )
        xi, wi, scale = ops
        acc = deform_dw3x3(self.kind, xi, wi, self._side, None, self.stride[0], self.max_dilation, self.max_offset)
        return _rescale(acc, scale, quant_bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kind={self.kind}, max_dilation={self.max_dilation}, max_offset={self.max_offset}"


# --------------------------------------------------------------------------- calibration


def _act_scalers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if hasattr(m, "collect_stats_steps") and hasattr(m, "counter")]


def is_calibrated(model: nn.Module) -> bool:
    """True when every statistics-initialised activation scale has been fixed (calibrated or trained past it)."""
    return all(int(m.counter) > int(m.collect_stats_steps) for m in _act_scalers(model))


def calibrate(model: nn.Module, batches: Iterable[Tensor], max_batches: int | None = None) -> nn.Module:
    """Initialise every activation scale from a few batches (Brevitas calibration mode).

    The pass runs in float (quantization disabled) and collects a high percentile of each
    activation; leaving calibration mode turns those statistics into the learned power-of-two
    scales. Needed before evaluation or export, and a good start for QAT fine-tuning.
    """
    with warnings.catch_warnings():  # brevitas.graph's import notices (brevitas.fx deprecation, optional kernels)
        warnings.simplefilter("ignore")
        from brevitas.graph.calibrate import calibration_mode

    was_training = model.training
    model.eval()
    seen = 0
    with torch.no_grad(), calibration_mode(model):
        for batch in batches:
            if max_batches is not None and seen >= max_batches:
                break
            model(batch)
            seen += 1
    if seen == 0:
        raise ValueError("calibrate() needs at least one batch")
    model.train(was_training)
    return model
