"""Detection datasets: one item format for every source.

Every dataset here is a map-style dataset (``len`` and integer indexing; a torch
``DataLoader`` takes it as it is) whose items are dicts::

    {"image": uint8 (H, W, 3) RGB,
     "boxes": float32 (K, 4) xyxy in continuous pixel coordinates,
     "labels": int64 (K,) indices into the dataset's ``classes``,
     "difficult": bool (K,)}            # VOC and COCO only: VOC "difficult", COCO "iscrowd"

and carries ``classes`` (the names, in label order). Objects flagged ``difficult`` are
ignored by :func:`codenet.quant.evaluate.evaluate_detections` (neither found nor missed);
training usually drops them (:func:`drop_difficult`).

- :class:`SyntheticDetection`: procedural shapes generated at run time (no download).
- :class:`VOCDetection`: a Pascal VOC directory.
- :class:`COCODetection`: a COCO annotation file and its image folder.

Loaders validate every annotation up front and raise :class:`DatasetError` (a
``ValueError``) naming the file, and the object and field where one applies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["DatasetError", "SyntheticDetection", "VOCDetection", "COCODetection", "drop_difficult", "read_image"]


class DatasetError(ValueError):
    """A malformed dataset file; the message names the file (and object and field)."""

    def __init__(self, message: str, *, path: str | Path | None = None, obj: int | None = None, field: str | None = None):
        self.path, self.obj, self.field, self.reason = path, obj, field, message
        where = [str(path)] if path is not None else []
        if obj is not None:
            where.append(f"object {obj}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


def read_image(path: str | Path) -> np.ndarray:
    """Decode a JPEG/PNG file to uint8 RGB (H, W, 3); a bad or missing file is a DatasetError."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading image files needs Pillow: pip install pillow") from e
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError("image file does not exist", path=path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"cannot decode image: {e}", path=path) from None


def drop_difficult(sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The sample without its difficult/crowd objects (for training)."""
    if "difficult" not in sample:
        return sample
    keep = ~np.asarray(sample["difficult"], bool)
    out = dict(sample)
    for k in ("boxes", "labels", "difficult"):
        out[k] = sample[k][keep]
    return out


# Imported last: the loaders import DatasetError and read_image from this module.
from .coco import COCODetection  # noqa: E402
from .synthetic import SyntheticDetection  # noqa: E402
from .voc import VOCDetection  # noqa: E402
