"""COCO: an instances annotation file (JSON) and the folder of images it names.

The annotation file is read with the standard library (pycocotools is needed only for
evaluation) and checked whole when the dataset is built: a bad file fails at once with a
message naming the file, the annotation (by its position in ``annotations``) and the field.

Classes are the file's categories in ascending id order, renumbered 0..C-1 (COCO's 80
categories have ids 1..90 with gaps); ``category_ids[label]`` maps back. Boxes come from
``bbox = [x, y, w, h]`` as xyxy continuous pixels. ``iscrowd`` objects are kept and
flagged ``difficult`` (evaluation ignores them; training should drop them).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from . import DatasetError, read_image

__all__ = ["COCODetection"]

#: Float slack for a box edge beyond the image (COCO's float boxes sometimes end at
#: width + 1e-4); edges within it are clipped, anything further is an error.
_TOL = 0.01


def _num(v, path: Path, obj: int | None, field: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise DatasetError(f"must be a finite number, got {v!r}", path=path, obj=obj, field=field)
    return float(v)


def _req(d, key: str, path: Path, obj: int | None, field: str, where: str):
    if not isinstance(d, dict):
        raise DatasetError(f"{where} must be a JSON object, got {type(d).__name__}", path=path, obj=obj)
    if key not in d:
        raise DatasetError(f"is missing from {where}", path=path, obj=obj, field=field)
    return d[key]


class COCODetection:
    """A COCO-format detection set: ``annotation_file`` (instances JSON) + ``image_dir``.

    Images without annotations are kept (they hold no objects; COCO evaluation counts
    detections on them as false positives) unless ``skip_empty=True``.
    """

    def __init__(self, image_dir: str | Path, annotation_file: str | Path, *, skip_empty: bool = False, strict: bool = True):
        self.image_dir = Path(image_dir)
        self.annotation_file = path = Path(annotation_file)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DatasetError("annotation file does not exist", path=path) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DatasetError(f"is not valid JSON: {e}", path=path) from None
        if not isinstance(doc, dict):
            raise DatasetError("must hold a JSON object with images, annotations and categories", path=path)
        cats = _req(doc, "categories", path, None, "categories", "the file")
        images = _req(doc, "images", path, None, "images", "the file")
        anns = _req(doc, "annotations", path, None, "annotations", "the file")
        for name, v in (("categories", cats), ("images", images), ("annotations", anns)):
            if not isinstance(v, list):
                raise DatasetError(f"must be a list, got {type(v).__name__}", path=path, field=name)

        by_cat = {}
        for k, c in enumerate(cats):
            cid = _req(c, "id", path, None, f"categories[{k}].id", f"category {k}")
            name = _req(c, "name", path, None, f"categories[{k}].name", f"category {k}")
            if isinstance(cid, bool) or not isinstance(cid, int) or not isinstance(name, str):
                raise DatasetError(f"category {k} needs an integer id and a string name, got {cid!r}, {name!r}", path=path)
            if cid in by_cat:
                raise DatasetError(f"category id {cid} appears twice", path=path, field=f"categories[{k}].id")
            by_cat[cid] = name
        self.category_ids: tuple[int, ...] = tuple(sorted(by_cat))
        self.classes: tuple[str, ...] = tuple(by_cat[c] for c in self.category_ids)
        label_of = {cid: k for k, cid in enumerate(self.category_ids)}

        recs: dict[int, dict] = {}
        order = []
        for k, im in enumerate(images):
            iid = _req(im, "id", path, None, f"images[{k}].id", f"image {k}")
            fname = _req(im, "file_name", path, None, f"images[{k}].file_name", f"image {k}")
            w = _num(_req(im, "width", path, None, f"images[{k}].width", f"image {k}"), path, None, f"images[{k}].width")
            h = _num(_req(im, "height", path, None, f"images[{k}].height", f"image {k}"), path, None, f"images[{k}].height")
            if isinstance(iid, bool) or not isinstance(iid, int) or not isinstance(fname, str) or w < 1 or h < 1:
                raise DatasetError(f"image {k} needs an integer id, a file name and a positive size", path=path, field=f"images[{k}]")
            if iid in recs:
                raise DatasetError(f"image id {iid} appears twice", path=path, field=f"images[{k}].id")
            file = self.image_dir / fname
            if not file.is_file():
                raise DatasetError(f"image file {file} does not exist", path=path, field=f"images[{k}].file_name")
            recs[iid] = {"id": iid, "image_path": file, "width": int(w), "height": int(h), "boxes": [], "labels": [], "difficult": []}
            order.append(iid)

        for k, a in enumerate(anns):
            iid = _req(a, "image_id", path, k, "image_id", f"annotation {k}")
            cid = _req(a, "category_id", path, k, "category_id", f"annotation {k}")
            bbox = _req(a, "bbox", path, k, "bbox", f"annotation {k}")
            if iid not in recs:
                raise DatasetError(f"refers to unknown image id {iid!r}", path=path, obj=k, field="image_id")
            if cid not in label_of:
                raise DatasetError(f"unknown class: category id {cid!r} is not among the categories", path=path, obj=k, field="category_id")
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise DatasetError(f"must be [x, y, width, height], got {bbox!r}", path=path, obj=k, field="bbox")
            x, y, bw, bh = (_num(v, path, k, "bbox") for v in bbox)
            crowd = a.get("iscrowd", 0)
            if crowd not in (0, 1) or isinstance(crowd, float):
                raise DatasetError(f"must be 0 or 1, got {crowd!r}", path=path, obj=k, field="iscrowd")
            rec = recs[iid]
            x2, y2 = x + bw, y + bh
            problem = None
            if bw <= 0 or bh <= 0:
                problem = f"empty box {bbox} (width and height must be > 0)"
            elif x < -_TOL or y < -_TOL or x2 > rec["width"] + _TOL or y2 > rec["height"] + _TOL:
                problem = f"box {bbox} lies outside the {rec['width']} x {rec['height']} image {rec['image_path'].name}"
            if problem is not None:
                if strict:
                    raise DatasetError(problem, path=path, obj=k, field="bbox")
                x, y, x2, y2 = max(x, 0.0), max(y, 0.0), min(x2, rec["width"]), min(y2, rec["height"])
                if x2 <= x or y2 <= y:
                    continue
            rec["boxes"].append((max(x, 0.0), max(y, 0.0), min(x2, rec["width"]), min(y2, rec["height"])))
            rec["labels"].append(label_of[cid])
            rec["difficult"].append(bool(crowd))

        self._records = []
        for iid in order:
            rec = recs[iid]
            if skip_empty and not rec["boxes"]:
                continue
            rec["boxes"] = np.asarray(rec["boxes"], np.float32).reshape(-1, 4)
            rec["labels"] = np.asarray(rec["labels"], np.int64)
            rec["difficult"] = np.asarray(rec["difficult"], bool)
            self._records.append(rec)
        self.image_ids = [r["id"] for r in self._records]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self._records)

    def annotation(self, index: int) -> dict:
        """The parsed annotation of item `index` without decoding its image."""
        return self._records[index]

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        rec = self._records[index]
        image = read_image(rec["image_path"])
        if image.shape[:2] != (rec["height"], rec["width"]):
            raise DatasetError(
                f"image {rec['image_path']} is {image.shape[1]} x {image.shape[0]}, "
                f"but the annotation says {rec['width']} x {rec['height']}",
                path=self.annotation_file,
            )
        return {"image": image, "boxes": rec["boxes"].copy(), "labels": rec["labels"].copy(), "difficult": rec["difficult"].copy()}

    def __repr__(self) -> str:
        return f"COCODetection(image_dir={str(self.image_dir)!r}, annotation_file={str(self.annotation_file)!r}, images={len(self)})"
