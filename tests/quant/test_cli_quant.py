"""`codenet export` and `codenet eval` on a real (tiny) training run."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from codenet.quant.train import TrainConfig, train
from codenet.sw import cli, ir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(train_images=32, val_images=8, epochs=1, qat_epochs=1, batch_size=16, calib_batches=1, warmup_steps=1)
    train(cfg, out, progress=False)
    return out


def invoke(*args: str) -> dict:
    r = CliRunner().invoke(cli.main, [*args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_export_writes_a_graph_golden_reproduces(run_dir, tmp_path):
    rep = invoke("export", str(run_dir / "final.pt"), "-o", str(tmp_path / "m.cnir"), "--check-images", "4")
    g = ir.load(tmp_path / "m.cnir")
    assert rep["nodes"] == len(g.nodes) and rep["params"] == g.param_count()
    assert g.metadata["classes"] == ["ring", "triangle", "cross", "star", "frame"]
    check = rep["check"]
    assert check["images"] == 4 and check["elements"] > 0
    assert check["fraction_within_1_lsb"] >= 0.999
    assert check["detections_identical"] is True


def test_eval_of_the_graph_equals_eval_of_the_qat_model(run_dir, tmp_path):
    invoke("export", str(run_dir / "final.pt"), "-o", str(tmp_path / "m.cnir"), "--check-images", "0")
    torch_rep = invoke("eval", str(run_dir / "final.pt"), "--images", "8")
    golden_rep = invoke("eval", str(tmp_path / "m.cnir"), "--images", "8")
    assert (torch_rep["backend"], golden_rep["backend"]) == ("torch", "golden")
    assert torch_rep["images"] == golden_rep["images"] == 8
    assert golden_rep["ap50"] == torch_rep["ap50"]
    assert 0.0 <= golden_rep["ap50"] <= 1.0


def test_export_refuses_a_float_checkpoint(run_dir, tmp_path):
    r = CliRunner().invoke(cli.main, ["export", str(run_dir / "float.pt"), "-o", str(tmp_path / "m.cnir")])
    assert r.exit_code != 0
    assert "float pre-training" in r.output


def test_eval_backend_mismatch_is_refused(run_dir):
    r = CliRunner().invoke(cli.main, ["eval", str(run_dir / "final.pt"), "--backend", "golden"])
    assert r.exit_code != 0 and "cannot run" in r.output
