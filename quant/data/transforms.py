"""Training augmentation on dataset items, numpy only.

Every transform is a callable ``(sample, rng) -> sample`` taking the item dict of
:mod:`codenet.quant.data` and a ``numpy.random.Generator``, so a run is reproducible from
one seed whatever the number of loader workers (see :class:`Augmented`, which derives each
item's generator from (seed, epoch, index)). Inputs are never modified in place.

Boxes follow the image: a flip mirrors them; a scale/crop maps them with the same affine
map as the pixels, clips them to the output, and drops those with too little of their
area left visible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["Augmented", "Compose", "ColorJitter", "RandomFlip", "RandomScaleCrop", "Resize", "train_transform"]

Sample = dict[str, np.ndarray]
Transform = Callable[[Sample, np.random.Generator], Sample]

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _with(sample: Sample, **kw) -> Sample:
    out = dict(sample)
    out.update(kw)
    return out


class Compose:
    """Apply transforms in order with one generator."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for t in self.transforms:
            sample = t(sample, rng)
        return sample


class RandomFlip:
    """Mirror left-right with probability `p`."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        w = sample["image"].shape[1]
        b = np.asarray(sample["boxes"], np.float32).reshape(-1, 4)
        flipped = np.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], axis=1).astype(np.float32)
        return _with(sample, image=np.ascontiguousarray(sample["image"][:, ::-1]), boxes=flipped)


def affine_crop(
    image: np.ndarray, scale: float, offset: tuple[float, float], out_hw: tuple[int, int], fill: float | Sequence[float] = 127.0
) -> np.ndarray:
    """Resample ``image`` by ``x_out = x_in * scale - offset`` (bilinear, continuous pixel coords).

    Output pixels that map outside the input take `fill`. Boxes map with the same formula,
    so pixels and boxes stay aligned exactly.
    """
    h, w, c = image.shape
    oh, ow = out_hw
    ox, oy = offset
    src = image.astype(np.float32)
    # Centre of output pixel u is u + 0.5; in input continuous coords (u + 0.5 + ox) / s,
    # i.e. input pixel-index coordinate (u + 0.5 + ox) / s - 0.5.
    xs = (np.arange(ow, dtype=np.float64) + 0.5 + ox) / scale - 0.5
    ys = (np.arange(oh, dtype=np.float64) + 0.5 + oy) / scale - 0.5
    # Inside the input's continuous extent [0, w] x [0, h]: pixel-index coords [-0.5, w - 0.5].
    valid_x = (xs >= -0.5) & (xs <= w - 0.5)
    valid_y = (ys >= -0.5) & (ys <= h - 0.5)
    xc = np.clip(xs, 0, w - 1)
    yc = np.clip(ys, 0, h - 1)
    x0 = np.minimum(np.floor(xc).astype(np.int64), w - 1)
    y0 = np.minimum(np.floor(yc).astype(np.int64), h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    tx = (xc - x0).astype(np.float32)[None, :, None]
    ty = (yc - y0).astype(np.float32)[:, None, None]
    top = src[y0][:, x0] * (1 - tx) + src[y0][:, x1] * tx
    bot = src[y1][:, x0] * (1 - tx) + src[y1][:, x1] * tx
    out = top * (1 - ty) + bot * ty
    inside = (valid_y[:, None] & valid_x[None, :])[..., None]
    out = np.where(inside, out, np.asarray(fill, np.float32))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _map_boxes(sample: Sample, scale: float, offset: tuple[float, float], out_hw: tuple[int, int], min_visible: float) -> dict:
    oh, ow = out_hw
    b = np.asarray(sample["boxes"], np.float64).reshape(-1, 4) * scale - np.array([offset[0], offset[1]] * 2)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    c = np.stack([np.clip(b[:, 0], 0, ow), np.clip(b[:, 1], 0, oh), np.clip(b[:, 2], 0, ow), np.clip(b[:, 3], 0, oh)], axis=1)
    cw, ch = c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]
    keep = (cw >= 1) & (ch >= 1) & (cw * ch >= min_visible * np.maximum(area, 1e-9))
    out = {"boxes": c[keep].astype(np.float32), "labels": np.asarray(sample["labels"])[keep]}
    if "difficult" in sample:
        out["difficult"] = np.asarray(sample["difficult"])[keep]
    return out


class RandomScaleCrop:
    """Rescale by a random factor, then cut (or pad) a random `out_size` window.

    The scale is log-uniform in `scale_range`; the window's position is uniform over the
    positions that keep it overlapping the scaled image (the image may be padded with
    `fill` when scaled below the window). Boxes are clipped to the window; a box is
    dropped when less than `min_visible` of its area remains, or when it is under a pixel.
    """

    def __init__(
        self,
        out_size: int | tuple[int, int],
        scale_range: tuple[float, float] = (0.6, 1.4),
        min_visible: float = 0.3,
        fill: float | Sequence[float] = 127.0,
    ):
        self.out_hw = (out_size, out_size) if isinstance(out_size, int) else tuple(out_size)
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {scale_range}")
        self.scale_range, self.min_visible, self.fill = (lo, hi), min_visible, fill

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        h, w = sample["image"].shape[:2]
        oh, ow = self.out_hw
        # A base scale fits the image to the window (so a 500x375 VOC image and a 128x128
        # synthetic one behave alike), then the random factor.
        base = min(oh / h, ow / w)
        s = base * float(np.exp(rng.uniform(np.log(self.scale_range[0]), np.log(self.scale_range[1]))))
        sw, sh = w * s, h * s
        ox = rng.uniform(min(0.0, sw - ow), max(0.0, sw - ow))
        oy = rng.uniform(min(0.0, sh - oh), max(0.0, sh - oh))
        image = affine_crop(sample["image"], s, (ox, oy), (oh, ow), self.fill)
        return _with(sample, image=image, **_map_boxes(sample, s, (ox, oy), (oh, ow), self.min_visible))


class Resize:
    """Deterministic letterbox to `out_size` (for evaluation): fit, centre, pad with `fill`.

    Returns the sample with ``scale`` and ``offset`` added, so that detections can be
    mapped back to the original image: ``x_orig = (x + offset_x) / scale``.
    """

    def __init__(self, out_size: int | tuple[int, int], fill: float | Sequence[float] = 127.0):
        self.out_hw = (out_size, out_size) if isinstance(out_size, int) else tuple(out_size)
        self.fill = fill

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        h, w = sample["image"].shape[:2]
        oh, ow = self.out_hw
        s = min(oh / h, ow / w)
        ox, oy = (w * s - ow) / 2, (h * s - oh) / 2
        image = affine_crop(sample["image"], s, (ox, oy), (oh, ow), self.fill)
        out = _with(sample, image=image, **_map_boxes(sample, s, (ox, oy), (oh, ow), 0.0))
        out["scale"], out["offset"] = np.float32(s), np.array([ox, oy], np.float32)
        return out


class ColorJitter:
    """Random brightness, contrast, saturation and per-channel gain (photometric only)."""

    def __init__(self, brightness: float = 0.3, contrast: float = 0.3, saturation: float = 0.3, channel_gain: float = 0.1):
        self.brightness, self.contrast, self.saturation, self.channel_gain = brightness, contrast, saturation, channel_gain

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        img = sample["image"].astype(np.float32)
        b = 1 + rng.uniform(-self.brightness, self.brightness)
        c = 1 + rng.uniform(-self.contrast, self.contrast)
        s = 1 + rng.uniform(-self.saturation, self.saturation)
        g = 1 + rng.uniform(-self.channel_gain, self.channel_gain, 3).astype(np.float32)
        img = img * b
        img = (img - float((img @ _LUMA).mean())) * c + float((img @ _LUMA).mean())
        gray = (img @ _LUMA)[..., None]
        img = (img - gray) * s + gray
        img = img * g
        return _with(sample, image=np.clip(img + 0.5, 0, 255).astype(np.uint8))


def train_transform(out_size: int, scale_range: tuple[float, float] = (0.6, 1.4)) -> Compose:
    """The default training augmentation: scale/crop, flip, colour jitter."""
    return Compose([RandomScaleCrop(out_size, scale_range), RandomFlip(0.5), ColorJitter()])


class Augmented:
    """A dataset whose items pass through `transform`, reproducibly.

    Item `i` in epoch `e` uses ``default_rng(SeedSequence([seed, e, i]))``, so results do
    not depend on loader workers or on the order of access; call :meth:`set_epoch` each
    epoch for fresh augmentation.
    """

    def __init__(self, dataset, transform: Transform, seed: int = 0):
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, int(seed), 0
        self.classes = getattr(dataset, "classes", None)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} items")
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, int(index)]))
        return self.transform(self.dataset[index], rng)
