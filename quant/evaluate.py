"""Detection accuracy: AP50 (the VOC-style number CoDeNet reports) and COCO mAP@[.5:.95].

Computed by pycocotools' ``COCOeval``, not by hand: ground truth and detections are
converted to COCO format in memory. Note what that implies:

- precision is interpolated at 101 recall points (0, 0.01, ..., 1), COCO's rule, not
  VOC2007's 11 points nor VOC2010's all-point area, so AP50 here can differ slightly from
  a VOC devkit number (one of two objects found, nothing else: 51/101, not 0.5);
- at most `max_detections` (default 100) per image count, the best-scored;
- objects flagged ``difficult`` (VOC difficult, COCO iscrowd) become COCO crowd regions:
  detections on them are neither true nor false positives, and missing them costs nothing
  (COCO matches a crowd region by intersection over the detection's area);
- a class without any ground-truth object has no AP (NaN in ``per_class_ap50``) and is
  left out of the means, as in both COCO and VOC.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["evaluate_detections"]


def _get(item, key: str, where: str):
    if isinstance(item, Mapping):
        if key not in item:
            raise ValueError(f"{where} lacks {key!r}")
        return item[key]
    if not hasattr(item, key):
        raise ValueError(f"{where} lacks {key!r}")
    return getattr(item, key)


def _boxes(item, where: str) -> np.ndarray:
    b = np.asarray(_get(item, "boxes", where), np.float64)
    if b.size == 0:
        return b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4 or not np.isfinite(b).all():
        raise ValueError(f"{where}: boxes must be a finite (K, 4) xyxy array, got shape {b.shape}")
    return b


def _labels(item, where: str, n: int, num_classes: int) -> np.ndarray:
    lab = np.asarray(_get(item, "labels", where)).reshape(-1)
    if len(lab) != n:
        raise ValueError(f"{where}: {n} boxes but {len(lab)} labels")
    if n and (not np.issubdtype(lab.dtype, np.integer) or lab.min() < 0 or lab.max() >= num_classes):
        raise ValueError(f"{where}: labels must be integers in [0, {num_classes}), got {lab}")
    return lab.astype(np.int64)


def evaluate_detections(
    gts: Sequence[Mapping],
    dets: Sequence,
    classes: Sequence[str],
    *,
    max_detections: int = 100,
) -> dict:
    """AP50, mAP@[.5:.95] and per-class AP50 (fractions in [0, 1]) of `dets` against `gts`.

    ``gts[i]`` holds ``boxes`` (K, 4) xyxy and ``labels`` (K,) (optionally ``difficult``);
    ``dets[i]`` (dict or :class:`codenet.sw.decode.Detections`) holds ``boxes``, ``scores``,
    ``labels`` for the same image. Returns ``{"ap50", "map", "per_class_ap50": {name: ap}}``;
    NaN where no ground truth exists to measure against.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(gts) != len(dets):
        raise ValueError(f"{len(gts)} ground-truth images but {len(dets)} detection lists")
    classes = list(classes)
    nc = len(classes)
    images, gt_anns, dt_anns = [], [], []
    for i, (g, d) in enumerate(zip(gts, dets)):
        images.append({"id": i + 1})
        gb = _boxes(g, f"gts[{i}]")
        gl = _labels(g, f"gts[{i}]", len(gb), nc)
        diff = np.asarray(g.get("difficult", np.zeros(len(gb), bool)) if isinstance(g, Mapping) else np.zeros(len(gb), bool), bool)
        diff = diff.reshape(-1) if diff.size else np.zeros(len(gb), bool)
        if len(diff) != len(gb):
            raise ValueError(f"gts[{i}]: {len(gb)} boxes but {len(diff)} difficult flags")
        for b, lab, dflag in zip(gb, gl, diff):
            w, h = b[2] - b[0], b[3] - b[1]
            gt_anns.append(
                {
                    "id": len(gt_anns) + 1,
                    "image_id": i + 1,
                    "category_id": int(lab) + 1,
                    "bbox": [float(b[0]), float(b[1]), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": int(dflag),
                }
            )
        db = _boxes(d, f"dets[{i}]")
        dl = _labels(d, f"dets[{i}]", len(db), nc)
        ds = np.asarray(_get(d, "scores", f"dets[{i}]"), np.float64).reshape(-1)
        if len(ds) != len(db):
            raise ValueError(f"dets[{i}]: {len(db)} boxes but {len(ds)} scores")
        for b, lab, s in zip(db, dl, ds):
            w, h = b[2] - b[0], b[3] - b[1]
            dt_anns.append(
                {
                    "id": len(dt_anns) + 1,
                    "image_id": i + 1,
                    "category_id": int(lab) + 1,
                    "bbox": [float(b[0]), float(b[1]), float(w), float(h)],
                    "area": float(w * h),
                    "score": float(s),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(classes)]

    per_class = {name: math.nan for name in classes}
    if not any(a["iscrowd"] == 0 for a in gt_anns):
        return {"ap50": math.nan, "map": math.nan, "per_class_ap50": per_class}

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools reports progress on stdout
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": gt_anns, "categories": categories}
        coco_gt.createIndex()
        # Built like COCO.loadRes, which cannot take an empty list.
        coco_dt = COCO()
        coco_dt.dataset = {"images": images, "annotations": dt_anns, "categories": categories}
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.maxDets = [1, 10, max_detections]
        ev.evaluate()
        ev.accumulate()

    # precision: [iou thresholds T, recall points R, classes K, area ranges A, maxDets M]; -1 = no ground truth.
    prec = ev.eval["precision"][:, :, :, 0, -1]

    def _ap(p: np.ndarray) -> float:
        p = p[p > -1]
        return float(p.mean()) if p.size else math.nan

    for k, name in enumerate(classes):
        per_class[name] = _ap(prec[0, :, k])
    return {"ap50": _ap(prec[0]), "map": _ap(prec), "per_class_ap50": per_class}
