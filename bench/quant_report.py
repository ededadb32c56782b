"""Accuracy figures of trained detectors: float vs QAT vs golden, and the decoder ablation.

    python bench/quant_report.py report RUN_DIR [--images 500] [--json]
        AP50 of RUN_DIR/float.pt (float), RUN_DIR/final.pt (QAT, Brevitas) and of its .cnir
        through the golden executor, on the run's validation data, plus size and time.

    python bench/quant_report.py ablation [--variants square,bounded,dw,full] [--train-images N]
                                          [--epochs E] [--qat-epochs Q] [--lr LR] [--qat-lr LR] [--json]
        Trains each decoder variant with the same recipe (codenet.quant.train) and reports
        the same figures; `full` (bilinear) is float only: it has no integer form.

Figures are measured here, on this machine's CPU; nothing is estimated.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from codenet.quant.export import export_cnir
from codenet.quant.infer import evaluate_graph, evaluate_model
from codenet.quant.train import TrainConfig, load_checkpoint, make_dataset, model_from_checkpoint, train


def report(run_dir: Path, images: int) -> dict:
    final = load_checkpoint(run_dir / "final.pt")
    cfg = TrainConfig.from_dict(final["config"])
    qat = model_from_checkpoint(final)
    val = make_dataset(cfg.data, "val", size=qat.spec.input_size, num_images=images, seed=cfg.seed)
    out: dict = {
        "run": str(run_dir),
        "model": cfg.model,
        "deform": qat.deform,
        "val_images": len(val),
        "train_seconds": final["state"]["elapsed"],
        "command": final.get("command", ""),
    }
    if (run_dir / "float.pt").exists():
        flt = model_from_checkpoint(run_dir / "float.pt")
        out["float_ap50"] = evaluate_model(flt, val, val.classes)["ap50"]
    if qat.deform == "full":
        return out
    out["qat_ap50"] = evaluate_model(qat, val, val.classes)["ap50"]
    graph = export_cnir(qat, None, run_dir / "model.cnir", final["classes"], name=cfg.model)
    out["golden_ap50"] = evaluate_graph(graph, val)["ap50"]
    out["params"] = graph.param_count()
    out["model_bytes_at_weight_bits"] = graph.weight_bytes()
    return out


def ablation(variants: list[str], recipe: dict, images: int, root: Path) -> list[dict]:
    rows = []
    for v in variants:
        cfg = TrainConfig(deform=v, val_images=images, **recipe)
        if v == "full":
            cfg.qat_epochs = 0
        run = root / v
        start = time.perf_counter()
        summary = train(cfg, run, progress=False)
        row = {"deform": v, "wall_seconds": round(time.perf_counter() - start, 1), "float_ap50": summary.get("float_ap50")}
        if v != "full":
            row.update({k: val for k, val in report(run, images).items() if k in ("qat_ap50", "golden_ap50", "params")})
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("report")
    r.add_argument("run_dir", type=Path)
    r.add_argument("--images", type=int, default=500)
    r.add_argument("--json", action="store_true")
    a = sub.add_parser("ablation")
    a.add_argument("--variants", default="square,bounded,dw,full")
    a.add_argument("--train-images", type=int, default=4000)
    a.add_argument("--epochs", type=int, default=8)
    a.add_argument("--qat-epochs", type=int, default=1)
    a.add_argument("--lr", type=float, default=TrainConfig.lr)
    a.add_argument("--qat-lr", type=float, default=TrainConfig.qat_lr)
    a.add_argument("--images", type=int, default=300)
    a.add_argument("--out", type=Path, default=Path("build/ablation"))
    a.add_argument("--threads", type=int, default=None)
    a.add_argument("--json", action="store_true")
    args = p.parse_args()
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if args.cmd == "report":
        result = report(args.run_dir, args.images)
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            for k, v in result.items():
                print(f"{k:28s} {v:.4f}" if isinstance(v, float) else f"{k:28s} {v}")
        return
    recipe = dict(train_images=args.train_images, epochs=args.epochs, qat_epochs=args.qat_epochs, lr=args.lr, qat_lr=args.qat_lr)
    rows = ablation(args.variants.split(","), recipe, args.images, args.out)
    if args.json:
        print(json.dumps({"recipe": recipe, "rows": rows}, indent=2))
        return
    print(f"recipe: {recipe}")
    print(f"{'deform':8s} {'float AP50':>11s} {'QAT AP50':>9s} {'golden AP50':>12s} {'wall s':>8s}")
    for row in rows:
        cells = [f"{row[k]:.4f}" if row.get(k) is not None else "-" for k in ("float_ap50", "qat_ap50", "golden_ap50")]
        print(f"{row['deform']:8s} {cells[0]:>11s} {cells[1]:>9s} {cells[2]:>12s} {row['wall_seconds']:>8.0f}")


if __name__ == "__main__":
    main()
