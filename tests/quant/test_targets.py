"""CenterNet target encoding, and encode -> decode giving the boxes back."""

from __future__ import annotations

import math

import numpy as np
import pytest

from codenet.quant.data import SyntheticDetection
from codenet.quant.targets import encode_targets, gaussian_radius
from codenet.sw.decode import decode


def test_radius_matches_centernet_rule_by_hand():
    # CenterNet's three roots for a 10 x 10 box, min_overlap 0.7, worked by hand:
    #   r1 = (20 + sqrt(400 - 4 * 100 * 0.3 / 1.7)) / 2              = 19.0752
    #   r2 = (40 + sqrt(1600 - 16 * 30)) / 2                          = 36.7332
    #   r3 = (-28 + sqrt(784 - 4 * 2.8 * -30)) / 2 = (-28 + sqrt(1120)) / 2 = 2.7332
    assert gaussian_radius(10, 10) == pytest.approx((-28 + math.sqrt(1120)) / 2, abs=1e-9)
    r = gaussian_radius(np.array([4.0, 10, 40]), np.array([4.0, 10, 40]))
    assert np.all(np.diff(r) > 0)  # grows with the box


def test_targets_for_one_box_by_hand():
    # box (10, 20, 50, 44) px, stride 4 -> grid (2.5, 5, 12.5, 11): centre (7.5, 8), cell (7, 8), size 10 x 6
    t = encode_targets(np.array([[10, 20, 50, 44]]), np.array([2]), 128, 5, max_objects=4)
    assert t["hm"].shape == (5, 32, 32) and t["hm"].dtype == np.float32
    assert t["wh"].shape == (4, 2) and t["reg"].shape == (4, 2) and t["ind"].shape == (4,) and t["mask"].shape == (4,)
    np.testing.assert_array_equal(t["wh"][0], [10, 6])
    np.testing.assert_array_equal(t["reg"][0], [0.5, 0.0])
    assert t["ind"][0] == 8 * 32 + 7
    np.testing.assert_array_equal(t["mask"], [1, 0, 0, 0])
    assert t["hm"][2, 8, 7] == 1.0 and t["hm"][2].max() == 1.0
    assert np.count_nonzero(t["hm"][[0, 1, 3, 4]]) == 0
    # radius int(gaussian_radius(6, 10)) -> a (2r+1)^2 footprint around the cell
    r = int(gaussian_radius(6, 10))
    ys, xs = np.nonzero(t["hm"][2])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (8 - r, 8 + r, 7 - r, 7 + r)


def _naive_heatmap(boxes, labels, size, num_classes, stride=4):
    """Per-pixel definition: max over objects of exp(-d^2 / 2 sigma^2) within the radius window."""
    g = size // stride
    hm = np.zeros((num_classes, g, g))
    for (x1, y1, x2, y2), lab in zip(boxes, labels):
        bw, bh = (x2 - x1) / stride, (y2 - y1) / stride
        r = max(0, int(gaussian_radius(math.ceil(bh), math.ceil(bw))))
        cx, cy = int((x1 + x2) / 2 / stride), int((y1 + y2) / 2 / stride)
        sigma = (2 * r + 1) / 6
        for y in range(g):
            for x in range(g):
                if abs(x - cx) <= r and abs(y - cy) <= r:
                    v = math.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
                    hm[lab, y, x] = max(hm[lab, y, x], v)
    return hm


def test_heatmap_against_a_per_pixel_definition():
    ds = SyntheticDetection("val", 64, 6, seed=4)
    for s in ds:
        t = encode_targets(s["boxes"], s["labels"], 64, 5)
        want = _naive_heatmap(s["boxes"], s["labels"], 64, 5)
        # the encoder zeroes values below eps * peak, which the per-pixel definition keeps
        np.testing.assert_allclose(t["hm"], want, atol=1e-6)


def test_clipping_empty_boxes_and_max_objects():
    boxes = np.array([[-8, -8, 16, 16], [5, 5, 5, 20], [100, 100, 140, 120], [20, 20, 40, 40], [50, 50, 60, 60]], np.float32)
    t = encode_targets(boxes, np.array([0, 1, 2, 3, 4]), (128, 128), 5, max_objects=3)
    assert t["mask"].tolist() == [1, 1, 1]  # the empty box is skipped, the last one does not fit
    np.testing.assert_array_equal(t["wh"], [[4, 4], [7, 5], [5, 5]])  # first clipped to (0, 0, 16, 16); third to (.., 128, 120)
    assert np.count_nonzero(t["hm"][1]) == 0 and np.count_nonzero(t["hm"][4]) == 0
    with pytest.raises(ValueError, match="labels"):
        encode_targets(boxes[:1], np.array([5]), 128, 5)
    with pytest.raises(ValueError, match="multiple"):
        encode_targets(boxes[:1], np.array([0]), 130, 5)
    empty = encode_targets(np.zeros((0, 4)), np.zeros(0, np.int64), 64, 3)
    assert not empty["hm"].any() and not empty["mask"].any()


def _heads_from_targets(t: dict, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a perfect network would output: logits of the heat-map; wh and reg written at each object's cell."""
    _, gh, gw = t["hm"].shape
    p = np.clip(t["hm"].transpose(1, 2, 0).astype(np.float64), 1e-6, 1 - 1e-6)
    logits = np.log(p / (1 - p))
    wh = np.zeros((gh * gw, 2))
    reg = np.zeros((gh * gw, 2))
    n = int(t["mask"].sum())
    wh[t["ind"][:n]] = t["wh"][:n]
    reg[t["ind"][:n]] = t["reg"][:n]
    return logits, wh.reshape(gh, gw, 2), reg.reshape(gh, gw, 2)


@pytest.mark.parametrize("seed", range(5))
def test_encode_decode_round_trip(seed):
    rng = np.random.default_rng(seed)
    size, nc = 128, 4
    # non-overlapping objects: one per 32 px tile of a random subset of tiles, random box inside it
    tiles = rng.choice(16, size=int(rng.integers(1, 7)), replace=False)
    boxes = []
    for t in tiles:
        ox, oy = (t % 4) * 32, (t // 4) * 32
        x1, y1 = rng.uniform(0, 12, 2)
        x2, y2 = x1 + rng.uniform(6, 32 - x1), y1 + rng.uniform(6, 32 - y1)
        boxes.append((ox + x1, oy + y1, ox + x2, oy + y2))
    boxes = np.array(boxes, np.float32)
    labels = rng.integers(0, nc, len(boxes))
    t = encode_targets(boxes, labels, size, nc)
    det = decode(*_heads_from_targets(t, nc), output_stride=4, score_threshold=0.5)
    assert len(det) == len(boxes)
    assert np.allclose(det.scores, 1 - 1e-6, atol=1e-6)
    # equal scores: compare as sets (the tie order is decode's business, tested there)
    got, want = np.lexsort(det.boxes.T[::-1]), np.lexsort(boxes.T[::-1])
    np.testing.assert_allclose(det.boxes[got], boxes[want], atol=1e-4)
    np.testing.assert_array_equal(det.labels[got], labels[want])
