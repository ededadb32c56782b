"""`codenet run`, `bench --backend fsim|rtl`, `eval --backend fsim|rtl` and `demo`: the flow through the driver.

Small and fast on fsim; the one RTL demo is marked slow. Expected values come from the
golden executor (and the host decoder on golden's outputs), never from the backend itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from codenet.sw import cli, golden, ir, zoo
from codenet.sw import engine as E
from codenet.sw.decode import decode_graph_outputs

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "codenet-tiny-square"
needs_shipped = pytest.mark.skipif(not (SHIPPED / "model.cnir").is_file(), reason="no shipped model.cnir")


def invoke(*args: str, ok: bool = True):
    r = CliRunner().invoke(cli.main, list(args))
    if ok:
        assert r.exit_code == 0, r.output
    return r


def invoke_json(*args: str) -> dict:
    r = invoke(*args, "--json")
    return json.loads(r.stdout)  # exactly one JSON document on stdout


@pytest.fixture(scope="module")
def tiny_cnir(tmp_path_factory) -> Path:
    """codenet-tiny with random weights (its decode metadata is complete), as a .cnir file."""
    return ir.save(zoo.build("codenet-tiny", seed=4), tmp_path_factory.mktemp("m") / "tiny.cnir")


def _synthetic(n: int, seed: int = 0) -> np.ndarray:
    from codenet.quant.data.synthetic import SyntheticDetection

    ds = SyntheticDetection("val", 128, n, seed=seed)
    return np.stack([ds[i]["image"] for i in range(n)])


# --------------------------------------------------------------------------- run


@needs_shipped
def test_run_synthetic_on_fsim_writes_golden_detections(tmp_path):
    model = SHIPPED / "model.cnir"
    rep = invoke_json("run", str(model), "--backend", "fsim", "--synthetic", "3", "--score-threshold", "0.1", "-o", str(tmp_path))
    assert rep["backend"] == "fsim" and rep["engine"] == "tiny" and rep["bit_exact_vs_golden"] is True
    assert rep["images"] == 3 and len(rep["results"]) == 3
    on_disk = json.loads((tmp_path / "detections.json").read_text())
    assert on_disk["results"] == rep["results"]
    # the detections are golden's, decoded on the host
    g = ir.load(model)
    want = decode_graph_outputs(golden.run(g, _synthetic(3)), g, score_threshold=0.1)
    classes = g.metadata["classes"]
    for r, d in zip(rep["results"], want):
        assert [x["class"] for x in r["detections"]] == [classes[k] for k in d.labels]
        np.testing.assert_allclose([x["box"] for x in r["detections"]], d.boxes.reshape(-1, 4), atol=0.01)
        np.testing.assert_allclose([x["score"] for x in r["detections"]], d.scores, atol=1e-4)
        assert r["ground_truth"] and r["engine_cycles"] > 0
        png = Path(r["png"])
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sum(len(r["detections"]) for r in rep["results"]) > 0, "a trained detector finds something at 0.1"


def test_run_an_image_file_maps_boxes_back(tmp_path, tiny_cnir):
    from PIL import Image

    img = np.random.default_rng(3).integers(0, 256, (150, 200, 3), dtype=np.uint8)  # not the model's 128x128
    path = tmp_path / "photo.png"
    Image.fromarray(img).save(path)
    rep = invoke_json("run", str(tiny_cnir), "--image", str(path), "--score-threshold", "0", "-o", str(tmp_path / "out"))
    (r,) = rep["results"]
    assert r["source"] == str(path) and r["detections"], "score threshold 0 keeps every peak"
    boxes = np.array([d["box"] for d in r["detections"]])
    assert boxes.min() >= 0 and boxes[:, [0, 2]].max() <= 200 and boxes[:, [1, 3]].max() <= 150
    with Image.open(r["png"]) as im:
        assert im.size[0] / im.size[1] == pytest.approx(200 / 150, rel=0.01)  # drawn on the original image
    out = invoke("run", str(tiny_cnir), "--image", str(path), "-o", str(tmp_path / "o2")).output
    assert "bit-exact with golden" in out and "detections.json" in out


@pytest.mark.parametrize(
    "args, needle",
    [
        (["{bad}", "--synthetic", "1"], "broken.cnir"),
        (["{tiny}", "--synthetic", "1", "--engine", "{d3}"], "decoder0.deform"),
        (["{tiny}"], "--image PATH"),
        (["{tiny}", "--synthetic", "1", "--backend", "pynq"], "--bitfile"),
        (["{tiny}", "--synthetic", "1", "--engine", "nope.json"], "--engine nope.json"),
        (["{tiny}", "--synthetic", "1", "--waves", "t.vcd"], "--waves needs --backend rtl"),
        (["{tiny}", "--synthetic", "1", "--backend", "rtl", "--waves", "t.txt"], "name a .vcd or .fst file"),
    ],
    ids=["bad-cnir", "does-not-fit", "no-images", "pynq-no-bitfile", "bad-engine", "waves-not-rtl", "waves-format"],
)
def test_run_errors_are_clear(tmp_path, tiny_cnir, args, needle):
    bad = tmp_path / "broken.cnir"
    bad.write_bytes(b"garbage")
    d3 = tmp_path / "tiny-d3.json"  # the tiny engine with dilations up to 3: codenet-tiny needs 8
    d3.write_text(json.dumps({"preset": "tiny", "name": "tiny-d3", "max_dilation": 3}))
    argv = [a.format(bad=bad, tiny=tiny_cnir, d3=d3) for a in args]
    r = invoke("run", *argv, "-o", str(tmp_path / "o"), ok=False)
    assert r.exit_code != 0 and needle in r.output and "Traceback" not in r.output
    if needle == "decoder0.deform":  # the file and the limit are named too
        assert str(tiny_cnir) in r.output and "max_dilation" in r.output


def test_run_on_pynq_through_a_stand_in(tmp_path, tiny_cnir, monkeypatch):
    """`--backend pynq` runs PynqDevice's code; the stand-in pynq module is backed by fsim here (by rtl in tests/sim)."""
    from codenet.sim.pynq_standin import make_pynq
    from codenet.sw.driver import FsimDevice

    fake = make_pynq(FsimDevice(E.preset("tiny")))
    monkeypatch.setitem(sys.modules, "pynq", fake)
    rep = invoke_json("run", str(tiny_cnir), "--backend", "pynq", "--bitfile", "codenet.bit", "--synthetic", "2", "-o", str(tmp_path))
    assert rep["backend"] == "pynq" and rep["bit_exact_vs_golden"] is True and rep["images"] == 2
    assert fake.allocations and all(a["freed"] for a in fake.allocations)


# --------------------------------------------------------------------------- bench


def test_bench_fsim_json_has_the_table_totals_and_assumptions():
    rep = invoke_json("bench", "--model", "codenet-tiny", "--backend", "fsim", "--engine", "ulx3s")
    g = zoo.build("codenet-tiny")
    assert rep["backend"] == "fsim" and rep["engine"] == "ulx3s" and rep["dram"] == "ulx3s" and rep["measured"] is False
    assert rep["cycles_per_frame"] == sum(lay["cycles"] for lay in rep["layers"]) > 0  # fsim's estimate is additive
    assert rep["fps"] == pytest.approx(50e6 / rep["cycles_per_frame"])
    assert rep["macs_per_frame"] == sum(g.macs().values()) == sum(lay["macs"] for lay in rep["layers"])
    assert rep["dram_bytes_per_frame"] == sum(lay["dram_bytes"] for lay in rep["layers"]) + E.DESC_BYTES  # + END's fetch
    assert {n.name for n in g.nodes} <= {lay["name"] for lay in rep["layers"]}
    assert {lay["bound"] for lay in rep["layers"]} <= {"compute", "memory", "-"}
    for lay in rep["layers"]:
        assert lay["mac_util"] is None or 0 < lay["mac_util"] <= 1
    text = " ".join(rep["assumptions"])
    assert "200 MB/s" in text and "4.00 B/cycle" in text and "50 MHz" in text and "estimated" in text
    # a faster memory can only help
    ideal = invoke_json("bench", "--model", "codenet-tiny", "--backend", "fsim", "--engine", "ulx3s", "--dram", "ideal", "--no-layers")
    assert ideal["cycles_per_frame"] < rep["cycles_per_frame"] and ideal["layers"] == []


def test_bench_rtl_writes_the_trace_it_is_asked_for(tmp_path):
    """`--waves FILE` on rtl: a VCD of the engine's run, moved where asked (a traced build of `tiny`, about a minute)."""
    pytest.importorskip("cocotb")
    from codenet.sw.builder import GraphBuilder

    b = GraphBuilder("one-conv", 0)
    y = b.conv(b.input("x", (4, 4, 8), "uint8"), 8, 1, 1, 0, relu=True)
    model = ir.save(b.finish([y]), tmp_path / "one-conv.cnir")
    dest = tmp_path / "traces" / "one-conv.vcd"
    args = ["--backend", "rtl", "--engine", "tiny", "--dram", "ideal", "--no-layers", "--waves", str(dest)]
    rep = invoke_json("bench", "--model", str(model), *args)
    assert rep["waves"] == str(dest) and rep["measured"] is True
    head, _, body = dest.read_text().partition("$enddefinitions")
    assert "$timescale" in head and " irq " in head and " m_axi_arvalid " in head
    stamps = [int(line[1:]) for line in body.splitlines() if line.startswith("#")]
    # the run's cycles (10 ns each, in ps) all lie in the trace
    assert stamps == sorted(stamps) and stamps[-1] >= rep["cycles_per_frame"] * 10_000


def test_bench_fsim_table_and_errors(tmp_path):
    out = invoke("bench", "--model", "codenet-tiny", "--backend", "fsim", "--engine", "ulx3s").output
    for needle in ("per layer (estimated)", "stem.conv", "FPS at the board clock", "Assumptions", "bound"):
        assert needle in out
    r = invoke("bench", "--model", "codenet-tiny", "--backend", "fsim", "--engine", "micro", ok=False)
    assert r.exit_code != 0 and "does not fit engine 'micro'" in r.output and "Traceback" not in r.output
    golden_rep = invoke_json("bench", "--model", "codenet-tiny", "--frames", "1")  # the golden backend is still the default
    assert golden_rep["backend"] == "golden"


# --------------------------------------------------------------------------- eval


@needs_shipped
def test_eval_through_fsim_equals_golden():
    pytest.importorskip("torch")
    model = str(SHIPPED / "model.cnir")
    g = invoke_json("eval", model, "--images", "8")
    f = invoke_json("eval", model, "--backend", "fsim", "--images", "8")
    assert (g["backend"], f["backend"], f["engine"]) == ("golden", "fsim", "tiny")
    assert f["images"] == g["images"] == 8 and f["ap50"] == g["ap50"] and f["map"] == g["map"]
    assert f["cycles_per_frame_mean"] > 0
    r = invoke("eval", model, "--backend", "torch", ok=False)
    assert r.exit_code != 0 and "cannot run" in r.output


# --------------------------------------------------------------------------- demo


@needs_shipped
def test_demo_on_fsim_exports_the_shipped_checkpoint(tmp_path):
    pytest.importorskip("torch")
    rep = invoke_json("demo", "-o", str(tmp_path), "--backend", "fsim", "--images", "2")
    m = rep["model"]
    assert m["trained"] is True and m["identical_to_shipped_cnir"] is True and m["name"] == "codenet-tiny"
    assert rep["engine"]["name"] == "tiny" and rep["engine"]["refused"] == []  # the demo: the tiny engine
    steps = {s["step"]: s for s in rep["steps"]}
    assert steps["golden"]["bit_exact"] is True and steps["golden"]["roundtrip_identical"] is True
    assert len(rep["detections"]["images"]) == 2 and all(Path(f).is_file() for f in rep["files"])
    perf = rep["performance"]
    assert perf["fps"] > 0 and perf["measured"] is False and perf["layers"]
    assert rep["within_budget"] is True
    # the board end of the flow exists (issue 6): the demo names the commands, not a future issue
    assert rep["not_run"] and all("codenet " in t and "issue" not in t for t in rep["not_run"])


def test_demo_without_a_checkpoint_says_it_uses_random_weights(tmp_path):
    r = invoke("demo", "-o", str(tmp_path), "--backend", "fsim", "--images", "1", "--checkpoint", str(tmp_path / "none.pt"))
    assert "RANDOM weights" in r.output and "not detections" in r.output
    assert (tmp_path / "codenet-tiny-random.cnir").is_file()


@pytest.mark.slow
@needs_shipped
def test_demo_on_rtl(tmp_path):
    """What `make demo` runs, with two images: the Verilated engine, bit-exact, measured performance."""
    pytest.importorskip("cocotb")
    pytest.importorskip("torch")
    rep = invoke_json("demo", "-o", str(tmp_path), "--images", "2")
    # the tiny engine, at its 100 MHz with the Ultra96's DRAM (the board a preset without its own gets)
    assert rep["engine"]["name"] == "tiny" and rep["run"]["backend"] == "rtl" and rep["run"]["dram"] == "ultra96"
    assert rep["run"]["sim_cycles_per_second"] > 0
    assert {s["step"] for s in rep["steps"]} >= {"cnir", "build", "golden"}
    perf = rep["performance"]
    assert perf["measured"] is True and perf["cycles_per_frame"] == rep["run"]["cycles"][0]
    assert perf["fps"] == pytest.approx(E.preset("tiny").clock_mhz * 1e6 / perf["cycles_per_frame"])
    assert rep["within_budget"] is True
