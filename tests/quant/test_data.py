"""Datasets and augmentation: the synthetic set's statistics, the VOC/COCO loaders and their errors."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest

from codenet.quant.data import COCODetection, DatasetError, SyntheticDetection, VOCDetection, drop_difficult
from codenet.quant.data.transforms import Augmented, ColorJitter, RandomFlip, RandomScaleCrop, Resize, train_transform

Image = pytest.importorskip("PIL.Image")

# --------------------------------------------------------------------------- synthetic


def _digest(a: np.ndarray) -> str:
    return hashlib.sha1(a.tobytes()).hexdigest()


def _same(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in ("image", "boxes", "labels"))


def test_synthetic_is_deterministic_and_random_access():
    a = SyntheticDetection("train", 128, 50, seed=7)
    b = SyntheticDetection("train", 128, 50, seed=7)
    order = [13, 2, 49, 0]
    first = {i: a[i] for i in order}
    for i in reversed(order):  # another order, another instance: same images
        assert _same(first[i], b[i])
    assert _same(a[-1], a[49])
    other = SyntheticDetection("train", 128, 50, seed=8)
    assert not any(_same(a[i], other[i]) for i in range(5))


def test_synthetic_splits_are_disjoint():
    train = {_digest(SyntheticDetection("train", 64, 40, seed=0)[i]["image"]) for i in range(40)}
    val = {_digest(SyntheticDetection("val", 64, 40, seed=0)[i]["image"]) for i in range(40)}
    assert len(train) == 40 and len(val) == 40
    assert not train & val


def test_synthetic_item_format_and_index_errors():
    ds = SyntheticDetection("val", 96, 3)
    s = ds[0]
    assert s["image"].dtype == np.uint8 and s["image"].shape == (96, 96, 3)
    assert s["boxes"].dtype == np.float32 and s["boxes"].shape[1] == 4
    assert s["labels"].dtype == np.int64 and s["labels"].shape == (len(s["boxes"]),)
    assert ds.classes == ("ring", "triangle", "cross", "star", "frame") and ds.num_classes == 5
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(IndexError):
        ds[-4]
    with pytest.raises(ValueError, match="split"):
        SyntheticDetection("dev")
    assert [len(x["labels"]) >= 1 for x in ds] == [True] * 3  # iteration stops at IndexError


@pytest.mark.parametrize("size", [32, 64, 256])
def test_synthetic_sizes(size):
    ds = SyntheticDetection("train", size, 10, seed=1)
    for s in ds:
        assert s["image"].shape == (size, size, 3)
        b = s["boxes"]
        assert len(b) >= 1
        assert (b[:, :2] >= 0).all() and (b[:, 2:] <= size).all() and (b[:, 2:] > b[:, :2]).all()


@pytest.fixture(scope="module")
def synth_stats():
    ds = SyntheticDetection("train", 128, 300, seed=11)
    return [ds[i] for i in range(len(ds))]


def test_synthetic_statistics(synth_stats):
    counts = np.array([len(s["labels"]) for s in synth_stats])
    assert counts.min() >= 1 and counts.max() <= 6
    assert set(counts) == {1, 2, 3, 4, 5, 6}  # the whole range occurs
    labels = np.concatenate([s["labels"] for s in synth_stats])
    freq = np.bincount(labels, minlength=5)
    assert len(freq) == 5 and freq.min() > 0  # all classes present
    assert freq.max() / freq.min() < 1.35, freq  # roughly even (uniform draws, ~200 each)
    boxes = np.concatenate([s["boxes"] for s in synth_stats])
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 128).all()
    assert (boxes[:, 2:] - boxes[:, :2] >= 4).all()
    side = np.max(boxes[:, 2:] - boxes[:, :2], axis=1)
    assert side.min() < 16 and side.max() > 55  # from small to large
    assert np.percentile(side, 75) / np.percentile(side, 25) > 1.6  # and spread, not two clusters


def test_synthetic_has_overlap(synth_stats):
    overlapping = 0
    for s in synth_stats:
        b = s["boxes"]
        iw = np.clip(np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]), 0, None)
        ih = np.clip(np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]), 0, None)
        inter = iw * ih
        np.fill_diagonal(inter, 0)
        overlapping += bool((inter > 0).any())
    assert 0.03 * len(synth_stats) < overlapping < 0.6 * len(synth_stats)


def test_synthetic_colour_does_not_give_the_class_away(synth_stats):
    """A nearest-class-mean classifier on each box's mean colour stays near chance (1/5)."""
    feats, labels = [], []
    for s in synth_stats:
        img = s["image"].astype(np.float32)
        for (x1, y1, x2, y2), lab in zip(s["boxes"].astype(int), s["labels"]):
            feats.append(img[y1:y2, x1:x2].reshape(-1, 3).mean(0))
            labels.append(lab)
    feats, labels = np.array(feats), np.array(labels)
    half = len(labels) // 2
    means = np.array([feats[:half][labels[:half] == k].mean(0) for k in range(5)])
    pred = np.argmin(((feats[half:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == labels[half:]).mean() < 0.3


def test_synthetic_backgrounds_are_not_flat(synth_stats):
    """Texture, gradients and pixel noise: outside the boxes the image varies."""
    stds = []
    for s in synth_stats[:50]:
        outside = np.ones(s["image"].shape[:2], bool)
        for x1, y1, x2, y2 in s["boxes"].astype(int):
            outside[y1:y2, x1:x2] = False
        stds.append(s["image"][outside].astype(np.float32).std(0).mean())
    assert np.median(stds) > 5
    # and pixel-level noise: neighbouring pixels differ
    img = synth_stats[0]["image"].astype(np.int16)
    assert np.abs(np.diff(img, axis=1)).mean() > 1


def test_synthetic_is_fast():
    ds = SyntheticDetection("train", 128, 200, seed=5)
    t = time.perf_counter()
    for i in range(200):
        ds[i]
    assert time.perf_counter() - t < 6.0  # 2000 images a minute even on a loaded core


def test_synthetic_works_with_a_torch_dataloader():
    torch = pytest.importorskip("torch")
    loader = torch.utils.data.DataLoader(SyntheticDetection("val", 64, 4), batch_size=None, shuffle=False)
    items = list(loader)
    assert len(items) == 4 and tuple(items[0]["image"].shape) == (64, 64, 3)


# --------------------------------------------------------------------------- VOC fixtures


def _write_image(path: Path, w: int, h: int, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((h, w, 3), value, np.uint8)
    arr[: h // 2, :, 0] = 200
    Image.fromarray(arr).save(path)


def _voc_xml(filename: str, w: int, h: int, objects: list[dict]) -> str:
    objs = []
    for o in objects:
        bb = "".join(f"<{k}>{o[k]}</{k}>" for k in ("xmin", "ymin", "xmax", "ymax") if k in o)
        diff = f"<difficult>{o['difficult']}</difficult>" if "difficult" in o else ""
        name = f"<name>{o['name']}</name>" if "name" in o else ""
        objs.append(f"<object>{name}<pose>Unspecified</pose>{diff}<bndbox>{bb}</bndbox></object>")
    return (
        f"<annotation><folder>VOC</folder><filename>{filename}</filename>"
        f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>{''.join(objs)}</annotation>"
    )


def _make_voc(root: Path, annotations: dict[str, str], images: dict[str, tuple[int, int]], split: str = "train") -> Path:
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for image_id, xml in annotations.items():
        (root / "Annotations" / f"{image_id}.xml").write_text(xml)
    for name, (w, h) in images.items():
        _write_image(root / "JPEGImages" / name, w, h)
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(annotations) + "\n")
    return root


def _good_voc(tmp_path: Path) -> Path:
    return _make_voc(
        tmp_path / "VOC",
        {
            "000001": _voc_xml(
                "000001.jpg",
                40,
                30,
                [
                    {"name": "dog", "xmin": 1, "ymin": 1, "xmax": 40, "ymax": 30},
                    {"name": "person", "xmin": 5, "ymin": 6, "xmax": 10, "ymax": 20, "difficult": 1},
                ],
            ),
            "000002": _voc_xml("000002.jpg", 24, 20, [{"name": "car", "xmin": 3, "ymin": 4, "xmax": 12, "ymax": 9, "difficult": 0}]),
        },
        {"000001.jpg": (40, 30), "000002.jpg": (24, 20)},
    )


def test_voc_happy_path(tmp_path):
    ds = VOCDetection(_good_voc(tmp_path), "train")
    assert len(ds) == 2 and len(ds.classes) == 20
    s = ds[0]
    assert s["image"].shape == (30, 40, 3) and s["image"].dtype == np.uint8
    # 1-based inclusive -> continuous: (xmin - 1, ymin - 1, xmax, ymax); the first box is the whole image
    np.testing.assert_array_equal(s["boxes"], np.array([[0, 0, 40, 30], [4, 5, 10, 20]], np.float32))
    assert s["labels"].tolist() == [ds.classes.index("dog"), ds.classes.index("person")]
    assert s["difficult"].tolist() == [False, True]
    assert drop_difficult(s)["labels"].tolist() == [ds.classes.index("dog")]
    s2 = ds[1]
    np.testing.assert_array_equal(s2["boxes"], [[2, 3, 12, 9]])
    assert s2["image"].shape == (20, 24, 3)
    easy = VOCDetection(tmp_path / "VOC", "train", keep_difficult=False)
    assert easy[0]["labels"].tolist() == [ds.classes.index("dog")]


def _bad_voc_cases():
    ok = {"name": "dog", "xmin": 2, "ymin": 2, "xmax": 10, "ymax": 10}
    good = _voc_xml("a.jpg", 32, 32, [ok, ok])
    return {
        "bad_xml": (good.replace("</annotation>", ""), None, "XML"),
        "missing_name": (_voc_xml("a.jpg", 32, 32, [ok, {k: v for k, v in ok.items() if k != "name"}]), (1, "name"), "missing"),
        "missing_coordinate": (
            _voc_xml("a.jpg", 32, 32, [ok, {k: v for k, v in ok.items() if k != "ymax"}]),
            (1, "bndbox/ymax"),
            "missing",
        ),
        "missing_size": (good.replace("<size><width>32</width><height>32</height><depth>3</depth></size>", ""), (None, "size"), "missing"),
        "non_numeric": (_voc_xml("a.jpg", 32, 32, [ok, {**ok, "xmin": "abc"}]), (1, "bndbox/xmin"), "not a number"),
        "outside": (_voc_xml("a.jpg", 32, 32, [ok, {**ok, "xmax": 33}]), (1, "bndbox"), "outside"),
        "inverted": (_voc_xml("a.jpg", 32, 32, [{**ok, "xmin": 10, "xmax": 10}]), (0, "bndbox"), "empty box"),
        "unknown_class": (_voc_xml("a.jpg", 32, 32, [ok, {**ok, "name": "unicorn"}]), (1, "name"), "unicorn"),
        "missing_image": (_voc_xml("missing.jpg", 32, 32, [ok]), (None, "filename"), "does not exist"),
    }


@pytest.mark.parametrize("case", sorted(_bad_voc_cases()))
def test_voc_malformed_annotation_names_the_file(tmp_path, case):
    xml, where, words = _bad_voc_cases()[case]
    root = _make_voc(tmp_path / "VOC", {"img7": xml}, {"a.jpg": (32, 32)})
    with pytest.raises(DatasetError) as info:
        VOCDetection(root, "train")
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "img7.xml" in msg and words in msg, msg
    if where is not None:
        obj, field = where
        if obj is not None:
            assert f"object {obj}" in msg, msg
        assert repr(field) in msg, msg


def test_voc_missing_split_and_lenient_mode(tmp_path):
    with pytest.raises(DatasetError, match="val.txt"):
        VOCDetection(_good_voc(tmp_path), "val")
    ok = {"name": "dog", "xmin": 2, "ymin": 2, "xmax": 10, "ymax": 10}
    xml = _voc_xml("a.jpg", 32, 32, [ok, {**ok, "xmax": 40}, {**ok, "xmin": 12, "xmax": 11}])
    root = _make_voc(tmp_path / "V2", {"a": xml}, {"a.jpg": (32, 32)})
    s = VOCDetection(root, "train", strict=False)[0]
    np.testing.assert_array_equal(s["boxes"], [[1, 1, 10, 10], [1, 1, 32, 10]])  # clipped; the empty one dropped


def test_voc_image_size_mismatch_is_reported(tmp_path):
    root = _make_voc(tmp_path / "VOC", {"a": _voc_xml("a.jpg", 32, 32, [])}, {"a.jpg": (30, 32)})
    ds = VOCDetection(root, "train")
    with pytest.raises(DatasetError, match=r"a\.xml.*30 x 32"):
        ds[0]


# --------------------------------------------------------------------------- COCO fixtures


def _coco_doc() -> dict:
    return {
        "images": [
            {"id": 10, "file_name": "x.png", "width": 40, "height": 30},
            {"id": 11, "file_name": "y.png", "width": 20, "height": 20},
        ],
        "categories": [{"id": 5, "name": "cat"}, {"id": 2, "name": "bird"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 5, "bbox": [0, 0, 40, 30], "iscrowd": 0, "area": 1200},
            {"id": 2, "image_id": 10, "category_id": 2, "bbox": [2.5, 3, 10, 4.5], "iscrowd": 1, "area": 45},
            {"id": 3, "image_id": 11, "category_id": 2, "bbox": [1, 2, 3, 4], "area": 12},
        ],
    }


def _make_coco(tmp_path: Path, doc: dict | str, images=(("x.png", 40, 30), ("y.png", 20, 20))) -> tuple[Path, Path]:
    img_dir = tmp_path / "images"
    for name, w, h in images:
        _write_image(img_dir / name, w, h)
    ann = tmp_path / "instances_val.json"
    ann.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return img_dir, ann


def test_coco_happy_path(tmp_path):
    ds = COCODetection(*_make_coco(tmp_path, _coco_doc()))
    assert ds.classes == ("bird", "cat") and ds.category_ids == (2, 5)  # by category id
    assert len(ds) == 2 and ds.image_ids == [10, 11]
    s = ds[0]
    assert s["image"].shape == (30, 40, 3)
    np.testing.assert_allclose(s["boxes"], [[0, 0, 40, 30], [2.5, 3, 12.5, 7.5]])
    assert s["labels"].tolist() == [1, 0] and s["difficult"].tolist() == [False, True]
    np.testing.assert_allclose(ds[1]["boxes"], [[1, 2, 4, 6]])


def _bad_coco_cases():
    def edit(fn):
        d = _coco_doc()
        fn(d)
        return d

    return {
        "bad_json": ("{not json", None, "not valid JSON"),
        "missing_annotations": (edit(lambda d: d.pop("annotations")), (None, "annotations"), "missing"),
        "missing_bbox": (edit(lambda d: d["annotations"][1].pop("bbox")), (1, "bbox"), "missing"),
        "non_numeric": (edit(lambda d: d["annotations"][2].__setitem__("bbox", [1, "2", 3, 4])), (2, "bbox"), "number"),
        "outside": (edit(lambda d: d["annotations"][0].__setitem__("bbox", [1, 0, 40, 30])), (0, "bbox"), "outside"),
        "empty": (edit(lambda d: d["annotations"][2].__setitem__("bbox", [1, 2, 0, 4])), (2, "bbox"), "empty box"),
        "unknown_class": (edit(lambda d: d["annotations"][1].__setitem__("category_id", 99)), (1, "category_id"), "unknown class"),
        "unknown_image": (edit(lambda d: d["annotations"][2].__setitem__("image_id", 12)), (2, "image_id"), "unknown image"),
        "missing_image": (edit(lambda d: d["images"][1].__setitem__("file_name", "zzz.png")), (None, "images[1].file_name"), "zzz.png"),
    }


@pytest.mark.parametrize("case", sorted(_bad_coco_cases()))
def test_coco_malformed_annotation_names_the_file(tmp_path, case):
    doc, where, words = _bad_coco_cases()[case]
    with pytest.raises(DatasetError) as info:
        COCODetection(*_make_coco(tmp_path, doc))
    msg = str(info.value)
    assert "instances_val.json" in msg and words in msg, msg
    if where is not None:
        obj, field = where
        if obj is not None:
            assert f"object {obj}" in msg, msg
        assert repr(field) in msg, msg


def test_missing_or_corrupt_image_file_is_a_dataset_error(tmp_path):
    img_dir, ann = _make_coco(tmp_path, _coco_doc())
    (img_dir / "x.png").write_bytes(b"not a png")
    ds = COCODetection(img_dir, ann)
    with pytest.raises(DatasetError, match="x.png"):
        ds[0]


# --------------------------------------------------------------------------- transforms


def _rect_sample(h=64, w=80, box=(10, 20, 30, 44)) -> dict:
    img = np.full((h, w, 3), 20, np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = 240
    return {"image": img, "boxes": np.array([box], np.float32), "labels": np.array([3], np.int64)}


def _bright_bbox(img: np.ndarray, thr: int = 130):
    ys, xs = np.nonzero(img[..., 0] > thr)
    if len(xs) == 0:
        return None
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def test_flip_keeps_the_box_on_the_object():
    s = _rect_sample()
    out = RandomFlip(p=1.0)(s, np.random.default_rng(0))
    assert _bright_bbox(out["image"]) == tuple(out["boxes"][0].astype(int))
    assert tuple(out["boxes"][0]) == (80 - 30, 20, 80 - 10, 44)
    back = RandomFlip(p=1.0)(out, np.random.default_rng(0))
    assert _same(back, s)
    assert _same(RandomFlip(p=0.0)(s, np.random.default_rng(0)), s)
    assert s["image"][20, 10, 0] == 240  # input untouched


@pytest.mark.parametrize("seed", range(12))
def test_scale_crop_keeps_boxes_on_objects(seed):
    """A bright rectangle on a dark image: after scale/crop its box still frames it, or it is gone."""
    rng = np.random.default_rng(seed)
    x1, y1 = (int(v) for v in rng.integers(0, 60, 2))
    box = (x1, y1, min(x1 + int(rng.integers(8, 40)), 96), min(y1 + int(rng.integers(8, 30)), 72))
    factor = float(rng.uniform(0.5, 2.0))
    s = _rect_sample(72, 96, box)
    out = RandomScaleCrop(64, scale_range=(factor, factor), min_visible=0.3, fill=0)(s, np.random.default_rng(100 + seed))
    assert out["image"].shape == (64, 64, 3)
    scale = factor * min(64 / 72, 64 / 96)  # the transform first fits the image to the window
    w, h = (box[2] - box[0]) * scale, (box[3] - box[1]) * scale
    visible = (out["image"][..., 0] > 130).sum() / (w * h)
    slack = (2 * (w + h) + 4) / (w * h)  # one edge pixel all round may go either way
    if len(out["boxes"]) == 1:
        b = out["boxes"][0]
        assert (b >= 0).all() and (b[2:] <= 64).all()
        # bilinear edges: the thresholded object matches the box to within a pixel
        np.testing.assert_allclose(_bright_bbox(out["image"]), b, atol=1.01)
        assert visible > 0.3 - slack
    else:
        assert len(out["boxes"]) == 0 and len(out["labels"]) == 0
        assert visible < 0.3 + slack


def test_scale_crop_clips_boxes_that_leave_the_window():
    s = _rect_sample(64, 64, (0, 0, 64, 64))  # the object fills the image
    out = RandomScaleCrop(32, scale_range=(2.0, 2.0), min_visible=0.2)(s, np.random.default_rng(3))  # scale 2*(32/64) = 1: a 32 crop
    np.testing.assert_array_equal(out["boxes"], [[0, 0, 32, 32]])
    assert out["labels"].tolist() == [3]


def test_resize_letterbox_maps_back():
    s = _rect_sample(60, 100, (10, 5, 50, 45))
    out = Resize(64)(s)
    assert out["image"].shape == (64, 64, 3)
    back = (out["boxes"][0].reshape(2, 2) + out["offset"]) / out["scale"]
    np.testing.assert_allclose(back.reshape(-1), [10, 5, 50, 45], atol=1e-4)
    np.testing.assert_allclose(_bright_bbox(out["image"]), out["boxes"][0], atol=1.01)


def test_colour_jitter_changes_pixels_only():
    s = SyntheticDetection("train", 64, 1)[0]
    out = ColorJitter(0.4, 0.4, 0.4, 0.2)(s, np.random.default_rng(1))
    assert out["image"].dtype == np.uint8 and not np.array_equal(out["image"], s["image"])
    assert np.array_equal(out["boxes"], s["boxes"]) and np.array_equal(out["labels"], s["labels"])


def test_augmented_is_reproducible_per_epoch_and_index():
    base = SyntheticDetection("train", 64, 6, seed=2)
    a, b = Augmented(base, train_transform(64), seed=9), Augmented(base, train_transform(64), seed=9)
    assert _same(a[4], b[4]) and _same(a[1], b[1])
    before = a[4]
    a.set_epoch(1)
    assert not _same(a[4], before)
    for s in a:
        bx = s["boxes"]
        assert s["image"].shape == (64, 64, 3) and ((bx >= 0) & (bx <= 64)).all()
