"""Predictions and AP of a detector on a dataset: float/QAT models in torch, graphs in numpy.

Both paths decode with `codenet.sw.decode`, the decoder the board runtime uses, so the AP of
a `.cnir` through the golden executor and the AP through a device backend are comparable to
the QAT model's, detection for detection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from codenet.sw import decode as dec
from codenet.sw import golden

from .data.transforms import Resize
from .evaluate import evaluate_detections

__all__ = ["letterbox_batches", "predict_model", "predict_graph", "evaluate_model", "evaluate_graph"]


def letterbox_batches(
    dataset: Sequence, size: int, batch_size: int, limit: int | None = None
) -> Iterable[tuple[np.ndarray, list[dict], list]]:
    """Yield (uint8 images (B,H,W,3) at the model size, ground truths, per-image unmapping)."""
    resize = Resize(size)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for start in range(0, n, batch_size):
        images, gts, maps = [], [], []
        for i in range(start, min(n, start + batch_size)):
            sample = dataset[i]
            if sample["image"].shape[:2] != (size, size):
                out = resize(sample, None)
                maps.append((float(out["scale"]), (float(out["offset"][0]), float(out["offset"][1]))))
            else:
                out = sample
                maps.append((1.0, (0.0, 0.0)))
            images.append(out["image"])
            gts.append(sample)
        yield np.stack(images), gts, maps


def _unmap(d: dec.Detections, scale: float, offset: tuple[float, float]) -> dict:
    """Back from the letterboxed model input to the original image (transforms.Resize)."""
    boxes = d.boxes.copy()
    if scale != 1.0 or offset != (0.0, 0.0):
        boxes[:, [0, 2]] = (boxes[:, [0, 2]] + offset[0]) / scale
        boxes[:, [1, 3]] = (boxes[:, [1, 3]] + offset[1]) / scale
    return {"boxes": boxes, "scores": d.scores, "labels": d.labels}


@torch.no_grad()
def predict_model(
    model: torch.nn.Module, dataset: Sequence, *, batch_size: int = 16, limit: int | None = None, **decode_kw
) -> tuple[list, list]:
    """Detections of a torch CoDeNet (float, folded or quant mode) and the ground truths."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    size = model.spec.input_size
    gts, dets = [], []
    try:
        for images, batch_gts, maps in letterbox_batches(dataset, size, batch_size, limit):
            x = torch.from_numpy(images).permute(0, 3, 1, 2).to(device=device, dtype=torch.float32)
            out = {k: v.float().cpu().numpy() for k, v in model(x).items()}
            for b, (scale, offset) in enumerate(maps):
                d = dec.decode(
                    out["hm"][b].transpose(1, 2, 0), out["wh"][b].transpose(1, 2, 0), out["reg"][b].transpose(1, 2, 0), **decode_kw
                )
                dets.append(_unmap(d, scale, offset))
            gts.extend(batch_gts)
    finally:
        model.train(was_training)
    return gts, dets


def predict_graph(
    graph, dataset: Sequence, *, batch_size: int = 16, limit: int | None = None, run: Callable | None = None, **decode_kw
) -> tuple[list, list]:
    """Detections of an integer graph; `run(graph, images)` defaults to the golden executor."""
    run = run or golden.run
    size = int(graph.metadata["input_size"][0])
    gts, dets = [], []
    for images, batch_gts, maps in letterbox_batches(dataset, size, batch_size, limit):
        outs = run(graph, images)
        for d, (scale, offset) in zip(dec.decode_graph_outputs(outs, graph, **decode_kw), maps):
            dets.append(_unmap(d, scale, offset))
        gts.extend(batch_gts)
    return gts, dets


def evaluate_model(model: torch.nn.Module, dataset: Sequence, classes: Sequence[str], **kw) -> dict:
    gts, dets = predict_model(model, dataset, **kw)
    return evaluate_detections(gts, dets, classes)


def evaluate_graph(graph, dataset: Sequence, **kw) -> dict:
    gts, dets = predict_graph(graph, dataset, **kw)
    return evaluate_detections(gts, dets, graph.metadata["classes"])
