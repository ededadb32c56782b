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


if __name__ == "__main__":  # pragma: no cover
    main()
