"""CenterNet training targets (numpy), the exact inverse of :func:`codenet.sw.decode.decode`.

For an image of H x W pixels and output stride R (4), the heads live on a grid of
H/R x W/R cells. An object with box (x1, y1, x2, y2) in input pixels has, in grid units,

- centre ``c = ((x1 + x2) / 2R, (y1 + y2) / 2R)``, and its cell ``p = floor(c)``;
- ``hm[class]``: a Gaussian peak of height 1 at ``p`` (CenterNet's radius rule, below);
  where peaks of one class overlap the maximum wins;
- ``wh = ((x2 - x1) / R, (y2 - y1) / R)``: box size in **grid units** (as in CenterNet);
- ``reg = c - p``: the sub-cell offset of the centre, in [0, 1);
- ``ind = p_y * (W/R) + p_x``: the cell, flattened row-major; ``mask`` 1 for real objects.

Decoding inverts it: ``x1 = (p_x + reg_x - wh_w / 2) * R`` and so on, which gives back the
box exactly (up to float rounding) when the peak is found at ``p``.

The radius follows CenterNet's ``gaussian_radius`` (Zhou et al. 2019, taken from
CornerNet) as published, including its well-known deviation from the exact quadratic
root; keeping it lets trained models be compared with the reference implementation.
"""

from __future__ import annotations

import numpy as np

__all__ = ["gaussian_radius", "draw_gaussian", "encode_targets"]


def gaussian_radius(height: np.ndarray | float, width: np.ndarray | float, min_overlap: float = 0.7) -> np.ndarray:
    """CenterNet's peak radius (grid units, float) for boxes of `height` x `width` grid units."""
    h = np.asarray(height, np.float64)
    w = np.asarray(width, np.float64)
    b1 = h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + np.sqrt(b1**2 - 4 * c1)) / 2
    b2 = 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + np.sqrt(b2**2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + np.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return np.minimum(np.minimum(r1, r2), r3)


def _gaussian_kernel(radius: int) -> np.ndarray:
    d = 2 * radius + 1
    sigma = d / 6
    y = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(y[:, None] ** 2 + y[None, :] ** 2) / (2 * sigma * sigma))
    g[g < np.finfo(np.float64).eps * g.max()] = 0
    return g.astype(np.float32)


def draw_gaussian(heatmap: np.ndarray, cx: int, cy: int, radius: int) -> None:
    """Max-merge a (2r+1)^2 Gaussian (sigma = (2r+1)/6, peak 1) centred on cell (cx, cy), in place."""
    g = _gaussian_kernel(radius)
    h, w = heatmap.shape
    left, right = min(cx, radius), min(w - cx, radius + 1)
    top, bottom = min(cy, radius), min(h - cy, radius + 1)
    if right <= 0 or bottom <= 0 or left < 0 or top < 0:
        return
    dst = heatmap[cy - top : cy + bottom, cx - left : cx + right]
    np.maximum(dst, g[radius - top : radius + bottom, radius - left : radius + right], out=dst)


def encode_targets(
    boxes: np.ndarray,
    labels: np.ndarray,
    image_size: tuple[int, int] | int,
    num_classes: int,
    *,
    output_stride: int = 4,
    max_objects: int = 128,
    min_overlap: float = 0.7,
) -> dict[str, np.ndarray]:
    """Targets for one image.

    `boxes` (K, 4) xyxy input pixels, `labels` (K,) in [0, num_classes); `image_size`
    (H, W) or one int. Boxes are clipped to the image; empty ones are skipped; beyond
    `max_objects` the rest are dropped. Returns ``hm`` float32 (C, H/R, W/R), ``wh`` and
    ``reg`` float32 (max_objects, 2) as (x, y) pairs, ``ind`` int64 (max_objects,), ``mask``
    float32 (max_objects,).
    """
    ih, iw = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else image_size
    if ih % output_stride or iw % output_stride:
        raise ValueError(f"image size {ih}x{iw} is not a multiple of the output stride {output_stride}")
    oh, ow = ih // output_stride, iw // output_stride
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}")

    hm = np.zeros((num_classes, oh, ow), np.float32)
    wh = np.zeros((max_objects, 2), np.float32)
    reg = np.zeros((max_objects, 2), np.float32)
    ind = np.zeros(max_objects, np.int64)
    mask = np.zeros(max_objects, np.float32)

    b = np.clip(boxes, 0, [iw, ih, iw, ih]) / output_stride
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    valid = (bw > 0) & (bh > 0)
    b, bw, bh, labels = b[valid][:max_objects], bw[valid][:max_objects], bh[valid][:max_objects], labels[valid][:max_objects]
    n = len(b)
    if n == 0:
        return {"hm": hm, "wh": wh, "reg": reg, "ind": ind, "mask": mask}
    radius = np.maximum(0, gaussian_radius(np.ceil(bh), np.ceil(bw), min_overlap).astype(np.int64))
    ctr = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1)
    cell = np.minimum(np.floor(ctr).astype(np.int64), [ow - 1, oh - 1])  # a centre on the far edge stays on the grid
    for k in range(n):
        draw_gaussian(hm[labels[k]], int(cell[k, 0]), int(cell[k, 1]), int(radius[k]))
    wh[:n] = np.stack([bw, bh], axis=1)
    reg[:n] = ctr - cell
    ind[:n] = cell[:, 1] * ow + cell[:, 0]
    mask[:n] = 1
    return {"hm": hm, "wh": wh, "reg": reg, "ind": ind, "mask": mask}
