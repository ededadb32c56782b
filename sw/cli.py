"""The `codenet` command: the one place that reaches every room.

Each subcommand imports what it needs inside its own body, so `codenet --help` stays fast
and works without torch, Amaranth or cocotb installed. A subcommand exists only once it
works end to end; the demo says which parts of the flow it leaves out, and how to run them.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import click

from . import __version__


def _console(json_mode: bool):
    """Human output goes to stderr when stdout is reserved for one JSON object."""
    import os
    import sys

    from rich.console import Console

    stream = sys.stderr if json_mode else sys.stdout
    wide = None if stream.isatty() or "COLUMNS" in os.environ else 120  # logs and pipes: room for the tables
    return Console(stderr=json_mode, highlight=False, width=wide)


def _emit_json(obj: dict) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


def _load_model(model: str, seed: int):
    """A `.cnir` path, or a zoo name built with random weights."""
    from . import ir, zoo

    if model.endswith(".cnir") or Path(model).exists():
        return ir.load(model)
    return zoo.build(model, seed=seed)


def _engine_config(engine: str):
    """An engine preset name or a configuration .json file."""
    from .engine import PRESETS, EngineConfig, EngineConfigError

    try:
        return PRESETS[engine] if engine in PRESETS else EngineConfig.from_json(Path(engine).read_text())
    except (EngineConfigError, OSError) as e:
        raise click.ClickException(f"--engine {engine}: {e}") from None


def _load_cnir(path: Path):
    from .ir import CnirError, load

    try:
        return load(path)
    except CnirError as e:
        raise click.ClickException(str(e)) from None


def _compile(graph, cfg, what: str):
    """Compile for an engine; a graph that does not fit is an error naming the file and the layer."""
    from .compiler import CompileError, compile_graph

    try:
        return compile_graph(graph, cfg)
    except CompileError as e:
        raise click.ClickException(f"{what} does not fit engine {cfg.name!r}: {e}") from None


#: Presets from the smallest engine up: --engine auto takes the first one a graph fits.
_AUTO_ORDER = ("tiny", "ulx3s", "ultra96")


def _pick_engine(graph, engine: str, what: str):
    """(EngineConfig, Program, refusals): the named engine, or with "auto" the smallest preset the graph fits
    (refusals: [(preset, reason)] for the smaller ones)."""
    from .compiler import CompileError, compile_graph
    from .engine import PRESETS

    if engine != "auto":
        cfg = _engine_config(engine)
        return cfg, _compile(graph, cfg, what), []
    refused = []
    for name in _AUTO_ORDER:
        try:
            return PRESETS[name], compile_graph(graph, PRESETS[name]), refused
        except CompileError as e:
            refused.append((name, str(e)))
    raise click.ClickException(f"{what} fits no engine preset: " + "; ".join(f"{n}: {r}" for n, r in refused))


def _dram_model(cfg, dram: str | None):
    """(name, DramTiming, description) of the DRAM model for an engine: --dram, else the preset's board."""
    from codenet.sim.rtl_backend import BOARD_DRAM, board_for, board_timing

    name = dram or board_for(cfg)
    about = BOARD_DRAM[name].about if name in BOARD_DRAM else "an ideal memory"
    if name in BOARD_DRAM and not dram and cfg.name not in ("ultra96", "ulx3s"):
        about += f" (engine {cfg.name!r} has no board of its own: modelled with this one at its {cfg.clock_mhz} MHz)"
    return name, board_timing(name, cfg.clock_mhz), about


class _DeviceBackend(click.ParamType):
    """A backend name, or remote://HOST:PORT: a device served by `codenet serve` (docs/deploy.md)."""

    name = "backend"

    def __init__(self, names: list[str]):
        self.names = list(names)

    def get_metavar(self, param, ctx=None) -> str:
        return "[" + "|".join(self.names) + "|remote://HOST:PORT]"

    def convert(self, value, param, ctx):
        if value in self.names:
            return value
        if isinstance(value, str) and value.startswith("remote://"):
            from .remote import parse_url

            try:
                parse_url(value)
            except ValueError as e:
                self.fail(str(e), param, ctx)
            return value
        self.fail(f"{value!r} is not one of {', '.join(self.names)} or remote://HOST:PORT", param, ctx)


def _open_device(backend: str, cfg, *, dram: str | None = None, bitfile: str | None = None, waves: Path | None = None):
    """A device of the named backend for an engine configuration (errors as ClickException)."""
    from .driver import BackendUnavailable, DeviceError, open_device

    try:
        if backend.startswith("remote://"):  # token: $CODENET_TOKEN, $CODENET_TOKEN_FILE or the file serve / deploy wrote
            return open_device("remote", url=backend)
        if backend == "fsim":
            return open_device("fsim", config=cfg)
        if backend == "rtl":
            fmt = False if waves is None else waves.suffix[1:]
            return open_device("rtl", config=cfg, dram=_dram_model(cfg, dram)[0], waves=fmt)
        if backend == "pynq":
            if not bitfile:
                raise click.ClickException("--backend pynq needs --bitfile (the engine's bitstream, on the board)")
            return open_device("pynq", bitfile=bitfile)
    except BackendUnavailable as e:
        raise click.ClickException(str(e)) from None
    except DeviceError as e:
        raise click.ClickException(f"backend {backend}: {e}") from None
    raise click.ClickException(f"unknown backend {backend!r}")


def _waves_need_rtl(backend: str, waves: Path | None) -> None:
    """--waves is checked against the backend before any work (_open_device takes it for rtl only)."""
    if waves is not None and backend != "rtl":
        raise click.ClickException(f"--waves needs --backend rtl (the Verilated engine), not {backend}")


def _waves_path(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """--waves FILE: the trace's format is its suffix (checked before anything runs)."""
    if value is not None and value.suffix not in (".vcd", ".fst"):
        raise click.BadParameter(f"{value}: name a .vcd or .fst file (.fst needs the lz4 headers to build)")
    return value


_waves_option = click.option(
    "--waves",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    callback=_waves_path,
    metavar="FILE",
    help="rtl: trace every signal of the engine into FILE (.vcd, or .fst); a separate build, megabytes per thousand cycles.",
)


def _save_waves(dev, dest: Path) -> str:
    """Move the closed simulator's trace to `dest`."""
    src = dev.waves_file
    if src is None or not src.is_file():
        raise click.ClickException(f"the simulator wrote no trace (expected {src}); its log: {dev.sim_log}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), dest)
    return str(dest)


def _check_bit_exact(got: dict, want: dict, what: str) -> None:
    """Every output tensor identical to golden's, or a ClickException naming the first that is not."""
    import numpy as np

    for name, w in want.items():
        g = got[name]
        if g.dtype != w.dtype or g.shape != w.shape or not np.array_equal(g, w):
            bad = int(np.count_nonzero(g != w)) if g.shape == w.shape else -1
            raise click.ClickException(f"{what}: output {name!r} differs from the golden executor ({bad} of {w.size} values)")


def _wall(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


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


def _bench_device(
    graph, backend: str, engine: str, dram: str | None, frames: int, seed: int, per_layer: bool, what: str, waves: Path | None = None
) -> dict:
    """A frame on fsim (estimate) or rtl (measured): per-layer table, totals, FPS, assumptions."""
    import numpy as np

    from codenet.sim import perf

    cfg = _engine_config(engine)
    prog = _compile(graph, cfg, what)
    dram_name, timing, about = _dram_model(cfg, dram)
    (name,) = graph.inputs
    t = graph.tensors[name]
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(frames, *t.shape)).astype(t.dtype)
    start = time.perf_counter()
    dev = _open_device(backend, cfg, dram=dram_name, waves=waves)
    setup = time.perf_counter() - start
    from .driver import DeviceError

    try:
        frame, _ = perf.profile(
            dev, prog, x[:1], backend=backend, dram=dram_name, timing=timing, about=about, per_layer=per_layer, frames=x[1:]
        )
    except DeviceError as e:
        raise click.ClickException(f"{what} on {backend}: {e}") from None
    finally:
        dev.close()
    report = {
        "model": graph.name,
        "backend": backend,
        "engine": cfg.name,
        "clock_mhz": cfg.clock_mhz,
        "dram": dram_name,
        "dram_bytes_per_cycle": None if not np.isfinite(timing.bytes_per_cycle) else timing.bytes_per_cycle,
        "frames": frames,
        "cycles_per_frame": frame.cycles_per_frame,
        "fps": frame.fps,
        "measured": frame.measured,
        "macs_per_frame": sum(graph.macs().values()),
        "dram_bytes_per_frame": frame.counters["BYTES_RD"] + frame.counters["BYTES_WR"],
        "descriptors": prog.prog_len,
        "counters": frame.counters,
        "host_seconds": round(time.perf_counter() - start, 2),
        "setup_seconds": round(setup, 2),
        "assumptions": frame.assumptions,
        "layers": [lay for lay in frame.to_dict()["layers"]],
    }
    if backend == "rtl":
        report["sim_cycles_per_second"] = round(getattr(dev, "cycles_per_second", 0.0))
    if waves is not None:
        report["waves"] = _save_waves(dev, waves)
    return report


_SHORT_OP = {
    "CONV1X1": "1x1",
    "CONV3X3": "stem3x3",
    "DWCONV3X3": "dw3x3",
    "DEFORM_SQUARE": "deform",
    "DEFORM_OFFSETS": "offsets",
    "MAXPOOL3X3": "maxpool",
    "UPSAMPLE2X": "up2x",
    "COPY": "copy",
}


def _print_bench_device(con, report: dict) -> None:
    from rich.table import Table

    m = "measured" if report["measured"] else "estimated"
    if report["layers"]:
        table = Table(title=f"{report['model']} on {report['backend']}, engine {report['engine']}, DRAM {report['dram']}: per layer ({m})")
        table.add_column("layer", no_wrap=True, min_width=12)
        table.add_column("engine ops")
        for col in ("cycles", "MACs", "MAC util", "DRAM bytes"):
            table.add_column(col, justify="right", no_wrap=True)
        table.add_column("bound", no_wrap=True)
        for row in report["layers"]:
            ops = " ".join(_SHORT_OP.get(k, k) + (f"x{v}" if v > 1 else "") for k, v in row["engine_ops"].items()) or "(addressing)"
            util = "-" if row["mac_util"] is None else f"{100 * row['mac_util']:.1f} %"
            table.add_row(row["name"], ops, f"{row['cycles']:,}", f"{row['macs']:,}", util, f"{row['dram_bytes']:,}", row["bound"])
        con.print(table)
    summary = Table(title=f"{report['model']} on {report['backend']} ({m})", show_header=False)
    summary.add_row("engine", f"{report['engine']} at {report['clock_mhz']} MHz, {report['descriptors']} descriptors")
    summary.add_row("cycles per frame", f"{report['cycles_per_frame']:,}")
    summary.add_row("FPS at the board clock", f"{report['fps']:.1f}")
    summary.add_row("MACs per frame", f"{report['macs_per_frame']:,}")
    summary.add_row("DRAM bytes per frame", f"{report['dram_bytes_per_frame']:,}")
    if "sim_cycles_per_second" in report:
        summary.add_row("simulation speed", f"{report['sim_cycles_per_second']:,} cycles/s")
    con.print(summary)
    con.print("[bold]Assumptions[/bold]")
    for a in report["assumptions"]:
        con.print(f"  - {a}")


@main.command()
@click.option("--model", "model", default="codenet-1x-b", show_default=True, help="A .cnir file or a zoo name (random weights).")
@click.option(
    "--backend",
    type=click.Choice(["golden", "fsim", "rtl"]),
    default="golden",
    show_default=True,
    help="golden: host time of the numpy executor; fsim: the engine's cycles, estimated; rtl: measured on the Verilated engine.",
)
@click.option("--engine", default="ultra96", show_default=True, help="fsim/rtl: engine preset (tiny, ulx3s, ultra96) or config .json.")
@click.option(
    "--dram", type=click.Choice(["ideal", "ultra96", "ulx3s"]), default=None, help="fsim/rtl: DRAM model [default: the engine's board]."
)
@click.option("--frames", default=None, type=click.IntRange(1, 1000), help="Frames to run [default: 3 golden, 1 fsim/rtl].")
@click.option("--seed", default=0, show_default=True, help="Seed for random weights and the input frame.")
@click.option("--layers/--no-layers", default=None, help="Per-layer table [default: on for fsim/rtl, off for golden].")
@_waves_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def bench(
    model: str,
    backend: str,
    engine: str,
    dram: str | None,
    frames: int | None,
    seed: int,
    layers: bool | None,
    waves: Path | None,
    as_json: bool,
) -> None:
    """Measure a model: host time (golden), or engine cycles, MAC utilisation, DRAM traffic and FPS (fsim, rtl)."""
    from rich.table import Table

    from .ir import CnirError

    con = _console(as_json)
    _waves_need_rtl(backend, waves)  # before the model is built
    try:
        graph = _load_model(model, seed)
    except (CnirError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if backend != "golden":
        report = _bench_device(graph, backend, engine, dram, frames or 1, seed, layers is not False, model, waves)
        if as_json:
            _emit_json(report)
        else:
            _print_bench_device(con, report)
            if waves is not None:
                con.print(f"wrote the trace {report['waves']}")
        return
    frames = frames or 3
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


def _scale_range(ctx: click.Context, param: click.Parameter, text: str) -> tuple[float, float]:
    """--scale-range LO,HI as two floats, checked before a run directory is made."""
    try:
        lo, hi = (float(t) for t in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected LO,HI (two numbers), got {text!r}") from None
    if not 0 < lo <= hi:
        raise click.BadParameter(f"need 0 < LO <= HI, got {text!r}")
    return lo, hi


@main.command()
@click.option("--model", default="codenet-tiny", show_default=True, help="Zoo architecture to train (codenet-tiny, codenet-1x-b, ...).")
@click.option(
    "--deform", type=click.Choice(["square", "bounded", "dw", "full"]), default=None, help="Decoder variant [default: the model's]."
)
@click.option("--data", default="synth", show_default=True, help="synth, voc:DIR or coco:DIR.")
@click.option("--input-size", default=None, type=int, help="Input size, a multiple of 32 [default: the model's].")
@click.option("--train-images", default=4000, show_default=True, help="Synthetic training images.")
@click.option("--val-images", default=500, show_default=True, help="Synthetic validation images.")
@click.option("--epochs", default=20, show_default=True, help="Float pre-training epochs.")
@click.option("--qat-epochs", default=2, show_default=True, help="QAT fine-tuning epochs.")
@click.option("--batch-size", default=32, show_default=True, help="Global batch (split over DDP processes).")
@click.option("--lr", default=1e-2, show_default=True)
@click.option("--qat-lr", default=1e-4, show_default=True)
@click.option(
    "--scale-range",
    default="0.8,1.25",
    show_default=True,
    callback=_scale_range,
    help="Random rescale factors of the augmentation, LO,HI.",
)
@click.option("--offset-lr-mult", default=0.1, show_default=True, help="Learning-rate factor of the offset/dilation convs.")
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
@click.option(
    "--backend",
    type=click.Choice(["torch", "golden", "fsim", "rtl"]),
    default=None,
    help="torch for checkpoints; golden, fsim or rtl (the engine, through the driver) for .cnir [default: torch / golden].",
)
@click.option(
    "--engine", default="auto", show_default=True, help="fsim/rtl: engine preset or config .json; auto: the smallest preset it fits."
)
@click.option(
    "--dram", type=click.Choice(["ideal", "ultra96", "ulx3s"]), default=None, help="rtl: DRAM model [default: the engine's board]."
)
@click.option("--data", default=None, help="synth, voc:DIR or coco:DIR [default: the checkpoint's data, or synth].")
@click.option("--images", default=500, show_default=True, help="Validation images (synthetic data).")
@click.option("--seed", default=None, type=int, help="Data seed [default: the checkpoint's].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def eval_cmd(
    model_path: Path, backend: str | None, engine: str, dram: str | None, data: str | None, images: int, seed: int | None, as_json: bool
) -> None:
    """AP50 and COCO mAP of a checkpoint (torch) or a .cnir (golden executor, or the engine on fsim / rtl)."""
    from codenet.quant.evaluate import evaluate_detections
    from codenet.quant.infer import predict_graph, predict_model
    from codenet.quant.train import TrainConfig, TrainError, load_checkpoint, model_from_checkpoint

    from .driver import DeviceError

    is_graph = model_path.suffix == ".cnir"
    backend = backend or ("golden" if is_graph else "torch")
    if is_graph == (backend == "torch"):
        raise click.ClickException(
            f"backend {backend} cannot run {model_path.name}: use torch for checkpoints and golden, fsim or rtl for .cnir"
        )
    rt = None
    extra: dict = {}
    try:
        if is_graph:
            graph = _load_cnir(model_path)
            size, classes = int(graph.metadata["input_size"][0]), graph.metadata["classes"]
            data, seed = data or "synth", 0 if seed is None else seed
        else:
            ckpt = load_checkpoint(model_path)
            cfg = TrainConfig.from_dict(ckpt["config"])
            model = model_from_checkpoint(ckpt)
            size, classes = model.spec.input_size, ckpt["classes"]
            data, seed = data or cfg.data, cfg.seed if seed is None else seed
        val = _eval_dataset(data, size, images, seed)
        if is_graph and backend in ("fsim", "rtl"):
            from .runtime import Runtime

            ecfg, prog, _ = _pick_engine(graph, engine, str(model_path))
            rt = Runtime(_open_device(backend, ecfg, dram=dram), prog, timeout_s=3600)
            gts, dets = predict_graph(graph, val, limit=images, run=lambda _g, x: rt.run(x))
            cycles = [c["CYCLES"] for c in rt.counters]
            extra = {"engine": ecfg.name, "cycles_per_frame_mean": sum(cycles) / len(cycles) if cycles else None}
        elif is_graph:
            gts, dets = predict_graph(graph, val, limit=images)
        else:
            gts, dets = predict_model(model, val, limit=images)
        result = evaluate_detections(gts, dets, classes)
    except DeviceError as e:
        raise click.ClickException(f"{model_path} on {backend}: {e}") from None
    except (TrainError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    finally:
        if rt is not None:
            rt.close()
            rt.device.close()
    report = {
        "model": str(model_path),
        "backend": backend,
        **extra,
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
    where = f"{backend} (engine {extra['engine']})" if "engine" in extra else backend
    con.print(f"{model_path} on {where}, {data} ({len(gts)} images): AP50 {result['ap50']:.4f}, mAP {result['map']:.4f}")
    for k, v in result["per_class_ap50"].items():
        con.print(f"  {k:12s} {v:.4f}")


def _model_images(graph, image_paths: tuple[Path, ...], synthetic: int | None, seed: int) -> list[dict]:
    """The images to run, at the model's input size (letterboxed), with what maps boxes back to the originals."""
    import numpy as np

    name = graph.inputs[0]
    h, w, c = graph.tensors[name].shape
    if c != 3 or graph.tensors[name].dtype != "uint8":
        raise click.ClickException(f"the graph's input {name!r} is {graph.tensors[name].dtype} {h}x{w}x{c}, not an RGB uint8 image")
    items = []
    if synthetic:
        from codenet.quant.data.synthetic import SyntheticDetection

        if h != w:
            raise click.ClickException(f"--synthetic makes square images; the graph's input is {h}x{w}")
        ds = SyntheticDetection("val", size=h, num_images=synthetic, seed=seed)
        for i in range(synthetic):
            s = ds[i]
            items.append(
                {"source": f"synthetic val image {i} (seed {seed})", "stem": f"synthetic-{i:03d}", "image": s["image"],
                 "original": s["image"], "scale": 1.0, "offset": (0.0, 0.0), "gt": {"boxes": s["boxes"], "labels": s["labels"]}}
            )  # fmt: skip
        return items
    from codenet.quant.data import DatasetError, read_image
    from codenet.quant.data.transforms import Resize

    resize = Resize((h, w))
    for k, p in enumerate(image_paths):
        try:
            img = read_image(p)
        except (DatasetError, ImportError) as e:
            raise click.ClickException(f"{p}: {e}") from None
        out = resize({"image": img, "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)}, None)
        items.append(
            {"source": str(p), "stem": f"{k:03d}-{Path(p).stem}", "image": out["image"], "original": img,
             "scale": float(out["scale"]), "offset": (float(out["offset"][0]), float(out["offset"][1])), "gt": None}
        )  # fmt: skip
    return items


def _detections(graph, outs: dict, items: list[dict], score_threshold: float) -> list[list[dict]]:
    """Decode the heads (codenet.sw.decode) and map boxes back to each original image."""
    from .decode import decode_graph_outputs

    classes = list(graph.metadata.get("classes") or [])
    result = []
    for d, it in zip(decode_graph_outputs(outs, graph, score_threshold=score_threshold), items):
        boxes = d.boxes.astype(float).copy()
        boxes[:, [0, 2]] = (boxes[:, [0, 2]] + it["offset"][0]) / it["scale"]
        boxes[:, [1, 3]] = (boxes[:, [1, 3]] + it["offset"][1]) / it["scale"]
        hh, ww = it["original"].shape[:2]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, ww)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, hh)
        result.append(
            [
                {
                    "class": classes[int(lab)] if int(lab) < len(classes) else str(int(lab)),
                    "label": int(lab),
                    "score": round(float(sc), 4),
                    "box": [round(float(v), 2) for v in b],
                }
                for b, sc, lab in zip(boxes, d.scores, d.labels)
            ]
        )
    return result


_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230)]


def _annotate(image, dets: list[dict], path: Path, gt: list[dict] | None = None) -> Path:
    """Write `image` with the detections (boxes + class names and scores; ground truth dashed-grey if given) as PNG."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        raise click.ClickException("annotated PNGs need Pillow: pip install pillow (part of the 'quant' extra)") from None
    h, w = image.shape[:2]
    k = max(1, -(-384 // min(h, w)))  # small model inputs are enlarged so that labels stay readable
    im = Image.fromarray(image).convert("RGB").resize((w * k, h * k), Image.NEAREST)
    draw = ImageDraw.Draw(im)
    try:
        font = ImageFont.load_default(size=12 if k == 1 else 14)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    for g in gt or []:
        x0, y0, x1, y1 = (v * k for v in g["box"])
        draw.rectangle([x0, y0, x1, y1], outline=(200, 200, 200), width=1)
    for d in reversed(dets):  # boxes: best last, on top
        x0, y0, x1, y1 = (v * k for v in d["box"])
        draw.rectangle([x0, y0, x1, y1], outline=_PALETTE[d["label"] % len(_PALETTE)], width=2)
    placed: list[tuple[float, float, float, float]] = []
    for d in dets:  # labels: best first, each moved down until it covers no earlier one
        color = _PALETTE[d["label"] % len(_PALETTE)]
        x0, y0 = d["box"][0] * k, d["box"][1] * k
        text = f"{d['class']} {d['score']:.2f}"
        tb = draw.textbbox((0, 0), text, font=font)
        tw, th = tb[2] - tb[0] + 4, tb[3] - tb[1] + 4
        ty = y0 - th if y0 - th >= 0 else y0
        while any(x0 < r[2] and r[0] < x0 + tw and ty < r[3] and r[1] < ty + th for r in placed) and ty < h * k:
            ty += th
        placed.append((x0, ty, x0 + tw, ty + th))
        draw.rectangle([x0, ty, x0 + tw, ty + th], fill=color)
        draw.text((x0 + 2 - tb[0], ty + 2 - tb[1]), text, fill=(0, 0, 0) if sum(color) > 380 else (255, 255, 255), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def _run_on_device(
    graph, prog, backend: str, cfg, images, *, dram: str | None, bitfile: str | None, what: str, waves: Path | None = None
):
    """(outputs, per-image counters, device description) of a batch on a backend, via the Runtime."""
    from .driver import DeviceError
    from .runtime import Runtime

    dev = _open_device(backend, cfg, dram=dram, bitfile=bitfile, waves=waves)
    try:
        with Runtime(dev, prog, timeout_s=3600) as rt:
            outs = rt.run(images)
            counters = list(rt.counters)
    except DeviceError as e:
        raise click.ClickException(f"{what} on {backend}: {e}") from None
    finally:
        dev.close()
    info = {"backend": backend, "engine": cfg.name}
    if backend == "rtl":
        info.update(dram=dev.dram_name, sim_cycles_per_second=round(dev.cycles_per_second), startup_seconds=round(dev.startup_seconds, 2))
    if waves is not None:
        info["waves"] = _save_waves(dev, waves)
    return outs, counters, info


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--backend",
    type=_DeviceBackend(["fsim", "rtl", "pynq"]),
    default="fsim",
    show_default=True,
    help="Device backend (or remote://HOST:PORT).",
)
@click.option(
    "--engine", default="auto", show_default=True, help="Engine preset or config .json; auto: the smallest preset the model fits."
)
@click.option("--image", "image_paths", multiple=True, type=click.Path(dir_okay=False, exists=True, path_type=Path), help="An image file.")
@click.option("--synthetic", type=click.IntRange(1, 1000), default=None, help="N synthetic validation images instead of --image.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Where detections go.")
@click.option(
    "--dram", type=click.Choice(["ideal", "ultra96", "ulx3s"]), default=None, help="rtl: DRAM model [default: the engine's board]."
)
@click.option("--bitfile", default=None, help="pynq: the bitstream to load.")
@click.option("--score-threshold", default=0.3, show_default=True, type=click.FloatRange(0, 1), help="Detections kept and drawn.")
@click.option("--check/--no-check", default=True, show_default=True, help="Compare every output tensor with the golden executor.")
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic images.")
@_waves_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def run(
    model_path: Path,
    backend: str,
    engine: str,
    image_paths: tuple[Path, ...],
    synthetic: int | None,
    out_dir: Path,
    dram: str | None,
    bitfile: str | None,
    score_threshold: float,
    check: bool,
    seed: int,
    waves: Path | None,
    as_json: bool,
) -> None:
    """Run a detector (.cnir) on a device backend: detections as JSON and annotated PNGs in OUT."""
    import numpy as np

    from . import golden

    if bool(image_paths) == bool(synthetic):
        raise click.ClickException("give --image PATH (one or more) or --synthetic N")
    _waves_need_rtl(backend, waves)
    con = _console(as_json)
    start = time.perf_counter()
    graph = _load_cnir(model_path)
    for key in ("heads", "classes"):
        if key not in graph.metadata:
            raise click.ClickException(f"{model_path}: the graph's metadata has no {key!r}: not a detector this command can decode")
    cfg, prog, _ = _pick_engine(graph, engine, str(model_path))
    items = _model_images(graph, image_paths, synthetic, seed)
    batch = np.stack([it["image"] for it in items])
    if backend == "rtl" and not as_json:
        con.print("[dim]rtl: the engine's Verilog and its Verilator build are cached; a first build takes a minute or two[/dim]")
    outs, counters, info = _run_on_device(graph, prog, backend, cfg, batch, dram=dram, bitfile=bitfile, what=str(model_path), waves=waves)
    bit_exact = None
    if check:
        _check_bit_exact(outs, golden.run(graph, batch), f"{model_path} on {backend}")
        bit_exact = True
    dets = _detections(graph, outs, items, score_threshold)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for it, d, c in zip(items, dets, counters):
        gt = None
        if it["gt"] is not None:
            classes = graph.metadata["classes"]
            gt = [
                {"class": classes[int(lab)], "label": int(lab), "box": [round(float(v), 2) for v in b]}
                for b, lab in zip(it["gt"]["boxes"], it["gt"]["labels"])
            ]
        png = _annotate(it["original"], d, out_dir / f"{it['stem']}.png", gt)
        rec = {"source": it["source"], "png": str(png), "detections": d, "engine_cycles": int(c["CYCLES"])}
        if gt is not None:
            rec["ground_truth"] = gt
        records.append(rec)
    cycles = [r["engine_cycles"] for r in records]
    report = {
        "model": str(model_path),
        **info,
        "clock_mhz": cfg.clock_mhz,
        "images": len(records),
        "bit_exact_vs_golden": bit_exact,
        "score_threshold": score_threshold,
        "cycles_note": "measured (engine CYCLES counter)" if backend != "fsim" else "fsim's estimate, DRAM keeping up",
        "fps_at_engine_clock": cfg.clock_mhz * 1e6 / (sum(cycles) / len(cycles)) if cycles and min(cycles) > 0 else None,
        "results": records,
        "seconds": round(time.perf_counter() - start, 2),
    }
    det_path = out_dir / "detections.json"
    det_path.write_text(json.dumps(report, indent=2) + "\n")
    report["detections_json"] = str(det_path)
    if as_json:
        _emit_json(report)
        return
    con.print(
        f"{model_path} on {backend} (engine {cfg.name}): {len(records)} image(s), "
        + ("bit-exact with golden" if bit_exact else "not checked against golden")
    )
    for r in records:
        top = ", ".join(f"{d['class']} {d['score']:.2f}" for d in r["detections"][:6]) or "nothing above the threshold"
        more = f" (+{len(r['detections']) - 6} more)" if len(r["detections"]) > 6 else ""
        con.print(f"  {r['source']}: {top}{more}; {r['engine_cycles']:,} engine cycles")
    con.print(f"wrote {det_path} and {len(records)} annotated PNG(s) in {out_dir}")
    if "waves" in info:
        con.print(f"wrote the trace {info['waves']}")


#: The shipped detector: a QAT checkpoint and its .cnir beside it.
SHIPPED_CHECKPOINT = Path(__file__).resolve().parents[1] / "models" / "codenet-tiny-square" / "final.pt"
#: What `make demo` should finish in on a fresh 2-core machine (after installation).
DEMO_BUDGET_S = 600


def _same_graph(a, b) -> bool:
    import numpy as np

    if [(n.name, n.op, n.attrs) for n in a.nodes] != [(n.name, n.op, n.attrs) for n in b.nodes]:
        return False
    return all(
        set(x.arrays) == set(y.arrays) and all(np.array_equal(x.arrays[k], y.arrays[k]) for k in x.arrays) for x, y in zip(a.nodes, b.nodes)
    )


def _demo_model(checkpoint: Path, out_dir: Path, seed: int, con) -> tuple:
    """(graph written and reloaded, its path, model record): export the checkpoint, else fall back, saying so."""
    from . import ir, zoo

    rec: dict = {"checkpoint": str(checkpoint)}
    if checkpoint.is_file():
        shipped = checkpoint.parent / "model.cnir"
        path = out_dir / "model.cnir"
        try:
            import torch

            from codenet.quant.export import ExportError, export_cnir
            from codenet.quant.train import TrainConfig, TrainError, load_checkpoint, model_from_checkpoint
        except ImportError as e:
            if not shipped.is_file():
                raise click.ClickException(f"cannot export {checkpoint} ({e}) and there is no model.cnir beside it") from None
            con.print(f"[yellow]![/] cannot export {checkpoint} here ({e}): using the model.cnir shipped beside it")
            path.write_bytes(shipped.read_bytes())
            rec.update(source="shipped .cnir (not re-exported)", trained=True)
        else:
            t = time.perf_counter()
            torch.set_num_threads(1)
            try:
                ckpt = load_checkpoint(checkpoint)
                model = model_from_checkpoint(ckpt)
                name = TrainConfig.from_dict(ckpt["config"]).model
                export_cnir(model, None, path, ckpt["classes"], name=name, weights=f"{checkpoint.name}: {ckpt['command']}")
            except (ExportError, TrainError, ValueError) as e:
                raise click.ClickException(f"{checkpoint}: {e}") from None
            rec.update(source="exported from the checkpoint", trained=True, export_seconds=round(time.perf_counter() - t, 1))
            if shipped.is_file():
                rec["identical_to_shipped_cnir"] = _same_graph(ir.load(path), ir.load(shipped))
        graph = ir.load(path)
    else:
        con.print(
            f"[bold yellow]! no checkpoint at {checkpoint}[/]: falling back to a freshly built zoo codenet-tiny with RANDOM weights. "
            "Everything below runs for real, but its 'detections' come from untrained weights and mean nothing."
        )
        graph = zoo.build("codenet-tiny", seed=seed)
        path = ir.save(graph, out_dir / "codenet-tiny-random.cnir")
        rec.update(source="zoo codenet-tiny, random weights (no checkpoint)", trained=False)
    loaded = ir.load(path)  # validated on load: the .cnir contract
    rec.update(path=str(path), name=loaded.name, nodes=len(loaded.nodes), params=loaded.param_count(), bytes=path.stat().st_size)
    return graph, loaded, path, rec


@main.command()
@click.option("-o", "--out", "out_dir", default="build/demo", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--images", default=4, show_default=True, type=click.IntRange(1, 64), help="Synthetic validation images to run.")
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic images (and of random weights in the fallback).")
@click.option(
    "--backend",
    type=click.Choice(["rtl", "fsim"]),
    default="rtl",
    show_default=True,
    help="rtl: the Verilated engine; fsim: the numpy model.",
)
@click.option(
    "--checkpoint", default=None, type=click.Path(dir_okay=False, path_type=Path), help="QAT checkpoint [default: the shipped one]."
)
@click.option(
    "--engine", default="auto", show_default=True, help="Engine preset or config .json; auto: the smallest preset the model fits."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def demo(out_dir: Path, images: int, seed: int, backend: str, checkpoint: Path | None, engine: str, as_json: bool) -> None:
    """The whole flow on built-in defaults: shipped checkpoint -> .cnir -> engine -> RTL simulation -> detections."""
    import numpy as np
    from rich.table import Table

    from . import golden

    start = time.perf_counter()
    con = _console(as_json)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {"steps": []}
    con.rule("[bold]codenet demo")

    # 1. the model: export the shipped QAT checkpoint to the integer graph (.cnir), reload it
    graph, loaded, path, rec = _demo_model(checkpoint or SHIPPED_CHECKPOINT, out_dir, seed, con)
    same = rec.get("identical_to_shipped_cnir")
    con.print(
        f"[green]1[/] model: {rec['source']} -> {path} ({rec['nodes']} nodes, {rec['params']:,} parameters, {rec['bytes']:,} bytes)"
        + ("" if same is None else f"; {'identical to' if same else '[red]DIFFERENT from[/]'} the shipped model.cnir")
    )
    result["model"] = rec
    result["steps"].append({"step": "cnir", "path": str(path), "nodes": rec["nodes"], "bytes": rec["bytes"]})

    # 2. the engine: the smallest preset the model fits
    cfg, prog, refused = _pick_engine(loaded, engine, str(path))
    for name, why in refused:
        con.print(f"  [dim]engine {name} refused: {why}[/dim]")
    con.print(
        f"[green]2[/] engine {cfg.name!r}: {cfg.lanes} lanes, {cfg.clock_mhz} MHz; "
        f"program of {prog.prog_len} descriptors, {prog.size:,} bytes"
    )
    result["engine"] = {
        "name": cfg.name,
        "config": cfg.to_dict(),
        "descriptors": prog.prog_len,
        "refused": [{"engine": n, "why": w} for n, w in refused],
    }

    # 3. its Verilog and the Verilator build (both cached)
    if backend == "rtl":
        from codenet.sim.rtl_backend import build_harness, engine_verilog

        t = time.perf_counter()
        verilog = engine_verilog(cfg)
        t_gen = time.perf_counter() - t
        t = time.perf_counter()
        b = build_harness(cfg)
        t_build = time.perf_counter() - t
        con.print(
            f"[green]3[/] engine Verilog {verilog} ({_wall(t_gen)}{'' if t_gen > 1 else ', cached'}); "
            f"Verilator build {b.build_dir} ({_wall(t_build)}{'' if b.built else ', cached'})"
        )
        result["steps"].append({"step": "build", "verilog": str(verilog), "build_dir": str(b.build_dir), "gen_seconds": round(t_gen, 1),
                                "build_seconds": round(t_build, 1), "built": b.built})  # fmt: skip
    else:
        con.print("[green]3[/] backend fsim: no Verilog needed (the numpy functional model of the engine)")

    # 4. synthetic images through the engine, every output tensor checked against golden
    items = _model_images(loaded, (), images, seed)
    batch = np.stack([it["image"] for it in items])
    dram_name, timing, about = _dram_model(cfg, None)
    dev = _open_device(backend, cfg, dram=dram_name)
    from .driver import DeviceError
    from .runtime import Runtime

    try:
        t = time.perf_counter()
        with Runtime(dev, prog, timeout_s=3600) as rt:
            outs = rt.run(batch)
            counters = list(rt.counters)
        t_run = time.perf_counter() - t
        want = golden.run(loaded, batch)
        again = golden.run(graph, batch)
        roundtrip = all(np.array_equal(want[k], again[k]) for k in want)
        if not roundtrip:
            raise click.ClickException("the reloaded .cnir disagrees with the graph written: the .cnir round trip is broken")
        _check_bit_exact(outs, want, f"{path.name} on {backend}")
        where = f"the Verilated engine (DRAM model {dram_name})" if backend == "rtl" else "fsim"
        speed = f", {dev.cycles_per_second:,.0f} simulated cycles/s" if backend == "rtl" else ""
        con.print(
            f"[green]4[/] ran {len(items)} synthetic images on {where} in {_wall(t_run)}{speed}: "
            f"all {len(want)} output tensors bit-exact with the golden executor"
        )
        result["steps"].append({"step": "golden", "images": len(items), "outputs": {k: list(v.shape) for k, v in want.items()},
                                "roundtrip_identical": roundtrip, "bit_exact": True})  # fmt: skip
        result["run"] = {"backend": backend, "dram": dram_name, "seconds": round(t_run, 1), "cycles": [int(c["CYCLES"]) for c in counters]}
        if backend == "rtl":
            result["run"].update(
                sim_cycles_per_second=round(dev.cycles_per_second), simulator_startup_seconds=round(dev.startup_seconds, 2)
            )

        # 5. detections: decoded on the host, annotated PNGs and JSON
        dets = _detections(loaded, outs, items, 0.3)
        classes = loaded.metadata["classes"]
        records = []
        table = Table(title=f"detections (score >= 0.3){'' if rec['trained'] else ' - RANDOM WEIGHTS, meaningless'}")
        for col in ("image", "found", "ground truth", "png"):
            table.add_column(col)
        for it, d, c in zip(items, dets, counters):
            gt = [
                {"class": classes[int(lab)], "label": int(lab), "box": [round(float(v), 2) for v in b]}
                for b, lab in zip(it["gt"]["boxes"], it["gt"]["labels"])
            ]
            png = _annotate(it["original"], d, out_dir / f"{it['stem']}.png", gt)
            records.append(
                {"source": it["source"], "png": str(png), "detections": d, "ground_truth": gt, "engine_cycles": int(c["CYCLES"])}
            )
            found = ", ".join(f"{x['class']} {x['score']:.2f}" for x in d[:5]) + (f" +{len(d) - 5}" if len(d) > 5 else "") or "-"
            table.add_row(it["stem"], found, ", ".join(sorted(g["class"] for g in gt)), png.name)
        det_path = out_dir / "detections.json"
        det_path.write_text(json.dumps({"model": str(path), "backend": backend, "engine": cfg.name, "results": records}, indent=2) + "\n")
        con.print("[green]5[/] detections (CenterNet decode on the host):")
        con.print(table)
        result["detections"] = {"json": str(det_path), "images": records}

        # 6. performance: a frame and each layer, on the same device
        from codenet.sim import perf

        frame, _ = perf.profile(dev, prog, batch[:1], backend=backend, dram=dram_name, timing=timing, about=about)
    except DeviceError as e:
        raise click.ClickException(f"{path} on {backend}: {e}") from None
    finally:
        dev.close()
    perf_report = {
        "model": loaded.name,
        "backend": backend,
        "engine": cfg.name,
        "clock_mhz": cfg.clock_mhz,
        "dram": dram_name,
        "descriptors": prog.prog_len,
        "cycles_per_frame": frame.cycles_per_frame,
        "fps": frame.fps,
        "measured": frame.measured,
        "macs_per_frame": sum(loaded.macs().values()),
        "dram_bytes_per_frame": frame.counters["BYTES_RD"] + frame.counters["BYTES_WR"],
        "counters": frame.counters,
        "assumptions": frame.assumptions,
        "layers": frame.to_dict()["layers"],
    }
    con.print("[green]6[/] performance:")
    _print_bench_device(con, perf_report)
    result["performance"] = perf_report

    # 7. where things are, how long it took
    files = [str(path), str(det_path), *[r["png"] for r in records]]
    seconds = time.perf_counter() - start
    result.update(files=files, seconds=round(seconds, 1), budget_seconds=DEMO_BUDGET_S, within_budget=seconds <= DEMO_BUDGET_S)
    # The flow's board end needs 30 minutes of place and route or a board: named, not run.
    not_run = [
        "a bitstream: codenet build --board ulx3s -o DIR (yowasp Yosys + nextpnr, about 30 min on 2 cores) "
        "or --board ultra96v2|pynq-z2|zcu104|kv260 (a Vivado project)",
        "a board: codenet deploy --board ultra96v2 --host HOST (a PYNQ board with a built overlay), then "
        "codenet run MODEL.cnir --backend remote://HOST:7000",
    ]
    result["not_run"] = not_run
    con.print(f"[green]7[/] files in {out_dir}:")
    for f in files:
        con.print(f"  {f}")
    con.print(f"demo took {_wall(seconds)}")
    if seconds > DEMO_BUDGET_S:
        con.print(f"[bold yellow]! slower than the {DEMO_BUDGET_S // 60}-minute budget for a fresh 2-core machine[/]")
    con.print("[yellow]Not run by the demo[/] (no results shown for them):")
    for t in not_run:
        con.print(f"  - {t}")
    if not rec["trained"]:
        con.print("[bold yellow]Weights were random: the outputs check the flow bit for bit, they are not detections.[/]")
    if as_json:
        _emit_json(result)


@main.command()
@click.option("--board", default=None, help="A catalogue board (see `codenet boards`): its preset, synthesis target and budget.")
@click.option("--engine", "engine", default=None, help="Engine preset or config .json file [default: the board's preset, else ultra96].")
@click.option(
    "--target", type=click.Choice(["xcup", "xc7", "ecp5"]), default=None, help="xcup, xc7: Xilinx; ecp5: ECP5 (default: the board's)"
)
@click.option(
    "-o", "--out", "out_dir", default=None, type=click.Path(file_okay=False, path_type=Path), help="[default: build/synth/ENGINE-TARGET]"
)
@click.option("--pnr/--no-pnr", default=True, show_default=True, help="ECP5: place and route with nextpnr-ecp5 for Fmax.")
@click.option("--timeout", default=None, type=float, help="Seconds for the whole run; a cut-short run reports what it measured.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def synth(
    board: str | None, engine: str | None, target: str | None, out_dir: Path | None, pnr: bool, timeout: float | None, as_json: bool
) -> None:
    """Resource use (and ECP5 Fmax) of an engine from Yosys / nextpnr, against the part's budget."""
    from codenet.boards.synth import SynthError, board_part, cli_report, synthesize

    part = None
    if board is not None:
        b = _board(board)
        if target is not None and target != b.synth_target:
            raise click.BadParameter(f"board {b.name} is synthesized for {b.synth_target}, not {target}", param_hint="--target")
        target = b.synth_target
        engine = engine or b.engine_preset
        part = board_part(b.part, b.synth_target, b.budget, f"{b.title} ({b.part})")
    if target is None:
        raise click.UsageError("give --target (xcup, xc7, ecp5) or --board")
    cfg = _engine_config(engine or "ultra96")
    out_dir = out_dir or Path("build/synth") / f"{cfg.name}-{board or target}"
    con = _console(as_json)
    try:
        rep = synthesize(cfg, target, out_dir, timeout=timeout, pnr=pnr, part=part, progress=lambda msg: con.print(f"[dim]{msg}[/dim]"))
    except SynthError as e:
        raise click.ClickException(str(e)) from None
    result = rep.to_dict()
    if board is not None:
        result["board"] = board
    if as_json:
        _emit_json(result)
    else:
        click.echo(cli_report(rep))
    if rep.fits is False:
        where = f"board {board}'s budget ({rep.part})" if board else rep.part
        raise click.ClickException(f"engine {cfg.name} does not fit {where}: over budget in {', '.join(rep.failing)}")


def _board(name: str):
    from codenet.boards.catalogue import BoardError, get_board

    try:
        return get_board(name)
    except BoardError as e:
        raise click.BadParameter(str(e), param_hint="--board") from None


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def boards(as_json: bool) -> None:
    """The board catalogue: part, budgets, clocks, DRAM, AXI ports, register base, engine preset."""
    from codenet.boards.catalogue import BOARDS

    if as_json:
        _emit_json({"boards": [b.to_dict() for b in BOARDS.values()]})
        return
    from rich.table import Table

    t = Table(title="codenet boards (boards/boards.toml)")
    for col in ("board", "part", "LUT", "FF", "DSP", "BRAM", "engine clock", "DRAM", "AXI master / lite", "registers", "preset"):
        t.add_column(col)
    for b in BOARDS.values():
        bram = b.budget.get("BRAM36", b.budget.get("BRAM", 0))
        bram_s = f"{bram:,} x36k" if "BRAM36" in b.budget else f"{bram:,} EBR"
        if b.budget.get("URAM"):
            bram_s += f" + {b.budget['URAM']} URAM"
        t.add_row(
            f"{b.name}\n[dim]{b.title}[/dim]",
            b.part,
            f"{b.budget['LUT']:,}",
            f"{b.budget['FF']:,}",
            f"{b.budget['DSP']:,}",
            bram_s,
            f"{b.engine_clock} {b.engine_clock_mhz} MHz",
            f"{b.dram.kind} x{b.dram.width_bits} {b.dram.mt_s} MT/s ({b.dram.peak_mb_s:,.0f} MB/s)",
            f"{b.axi_master_port} ({b.axi_master_bits}b) / {b.axi_lite_port}",
            f"0x{b.reg_base:08x}" + (f" irq {b.irq}" if b.irq else ""),
            b.engine_preset,
        )
    _console(False).print(t)


@main.command()
@click.option("--engine", "engine", default="tiny", show_default=True, help="Engine preset (tiny, ultra96, ulx3s) or config .json file.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Directory for the files.")
@click.option("--lint/--no-lint", default=False, help="Also run verilator --lint-only -Wall (with the waivers) on the Verilog.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def gen(engine: str, out_dir: Path, lint: bool, as_json: bool) -> None:
    """Generate an engine: Verilog, engine.json (configuration + register map) and a C header."""
    cfg = _engine_config(engine)
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


@main.command()
@click.option(
    "--board", "board_name", required=True, help="A catalogue board: ultra96v2, pynq-z2, zcu104, kv260 (Vivado project), ulx3s (bitstream)."
)
@click.option("--engine", "engine", default=None, help="Engine preset or config .json file [default: the board's preset].")
@click.option(
    "-o", "--out", "out_dir", default=None, type=click.Path(file_okay=False, path_type=Path), help="[default: build/vivado|ecp5/BOARD]"
)
@click.option("--timeout", default=None, type=float, help="ECP5: seconds for the whole build; a cut-short build reports what it measured.")
@click.option("--seed", default=1, show_default=True, type=click.IntRange(min=1), help="ECP5: nextpnr's placement seed.")
@click.option(
    "--router",
    type=click.Choice(["router1", "router2"]),
    default="router1",
    show_default=True,
    help="ECP5: nextpnr's router (router2 falls back to router1 when it stalls; docs/ecp5.md).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def build(
    board_name: str, engine: str | None, out_dir: Path | None, timeout: float | None, seed: int, router: str, as_json: bool
) -> None:
    """Zynq boards: write a Vivado project (engine IP, block design, build.sh) whose run makes a PYNQ overlay
    (codenet.bit + .hwh). ECP5 boards: build a real bitstream with Yosys, nextpnr and ecppack."""
    cfg = _engine_config(engine) if engine else None
    if _board(board_name).family == "ecp5":
        _build_ecp5(board_name, cfg, out_dir or Path("build/ecp5") / board_name, timeout, as_json, seed=seed, router=router)
        return
    from codenet.boards.vivado import VivadoError, generate_project

    out_dir = out_dir or Path("build/vivado") / board_name
    start = time.perf_counter()
    try:
        result = generate_project(board_name, out_dir, engine_config=cfg)
    except VivadoError as e:
        raise click.ClickException(str(e)) from None
    result["seconds"] = round(time.perf_counter() - start, 2)
    if as_json:
        _emit_json(result)
        return
    con = _console(False)
    con.print(f"Vivado project for {result['title']} ({result['board']}, {result['part']}), engine {result['engine']!r}, in {out_dir}:")
    for k, v in result["files"].items():
        con.print(f"  {k}: {v}")
    for a in result["address_map"]:
        con.print(f"  {a['what']}: {a['segment']} at {a['offset_hex']} (+{a['range_hex']}) in {a['space']}")
    for n in result["notes"]:
        con.print(f"  [yellow]note:[/] {n}")
    con.print(f"On a machine with Vivado: {out_dir / 'build.sh'}  ->  {out_dir / 'overlay'}/codenet.bit + codenet.hwh")


@main.command("serve")
@click.option("--backend", type=click.Choice(["fsim", "rtl", "pynq"]), required=True, help="The device to offer.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (127.0.0.1: this machine only).")
@click.option("--port", default=7000, show_default=True, type=click.IntRange(0, 65535), help="TCP port (0: any free one).")
@click.option(
    "--token-file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the token from here, or write a new one (0600) [default: ~/.config/codenet/tokens/HOST-PORT.token].",
)
@click.option("--engine", default=None, help="fsim/rtl: engine preset or config .json [default: ultra96 on fsim, tiny on rtl].")
@click.option("--bitfile", default=None, help="pynq: the overlay's .bit (its .hwh beside it).")
@click.option("--dram", type=click.Choice(["ideal", "ultra96", "ulx3s"]), default=None, help="rtl: DRAM model [default: its board].")
@click.option("--max-request-mb", default=64.0, show_default=True, type=click.FloatRange(min=0.01), help="Largest payload of a request.")
@click.option("--max-alloc-mb", default=256.0, show_default=True, type=click.FloatRange(min=0.01), help="Device memory per client.")
@click.option("--idle-timeout", default=600.0, show_default=True, type=click.FloatRange(min=1), help="Idle seconds that end a session.")
def serve_cmd(
    backend: str,
    host: str,
    port: int,
    token_file: Path | None,
    engine: str | None,
    bitfile: str | None,
    dram: str | None,
    max_request_mb: float,
    max_alloc_mb: float,
    idle_timeout: float,
) -> None:
    """Offer one device over TCP, to one client at a time (token, bounded and checked requests; docs/deploy.md)."""
    from . import serve as srv
    from .driver import DeviceError

    srv.setup_logging("INFO")
    limits = srv.Limits(max_payload=int(max_request_mb * 2**20), max_alloc_bytes=int(max_alloc_mb * 2**20), idle_timeout_s=idle_timeout)
    try:
        srv.serve(backend, host=host, port=port, token_file=token_file, engine=engine, bitfile=bitfile, dram=dram, limits=limits)
    except ImportError as e:
        raise click.ClickException(f"serve: backend {backend} cannot load: {e}") from None
    except (DeviceError, ValueError, OSError) as e:
        raise click.ClickException(f"serve: {e}") from None


@main.command("deploy")
@click.option("--board", "board_name", required=True, help="A PYNQ board of the catalogue (ultra96v2, pynq-z2, zcu104, kv260).")
@click.option("--host", required=True, help="The board's address or name (SSH).")
@click.option("--user", default="xilinx", show_default=True, help="SSH user.")
@click.option("--key", default=None, type=click.Path(dir_okay=False, exists=True), help="SSH private key [default: agent, ~/.ssh keys].")
@click.option("--ssh-port", default=22, show_default=True, type=click.IntRange(1, 65535))
@click.option("--port", default=7000, show_default=True, type=click.IntRange(1, 65535), help="The device server's port on the board.")
@click.option("--dest", default="/home/xilinx/codenet", show_default=True, help="Folder on the board.")
@click.option(
    "--overlay",
    "overlay_dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder with the .bit, .hwh (and engine.json) [default: build/vivado/BOARD/overlay].",
)
@click.option("--bind", default=None, help="Server address on the board [default: where the SSH connection arrived; 127.0.0.1: tunnel].")
@click.option("--python", "python", default="auto", show_default=True, help="The board's Python (auto: PYNQ's venv, else python3).")
@click.option("--sudo", is_flag=True, help="Start the server with sudo -n (PYNQ needs root for /dev/mem).")
@click.option("--accept-new-host-key", is_flag=True, help="Trust and remember an unknown board's host key (ssh's accept-new).")
@click.option("--serve-backend", default="pynq", hidden=True, type=click.Choice(["pynq", "fsim"]), help="fsim: tests without a board.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def deploy_cmd(
    board_name: str,
    host: str,
    user: str,
    key: str | None,
    ssh_port: int,
    port: int,
    dest: str,
    overlay_dir: Path | None,
    bind: str | None,
    python: str,
    sudo: bool,
    accept_new_host_key: bool,
    serve_backend: str,
    as_json: bool,
) -> None:
    """Copy overlay, engine.json and runtime to a PYNQ board over SSH, start the device server there, print its URL."""
    import os

    from codenet.boards.deploy import DeployError, deploy

    con = _console(as_json)
    try:
        dep = deploy(
            board_name,
            host,
            user=user,
            key=key,
            password=os.environ.get("CODENET_SSH_PASSWORD"),
            ssh_port=ssh_port,
            port=port,
            dest=dest,
            overlay=overlay_dir,
            bind=bind,
            python=python,
            sudo=sudo,
            backend=serve_backend,
            accept_new_host_key=accept_new_host_key,
            progress=lambda msg: con.print(f"[dim]{msg}[/dim]"),
        )
    except DeployError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        _emit_json(dep.to_dict())
        return
    con.print(f"codenet serve runs on {host} (pid {dep.pid}, log {dep.log}, listening on {dep.bind}:{dep.port})")
    if dep.tunnel:
        con.print(f"  tunnel: {dep.tunnel}")
    con.print(f"  URL:    {dep.url}")
    con.print(f"  token:  {dep.local_token} (here, where --backend {dep.url} looks); {dep.remote_token} (on the board)")
    con.print(f"  try:    codenet run MODEL --engine {dep.engine} --backend {dep.url} --synthetic 1 -o out")


def _build_ecp5(board_name: str, cfg, out_dir: Path, timeout: float | None, as_json: bool, *, seed: int, router: str) -> None:
    from codenet.boards.ecp5 import EcpBuildError, build_bitstream, report_text

    con = _console(as_json)
    try:
        rep = build_bitstream(
            board_name, out_dir, cfg, timeout=timeout, seed=seed, router=router, progress=lambda msg: con.print(f"[dim]{msg}[/dim]")
        )
    except EcpBuildError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        _emit_json(rep)
    else:
        click.echo(report_text(rep))
    if rep.get("complete") and not rep.get("timing_met"):
        raise click.ClickException(f"the bitstream in {out_dir} misses timing: Fmax below {rep.get('clock_mhz')} MHz")


if __name__ == "__main__":  # pragma: no cover
    main()
