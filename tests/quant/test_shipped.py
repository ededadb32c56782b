"""The shipped checkpoint and its .cnir: in sync, and golden reproduces Brevitas on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codenet.quant.export import compare_golden, export_cnir
from codenet.quant.infer import predict_graph, predict_model
from codenet.quant.train import TrainConfig, load_checkpoint, make_dataset, model_from_checkpoint
from codenet.sw import ir

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "codenet-tiny-square"


@pytest.fixture(scope="module")
def shipped():
    torch.set_num_threads(1)
    ckpt = load_checkpoint(SHIPPED / "final.pt")
    return ckpt, model_from_checkpoint(ckpt), ir.load(SHIPPED / "model.cnir")


def test_checkpoint_records_how_it_was_trained(shipped):
    ckpt, model, _ = shipped
    assert ckpt["phase"] == "done" and model.mode == "quant"
    assert "codenet train" in ckpt["command"] and "--seed" in ckpt["command"]
    cfg = TrainConfig.from_dict(ckpt["config"])
    assert (cfg.model, model.deform, model.weight_bits) == ("codenet-tiny", "square", 4)


def test_committed_cnir_is_the_export_of_the_committed_checkpoint(shipped, tmp_path):
    ckpt, model, graph = shipped
    fresh = export_cnir(model, None, None, ckpt["classes"], name=graph.name)
    assert [(n.name, n.op) for n in fresh.nodes] == [(n.name, n.op) for n in graph.nodes]
    for a, b in zip(fresh.nodes, graph.nodes):
        assert a.attrs == b.attrs
        for k in a.arrays:
            assert np.array_equal(a.arrays[k], b.arrays[k]), (a.name, k)


def test_golden_reproduces_the_trained_model(shipped):
    ckpt, model, graph = shipped
    cfg = TrainConfig.from_dict(ckpt["config"])
    val = make_dataset(cfg.data, "val", size=model.spec.input_size, num_images=6, seed=cfg.seed)
    images = torch.from_numpy(np.stack([val[i]["image"] for i in range(6)])).permute(0, 3, 1, 2).float()
    agree = compare_golden(model, graph, images)
    assert agree.fraction_within_1 >= 0.999
    _, dm = predict_model(model, val)
    _, dg = predict_graph(graph, val)
    assert sum(len(d["labels"]) for d in dg) > 0, "a trained detector finds something"
    for a, b in zip(dm, dg):
        assert np.array_equal(a["labels"], b["labels"]) and np.allclose(a["boxes"], b["boxes"], atol=1e-4)
