"""The design card's layout and rooms: what may import what."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("hw", "sw", "quant", "sim", "boards")


def test_top_level_layout():
    for name in ("pyproject.toml", "README.md", "Makefile", ".ci/run", "docs", "tests", *ROOMS):
        assert (ROOT / name).exists(), name


def test_every_package_is_listed_in_pyproject():
    """A package missing from pyproject works in the editable install and vanishes from a wheel."""
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = conf["package-dir"]
    assert {mapping[f"codenet.{room}"] for room in ROOMS} == set(ROOMS)
    found = set()
    for room in ROOMS:
        for init in (ROOT / room).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / room)
            found.add(".".join(("codenet", room, *rel.parts)))
    assert found == set(conf["packages"])


def test_every_shipped_non_python_file_is_package_data():
    """The simulator's HDL and C++ sources are read at run time: a wheel without them cannot build a harness."""
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = conf["package-data"]["codenet.sim"]
    hdl = ROOT / "sim" / "hdl"
    files = [p for p in hdl.iterdir() if p.is_file()]
    assert files
    missing = [p.name for p in files if not any(p.relative_to(ROOT / "sim").match(g) for g in globs)]
    assert not missing, f"add to [tool.setuptools.package-data] codenet.sim: {missing}"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the room
                parts = path.relative_to(ROOT).with_suffix("").parts
                base = ["codenet", *parts[: len(parts) - node.level]]
                names.add(".".join(base + ([node.module] if node.module else [])))
            else:
                names.add(node.module or "")
    return names


FORBIDDEN = {
    "sw": ("torch", "brevitas", "amaranth", "cocotb", "codenet.quant", "codenet.hw", "codenet.sim", "codenet.boards"),
    "quant": ("amaranth", "cocotb", "codenet.hw", "codenet.sim", "codenet.boards"),
    "hw": ("torch", "brevitas", "cocotb", "codenet.quant", "codenet.sim", "codenet.boards"),
    "sim": ("torch", "brevitas", "codenet.quant", "codenet.boards"),
    "boards": ("torch", "brevitas", "cocotb", "codenet.quant", "codenet.sim"),
}


@pytest.mark.parametrize("room", ROOMS)
def test_rooms_respect_import_rules(room):
    bad = []
    for path in (ROOT / room).rglob("*.py"):
        if room == "sw" and (path.name == "cli.py" or "cli" in path.relative_to(ROOT / room).parts[:-1]):
            continue  # the CLI reaches every room, lazily
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[room]):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_golden_and_ir_import_without_torch():
    """The runtime side must load on a board image that has numpy and nothing heavy."""
    code = (
        "import sys\n"
        "for m in ('torch', 'brevitas', 'amaranth', 'cocotb', 'scipy'):\n"
        "    sys.modules[m] = None  # any import of these now raises ImportError\n"
        "from codenet.sw import golden, ir, intmath, zoo, builder\n"
        "g = zoo.build('codenet-tiny')\n"
        "import numpy as np\n"
        "out = golden.run(g, np.zeros((1, 128, 128, 3), np.uint8))\n"
        "print(sorted(out))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "head.hm.out" in out.stdout
