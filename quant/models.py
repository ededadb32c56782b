"""The CoDeNet detector family in PyTorch, in three forms that share one module tree.

- ``float``: the trainable float model (conv + batch-norm + ReLU, input normalisation in the
  stem), with any decoder variant of `codenet.quant.deform` (``full`` included);
- ``folded``: the same network with batch-norm and the input normalisation merged into the
  convolutions (:func:`fuse_bn`), numerically the float model in eval mode;
- ``quant``: Brevitas layers (`codenet.quant.qlayers`) with the folded weights, for QAT
  fine-tuning, calibration and export (:func:`quantize`).

The module tree mirrors `codenet.sw.zoo.build` name for name: every convolution-like node of
the integer graph is a :class:`ConvBlock` or :class:`DeformBlock` whose module path is the node
name (``stage3.0.b2.pw1``, ``decoder1.deform``, ``head.hm.out``), which is what lets
`codenet.quant.export` write the graph the zoo describes, and lets :func:`param_count` match the
zoo's ``Graph.param_count()``.

Input: ``images`` (N, 3, H, W) holding raw pixel values 0..255 (uint8 or float), H and W
multiples of 32. The exported graph takes the same pixels as its uint8 ``image`` (scale 1.0).
Output: ``{"hm", "wh", "reg"}`` at stride 4 (CenterNet; ``hm`` are logits).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from brevitas.nn import QuantIdentity
from brevitas.quant_tensor import QuantTensor
from torch import Tensor, nn

from codenet.sw.zoo import ArchSpec, arch

from .deform import DEFORMABLE, KINDS, DeformConv3x3, side_channels
from .qlayers import QuantDeformConv3x3, Uint8ActUnitScale, mse_weight_clip, quant_act, quant_conv, unit_scale_act, value_of

__all__ = [
    "MODES",
    "MEAN",
    "STD",
    "HM_BIAS_INIT",
    "CoDeNet",
    "ConvBlock",
    "DeformBlock",
    "build_model",
    "fuse_bn",
    "quantize",
    "param_count",
    "conv_blocks",
]

MODES = ("float", "folded", "quant")
#: ImageNet statistics of pixels scaled to [0, 1]; folded into the stem by :func:`fuse_bn`.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
#: CenterNet's heat-map bias init, -log((1 - 0.1) / 0.1): a low initial score everywhere.
HM_BIAS_INIT = -2.19
#: Square offset conv bias init: keeps its ReLU alive (v > 0, so gradients flow) while
#: v = 0.25 still rounds to the dilation code 0, i.e. d = 1 (a plain 3x3) at the start.
SQUARE_BIAS_INIT = 0.25


# --------------------------------------------------------------------------- data movement


def _map(x: Tensor | QuantTensor, fn) -> Tensor | QuantTensor:
    """Apply a scale-preserving op to a tensor or to a QuantTensor's value (§ 8-12: no arithmetic)."""
    return x.set(value=fn(x.value)) if isinstance(x, QuantTensor) else fn(x)


def split2(x: Tensor | QuantTensor) -> tuple[Tensor | QuantTensor, Tensor | QuantTensor]:
    half = value_of(x).shape[1] // 2
    return _map(x, lambda v: v[:, :half]), _map(x, lambda v: v[:, half:])


def concat(a: Tensor | QuantTensor, b: Tensor | QuantTensor) -> Tensor | QuantTensor:
    """Channel concat. Quantized inputs share one quantizer instance, hence one scale, by construction."""
    if isinstance(a, QuantTensor) != isinstance(b, QuantTensor):
        raise TypeError("concat of a quantized and an unquantized tensor")
    return _map(a, lambda v: torch.cat([v, value_of(b)], dim=1))


def shuffle(x: Tensor | QuantTensor, groups: int = 2) -> Tensor | QuantTensor:
    def fn(v: Tensor) -> Tensor:
        n, c, h, w = v.shape
        return v.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    return _map(x, fn)


def maxpool(x: Tensor | QuantTensor) -> Tensor | QuantTensor:
    return _map(x, lambda v: F.max_pool2d(v, 3, 2, 1))


def upsample(x: Tensor | QuantTensor) -> Tensor | QuantTensor:
    return _map(x, lambda v: F.interpolate(v, scale_factor=2, mode="nearest"))


# --------------------------------------------------------------------------- blocks


def _to_dtype(y: Tensor | QuantTensor, dtype: torch.dtype) -> Tensor | QuantTensor:
    """Back to the model's dtype after an integer-path conv (float64); exact for 8-bit values."""
    return y if value_of(y).dtype == dtype else _map(y, lambda v: v.to(dtype))


class ConvBlock(nn.Module):
    """One ``conv2d`` node: convolution, batch-norm (float mode only), output activation/quantizer."""

    def __init__(self, conv: nn.Conv2d, bn: nn.Module, act: nn.Module, relu: bool):
        super().__init__()
        self.conv, self.bn, self.act = conv, bn, act
        self.relu = relu

    def forward(self, x):
        return _to_dtype(self.act(self.bn(self.conv(x))), self.conv.weight.dtype)


class DeformBlock(nn.Module):
    """One deformable node: deformable depthwise 3x3 (+ BN) and its (int8) output quantizer."""

    def __init__(self, conv: nn.Conv2d, bn: nn.Module, act: nn.Module):
        super().__init__()
        self.conv, self.bn, self.act = conv, bn, act
        self.relu = False

    def forward(self, x, side):
        return _to_dtype(self.act(self.bn(self.conv(x, side))), self.conv.weight.dtype)


class _Layers:
    """Makes the blocks of one mode: float (BN, ReLU), folded (bias, ReLU) or quant (Brevitas)."""

    def __init__(self, mode: str, weight_bits: int, first_weight_bits: int):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode, self.weight_bits, self.first_weight_bits = mode, weight_bits, first_weight_bits

    def act(self, relu: bool) -> nn.Module:
        if self.mode == "quant":
            return quant_act(relu)
        return nn.ReLU() if relu else nn.Identity()

    def conv(
        self,
        cin: int,
        cout: int,
        k: int = 1,
        stride: int = 1,
        groups: int = 1,
        *,
        relu: bool = True,
        bn: bool = True,
        padding: int | None = None,
        act: nn.Module | None = None,
        first: bool = False,
    ) -> ConvBlock:
        padding = k // 2 if padding is None else padding
        if self.mode == "quant":
            bits = self.first_weight_bits if first else self.weight_bits
            conv = quant_conv(cin, cout, k, stride, padding, groups, weight_bits=bits)
        else:
            conv = nn.Conv2d(cin, cout, k, stride, padding, groups=groups, bias=not (bn and self.mode == "float"))
        norm = nn.BatchNorm2d(cout) if (bn and self.mode == "float") else nn.Identity()
        return ConvBlock(conv, norm, act if act is not None else self.act(relu), relu)

    def offset(self, cin: int, kind: str) -> ConvBlock:
        """The 1x1 offset conv (bias, no BN): dilation map through ReLU, or 18 offsets."""
        relu = kind == "square"
        if self.mode == "quant":
            act = unit_scale_act(relu) if kind in ("square", "bounded") else quant_act(False)
        else:
            act = None
        return self.conv(cin, side_channels(kind), 1, relu=relu, bn=False, act=act)

    def deform(self, c: int, kind: str, spec: ArchSpec) -> DeformBlock:
        if self.mode == "quant":
            conv = QuantDeformConv3x3(c, kind, 1, spec.max_dilation, spec.max_offset, weight_bits=self.weight_bits)
        else:
            conv = DeformConv3x3(c, kind, 1, bias=self.mode == "folded", max_dilation=spec.max_dilation, max_offset=spec.max_offset)
        norm = nn.BatchNorm2d(c) if self.mode == "float" else nn.Identity()
        return DeformBlock(conv, norm, self.act(False))


class _Branch(nn.Module):
    """A named container (``b1``/``b2`` of a stride-2 unit)."""


class UnitS2(nn.Module):
    """ShuffleNetV2 stride-2 unit (zoo._unit_s2): two branches, concat, shuffle."""

    def __init__(self, cin: int, cout: int, L: _Layers, shared: nn.Module):
        super().__init__()
        half = cout // 2
        self.b1 = _Branch()
        self.b1.dw = L.conv(cin, cin, 3, 2, cin, relu=False)
        self.b1.pw = L.conv(cin, half, 1, act=shared)
        self.b2 = _Branch()
        self.b2.pw1 = L.conv(cin, half, 1)
        self.b2.dw = L.conv(half, half, 3, 2, half, relu=False)
        self.b2.pw2 = L.conv(half, half, 1, act=shared)

    def forward(self, x):
        a = self.b1.pw(self.b1.dw(x))
        y = self.b2.pw2(self.b2.dw(self.b2.pw1(x)))
        return shuffle(concat(a, y), 2)


class UnitS1(nn.Module):
    """ShuffleNetV2 stride-1 unit (zoo._unit_s1): split, one branch, concat, shuffle."""

    def __init__(self, c: int, L: _Layers, shared: nn.Module):
        super().__init__()
        half = c // 2
        self.pw1 = L.conv(half, half, 1)
        self.dw = L.conv(half, half, 3, 1, half, relu=False)
        self.pw2 = L.conv(half, half, 1, act=shared)

    def forward(self, x):
        x1, x2 = split2(x)
        return shuffle(concat(x1, self.pw2(self.dw(self.pw1(x2)))), 2)


class Stem(nn.Module):
    """conv 3x3 s2 + max-pool 3x3 s2 (``s2mp``) or conv 3x3 s4 (``s4``), 8-bit weights.

    In float mode the input normalisation ``(x/255 - mean)/std`` is applied *after* padding the
    raw image with zeros, and the conv itself does not pad: so the folded model (padding 1 on
    raw pixels, as the integer graph does) equals the float model exactly, borders included.
    """

    def __init__(self, spec: ArchSpec, L: _Layers):
        super().__init__()
        self.normalize = L.mode == "float"
        stride = 2 if spec.stem == "s2mp" else 4
        self.conv = L.conv(3, spec.stem_channels, 3, stride, padding=0 if self.normalize else 1, first=True)
        self.pool = spec.stem == "s2mp"
        if self.normalize:
            self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, x):
        if self.normalize:
            x = (F.pad(x, (1, 1, 1, 1)) / 255.0 - self.mean) / self.std
        x = self.conv(x)
        return maxpool(x) if self.pool else x


class DecoderBlock(nn.Module):
    """[offset 1x1 -> deformable dw 3x3 (BN, no ReLU)] or [dw 3x3], then 1x1 (BN, ReLU), nearest 2x up."""

    def __init__(self, cin: int, cout: int, kind: str, spec: ArchSpec, L: _Layers):
        super().__init__()
        self.kind = kind
        if kind in DEFORMABLE:
            self.offset = L.offset(cin, kind)
            self.deform = L.deform(cin, kind, spec)
        else:
            self.dw = L.conv(cin, cin, 3, 1, cin, relu=False)
        self.pw = L.conv(cin, cout, 1)

    def forward(self, x):
        x = self.deform(x, self.offset(x)) if self.kind in DEFORMABLE else self.dw(x)
        return upsample(self.pw(x))


class Head(nn.Module):
    """CenterNet head: 1x1 (ReLU) -> dw 3x3 (ReLU) -> 1x1 to the head's channels (no ReLU)."""

    def __init__(self, cin: int, hidden: int, cout: int, L: _Layers):
        super().__init__()
        self.pw1 = L.conv(cin, hidden, 1)
        self.dw = L.conv(hidden, hidden, 3, 1, hidden, relu=True)
        self.out = L.conv(hidden, cout, 1, relu=False, bn=False)

    def forward(self, x):
        return self.out(self.dw(self.pw1(x)))


# --------------------------------------------------------------------------- the model


class CoDeNet(nn.Module):
    """ShuffleNetV2 backbone, deformable decoder, CenterNet heads, built from an ArchSpec.

    `deform` picks the decoder variant (``full``, ``bounded``, ``square``, ``dw``) and defaults
    to ``spec.deform``; ``full`` exists only here (the zoo's ArchSpec refuses it).
    """

    def __init__(self, spec: ArchSpec, deform: str | None = None, *, mode: str = "float", weight_bits: int = 4, first_weight_bits: int = 8):
        super().__init__()
        kind = deform or spec.deform
        if kind not in KINDS:
            raise ValueError(f"deform must be one of {KINDS}, got {kind!r}")
        if kind != "full" and kind != spec.deform:
            spec = replace(spec, deform=kind)
        self.spec, self.deform, self.mode = spec, kind, mode
        self.weight_bits, self.first_weight_bits = weight_bits, first_weight_bits
        L = _Layers(mode, weight_bits, first_weight_bits)

        self.input_quant = QuantIdentity(act_quant=Uint8ActUnitScale, return_quant_tensor=True) if mode == "quant" else None
        self.stem = Stem(spec, L)
        cin = spec.stem_channels
        for k, (c, reps) in enumerate(zip(spec.stage_channels, spec.stage_repeats)):
            shared = L.act(True)  # one output scale per stage: every concat input of the stage
            units = [UnitS2(cin, c, L, shared)] + [UnitS1(c, L, shared) for _ in range(1, reps)]
            self.add_module(f"stage{k + 2}", nn.Sequential(*units))
            cin = c
        self.conv5 = L.conv(cin, spec.last_channels, 1)
        cin = spec.last_channels
        for k, c in enumerate(spec.decoder_channels):
            self.add_module(f"decoder{k}", DecoderBlock(cin, c, kind, spec, L))
            cin = c
        self.head = nn.ModuleDict({h: Head(cin, spec.head_channels, oc, L) for h, oc in (("hm", spec.num_classes), ("wh", 2), ("reg", 2))})
        if mode == "float":
            self._init_float()

    def _init_float(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for k in range(len(self.spec.decoder_channels)):
            dec = getattr(self, f"decoder{k}")
            if self.deform in DEFORMABLE:
                nn.init.zeros_(dec.offset.conv.weight)
                nn.init.constant_(dec.offset.conv.bias, SQUARE_BIAS_INIT if self.deform == "square" else 0.0)
        for name, head in self.head.items():
            # CenterNet's head init: tiny final weights, so the first logits are the bias
            # (a low score everywhere for hm) instead of kaiming-sized noise
            nn.init.normal_(head.out.conv.weight, std=0.001)
            nn.init.constant_(head.out.conv.bias, HM_BIAS_INIT if name == "hm" else 0.0)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"stage{k + 2}") for k in range(len(self.spec.stage_channels))]

    @property
    def decoders(self) -> list[DecoderBlock]:
        return [getattr(self, f"decoder{k}") for k in range(len(self.spec.decoder_channels))]

    def forward_raw(self, images: Tensor) -> dict[str, Tensor | QuantTensor]:
        """The heads as the layers return them: QuantTensors in quant mode (with their scales)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        if images.shape[2] % 32 or images.shape[3] % 32:
            raise ValueError(f"image height and width must be multiples of 32, got {tuple(images.shape[2:])}")
        dtype = self.stem.conv.conv.weight.dtype
        x = images if images.dtype == dtype else images.to(dtype)
        if self.input_quant is not None:
            x = self.input_quant(x)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        x = self.conv5(x)
        for dec in self.decoders:
            x = dec(x)
        return {h: head(x) for h, head in self.head.items()}

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """{"hm", "wh", "reg"} as (dequantized) float tensors, (N, C, H/4, W/4)."""
        return {h: value_of(y) for h, y in self.forward_raw(images).items()}


def build_model(
    spec: ArchSpec | str, deform: str | None = None, *, mode: str = "float", weight_bits: int = 4, first_weight_bits: int = 8, **overrides
) -> CoDeNet:
    """A CoDeNet from a zoo preset name (``codenet-1x-a`` .. ``codenet-2x-e``, ``codenet-tiny``) or an ArchSpec.

    `overrides` replace ArchSpec fields (e.g. ``input_size=128``, ``num_classes=80``).
    """
    if isinstance(spec, str):
        spec = arch(spec, **overrides)
    elif overrides:
        spec = replace(spec, **overrides)
    return CoDeNet(spec, deform, mode=mode, weight_bits=weight_bits, first_weight_bits=first_weight_bits)


def conv_blocks(model: nn.Module) -> dict[str, ConvBlock | DeformBlock]:
    """Every convolution-like block by module path, which is its graph node name, in execution order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, (ConvBlock, DeformBlock))}


def param_count(model: CoDeNet) -> int:
    """Weights plus one bias per output channel of every conv-like layer: the count after BN folding.

    Equals `codenet.sw.zoo.build(spec).param_count()` for the same architecture, in any mode.
    """
    return sum(b.conv.weight.numel() + b.conv.out_channels for b in conv_blocks(model).values())


@torch.no_grad()
def _folded(block: ConvBlock | DeformBlock) -> tuple[Tensor, Tensor]:
    conv = block.conv
    w = conv.weight.detach().clone()
    b = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(conv.out_channels, dtype=w.dtype, device=w.device)
    bn = block.bn
    if isinstance(bn, nn.BatchNorm2d):
        g = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        w = w * g.view(-1, 1, 1, 1)
        b = bn.bias + (b - bn.running_mean) * g
    return w, b


@torch.no_grad()
def fuse_bn(model: CoDeNet) -> CoDeNet:
    """The folded twin of a float model: BN merged into every conv, normalisation into the stem.

    Uses the BN running statistics, so the result equals the float model in eval mode (borders
    included, see :class:`Stem`); the input model is left untouched.
    """
    if model.mode != "float":
        raise ValueError(f"fuse_bn expects a float model, got mode {model.mode!r}")
    out = CoDeNet(model.spec, model.deform, mode="folded", weight_bits=model.weight_bits, first_weight_bits=model.first_weight_bits)
    out.to(next(model.parameters()).dtype)
    targets = conv_blocks(out)
    for name, block in conv_blocks(model).items():
        w, b = _folded(block)
        if name == "stem.conv":
            # x_n = x_raw * alpha_c + beta_c on the zero-padded raw image
            alpha = 1.0 / (255.0 * model.stem.std.view(1, 3, 1, 1))
            beta = -(model.stem.mean / model.stem.std).view(1, 3, 1, 1)
            b = b + (w * beta).sum(dim=(1, 2, 3))
            w = w * alpha
        targets[name].conv.weight.copy_(w)
        targets[name].conv.bias.copy_(b)
    return out.train(model.training)


@torch.no_grad()
def quantize(
    model: CoDeNet, *, weight_bits: int | None = None, first_weight_bits: int | None = None, weight_clip: str = "mse"
) -> CoDeNet:
    """The Brevitas model of a float (folded first) or folded model, ready for :func:`calibrate` and QAT.

    `weight_clip` ``mse`` clips each 4-bit channel's range where its weight MSE is least
    (`codenet.quant.qlayers.mse_weight_clip`); ``max`` keeps the plain abs-max.

    Activation scales are not set yet: run `codenet.quant.qlayers.calibrate` on a few batches.
    """
    if model.mode == "float":
        model = fuse_bn(model)
    if model.mode != "folded":
        raise ValueError(f"quantize expects a float or folded model, got mode {model.mode!r}")
    q = CoDeNet(
        model.spec,
        model.deform,
        mode="quant",
        weight_bits=model.weight_bits if weight_bits is None else weight_bits,
        first_weight_bits=model.first_weight_bits if first_weight_bits is None else first_weight_bits,
    )
    targets = conv_blocks(q)
    for name, block in conv_blocks(model).items():
        targets[name].conv.weight.copy_(block.conv.weight)
        targets[name].conv.bias.copy_(block.conv.bias)
    if weight_clip == "mse":
        mse_weight_clip(q)
    elif weight_clip != "max":
        raise ValueError(f"weight_clip must be 'mse' or 'max', got {weight_clip!r}")
    return q.train(model.training)
