"""AP50 / mAP through pycocotools, on hand-made cases whose AP can be worked out exactly.

COCOeval interpolates precision at 101 recall points r = 0, 0.01, ..., 1 (precision at r =
the best precision at any recall >= r, 0 beyond the highest recall reached) and averages
them. So "one of two objects found, nothing else" is 51/101 (r = 0 .. 0.50 at precision 1),
not VOC's 0.5. The expected values below come from that rule, applied by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from codenet.quant.evaluate import evaluate_detections  # noqa: E402
from codenet.sw.decode import Detections  # noqa: E402

CLASSES = ["a", "b"]


def _gt(boxes, labels, difficult=None):
    g = {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "labels": np.array(labels, np.int64)}
    if difficult is not None:
        g["difficult"] = np.array(difficult, bool)
    return g


def _det(boxes, scores, labels):
    return {
        "boxes": np.array(boxes, np.float32).reshape(-1, 4),
        "scores": np.array(scores, np.float32),
        "labels": np.array(labels, np.int64),
    }


def _ap101(precision_at_recall) -> float:
    """COCO's 101-point rule for a hand-written PR curve [(recall, precision), ...] in ranking order."""
    pts = np.array(precision_at_recall, np.float64)
    total = 0.0
    for r in np.linspace(0, 1, 101):
        ok = pts[pts[:, 0] >= r - 1e-12]
        total += ok[:, 1].max() if len(ok) else 0.0
    return total / 101


G = [[0, 0, 10, 10], [20, 20, 40, 40]]


def test_perfect_detections():
    gts = [_gt(G, [0, 1]), _gt([[5, 5, 25, 15]], [0])]
    dets = [_det(G, [0.9, 0.8], [0, 1]), Detections(np.array([[5, 5, 25, 15]], np.float32), np.array([0.3], np.float32), np.array([0]))]
    r = evaluate_detections(gts, dets, CLASSES)
    # (a mean of 101 ones in float64 may land one ulp below 1)
    assert r["ap50"] == pytest.approx(1.0) and r["map"] == pytest.approx(1.0)
    assert r["per_class_ap50"] == pytest.approx({"a": 1.0, "b": 1.0})


def test_no_detections():
    r = evaluate_detections([_gt(G, [0, 1])], [_det([], [], [])], CLASSES)
    assert r["ap50"] == 0.0 and r["map"] == 0.0 and r["per_class_ap50"] == {"a": 0.0, "b": 0.0}


def test_one_of_two_found():
    gts = [_gt(G, [0, 0])]
    r = evaluate_detections(gts, [_det(G[:1], [0.7], [0])], CLASSES)
    assert r["per_class_ap50"]["a"] == pytest.approx(51 / 101, abs=1e-12) == pytest.approx(_ap101([(0.5, 1.0)]))
    assert math.isnan(r["per_class_ap50"]["b"])  # no ground truth of class b: no AP, left out of the mean
    assert r["ap50"] == pytest.approx(51 / 101)


def test_iou_045_does_not_count_at_50_but_062_counts_for_three_thresholds():
    gts = [_gt([[0, 0, 10, 10]], [0])]
    low = evaluate_detections(gts, [_det([[0, 0, 10, 4.5]], [0.9], [0])], CLASSES)  # IoU 45 / 100
    assert low["ap50"] == 0.0 and low["map"] == 0.0
    mid = evaluate_detections(gts, [_det([[0, 0, 10, 6.2]], [0.9], [0])], CLASSES)  # IoU 0.62: matches at .50 .55 .60 of 10
    assert mid["ap50"] == pytest.approx(1.0) and mid["map"] == pytest.approx(3 / 10)


def test_duplicates_are_false_positives():
    # ranking: A (TP, r .5 p 1), A again (FP, r .5 p .5), B (TP, r 1 p 2/3)
    dets = [_det([G[0], G[0], G[1]], [0.9, 0.8, 0.7], [0, 0, 0])]
    r = evaluate_detections([_gt(G, [0, 0])], dets, CLASSES)
    want = _ap101([(0.5, 1.0), (0.5, 0.5), (1.0, 2 / 3)])
    assert want == pytest.approx((51 + 50 * 2 / 3) / 101)  # the hand rule, checked once more
    assert r["per_class_ap50"]["a"] == pytest.approx(want)
    # were the duplicate ranked last it would cost nothing: precision 1 up to recall 1
    later = evaluate_detections([_gt(G, [0, 0])], [_det([G[0], G[1], G[0]], [0.9, 0.8, 0.7], [0, 0, 0])], CLASSES)
    assert later["ap50"] == pytest.approx(1.0)


def test_wrong_class_and_cross_image_matching():
    gts = [_gt([G[0]], [0]), _gt([G[1]], [1])]
    # image 0: right box, wrong class; image 1: right box, right class but the box of image 0's object counts for nothing there
    dets = [_det([G[0]], [0.9], [1]), _det([G[1], G[0]], [0.8, 0.95], [1, 1])]
    r = evaluate_detections(gts, dets, CLASSES)
    assert r["per_class_ap50"]["a"] == 0.0
    # class b ranking: 0.95 FP, 0.9 FP, 0.8 TP -> r 1 at p 1/3
    assert r["per_class_ap50"]["b"] == pytest.approx(_ap101([(0, 0), (0, 0), (1.0, 1 / 3)]))
    assert r["ap50"] == pytest.approx((0 + 1 / 3) / 2)


def test_difficult_objects_are_ignored():
    gts = [_gt(G, [0, 0], difficult=[False, True])]
    found = evaluate_detections(gts, [_det(G, [0.9, 0.8], [0, 0])], CLASSES)  # the hit on the difficult one is no FP
    missed = evaluate_detections(gts, [_det(G[:1], [0.9], [0])], CLASSES)  # and missing it is no miss
    assert found["ap50"] == pytest.approx(1.0) and missed["ap50"] == pytest.approx(1.0)
    only_difficult = evaluate_detections([_gt(G[:1], [0], difficult=[True])], [_det([], [], [])], CLASSES)
    assert math.isnan(only_difficult["ap50"])


def test_input_errors():
    with pytest.raises(ValueError, match="2 ground-truth images but 1"):
        evaluate_detections([_gt(G, [0, 1])] * 2, [_det([], [], [])], CLASSES)
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 2\)"):
        evaluate_detections([_gt(G, [0, 2])], [_det([], [], [])], CLASSES)
    with pytest.raises(ValueError, match="scores"):
        evaluate_detections([_gt(G, [0, 1])], [{"boxes": np.zeros((1, 4)), "labels": np.zeros(1, np.int64)}], CLASSES)
