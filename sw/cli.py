"""The `codenet` command: the one place that reaches every room.

Each subcommand imports what it needs inside its own body, so `codenet --help` stays fast
and works without torch, Amaranth or cocotb installed. A subcommand exists only once it
works end to end; the demo says which parts of the flow are still to come.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from . import __version__


def _console(json_mode: bool):
    """Human output goes to stderr when stdout is reserved for one JSON object."""
    from rich.console import Console

    return Console(stderr=json_mode, highlight=False)


def _emit_json(obj: dict) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


def _load_model(model: str, seed: int):
    """A `.cnir` path, or a zoo name built with random weights."""
    from . import ir, zoo

    if model.endswith(".cnir") or Path(model).exists():
        return ir.load(model)
    return zoo.build(model, seed=seed)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="codenet")
def main() -> None:
    """codenet: train, quantize and deploy CoDeNet-style detectors on FPGA engines."""


def _bench_golden(graph, frames: int, seed: int) -> dict:
    import numpy as np

    from . import golden

    (name,) = graph.inputs
    t = graph.tensors[name]
    x = np.random.default_rng(seed).integers(0, 256, size=(1, *t.shape)).astype(t.dtype)
    golden.run(graph, x)  # warm-up: first-touch allocations are not the executor's cost
    per_node: dict[str, float] = {}
    wall = []
    for _ in range(frames):
        timings: dict[str, float] = {}
        start = time.perf_counter()
        golden.run(graph, x, timings=timings)
        wall.append(time.perf_counter() - start)
        for k, v in timings.items():
            per_node[k] = per_node.get(k, 0.0) + v / frames
    macs = graph.macs()
    layers = [
        {
            "name": n.name,
            "op": n.op,
            "out_shape": list(graph.tensors[n.outputs[0]].shape),
            "macs": macs[n.name],
            "host_ms": round(per_node[n.name] * 1e3, 3),
        }
        for n in graph.nodes
    ]
    return {
        "model": graph.name,
        "backend": "golden",
        "frames": frames,
        "host_seconds_per_frame": min(wall),
        "host_seconds_per_frame_mean": sum(wall) / len(wall),
        "macs_per_frame": sum(macs.values()),
        "params": graph.param_count(),
        "weight_bytes": graph.weight_bytes(),
        "nodes": len(graph.nodes),
        "assumptions": "golden executor: numpy on the host CPU, batch 1; wall time, best of the frames",
        "layers": layers,
    }


@main.command()
@click.option("--model", "model", default="codenet-1x-b", show_default=True, help="A .cnir file or a zoo name (random weights).")
@click.option("--backend", type=click.Choice(["golden"]), default="golden", show_default=True, help="Executor to measure.")
@click.option("--frames", default=3, show_default=True, type=click.IntRange(1, 1000))
@click.option("--seed", default=0, show_default=True, help="Seed for random weights and the input frame.")
@click.option("--layers/--no-layers", default=False, help="Print the per-layer table.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def bench(model: str, backend: str, frames: int, seed: int, layers: bool, as_json: bool) -> None:
    """Measure a model on an executor: time, MACs, parameters, per-layer breakdown."""
    from rich.table import Table

    from .ir import CnirError

    con = _console(as_json)
    try:
        graph = _load_model(model, seed)
    except (CnirError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    report = _bench_golden(graph, frames, seed)
    if as_json:
        _emit_json(report)
        return
    if layers:
        table = Table(title=f"{graph.name} on {backend}: per layer")
        for col in ("layer", "op", "output", "MACs", "host ms"):
            table.add_column(col, justify="right" if col in ("MACs", "host ms") else "left")
        for row in report["layers"]:
            table.add_row(row["name"], row["op"], "x".join(map(str, row["out_shape"])), f"{row['macs']:,}", f"{row['host_ms']:.2f}")
        con.print(table)
    summary = Table(title=f"{graph.name} on {backend}", show_header=False)
    summary.add_row("nodes", str(report["nodes"]))
    summary.add_row("parameters", f"{report['params']:,}")
    summary.add_row("weights (at their bit widths)", f"{report['weight_bytes'] / 2**20:.3f} MiB")
    summary.add_row("MACs per frame", f"{report['macs_per_frame'] / 1e9:.3f} G")
    summary.add_row("host time per frame", f"{report['host_seconds_per_frame'] * 1e3:.1f} ms (best of {frames})")
    con.print(summary)
    con.print(f"[dim]{report['assumptions']}[/dim]")


@main.command()
@click.option("--model", default="codenet-tiny", show_default=True, help="Zoo architecture to train (codenet-tiny, codenet-1x-b, ...).")
@click.option(
    "--deform", type=click.Choice(["square", "bounded", "dw", "full"]), default=None, help="Decoder variant [default: the model's]."
)
@click.option("--data", default="synth", show_default=True, help="synth, voc:DIR or coco:DIR.")
@click.option("--input-size", default=None, type=int, help="Input size, a multiple of 32 [default: the model's].")
@click.option("--train-images", default=4000, show_default=True, help="Synthetic training images.")
@click.option("--val-images", default=500, show_default=True, help="Synthetic validation images.")
@click.option("--epochs", default=30, show_default=True, help="Float pre-training epochs.")
@click.option("--qat-epochs", default=6, show_default=True, help="QAT fine-tuning epochs.")
@click.option("--batch-size", default=32, show_default=True, help="Global batch (split over DDP processes).")
@click.option("--lr", default=2e-3, show_default=True)
@click.option("--qat-lr", default=2e-4, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--deterministic", is_flag=True, help="Deterministic kernels: a resumed run ends bit-identical to an uninterrupted one.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--workers", default=0, show_default=True, help="Data loader worker processes.")
@click.option("--threads", default=None, type=int, help="torch CPU threads per process.")
@click.option("--checkpoint-every", default=100, show_default=True, help="Steps between checkpoints (also at each epoch end).")
@click.option(
    "-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory (checkpoints)."
)
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue the run in OUT if it has a checkpoint.")
@click.option(
    "--stop-after-steps", default=None, type=int, hidden=True, help="Stop (with a checkpoint) after N steps, as an interruption would."
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def train(out_dir: Path, resume: bool, stop_after_steps: int | None, quiet: bool, as_json: bool, threads: int | None, **opts) -> None:
    """Train a detector: float pre-training, then BN folding, Brevitas QAT and calibration."""
    from codenet.quant.train import TrainConfig, TrainError
    from codenet.quant.train import train as run_training

    if threads:
        import torch

        torch.set_num_threads(threads)
    if not resume and (out_dir / "last.pt").exists():
        raise click.ClickException(f"{out_dir} already holds a run (last.pt); resume it or choose another --out")
    input_size = opts.pop("input_size")
    cfg = TrainConfig(**opts, arch={"input_size": input_size} if input_size else {})
    try:
        summary = run_training(cfg, out_dir, resume=resume, progress=not quiet and not as_json, stop_after_steps=stop_after_steps)
    except (TrainError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        if int(__import__("os").environ.get("RANK", "0")) == 0:
            _emit_json(summary)
        return
    con = _console(False)
    con.print(f"run in {summary['out']}: phase {summary['phase']}, {summary['global_step']} steps, {summary['train_seconds']:.0f} s")
    for key in ("float_ap50", "qat_ap50"):
        if key in summary:
            con.print(f"  {key}: {summary[key]:.4f}")


def _eval_dataset(data: str, graph_or_spec_size: int, images: int, seed: int):
    from codenet.quant.train import make_dataset

    return make_dataset(data, "val", size=graph_or_spec_size, num_images=images, seed=seed)


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The .cnir to write.")
@click.option("--qonnx", "qonnx_path", default=None, type=click.Path(dir_okay=False, path_type=Path), help="Also write QONNX here.")
@click.option("--name", default=None, help="Graph name [default: the checkpoint's model name].")
@click.option("--check-images", default=16, show_default=True, help="Validation images on which golden must reproduce Brevitas.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def export(checkpoint: Path, out_path: Path, qonnx_path: Path | None, name: str | None, check_images: int, as_json: bool) -> None:
    """Write the integer graph (.cnir) of a QAT checkpoint, and check golden against Brevitas."""
    import numpy as np
    import torch

    from codenet.quant.export import ExportError, compare_golden, export_cnir, export_qonnx
    from codenet.quant.infer import predict_graph, predict_model
    from codenet.quant.train import TrainConfig, TrainError, load_checkpoint, model_from_checkpoint

    try:
        ckpt = load_checkpoint(checkpoint)
        if ckpt["phase"] == "float":
            raise click.ClickException(f"{checkpoint} is from float pre-training; export needs a QAT checkpoint (final.pt)")
        model = model_from_checkpoint(ckpt)
        cfg = TrainConfig.from_dict(ckpt["config"])
        graph = export_cnir(model, None, out_path, ckpt["classes"], name=name or cfg.model, weights=f"{checkpoint.name}: {ckpt['command']}")
        report: dict = {"cnir": str(out_path), "nodes": len(graph.nodes), "params": graph.param_count(), "bytes": out_path.stat().st_size}
        if qonnx_path is not None:
            report["qonnx"] = str(export_qonnx(model, qonnx_path))
    except (ExportError, TrainError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if check_images:
        val = _eval_dataset(cfg.data, model.spec.input_size, check_images, cfg.seed)
        images = np.stack([val[i]["image"] for i in range(min(check_images, len(val)))])
        agree = compare_golden(model, graph, torch.from_numpy(images).permute(0, 3, 1, 2).float())
        _, det_model = predict_model(model, val, limit=check_images)
        _, det_graph = predict_graph(graph, val, limit=check_images)
        same = all(
            np.array_equal(a["labels"], b["labels"]) and np.allclose(a["boxes"], b["boxes"], atol=1e-4)
            for a, b in zip(det_model, det_graph)
        )
        report["check"] = {
            "images": len(images),
            "elements": agree.elements,
            "fraction_exact": agree.fraction_exact,
            "fraction_within_1_lsb": agree.fraction_within_1,
            "max_abs_diff_lsb": agree.max_abs_diff,
            "detections_identical": bool(same),
        }
    if as_json:
        _emit_json(report)
        return
    con = _console(False)
    con.print(f"wrote {out_path}: {report['nodes']} nodes, {report['params']:,} parameters, {report['bytes']:,} bytes")
    if "qonnx" in report:
        con.print(f"wrote {report['qonnx']}")
    if "check" in report:
        c = report["check"]
        con.print(
            f"golden vs Brevitas on {c['images']} validation images: {c['fraction_exact']:.4%} exact, "
            f"{c['fraction_within_1_lsb']:.4%} within 1 LSB (max {c['max_abs_diff_lsb']}), "
            f"detections {'identical' if c['detections_identical'] else 'DIFFER'}"
        )


@main.command("eval")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--backend", type=click.Choice(["torch", "golden"]), default=None, help="[default: torch for .pt, golden for .cnir]")
@click.option("--data", default=None, help="synth, voc:DIR or coco:DIR [default: the checkpoint's data, or synth].")
@click.option("--images", default=500, show_default=True, help="Validation images (synthetic data).")
@click.option("--seed", default=None, type=int, help="Data seed [default: the checkpoint's].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def eval_cmd(model_path: Path, backend: str | None, data: str | None, images: int, seed: int | None, as_json: bool) -> None:
    """AP50 and COCO mAP of a checkpoint (torch) or a .cnir (golden executor)."""
    from codenet.quant.evaluate import evaluate_detections
    from codenet.quant.infer import predict_graph, predict_model
    from codenet.quant.train import TrainConfig, TrainError, load_checkpoint, model_from_checkpoint

    from . import ir

    is_graph = model_path.suffix == ".cnir"
    backend = backend or ("golden" if is_graph else "torch")
    if is_graph != (backend == "golden"):
        raise click.ClickException(f"backend {backend} cannot run {model_path.name}: use golden for .cnir and torch for checkpoints")
    try:
        if is_graph:
            graph = ir.load(model_path)
            size, classes = int(graph.metadata["input_size"][0]), graph.metadata["classes"]
            data, seed = data or "synth", 0 if seed is None else seed
        else:
            ckpt = load_checkpoint(model_path)
            cfg = TrainConfig.from_dict(ckpt["config"])
            model = model_from_checkpoint(ckpt)
            size, classes = model.spec.input_size, ckpt["classes"]
            data, seed = data or cfg.data, cfg.seed if seed is None else seed
        val = _eval_dataset(data, size, images, seed)
        if is_graph:
            gts, dets = predict_graph(graph, val, limit=images)
        else:
            gts, dets = predict_model(model, val, limit=images)
        result = evaluate_detections(gts, dets, classes)
    except (TrainError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    report = {
        "model": str(model_path),
        "backend": backend,
        "data": data,
        "images": len(gts),
        "ap50": result["ap50"],
        "map": result["map"],
        "per_class_ap50": result["per_class_ap50"],
    }
    if not is_graph:
        report["phase"] = ckpt["phase"]
    if as_json:
        _emit_json(report)
        return
    con = _console(False)
    con.print(f"{model_path} on {backend}, {data} ({len(gts)} images): AP50 {result['ap50']:.4f}, mAP {result['map']:.4f}")
    for k, v in result["per_class_ap50"].items():
        con.print(f"  {k:12s} {v:.4f}")


@main.command()
@click.option("-o", "--out", "out_dir", default="build/demo", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def demo(out_dir: Path, seed: int, as_json: bool) -> None:
    """Run every part of the flow that exists today, on built-in defaults."""
    import numpy as np
    from rich.table import Table

    from . import golden, ir, zoo

    con = _console(as_json)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {"steps": []}

    con.rule("[bold]codenet demo")
    # 1. integer graph: build, write, reload (the .cnir contract)
    graph = zoo.build("codenet-tiny", seed=seed)
    path = ir.save(graph, out_dir / "codenet-tiny-random.cnir")
    loaded = ir.load(path)
    con.print(
        f"[green]1[/] integer graph: {len(loaded.nodes)} nodes, {loaded.param_count():,} parameters, "
        f"written and re-validated at {path} ({path.stat().st_size:,} bytes)"
    )
    result["steps"].append({"step": "cnir", "path": str(path), "nodes": len(loaded.nodes), "bytes": path.stat().st_size})

    # 2. golden executor on a batch of images; the two copies of the graph must agree
    rng = np.random.default_rng(seed)
    h, w, c = loaded.tensors["image"].shape
    images = rng.integers(0, 256, size=(4, h, w, c)).astype(np.uint8)
    outs = golden.run(loaded, images)
    again = golden.run(graph, images)
    same = all(np.array_equal(outs[k], again[k]) for k in outs)
    if not same:
        raise click.ClickException("the reloaded graph disagrees with the built one: the .cnir round trip is broken")
    table = Table(title="golden executor outputs (4 random images, random weights)")
    for col in ("head", "shape", "dtype", "min", "max", "distinct values"):
        table.add_column(col)
    for k, v in outs.items():
        table.add_row(k, str(v.shape), str(v.dtype), str(v.min()), str(v.max()), str(np.unique(v).size))
    con.print("[green]2[/] golden executor: ran the reloaded graph on 4 images; identical to the in-memory graph")
    con.print(table)
    result["steps"].append(
        {"step": "golden", "images": 4, "outputs": {k: list(v.shape) for k, v in outs.items()}, "roundtrip_identical": same}
    )

    # 3. the paper's configuration b at full size, through the golden executor
    big = zoo.build("codenet-1x-b", seed=seed)
    report = _bench_golden(big, frames=2, seed=seed)
    con.print(
        f"[green]3[/] CoDeNet-1x configuration b (256x256): {report['params']:,} parameters, "
        f"{report['macs_per_frame'] / 1e9:.3f} G MACs, "
        f"golden executor {report['host_seconds_per_frame'] * 1e3:.0f} ms per frame on this host"
    )
    result["steps"].append(
        {k: report[k] for k in ("model", "params", "macs_per_frame", "host_seconds_per_frame")} | {"step": "codenet-1x-b"}
    )

    todo = [
        "training and export of a real detector (codenet train / export / eval): quant issue",
        "the Amaranth engine, Verilog and its RTL simulation (codenet gen / synth): engine issue",
        "compiler, driver and the detector on the simulated engine (codenet run): end-to-end issue",
        "board projects, bitstreams and deployment (codenet build / deploy / serve): boards issue",
    ]
    con.print("[yellow]Still to come[/] (not run, no results shown for them):")
    for t in todo:
        con.print(f"  - {t}")
    con.print("[dim]Weights here are random: the outputs check the contract and the executor, they are not detections.[/dim]")
    result["still_to_come"] = todo
    if as_json:
        _emit_json(result)


@main.command()
@click.option("--engine", "engine", default="tiny", show_default=True, help="Engine preset (tiny, ultra96, ulx3s) or config .json file.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Directory for the files.")
@click.option("--lint/--no-lint", default=False, help="Also run verilator --lint-only -Wall (with the waivers) on the Verilog.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def gen(engine: str, out_dir: Path, lint: bool, as_json: bool) -> None:
    """Generate an engine: Verilog, engine.json (configuration + register map) and a C header."""
    from .engine import PRESETS, EngineConfig, EngineConfigError

    try:
        cfg = PRESETS[engine] if engine in PRESETS else EngineConfig.from_json(Path(engine).read_text())
    except (EngineConfigError, OSError) as e:
        raise click.ClickException(f"--engine {engine}: {e}") from None
    from codenet.hw import gen as hw_gen

    start = time.perf_counter()
    paths = hw_gen.generate(cfg, out_dir)
    result: dict = {"engine": cfg.name, "config": cfg.to_dict(), "files": {k: str(v) for k, v in paths.items()}}
    result["seconds"] = round(time.perf_counter() - start, 2)
    if lint:
        run = hw_gen.lint(out_dir)
        result["lint"] = {"ok": run.returncode == 0, "output": (run.stdout + run.stderr)[-4000:]}
    if as_json:
        _emit_json(result)
    else:
        con = _console(False)
        con.print(f"engine {cfg.name!r} ({cfg.lanes} lanes) written to {out_dir} in {result['seconds']} s:")
        for k, v in result["files"].items():
            con.print(f"  {k}: {v}")
        if lint:
            con.print("verilator lint: " + ("clean (waivers: docs/engine.md § Lint)" if result["lint"]["ok"] else "FAILED"))
            if not result["lint"]["ok"]:
                con.print(result["lint"]["output"])
    if lint and not result["lint"]["ok"]:
        raise SystemExit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
