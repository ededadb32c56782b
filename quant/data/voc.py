"""Pascal VOC: ``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/{split}.txt``.

Every annotation of the split is parsed and checked when the dataset is built, so a bad
file fails at once, naming the file, the object and the field, and not hours into
training. Images are decoded on access (Pillow).

VOC boxes are 1-based inclusive pixel indices; they are returned as continuous pixel
coordinates ``(xmin - 1, ymin - 1, xmax, ymax)`` (the convention of detectron2), so a box
that covers the whole image is ``(0, 0, width, height)``.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from . import DatasetError, read_image

__all__ = ["VOC_CLASSES", "VOCDetection"]

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def _text(elem: ET.Element, tag: str, path: Path, obj: int | None, field: str) -> str:
    child = elem.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DatasetError("is missing", path=path, obj=obj, field=field)
    return child.text.strip()


def _number(elem: ET.Element, tag: str, path: Path, obj: int | None, field: str) -> float:
    raw = _text(elem, tag, path, obj, field)
    try:
        v = float(raw)
    except ValueError:
        raise DatasetError(f"is not a number: {raw!r}", path=path, obj=obj, field=field) from None
    if not math.isfinite(v):
        raise DatasetError(f"is not finite: {raw!r}", path=path, obj=obj, field=field)
    return v


def parse_annotation(path: str | Path, class_index: dict[str, int], *, strict: bool = True) -> dict:
    """One VOC XML file -> {filename, width, height, boxes, labels, difficult}; checks every field.

    With ``strict=False`` a box outside the image is clipped to it and an empty box dropped
    instead of raising (the file's structure, numbers and class names are still checked).
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise DatasetError("annotation file does not exist", path=path) from None
    except ET.ParseError as e:
        raise DatasetError(f"is not well-formed XML: {e}", path=path) from None
    if root.tag != "annotation":
        raise DatasetError(f"root element is <{root.tag}>, expected <annotation>", path=path)
    filename = _text(root, "filename", path, None, "filename")
    size = root.find("size")
    if size is None:
        raise DatasetError("is missing", path=path, field="size")
    width = _number(size, "width", path, None, "size/width")
    height = _number(size, "height", path, None, "size/height")
    if width < 1 or height < 1 or width != int(width) or height != int(height):
        raise DatasetError(f"image size must be positive integers, got {width} x {height}", path=path, field="size")
    boxes, labels, difficult = [], [], []
    for k, obj in enumerate(root.findall("object")):
        name = _text(obj, "name", path, k, "name")
        if name not in class_index:
            raise DatasetError(f"unknown class {name!r}", path=path, obj=k, field="name")
        diff = obj.find("difficult")
        is_difficult = False
        if diff is not None and diff.text is not None and diff.text.strip():
            if diff.text.strip() not in ("0", "1"):
                raise DatasetError(f"must be 0 or 1, got {diff.text.strip()!r}", path=path, obj=k, field="difficult")
            is_difficult = diff.text.strip() == "1"
        bb = obj.find("bndbox")
        if bb is None:
            raise DatasetError("is missing", path=path, obj=k, field="bndbox")
        x1, y1, x2, y2 = (_number(bb, t, path, k, f"bndbox/{t}") for t in ("xmin", "ymin", "xmax", "ymax"))
        # Inclusive 1-based indices: xmin == xmax would be one pixel wide; such slivers are
        # rejected together with inverted boxes (x2 <= x1), as useless for a detector.
        if x2 <= x1 or y2 <= y1:
            problem = f"empty box: xmin {x1:g}, ymin {y1:g}, xmax {x2:g}, ymax {y2:g} (need xmax > xmin and ymax > ymin)"
        elif x1 < 1 or y1 < 1 or x2 > width or y2 > height:
            problem = f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies outside the {width:g} x {height:g} image (1-based pixels)"
        else:
            problem = None
        if problem is not None:
            if strict:
                raise DatasetError(problem, path=path, obj=k, field="bndbox")
            # Lenient: clip to the image; drop what is left empty.
            x1, y1, x2, y2 = max(x1, 1.0), max(y1, 1.0), min(x2, width), min(y2, height)
            if x2 <= x1 or y2 <= y1:
                continue
        boxes.append((x1 - 1, y1 - 1, x2, y2))
        labels.append(class_index[name])
        difficult.append(is_difficult)
    return {
        "filename": filename,
        "width": int(width),
        "height": int(height),
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "labels": np.asarray(labels, np.int64),
        "difficult": np.asarray(difficult, bool),
    }


class VOCDetection:
    """A Pascal VOC split (e.g. ``VOCdevkit/VOC2007``, split ``trainval``).

    Items are ``{"image", "boxes", "labels", "difficult"}`` (see :mod:`codenet.quant.data`).
    ``keep_difficult=False`` leaves difficult objects out entirely; the default keeps them,
    flagged, so that evaluation can ignore them as the VOC protocol does.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "trainval",
        *,
        classes: tuple[str, ...] | list[str] = VOC_CLASSES,
        keep_difficult: bool = True,
        strict: bool = True,
    ):
        self.root = Path(root)
        self.split = split
        self.classes = tuple(classes)
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"class names must be unique, got {self.classes}")
        index = {c: k for k, c in enumerate(self.classes)}
        ids_file = self.root / "ImageSets" / "Main" / f"{split}.txt"
        try:
            ids = [line.split()[0] for line in ids_file.read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            raise DatasetError(f"split file does not exist (is {self.root} a VOC directory?)", path=ids_file) from None
        except (OSError, UnicodeDecodeError) as e:
            raise DatasetError(f"cannot read the split file: {e}", path=ids_file) from None
        self.ids = ids
        self._records = []
        for image_id in ids:
            ann = self.root / "Annotations" / f"{image_id}.xml"
            rec = parse_annotation(ann, index, strict=strict)
            img = self.root / "JPEGImages" / rec["filename"]
            if not img.is_file():
                img_by_id = self.root / "JPEGImages" / f"{image_id}.jpg"
                if not img_by_id.is_file():
                    raise DatasetError(f"image file {img} does not exist", path=ann, field="filename")
                img = img_by_id
            rec["image_path"] = img
            rec["annotation_path"] = ann
            if not keep_difficult:
                keep = ~rec["difficult"]
                for k in ("boxes", "labels", "difficult"):
                    rec[k] = rec[k][keep]
            self._records.append(rec)

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
                f"image is {image.shape[1]} x {image.shape[0]} but the annotation says {rec['width']} x {rec['height']}",
                path=rec["annotation_path"],
                field="size",
            )
        return {"image": image, "boxes": rec["boxes"].copy(), "labels": rec["labels"].copy(), "difficult": rec["difficult"].copy()}

    def __repr__(self) -> str:
        return f"VOCDetection(root={str(self.root)!r}, split={self.split!r}, images={len(self)})"
