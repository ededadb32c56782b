"""A procedural detection dataset, generated at run time: no download, numpy alone.

Each image is drawn from its own random stream, seeded by (seed, split, index), so any
image can be produced on its own, in any order, by any worker, and a split is the same on
every machine. Train, val and test use different streams and so never share an image.

What makes it more than a toy (a detector has to learn shape, not colour or position):

- Five classes that differ only in shape: ``ring``, ``triangle``, ``cross``, ``star``,
  ``frame`` (a hollow square). Two pairs are close on purpose: ring/frame (both hollow),
  cross/star (both spiky).
- Colour carries no class information: every object (and every distractor) takes its
  colour from one class-independent distribution, chosen only to contrast with the
  background under it, and is filled with a gradient between two nearby colours.
- 1-6 objects per image, uniformly; sizes log-uniform between 8 % and 45 % of the image,
  with random rotation and aspect ratio; objects may overlap (each hides at most about a
  third of another).
- Clutter: 0-4 distractor shapes that are *not* in the class set, several of them hard
  negatives: ``blob`` (filled ellipse), ``bar`` (one arm of a cross), ``arc`` (an open
  ring), ``ell`` (a corner of a frame). They have no box.
- Background: a random two-colour gradient, low-frequency colour texture and stripes;
  then per-pixel Gaussian noise of random strength over the whole image.

Boxes are the tight pixel extents of the drawn shape (`xyxy`, continuous pixel
coordinates: a shape covering pixel columns 3..7 has x1 = 3, x2 = 8), the full extent even
where a later shape hides part of it, as in VOC and COCO.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

__all__ = ["CLASSES", "DISTRACTORS", "SyntheticDetection"]

#: Class names, in label order.
CLASSES: tuple[str, ...] = ("ring", "triangle", "cross", "star", "frame")
#: Shapes drawn as clutter, never labelled.
DISTRACTORS: tuple[str, ...] = ("blob", "bar", "arc", "ell")

_SPLITS = {"train": 0, "val": 1, "test": 2}
_DEFAULT_LEN = {"train": 4096, "val": 512, "test": 512}
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


# --------------------------------------------------------------------------- shapes
# Signed distance (approximate outside convex parts; only the zero level and the slope
# near it matter, for anti-aliasing) in unit coordinates: the shape fits in [-1, 1]^2.


def _box(u, v, hu, hv):
    return np.maximum(np.abs(u) - hu, np.abs(v) - hv)


def _ring(u, v):
    return np.abs(np.hypot(u, v) - 0.72) - 0.28


def _frame(u, v):
    return np.abs(np.maximum(np.abs(u), np.abs(v)) - 0.8) - 0.17


def _cross(u, v):
    return np.minimum(_box(u, v, 0.97, 0.3), _box(u, v, 0.3, 0.97))


_TRI_NORMALS = np.array([[np.cos(a), np.sin(a)] for a in np.deg2rad([90.0, 210.0, 330.0])], np.float32)


def _triangle(u, v):
    # Equilateral, circumradius 1.15, centred on its bounding box (apex up).
    v = v - 0.29
    return np.max(u[..., None] * _TRI_NORMALS[:, 0] + v[..., None] * _TRI_NORMALS[:, 1], axis=-1) - 0.575


def _star(u, v):
    period = 2 * np.pi / 5
    phi = np.mod(np.arctan2(u, -v), period) / period  # tips up
    rho = 0.42 + 0.58 * np.abs(2 * phi - 1)
    return (np.hypot(u, v) - rho) * 0.6


def _blob(u, v):
    return np.hypot(u, v) - 0.97


def _bar(u, v):
    return _box(u, v, 0.97, 0.24)


def _arc(u, v, span):
    ang = np.abs(np.arctan2(v, u))
    return np.maximum(_ring(u, v), (ang - span) * 0.72)


def _ell(u, v):
    return np.minimum(_box(u, v + 0.75, 0.97, 0.22), _box(u + 0.75, v, 0.22, 0.97))


_SDF = {"ring": _ring, "triangle": _triangle, "cross": _cross, "star": _star, "frame": _frame, "blob": _blob, "bar": _bar, "ell": _ell}


# --------------------------------------------------------------------------- background


@functools.lru_cache(maxsize=16)
def _interp_matrix(n: int, g: int) -> np.ndarray:
    """(n, g) bilinear weights that upsample g coarse samples to n pixels."""
    pos = (np.arange(n) + 0.5) * (g - 1) / n
    i0 = np.minimum(pos.astype(np.int64), g - 2)
    t = pos - i0
    m = np.zeros((n, g), np.float32)
    m[np.arange(n), i0] = 1 - t
    m[np.arange(n), i0 + 1] = t
    return m


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    c0 = rng.uniform(0, 255, 3)
    c1 = np.clip(c0 + rng.normal(0, 70, 3), 0, 255)
    ang = rng.uniform(0, 2 * np.pi)
    ys = (np.arange(h, dtype=np.float32) / h - 0.5)[:, None]
    xs = (np.arange(w, dtype=np.float32) / w - 0.5)[None, :]
    t = np.clip(0.5 + np.cos(ang) * xs + np.sin(ang) * ys, 0, 1)[..., None]
    img = (c0 * (1 - t) + c1 * t).astype(np.float32)
    g = int(rng.integers(3, 8))
    coarse = rng.normal(0, rng.uniform(5, 30), (g, g, 3)).astype(np.float32)
    img += np.einsum("hi,ijc,wj->hwc", _interp_matrix(h, g), coarse, _interp_matrix(w, g), optimize=True)
    if rng.random() < 0.5:  # stripes
        period = rng.uniform(4, 24)
        a = rng.uniform(0, np.pi)
        phase = 2 * np.pi * ((np.arange(w)[None, :] * np.cos(a) + np.arange(h)[:, None] * np.sin(a)) / period)
        img += (rng.uniform(4, 25) * np.sin(phase))[..., None].astype(np.float32) * rng.uniform(0.3, 1, 3).astype(np.float32)
    return img


# --------------------------------------------------------------------------- items


def _place(rng, size, lo, hi, boxes, max_cover, tries=30):
    """A centre and half-extents for a new item that hides no earlier item too much."""
    for k in range(tries):
        side = np.exp(rng.uniform(np.log(lo), np.log(hi))) * (0.97**k)
        aspect = np.exp(rng.uniform(-0.35, 0.35))
        rx, ry = side / 2 * np.sqrt(aspect), side / 2 / np.sqrt(aspect)
        r = np.hypot(rx, ry) + 1  # any rotation stays inside this square
        if 2 * r >= size:
            continue
        cx, cy = rng.uniform(r, size - r, 2)
        new = np.array([cx - r, cy - r, cx + r, cy + r])
        if boxes:
            old = np.array(boxes)
            iw = np.clip(np.minimum(old[:, 2], new[2]) - np.maximum(old[:, 0], new[0]), 0, None)
            ih = np.clip(np.minimum(old[:, 3], new[3]) - np.maximum(old[:, 1], new[1]), 0, None)
            inter = iw * ih
            area_old = (old[:, 2] - old[:, 0]) * (old[:, 3] - old[:, 1])
            if np.any(inter > max_cover * np.minimum(area_old, (2 * r) ** 2)):
                continue
        boxes.append(new)
        return cx, cy, rx, ry
    return None


def _draw(img, rng, shape, cx, cy, rx, ry):
    """Composite one shape onto `img` (float32 HWC); returns its tight box or None."""
    h, w, _ = img.shape
    r = np.hypot(rx, ry) + 1.5
    x0, x1 = max(int(cx - r), 0), min(int(np.ceil(cx + r)), w)
    y0, y1 = max(int(cy - r), 0), min(int(np.ceil(cy + r)), h)
    px = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
    py = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
    th = rng.uniform(-np.pi, np.pi)
    c, s = np.cos(th), np.sin(th)
    u = (c * px + s * py) / rx
    v = (-s * px + c * py) / ry
    if shape == "arc":
        d = _arc(u, v, rng.uniform(np.deg2rad(50), np.deg2rad(140)))
    else:
        d = _SDF[shape](u, v)
    alpha = np.clip(0.5 - d * min(rx, ry), 0, 1)
    inside = alpha > 0.5
    if not inside.any():
        return None
    patch = img[y0:y1, x0:x1]
    bg = patch[inside].mean(axis=0)
    col = _contrasting_colour(rng, float(bg @ _LUMA))
    col2 = np.clip(col + rng.normal(0, 25, 3), 0, 255)
    ga = rng.uniform(0, 2 * np.pi)
    t = np.clip(0.5 + (np.cos(ga) * px + np.sin(ga) * py) / (2 * r), 0, 1)[..., None]
    fill = col * (1 - t) + col2 * t
    a = alpha[..., None]
    patch *= 1 - a
    patch += fill * a
    rows, cols = np.nonzero(inside.any(axis=1))[0], np.nonzero(inside.any(axis=0))[0]
    return (x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1)


def _contrasting_colour(rng, bg_luma: float) -> np.ndarray:
    """A random colour whose luminance differs from the background by 45-130 levels."""
    delta = rng.uniform(45, 130)
    options = [t for t in (bg_luma - delta, bg_luma + delta) if 0 <= t <= 255]
    target = options[rng.integers(len(options))] if options else (0.0 if bg_luma > 127 else 255.0)
    col = rng.uniform(0, 255, 3)
    sat = rng.uniform(0.2, 1.0)
    col = col * sat + col.mean() * (1 - sat)
    col += target - float(col @ _LUMA)
    return np.clip(col, 0, 255)


# --------------------------------------------------------------------------- dataset


class SyntheticDetection:
    """Procedural detection images, deterministic given (seed, split, index).

    Indexable and sized, so it serves as a map-style torch Dataset as it is. Each item is
    ``{"image": uint8 (H, W, 3), "boxes": float32 (K, 4) xyxy pixels, "labels": int64 (K,)}``.
    """

    classes: tuple[str, ...] = CLASSES

    def __init__(
        self,
        split: str = "train",
        size: int = 128,
        num_images: int | None = None,
        seed: int = 0,
        *,
        max_objects: int = 6,
        max_distractors: int = 4,
        scale_range: tuple[float, float] = (0.08, 0.45),
    ):
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
        if not isinstance(size, int) or size < 32:
            raise ValueError(f"size must be an integer >= 32, got {size!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if num_images is None:
            num_images = _DEFAULT_LEN[split]
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        if max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {max_objects}")
        lo, hi = scale_range
        if not 0 < lo <= hi < 1:
            raise ValueError(f"scale_range must satisfy 0 < lo <= hi < 1, got {scale_range}")
        self.split, self.size, self.num_images, self.seed = split, size, int(num_images), int(seed)
        self.max_objects, self.max_distractors = max_objects, max_distractors
        self.min_side = max(8.0, lo * size)
        self.max_side = max(self.min_side, hi * size)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an integer, got {type(index).__name__}")
        if index < 0:
            index += self.num_images
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        return self.generate(int(index))

    def generate(self, index: int) -> dict[str, np.ndarray]:
        """Image `index` of this split (any index >= 0, also beyond len)."""
        # A hash of the split name keeps the streams of different splits apart even if
        # someone adds a split later; SeedSequence mixes the three words well.
        split_key = int.from_bytes(hashlib.blake2s(self.split.encode(), digest_size=4).digest(), "little")
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, split_key, _SPLITS[self.split], index]))
        s = self.size
        img = _background(rng, s, s)
        n_obj = int(rng.integers(1, self.max_objects + 1))
        n_dis = int(rng.integers(0, self.max_distractors + 1))
        placed: list[np.ndarray] = []
        items = []
        for k in range(n_obj + n_dis):
            is_obj = k < n_obj
            # Objects first, so that in a crowded image a distractor is what gets dropped.
            pos = _place(rng, s, self.min_side, self.max_side, placed, max_cover=0.35 if is_obj else 0.3)
            if pos is None:
                continue
            shape = int(rng.integers(len(CLASSES))) if is_obj else -1 - int(rng.integers(len(DISTRACTORS)))
            items.append((shape, pos))
        boxes, labels = [], []
        for j in rng.permutation(len(items)):
            shape, (cx, cy, rx, ry) = items[j]
            name = CLASSES[shape] if shape >= 0 else DISTRACTORS[-1 - shape]
            box = _draw(img, rng, name, cx, cy, rx, ry)
            if shape >= 0 and box is not None:
                boxes.append(box)
                labels.append(shape)
        img += rng.normal(0, rng.uniform(2, 14), img.shape).astype(np.float32)
        image = np.clip(img + 0.5, 0, 255).astype(np.uint8)
        return {
            "image": image,
            "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "labels": np.asarray(labels, np.int64),
        }

    def __repr__(self) -> str:
        return f"SyntheticDetection(split={self.split!r}, size={self.size}, num_images={self.num_images}, seed={self.seed})"
