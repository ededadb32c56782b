"""The CoDeNet model family as integer graphs with random weights.

One architecture description (:class:`ArchSpec`) serves both the zoo here (random integer
weights, for engine work and benchmarks) and `codenet.quant`, which trains the same
topology in PyTorch and exports it to the same graph layout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from .builder import GraphBuilder
from .ir import Graph

__all__ = ["ArchSpec", "PRESETS", "arch", "build", "names"]


@dataclass(frozen=True)
class ArchSpec:
    """A CoDeNet detector: ShuffleNetV2 backbone, deformable decoder, CenterNet heads."""

    input_size: int = 256
    stem: str = "s2mp"  # "s2mp": conv 3x3 s2 + max-pool 3x3 s2; "s4": conv 3x3 s4
    stem_channels: int = 24
    stage_channels: tuple[int, ...] = (116, 232, 464)
    stage_repeats: tuple[int, ...] = (4, 8, 4)
    last_channels: int = 1024
    #: one upsampling block per stage, so the heads always sit at output stride 4
    decoder_channels: tuple[int, ...] = (256, 128, 64)
    head_channels: int = 64
    num_classes: int = 20
    deform: str = "square"  # square | bounded | dw  ("full" exists only in codenet.quant)
    max_dilation: int = 8
    max_offset: int = 2

    def __post_init__(self):
        if self.input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32, got {self.input_size}")
        if self.stem not in ("s2mp", "s4"):
            raise ValueError(f"stem must be 's2mp' or 's4', got {self.stem!r}")
        if self.deform not in ("square", "bounded", "dw"):
            raise ValueError(f"deform must be square, bounded or dw for an integer graph, got {self.deform!r}")
        if any(c % 2 for c in self.stage_channels):
            raise ValueError(f"ShuffleNetV2 stage channels must be even, got {self.stage_channels}")
        if not 1 <= len(self.stage_channels) <= 3 or len(self.stage_repeats) != len(self.stage_channels):
            raise ValueError(
                f"need 1-3 stages with one repeat count each, got channels {self.stage_channels} and repeats {self.stage_repeats}"
            )
        if len(self.decoder_channels) != len(self.stage_channels):
            raise ValueError(
                f"need one decoder block per backbone stage (output stride 4), got {len(self.decoder_channels)} "
                f"decoder blocks for {len(self.stage_channels)} stages"
            )


_1X = dict(stage_channels=(116, 232, 464), last_channels=1024)
_2X = dict(stage_channels=(244, 488, 976), last_channels=2153)

#: The paper's configurations a-e (design.md § Reference numbers), plus a tiny one for tests.
PRESETS: dict[str, ArchSpec] = {
    "codenet-1x-a": ArchSpec(input_size=256, stem="s4", **_1X),
    "codenet-1x-b": ArchSpec(input_size=256, stem="s2mp", **_1X),
    "codenet-1x-c": ArchSpec(input_size=512, stem="s4", **_1X),
    "codenet-2x-d": ArchSpec(input_size=512, stem="s4", **_2X),
    "codenet-2x-e": ArchSpec(input_size=512, stem="s2mp", **_2X),
    # Two stages (backbone stride 16): at 128x128 a third stage leaves 4x4 features, from
    # which the decoder learned to localise several times more slowly (docs/quant.md).
    "codenet-tiny": ArchSpec(
        input_size=128,
        stem_channels=16,
        stage_channels=(48, 96),
        stage_repeats=(2, 3),
        last_channels=192,
        decoder_channels=(64, 32),
        head_channels=32,
        num_classes=5,
    ),
}


def names() -> list[str]:
    return sorted(PRESETS)


def arch(name: str, **overrides) -> ArchSpec:
    try:
        spec = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(names())}") from None
    return replace(spec, **overrides) if overrides else spec


def _unit_s1(b: GraphBuilder, x: str, c: int, p: str) -> str:
    half = c // 2
    x1, x2 = b.split(x, [half, half], name=f"{p}.split")
    y = b.conv(x2, half, 1, name=f"{p}.pw1")
    y = b.dwconv(y, 1, name=f"{p}.dw")
    y = b.conv(y, half, 1, name=f"{p}.pw2", out_scale=b.scale(x1))
    return b.shuffle(b.concat([x1, y], name=f"{p}.cat"), 2, name=f"{p}.shuffle")


def _unit_s2(b: GraphBuilder, x: str, cout: int, p: str) -> str:
    half = cout // 2
    a = b.dwconv(x, 2, name=f"{p}.b1.dw")
    a = b.conv(a, half, 1, name=f"{p}.b1.pw")
    y = b.conv(x, half, 1, name=f"{p}.b2.pw1")
    y = b.dwconv(y, 2, name=f"{p}.b2.dw")
    y = b.conv(y, half, 1, name=f"{p}.b2.pw2", out_scale=b.scale(a))
    return b.shuffle(b.concat([a, y], name=f"{p}.cat"), 2, name=f"{p}.shuffle")


def _deform_block(b: GraphBuilder, x: str, spec: ArchSpec, p: str) -> str:
    if spec.deform == "square":
        v = b.dilation_map(x, spec.max_dilation, name=f"{p}.offset")
        return b.deform(x, v, max_dilation=spec.max_dilation, name=f"{p}.deform")
    if spec.deform == "bounded":
        off = b.offset_map(x, spec.max_offset, name=f"{p}.offset")
        return b.deform_offsets(x, off, max_offset=spec.max_offset, name=f"{p}.deform")
    return b.dwconv(x, 1, name=f"{p}.dw")


def build(spec: ArchSpec | str, seed: int = 0, name: str | None = None) -> Graph:
    """The integer graph of `spec` with seeded random weights, calibrated on a random image."""
    if isinstance(spec, str):
        name = name or spec
        spec = arch(spec)
    b = GraphBuilder(name or "codenet", seed)
    s = spec.input_size
    x = b.input("image", (s, s, 3))
    if spec.stem == "s2mp":
        x = b.conv(x, spec.stem_channels, 3, 2, 1, w_bits=8, name="stem.conv")
        x = b.maxpool(x, 3, 2, 1, name="stem.pool")
    else:
        x = b.conv(x, spec.stem_channels, 3, 4, 1, w_bits=8, name="stem.conv")
    for k, (c, reps) in enumerate(zip(spec.stage_channels, spec.stage_repeats)):
        x = _unit_s2(b, x, c, f"stage{k + 2}.0")
        for r in range(1, reps):
            x = _unit_s1(b, x, c, f"stage{k + 2}.{r}")
    x = b.conv(x, spec.last_channels, 1, name="conv5")
    for k, c in enumerate(spec.decoder_channels):
        p = f"decoder{k}"
        x = _deform_block(b, x, spec, p)
        x = b.conv(x, c, 1, name=f"{p}.pw")
        x = b.upsample(x, name=f"{p}.up")
    heads = {}
    for head, oc in (("hm", spec.num_classes), ("wh", 2), ("reg", 2)):
        y = b.conv(x, spec.head_channels, 1, name=f"head.{head}.pw1")
        y = b.dwconv(y, 1, relu=True, name=f"head.{head}.dw")
        heads[head] = b.conv(y, oc, 1, relu=False, name=f"head.{head}.out")
    meta = {
        "arch": asdict(spec),
        "classes": [f"class{k}" for k in range(spec.num_classes)],
        "input_size": [s, s],
        "output_stride": 4,
        "heads": heads,
        "decode": {"kind": "centernet", "max_detections": 100, "peak_kernel": 3},
        "weights": f"random (seed {seed})",
    }
    return b.finish(list(heads.values()), meta)
