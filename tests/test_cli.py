"""The `codenet` entry point: installed, fast to start, one JSON object with --json."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from codenet.sw import cli, ir, zoo


def test_console_script_is_installed_and_answers_help():
    exe = shutil.which("codenet") or str(__import__("pathlib").Path(sys.executable).with_name("codenet"))
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Usage: codenet" in out.stdout
    for cmd in ("bench", "demo"):
        assert cmd in out.stdout


def test_help_does_not_import_heavy_rooms():
    """`codenet --help` must work without torch, Amaranth or cocotb being imported."""
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from codenet.sw import cli\n"
        "r = CliRunner().invoke(cli.main, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('torch', 'brevitas', 'amaranth', 'cocotb') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_version():
    r = CliRunner().invoke(cli.main, ["--version"])
    assert r.exit_code == 0 and "codenet" in r.output


def test_bench_json_is_exactly_one_object_with_the_figures():
    r = CliRunner().invoke(cli.main, ["bench", "--model", "codenet-tiny", "--frames", "1", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)  # fails on anything but a single JSON document
    g = zoo.build("codenet-tiny")
    assert report["backend"] == "golden"
    assert report["params"] == g.param_count()
    assert report["macs_per_frame"] == sum(g.macs().values())
    assert [row["name"] for row in report["layers"]] == [n.name for n in g.nodes]
    assert report["host_seconds_per_frame"] > 0


def test_bench_reads_a_cnir_file(tmp_path):
    path = ir.save(zoo.build("codenet-tiny", seed=2), tmp_path / "t.cnir")
    r = CliRunner().invoke(cli.main, ["bench", "--model", str(path), "--frames", "1", "--layers"])
    assert r.exit_code == 0, r.output
    assert "stem.conv" in r.output and "host time per frame" in r.output


@pytest.mark.parametrize(
    "model, needle",
    [("codenet-9x-z", "unknown model 'codenet-9x-z'"), ("{path}", "broken.cnir")],
)
def test_bench_bad_model_is_a_clear_error(tmp_path, model, needle):
    bad = tmp_path / "broken.cnir"
    bad.write_bytes(b"garbage")
    r = CliRunner().invoke(cli.main, ["bench", "--model", model.format(path=bad)])
    assert r.exit_code != 0
    assert needle in r.output
    assert "Traceback" not in r.output


def test_demo_runs_and_says_what_is_missing(tmp_path):
    r = CliRunner().invoke(cli.main, ["demo", "-o", str(tmp_path), "--backend", "fsim", "--images", "1", "--json"])  # rtl: test_cli_run.py
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    steps = {s["step"]: s for s in result["steps"]}
    assert steps["golden"]["roundtrip_identical"] is True
    assert ir.load(steps["cnir"]["path"]).name == "codenet-tiny"
    assert result["not_run"], "the demo must say which parts of the flow it leaves out"


@pytest.mark.parametrize("bad", ["1.2,0.8", "0.8", "a,b", "0,1"])
def test_train_refuses_a_bad_scale_range(tmp_path, bad):
    r = CliRunner().invoke(cli.main, ["train", "--scale-range", bad, "-o", str(tmp_path / "run")])
    assert r.exit_code == 2 and "--scale-range" in r.output, r.output
    assert not (tmp_path / "run").exists()
