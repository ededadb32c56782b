"""Training runs: resumable to the bit, atomic checkpoints, clear refusals, DDP on gloo."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codenet.quant.train import TrainConfig, TrainError, load_checkpoint, model_from_checkpoint, train

SMALL = dict(train_images=32, val_images=8, epochs=2, qat_epochs=1, batch_size=16, checkpoint_every=1, calib_batches=1, warmup_steps=2)


def small(**kw) -> TrainConfig:
    return TrainConfig(**{**SMALL, "deterministic": True, **kw})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    torch.set_num_threads(1)
    return train(small(), tmp_path_factory.mktemp("a"), progress=False)


def test_run_goes_through_both_phases(uninterrupted):
    s = uninterrupted
    assert s["phase"] == "done"
    assert s["global_step"] == 2 * 2 + 1 * 2  # steps per epoch = 32 // 16
    assert [h["phase"] for h in s["history"]] == ["float", "float", "qat"]
    assert 0.0 <= s["float_ap50"] <= 1.0 and 0.0 <= s["qat_ap50"] <= 1.0
    ckpt = load_checkpoint(s["checkpoint"])
    assert ckpt["phase"] == "done" and ckpt["classes"]
    model = model_from_checkpoint(ckpt)
    assert model.mode == "quant"


def test_interrupted_runs_resume_to_the_same_weights(tmp_path, uninterrupted):
    """Stop mid-epoch, mid-float and right after the phase change; resume each time."""
    torch.set_num_threads(1)
    out = tmp_path / "b"
    for stop in (1, 2, 2):
        s = train(small(), out, progress=False, stop_after_steps=stop)
        assert s["stopped"] is True
    assert s["phase"] == "qat"  # five steps done: all of float, one of QAT
    final = train(small(), out, progress=False)
    assert final["phase"] == "done"
    assert final["global_step"] == uninterrupted["global_step"]
    assert final["param_checksum"] == uninterrupted["param_checksum"]
    assert sorted(p.name for p in out.iterdir()) == ["final.pt", "float.pt", "last.pt"], "no temporary files left behind"


def test_seed_changes_the_result(tmp_path, uninterrupted):
    torch.set_num_threads(1)
    other = train(small(seed=1), tmp_path, progress=False)
    assert other["global_step"] == uninterrupted["global_step"]
    assert other["param_checksum"] != uninterrupted["param_checksum"]


def test_resume_refuses_a_changed_run(tmp_path):
    torch.set_num_threads(1)
    train(small(), tmp_path, progress=False, stop_after_steps=1)
    with pytest.raises(TrainError, match="batch_size=8"):
        train(small(batch_size=8), tmp_path, progress=False)


def test_damaged_checkpoint_is_named(tmp_path):
    p = tmp_path / "last.pt"
    p.write_bytes(b"\x00" * 100)
    with pytest.raises(TrainError, match="last.pt"):
        load_checkpoint(p)
    with pytest.raises(TrainError, match="last.pt"):
        train(small(), tmp_path, progress=False)


def test_bad_data_spec(tmp_path):
    with pytest.raises(TrainError, match="unknown data"):
        train(small(data="imagenet"), tmp_path, progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_cpu_processes_on_gloo(tmp_path):
    """torchrun with 2 processes: gradients are averaged, so both ranks end identical."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}", "-m", "codenet.sw.cli", "train",
        "--train-images=32", "--val-images=8", "--epochs=1", "--qat-epochs=1", "--batch-size=16",
        "--checkpoint-every=1", "--threads=1", "--quiet", "--json", "-o", str(tmp_path / "ddp"),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=Path(__file__).parents[2])
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary["world_size"] == 2
    assert summary["ranks_in_sync"] is True
    assert summary["phase"] == "done" and summary["global_step"] == 2 + 2
    assert load_checkpoint(tmp_path / "ddp" / "final.pt")["phase"] == "done"


def test_float_only_run_for_the_bilinear_baseline(tmp_path):
    """`full` has no integer form: with qat_epochs=0 the run ends after float training."""
    torch.set_num_threads(1)
    s = train(small(deform="full", qat_epochs=0, epochs=1), tmp_path, progress=False)
    assert s["phase"] == "done" and "qat_ap50" not in s and "float_ap50" in s
    model = model_from_checkpoint(tmp_path / "final.pt")
    assert model.mode == "float" and model.deform == "full"


def test_arch_overrides_reach_the_model_and_the_checkpoint(tmp_path):
    """`--input-size` (any multiple of 32) trains, checkpoints and reloads at that size."""
    torch.set_num_threads(1)
    s = train(small(arch={"input_size": 64}, epochs=1, qat_epochs=0), tmp_path, progress=False)
    assert s["phase"] == "done"
    model = model_from_checkpoint(tmp_path / "final.pt")
    assert model.spec.input_size == 64
    with pytest.raises(TrainError, match="arch"):
        train(small(arch={"input_size": 96}, epochs=1, qat_epochs=0), tmp_path, progress=False)


@pytest.mark.parametrize("phase", ["float", "qat"])
def test_offset_convs_learn_at_their_own_rate(phase):
    """The offset/dilation convs form their own AdamW group at offset_lr_mult times the phase's rate."""
    from codenet.quant.models import build_model, fuse_bn, quantize
    from codenet.quant.train import _optimizer

    cfg = small(lr=0.02, qat_lr=0.003, offset_lr_mult=0.25)
    model = build_model("codenet-tiny", "square")
    if phase == "qat":
        model = quantize(fuse_bn(model.eval()))
    opt = _optimizer(model, cfg, phase)
    base = cfg.lr if phase == "float" else cfg.qat_lr
    assert [g["lr"] for g in opt.param_groups] == [base, base * 0.25]
    offset_ids = {id(p) for name, p in model.named_parameters() if ".offset." in name}
    assert offset_ids and {id(p) for p in opt.param_groups[1]["params"]} == offset_ids
    assert all(g["weight_decay"] == cfg.weight_decay for g in opt.param_groups)
    n_params = sum(1 for p in model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in opt.param_groups) == n_params
    # a model without offset convs has one group
    assert len(_optimizer(build_model("codenet-tiny", "dw"), cfg, phase).param_groups) == 1
