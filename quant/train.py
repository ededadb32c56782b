"""Float pre-training then QAT fine-tuning, resumable, seeded, single-process or DDP.

One run is two phases: ``float`` (conv + BN, full precision) for `epochs`, then BN is
folded, the model is quantized with Brevitas, calibrated, and fine-tuned for `qat_epochs`
(``qat``). Everything needed to continue lives in ``OUT/last.pt``, rewritten atomically
every `checkpoint_every` steps and at each epoch's end: model, optimizer, scheduler, RNG
states, phase, epoch and step. Data order is a function of (seed, phase, epoch) and
augmentation of (seed, epoch, image), so a resumed run sees exactly the batches it would
have seen; in ``deterministic`` mode it ends bit-identical to an uninterrupted run.

Under ``torchrun`` (WORLD_SIZE > 1) each process takes every world-th sample of the epoch's
order and DistributedDataParallel averages gradients: the global batch stays `batch_size`.
Only rank 0 writes checkpoints and shows progress.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .data import DatasetError
from .data.synthetic import SyntheticDetection
from .data.transforms import Augmented, Resize, train_transform
from .losses import centernet_loss
from .models import CoDeNet, build_model, fuse_bn, quantize
from .targets import encode_targets

__all__ = ["TrainConfig", "TrainError", "train", "load_checkpoint", "model_from_checkpoint", "make_dataset", "CHECKPOINT_VERSION"]

CHECKPOINT_VERSION = 1
PHASES = ("float", "qat")


class TrainError(RuntimeError):
    """A run that cannot start or continue, with the reason (bad data, incompatible resume)."""


@dataclass
class TrainConfig:
    """Everything that defines a run; stored in each checkpoint and checked on resume."""

    model: str = "codenet-tiny"
    deform: str | None = None
    data: str = "synth"
    train_images: int = 4000
    val_images: int = 500
    epochs: int = 20
    qat_epochs: int = 2
    batch_size: int = 32
    lr: float = 1e-2
    qat_lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    seed: int = 0
    deterministic: bool = False
    device: str = "cpu"
    workers: int = 0
    checkpoint_every: int = 100
    calib_batches: int = 8
    augment: bool = True
    #: random rescale factors of the augmentation; below ~0.8 the synthetic set's smallest
    #: objects shrink under 8 px and the padding grows, which slowed learning several-fold
    scale_range: tuple[float, float] = (0.8, 1.25)
    #: learning-rate factor of the offset/dilation convs, as DCN does: their outputs move the
    #: sampling points, so full-rate steps make the decoder's inputs jump
    offset_lr_mult: float = 0.1
    arch: dict[str, Any] = field(default_factory=dict)  # ArchSpec overrides, e.g. {"input_size": 256}

    # fields that must not change when a run is resumed
    FIXED = ("model", "deform", "arch", "data", "train_images", "batch_size", "seed")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# --------------------------------------------------------------------------- data


def make_dataset(spec: str, split: str, *, size: int, num_images: int | None, seed: int):
    """`synth`, `voc:DIR` or `coco:DIR`; `split` is ``train`` or ``val``."""
    kind, _, root = spec.partition(":")
    if kind == "synth":
        return SyntheticDetection(split=split, size=size, num_images=num_images, seed=seed)
    if kind == "voc":
        from .data.voc import VOCDetection

        return VOCDetection(root, split="trainval" if split == "train" and Path(root, "ImageSets/Main/trainval.txt").exists() else split)
    if kind == "coco":
        from .data.coco import COCODetection

        anns = sorted(glob.glob(str(Path(root, "annotations", f"*{split}*.json"))))
        if not anns:
            raise DatasetError(f"{root}: no annotations/*{split}*.json for the {split} split")
        images = next((p for p in sorted(glob.glob(str(Path(root, f"*{split}*")))) if Path(p).is_dir()), None)
        if images is None:
            raise DatasetError(f"{root}: no image folder matching *{split}* for the {split} split")
        return COCODetection(images, anns[0])
    raise TrainError(f"unknown data {spec!r}: use synth, voc:DIR or coco:DIR")


class _Cached:
    """Keep generated images in memory: the synthetic set is drawn once, not every epoch."""

    def __init__(self, base):
        self.base, self.classes = base, base.classes
        self._items: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        if i not in self._items:
            self._items[i] = self.base[i]
        return self._items[i]


class _Targets(torch.utils.data.Dataset):
    """Augmented samples with CenterNet targets, as tensors."""

    def __init__(self, data, size: int, num_classes: int, augment: bool, seed: int, scale_range: tuple[float, float]):
        self.size, self.num_classes = size, num_classes
        transform = train_transform(size, tuple(scale_range)) if augment else Resize(size)
        self.data = Augmented(data, transform, seed)

    def set_epoch(self, epoch: int) -> None:
        self.data.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.data[i]
        t = encode_targets(s["boxes"], s["labels"], self.size, self.num_classes)
        out = {k: torch.from_numpy(v) for k, v in t.items()}
        out["image"] = torch.from_numpy(np.ascontiguousarray(s["image"].transpose(2, 0, 1)))
        return out


# --------------------------------------------------------------------------- checkpoints


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`train`; errors name the file and what is wrong."""
    path = Path(path)
    if not path.exists():
        raise TrainError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many kinds on a damaged file
        raise TrainError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "codenet-checkpoint":
        raise TrainError(f"{path}: not a codenet checkpoint")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise TrainError(f"{path}: checkpoint version {ckpt.get('version')}, this codenet reads {CHECKPOINT_VERSION}")
    return ckpt


def _empty_model(cfg: TrainConfig, phase: str) -> CoDeNet:
    model = build_model(cfg.model, cfg.deform, **cfg.arch)
    if phase == "qat":
        model = quantize(fuse_bn(model.eval()))
    return model


def model_from_checkpoint(ckpt: dict[str, Any] | str | os.PathLike) -> CoDeNet:
    """The model a checkpoint holds (float during pre-training, Brevitas after), in eval mode."""
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    cfg = TrainConfig.from_dict(ckpt["config"])
    kind = ckpt.get("model_kind", "float" if ckpt["phase"] == "float" else "quant")
    model = _empty_model(cfg, "qat" if kind == "quant" else "float")
    model.load_state_dict(ckpt["model"])
    return model.eval()


def _checksum(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- the run


@dataclass
class _State:
    phase: str = "float"
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    history: list[dict] = field(default_factory=list)
    elapsed: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])


def _optimizer(model: torch.nn.Module, cfg: TrainConfig, phase: str) -> torch.optim.Optimizer:
    """AdamW with the offset convs in a group of their own, at `offset_lr_mult` times the rate.

    Built the same way at a phase's start and when a run resumes, so saved optimizer states
    always match the groups.
    """
    lr = cfg.lr if phase == "float" else cfg.qat_lr
    offset, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (offset if ".offset." in name else rest).append(p)
    groups = [{"params": rest, "lr": lr}]
    if offset:
        groups.append({"params": offset, "lr": lr * cfg.offset_lr_mult})
    return torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.weight_decay)


def _schedule(total: int, warmup: int):
    """Linear warm-up then cosine decay to 5 %, as a LambdaLR factor."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f


def train(
    cfg: TrainConfig,
    out: str | os.PathLike,
    *,
    resume: bool = True,
    progress: bool = True,
    stop_after_steps: int | None = None,
    log=None,
) -> dict[str, Any]:
    """Run (or continue) training into `out`; returns a summary (rank 0's view under DDP).

    `stop_after_steps` ends the run after that many optimizer steps in this call, with a
    checkpoint, as an interruption would; calling again continues.
    """
    out = Path(out)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    distributed = world > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if cfg.device.startswith("cuda") else "gloo")
    rank = dist.get_rank() if distributed else 0
    if cfg.batch_size % world:
        raise TrainError(f"batch_size {cfg.batch_size} must be a multiple of the {world} processes")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("--device cuda asked for, but torch sees no CUDA device")
    device = torch.device(cfg.device if not (distributed and cfg.device == "cuda") else f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    say = (log or (lambda msg: print(msg, file=sys.stderr))) if rank == 0 else (lambda msg: None)

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    if distributed:
        dist.barrier()
    last = out / "last.pt"
    st = _State()
    ckpt = None
    if resume and last.exists():
        ckpt = load_checkpoint(last)
        old = TrainConfig.from_dict(ckpt["config"])
        for k in TrainConfig.FIXED:
            if getattr(old, k) != getattr(cfg, k):
                raise TrainError(f"{last}: cannot resume with {k}={getattr(cfg, k)!r}; the run was started with {k}={getattr(old, k)!r}")
        st = _State(**ckpt["state"])
        say(f"resuming {last}: phase {st.phase}, epoch {st.epoch}, step {st.step_in_epoch} of the epoch")
    _seed_all(cfg.seed)

    spec_model = build_model(cfg.model, cfg.deform, **cfg.arch)
    size, num_classes = spec_model.spec.input_size, spec_model.spec.num_classes
    train_base = make_dataset(cfg.data, "train", size=size, num_images=cfg.train_images, seed=cfg.seed)
    val_set = make_dataset(cfg.data, "val", size=size, num_images=cfg.val_images, seed=cfg.seed)
    if len(train_base.classes) != num_classes:
        raise TrainError(f"data {cfg.data!r} has {len(train_base.classes)} classes, model {cfg.model} has {num_classes}")
    if cfg.data == "synth":
        train_base = _Cached(train_base)
    train_set = _Targets(train_base, size, num_classes, cfg.augment, cfg.seed, cfg.scale_range)
    local_batch = cfg.batch_size // world
    steps_per_epoch = len(train_set) // cfg.batch_size
    if steps_per_epoch < 1:
        raise TrainError(f"{len(train_set)} training images are fewer than one batch of {cfg.batch_size}")

    started = time.perf_counter()
    elapsed_before = st.elapsed
    steps_this_call = 0
    model = opt = sched = None
    summary: dict[str, Any] = {}

    def save(where: Path = last) -> None:
        """Checkpoint the current phase's model, optimizer and scheduler (rank 0 only)."""
        if rank != 0:
            return
        st.elapsed = elapsed_before + time.perf_counter() - started
        _atomic_save(
            {
                "format": "codenet-checkpoint",
                "version": CHECKPOINT_VERSION,
                "config": cfg.to_dict(),
                "phase": st.phase,
                "model_kind": "quant" if model.mode == "quant" else "float",
                "state": dataclasses.asdict(st),
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "rng": _rng_state(),
                "classes": list(train_base.classes),
                "command": " ".join(sys.argv),
            },
            where,
        )

    while st.phase in PHASES:
        phase = st.phase
        epochs = cfg.epochs if phase == "float" else cfg.qat_epochs
        total = epochs * steps_per_epoch
        if model is None:
            if ckpt is not None and ckpt["phase"] == phase:
                model = _empty_model(cfg, phase)
                model.load_state_dict(ckpt["model"])
            elif phase == "float":
                model = spec_model
            else:
                raise TrainError(f"{last}: phase {phase} without its model")  # pragma: no cover - written together
        model.to(device).train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = _optimizer(model, cfg, phase)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(total, cfg.warmup_steps if phase == "float" else 0))
        if ckpt is not None and ckpt["phase"] == phase and ckpt.get("optimizer"):
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            _set_rng_state(ckpt["rng"])
        ckpt = None
        net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model

        bar = _Bar(progress and rank == 0)
        while st.epoch < epochs:
            train_set.set_epoch(st.epoch + (0 if phase == "float" else 10_000))
            order = np.random.default_rng([cfg.seed, PHASES.index(phase), st.epoch]).permutation(len(train_set))
            order = order[: steps_per_epoch * cfg.batch_size]
            mine = order.reshape(steps_per_epoch, cfg.batch_size)[st.step_in_epoch :, rank::world].reshape(-1).tolist()
            loader = torch.utils.data.DataLoader(train_set, batch_size=local_batch, sampler=mine, num_workers=cfg.workers, drop_last=True)
            bar.start(f"{phase} epoch {st.epoch + 1}/{epochs}", steps_per_epoch, st.step_in_epoch)
            t0, seen = time.perf_counter(), 0
            loss, parts, rate = torch.tensor(float("nan")), {}, 0.0
            for batch in loader:
                images = batch.pop("image").to(device=device, dtype=torch.float32)
                targets = {k: v.to(device) for k, v in batch.items()}
                loss, parts = centernet_loss(net(images), targets)
                if not torch.isfinite(loss):
                    raise TrainError(
                        f"loss became {float(loss)} at {phase} epoch {st.epoch} step {st.step_in_epoch}: lower the learning rate"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 10.0)
                opt.step()
                sched.step()
                st.step_in_epoch += 1
                st.global_step += 1
                steps_this_call += 1
                seen += images.shape[0] * world
                rate = seen / max(1e-9, time.perf_counter() - t0)
                bar.advance(loss=loss.item(), rate=rate)
                if st.step_in_epoch % cfg.checkpoint_every == 0:
                    save()
                if stop_after_steps is not None and steps_this_call >= stop_after_steps:
                    save()
                    bar.stop()
                    return _finish(model, st, rank, distributed, out, {"stopped": True})
            bar.stop()
            st.history.append({"phase": phase, "epoch": st.epoch, "loss": loss.item(), "images_per_second": round(rate, 1), **parts})
            say(f"{phase} epoch {st.epoch + 1}/{epochs}: loss {loss.item():.3f} ({rate:.0f} images/s)")
            st.epoch += 1
            st.step_in_epoch = 0
            save()

        # end of a phase
        if phase == "float":
            if rank == 0:
                st.metrics["float_ap50"] = _val_ap50(model, val_set)
                say(f"float model: val AP50 {st.metrics['float_ap50']:.4f}")
                save(out / "float.pt")
            if cfg.qat_epochs == 0:  # a float-only run (the bilinear baseline has no integer form)
                st.phase = "done"
                save()
                save(out / "final.pt")
                continue
            model = quantize(fuse_bn(model.eval().cpu()))
            _calibrate(model, train_set, local_batch, cfg)
            st.phase, st.epoch, st.step_in_epoch = "qat", 0, 0
            opt = _optimizer(model, cfg, "qat")  # so save() has the new phase's state
            sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg.qat_epochs * steps_per_epoch, 0))
            save()
        else:
            if rank == 0:
                st.metrics["qat_ap50"] = _val_ap50(model, val_set)
                say(f"QAT model: val AP50 {st.metrics['qat_ap50']:.4f}")
            st.phase = "done"
            save()
            save(out / "final.pt")
    if model is None:  # resumed a finished run
        model = model_from_checkpoint(last)
    summary.update({"checkpoint": str(out / "final.pt")})
    return _finish(model, st, rank, distributed, out, summary)


def _finish(model, st: _State, rank: int, distributed: bool, out: Path, extra: dict) -> dict[str, Any]:
    checksum = _checksum(model)
    in_sync = True
    world = 1
    if distributed:
        world = dist.get_world_size()
        sums: list[str] = [""] * world
        dist.all_gather_object(sums, checksum)
        in_sync = len(set(sums)) == 1
    return {
        "phase": st.phase,
        "epoch": st.epoch,
        "global_step": st.global_step,
        "train_seconds": round(st.elapsed, 2),
        "world_size": world,
        "ranks_in_sync": in_sync,
        "param_checksum": checksum,
        "out": str(out),
        "history": st.history,
        **st.metrics,
        **extra,
    }


def _calibrate(model: CoDeNet, train_set: _Targets, batch: int, cfg: TrainConfig) -> None:
    """Set activation scales from a few training batches before QAT (same batches on every rank)."""
    from .qlayers import calibrate

    order = np.random.default_rng([cfg.seed, 99]).permutation(len(train_set))[: cfg.calib_batches * batch]
    loader = torch.utils.data.DataLoader(train_set, batch_size=batch, sampler=order.tolist())
    calibrate(model, (b["image"].float() for b in loader))


def _val_ap50(model: CoDeNet, val_set) -> float:
    from .infer import evaluate_model

    return float(evaluate_model(model, val_set, val_set.classes)["ap50"])


class _Bar:
    """A rich progress bar with loss and throughput, or nothing."""

    def __init__(self, enabled: bool):
        self.enabled, self.progress, self.task = enabled, None, None

    def start(self, title: str, total: int, done: int) -> None:
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f}"),
            TextColumn("{task.fields[rate]:.0f} img/s"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task(title, total=total, completed=done, loss=float("nan"), rate=0.0)

    def advance(self, **fields) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, **fields)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
