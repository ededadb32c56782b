"""The compiler, end to end: graphs compiled, run on a device backend, compared bit for bit
with the golden executor on every output.

The `backend` fixture names the device backend ("fsim" by default); set
CODENET_TEST_BACKENDS=fsim,rtl to run the same cases on the RTL simulation once
codenet.sim.rtl_backend exists (its RtlDevice must accept `config=EngineConfig`).

Families: single layers of every op over random shapes, channels (including non-multiples
of the lane count), strides, dilation and offset bounds, signed and unsigned inputs, 4- and
8-bit weights, widths beyond max_width (column strips); concat / split / shuffle
compositions; ShuffleNetV2 units; the codenet-tiny zoo graph on several images, seeds and
presets; codenet-1x-b on ultra96. Plus the refusals (CompileError naming node and limit)
and the Program format (save/load, relocation, per-layer report).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from codenet.sw import engine as E
from codenet.sw import golden, zoo
from codenet.sw.builder import GraphBuilder
from codenet.sw.compiler import CompileError, Program, compile_graph
from codenet.sw.driver import open_device
from codenet.sw.runtime import Runtime

BACKENDS = [b for b in os.environ.get("CODENET_TEST_BACKENDS", "fsim").split(",") if b]
TINY, U96, ULX = E.preset("tiny"), E.preset("ultra96"), E.preset("ulx3s")


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


# --------------------------------------------------------------------------- helpers (shared with test_driver)


def make_device(backend: str, cfg: E.EngineConfig):
    """A fresh device of the named backend for an engine configuration."""
    if backend == "fsim":
        return open_device(backend, config=cfg, dram_bytes=32 << 20)
    return open_device(backend, config=cfg)


def random_inputs(graph, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name in graph.inputs:
        t = graph.tensors[name]
        lo, hi = (0, 256) if t.dtype == "uint8" else (-128, 128)
        out[name] = rng.integers(lo, hi, size=(n, *t.shape)).astype(t.dtype)
    return out


def assert_same(got: dict, want: dict) -> None:
    """Same names (in order), dtypes, shapes and values: the contract's conformance rule."""
    assert list(got) == list(want)
    for name in want:
        g, w = got[name], want[name]
        assert g.dtype == w.dtype and g.shape == w.shape, (name, g.dtype, g.shape, w.dtype, w.shape)
        if not np.array_equal(g, w):
            bad = np.argwhere(g != w)
            raise AssertionError(
                f"{name}: {len(bad)} of {g.size} values differ, first at {bad[0].tolist()}: {g[tuple(bad[0])]} != {w[tuple(bad[0])]}"
            )


def check_graph(graph, cfg: E.EngineConfig, backend: str, n: int = 1, seed: int = 0) -> tuple[Program, Runtime]:
    """Compile, run n random images on a fresh device, compare every output with golden."""
    prog = compile_graph(graph, cfg)
    ins = random_inputs(graph, n, seed)
    rt = Runtime(make_device(backend, cfg), prog)
    got = rt.run(ins)
    assert_same(got, golden.run(graph, ins))
    assert len(rt.counters) == n
    return prog, rt


# --------------------------------------------------------------------------- single layers


def _dims(rng, cfg: E.EngineConfig, wide: bool = False):
    L = cfg.lanes
    h = int(rng.integers(1, 10))
    w = int(rng.integers(cfg.max_width + 1, cfg.max_width + 40)) if wide else int(rng.integers(1, 12))
    c = int(rng.choice([1, 2, L - 1, L, L + 1, 2 * L + 3, int(rng.integers(1, 3 * L))]))
    return h, w, c


def layer_graph(kind: str, cfg: E.EngineConfig, seed: int):
    """A one-op graph (plus the side-map producer for deformable ops) with random dims."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder(f"{kind}-{seed}", seed)
    wide = kind.endswith("-wide")
    kind = kind.removesuffix("-wide")
    h, w, c = _dims(rng, cfg, wide)
    dtype = str(rng.choice(["uint8", "int8"]))
    s = int(rng.choice([1, 2]))
    relu = bool(rng.integers(0, 2))
    if kind == "conv1x1":
        x = b.input("x", (h, w, c), dtype)
        oc = int(rng.choice([1, 3, cfg.lanes, cfg.lanes + 5, int(rng.integers(1, 4 * cfg.lanes))]))
        y = b.conv(x, oc, 1, s, 0, relu=relu, w_bits=int(rng.choice([2, 4, 8])))
        return b.finish([y])
    if kind == "grouped1x1":
        g = int(rng.choice([2, 3]))
        x = b.input("x", (h, w, g * int(rng.integers(1, 6))), dtype)
        y = b.conv(x, g * int(rng.integers(1, 6)), 1, 1, 0, groups=g, relu=relu)
        return b.finish([y])
    if kind == "stem":
        x = b.input("image", (h + 2, w + 2, int(rng.integers(1, cfg.lanes + 1))), "uint8")
        y = b.conv(x, int(rng.integers(1, 3 * cfg.lanes)), 3, int(rng.choice([1, 2, 4])), 1, w_bits=int(rng.choice([4, 8])), relu=relu)
        return b.finish([y])
    if kind == "dw":
        x = b.input("x", (h, w, c), dtype)
        return b.finish([b.dwconv(x, s, relu=relu, w_bits=int(rng.choice([4, 8])))])
    if kind == "deform":
        x = b.input("x", (h, w, c), dtype)
        d = int(rng.integers(1, cfg.max_dilation + 1))
        v = b.dilation_map(x, d, s)
        return b.finish([b.deform(x, v, s, d, relu=relu)])
    if kind == "offsets":
        x = b.input("x", (h, w, c), dtype)
        r = int(rng.integers(0, cfg.max_offset + 1))
        off = b.offset_map(x, r, s)
        return b.finish([b.deform_offsets(x, off, s, r, relu=relu)])
    if kind == "maxpool":
        x = b.input("x", (h, w, c), dtype)
        return b.finish([b.maxpool(x, 3, s, 1)])
    if kind == "upsample":
        x = b.input("x", (h, w, c), dtype)
        return b.finish([b.upsample(x)])
    raise ValueError(kind)


KINDS = ["conv1x1", "grouped1x1", "stem", "dw", "deform", "offsets", "maxpool", "upsample"]
WIDE = ["stem-wide", "dw-wide", "deform-wide", "offsets-wide", "maxpool-wide"]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cfg", [TINY, U96], ids=lambda c: c.name)
def test_single_layer(backend, cfg, kind, seed):
    check_graph(layer_graph(kind, cfg, 100 * seed + KINDS.index(kind)), cfg, backend)


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("kind", WIDE)
def test_window_ops_wider_than_the_line_buffer(backend, kind, seed):
    """Input width beyond max_width: column strips with a halo, bit-exact."""
    g = layer_graph(kind, TINY, 7 + seed)
    prog, _ = check_graph(g, TINY, backend)
    node = [n for n in g.nodes if n.op != "conv2d" or n.arrays["weight"].shape[1] == 3][-1]
    layer = next(lay for lay in prog.layers if lay.node == node.name)
    assert layer.engine_ops.get("COPY", 0) >= 2  # strips were copied out


# --------------------------------------------------------------------------- addressing ops


def test_concat_split_shuffle_compositions(backend):
    """Concat of a graph input, a repeated tensor, a nested concat; split and shuffle outputs as
    graph outputs; a shuffled tensor into 1x1, depthwise, pooling and upsampling."""
    for cfg in (TINY, U96):
        b = GraphBuilder("addr", 5)
        x = b.input("x", (5, 6, 6))
        a = b.conv(x, 5, out_scale=b.scale(x), name="a")
        c = b.conv(x, 7, out_scale=b.scale(x), name="c")
        inner = b.concat([a, c], name="inner")
        cat = b.concat([c, x, c], name="cat")  # graph input + a tensor twice
        sh = b.shuffle(cat, 4, name="sh")  # 20 channels, 4 groups
        s0, s1 = b.split(sh, [9, 11], name="sp")
        y1 = b.conv(s1, 6, name="y1")
        y2 = b.dwconv(sh, 1, relu=True, out_scale=b.scale(y1), name="y2")
        y3 = b.maxpool(s0, 3, 2, 1, name="y3")
        y4 = b.upsample(s1, name="y4")
        sh2 = b.shuffle(b.concat([y1, y2], name="cat2"), 2, name="sh2")
        g = b.finish([inner, s0, sh, y3, y4, sh2])
        check_graph(g, cfg, backend, n=2, seed=1)


def _unit_s1(b: GraphBuilder, x: str, c: int, p: str) -> str:
    x1, x2 = b.split(x, [c // 2, c // 2], name=f"{p}.split")
    y = b.conv(x2, c // 2, 1, name=f"{p}.pw1")
    y = b.dwconv(y, 1, name=f"{p}.dw")
    y = b.conv(y, c // 2, 1, name=f"{p}.pw2", out_scale=b.scale(x1))
    return b.shuffle(b.concat([x1, y], name=f"{p}.cat"), 2, name=f"{p}.shuffle")


def _unit_s2(b: GraphBuilder, x: str, c: int, p: str) -> str:
    a = b.conv(b.dwconv(x, 2, name=f"{p}.b1.dw"), c // 2, 1, name=f"{p}.b1.pw")
    y = b.conv(x, c // 2, 1, name=f"{p}.b2.pw1")
    y = b.conv(b.dwconv(y, 2, name=f"{p}.b2.dw"), c // 2, 1, name=f"{p}.b2.pw2", out_scale=b.scale(a))
    return b.shuffle(b.concat([a, y], name=f"{p}.cat"), 2, name=f"{p}.shuffle")


@pytest.mark.parametrize(
    "cfg, c, reps, hw, seed",
    [(TINY, 20, 4, 9, 0), (TINY, 58, 3, 12, 1), (U96, 116, 5, 8, 2), (U96, 36, 6, 7, 3)],
    ids=lambda v: v.name if isinstance(v, E.EngineConfig) else str(v),
)
def test_shufflenet_units(backend, cfg, c, reps, hw, seed):
    """A stride-2 unit then stride-1 units: the shuffle folds into addressing and weights."""
    b = GraphBuilder("units", seed)
    x = b.input("x", (hw, hw, int(c * 0.75)))
    x = _unit_s2(b, x, c, "u0")
    outs = []
    for r in range(1, reps):
        x = _unit_s1(b, x, c, f"u{r}")
        if r % 2:
            outs.append(x)
    prog, _ = check_graph(b.finish(outs + [x] if x not in outs else outs), cfg, backend, n=2, seed=seed)
    # the shuffles and splits themselves cost no descriptor
    for layer in prog.layers:
        if layer.op in ("shuffle", "split"):
            assert layer.n_desc == 0


# --------------------------------------------------------------------------- the zoo


@pytest.mark.parametrize("seed", [0, 1])
def test_codenet_tiny(backend, seed):
    check_graph(zoo.build("codenet-tiny", seed=seed), U96, backend, n=2, seed=10 + seed)


@pytest.mark.parametrize(
    "spec, cfg",
    [
        (dict(stem="s4", deform="bounded"), U96),
        (dict(deform="square"), ULX),
        (dict(stem="s4", deform="dw", input_size=64), TINY.__class__.from_dict({"preset": "tiny", "max_channels": 256})),
    ],
    ids=["s4-bounded-ultra96", "ulx3s", "dw-tiny-256ch"],
)
def test_codenet_tiny_variants(backend, spec, cfg):
    """The stride-4 stem, bounded offsets, another preset, a 32-wide line buffer (strips)."""
    g = zoo.build(zoo.arch("codenet-tiny", **spec), seed=3, name="tiny-variant")
    check_graph(g, cfg, backend, n=1, seed=4)


def test_codenet_1x_b_on_ultra96(backend):
    g = zoo.build("codenet-1x-b")
    prog, rt = check_graph(g, U96, backend, n=1, seed=0)
    tot = prog.totals()
    assert tot["macs"] == sum(g.macs().values()) == tot["engine_macs"]  # no MAC is wasted on holes
    c = rt.counters[0]
    assert c["BYTES_RD"] == tot["bytes_rd"] and c["BYTES_WR"] == tot["bytes_wr"] and c["DESC_DONE"] == prog.prog_len - 1


# --------------------------------------------------------------------------- refusals


def _one(kind: str):
    b = GraphBuilder(kind, 1)
    x = b.input("x", (6, 8, 9))
    if kind == "dilation":
        v = b.dilation_map(x, 9)
        return b.finish([b.deform(x, v, 1, 9, name="bad")]), U96, "max_dilation"
    if kind == "offset":
        off = b.offset_map(x, 2)
        return b.finish([b.deform_offsets(x, off, 1, 2, name="bad")]), TINY, "max_offset"
    if kind == "no-sampler":
        off = b.offset_map(x, 1)
        return b.finish([b.deform_offsets(x, off, 1, 1, name="bad")]), ULX, "max_offset"
    if kind == "stem-channels":
        return b.finish([b.conv(x, 4, 3, 1, 1, name="bad")]), TINY, "lanes"
    if kind == "channels":
        y = b.conv(x, TINY.max_channels + 6, 1, name="wide")
        return b.finish([b.conv(y, 4, 1, name="bad")]), TINY, "max_channels"
    if kind == "kernel":
        return b.finish([b.conv(x, 4, 5, 1, 2, name="bad")]), U96, "kernel"
    if kind == "groups":
        return b.finish([b.conv(x, 9, 3, 1, 1, groups=3, name="bad")]), U96, "groups"
    if kind == "pool":
        return b.finish([b.maxpool(x, 2, 2, 0, name="bad")]), U96, "kernel"
    if kind == "padding":
        return b.finish([b.conv(x, 4, 1, 1, 1, name="bad")]), U96, "padding"
    if kind == "stride":
        return b.finish([b.dwconv(x, 3, name="bad")]), U96, "stride"
    if kind == "width":
        v = b.dilation_map(x, 3)
        cfg = E.EngineConfig.from_dict({"preset": "tiny", "max_width": 4})
        return b.finish([b.deform(x, v, 1, 3, name="bad")]), cfg, "max_width"
    if kind == "address":
        big = b.input("big", (64, 64, 16))
        cfg = E.EngineConfig.from_dict({"preset": "tiny", "axi_addr_bits": 16})
        return b.finish([b.conv(big, 16, 1, name="bad")]), cfg, "axi_addr_bits"
    raise ValueError(kind)


@pytest.mark.parametrize(
    "kind",
    ["dilation", "offset", "no-sampler", "stem-channels", "channels", "kernel", "groups", "pool", "padding", "stride", "width", "address"],
)
def test_compile_error_names_node_and_limit(kind):
    g, cfg, limit = _one(kind)
    with pytest.raises(CompileError) as e:
        compile_graph(g, cfg)
    assert e.value.limit == limit, e.value
    if kind != "address":
        assert e.value.node == "bad" and "'bad'" in str(e.value)
    else:
        assert e.value.node in g.tensors


def test_bounded_offset_zero_needs_no_sampler(backend):
    """R = 0 clamps every offset to 0: a plain depthwise convolution, also on an engine without the sampler."""
    b = GraphBuilder("r0", 2)
    x = b.input("x", (5, 7, 10), "int8")
    off = b.offset_map(x, 0, 2)
    g = b.finish([b.deform_offsets(x, off, 2, 0)])
    prog, _ = check_graph(g, ULX, backend)
    assert "DEFORM_OFFSETS" not in {d.op.name for d in prog.descriptors()}


# --------------------------------------------------------------------------- the program


def test_program_is_valid_and_reports_layers():
    g = zoo.build("codenet-tiny")
    prog = compile_graph(g, U96)
    descs = prog.descriptors()
    assert descs[-1].op == E.Op.END and len(descs) == prog.prog_len
    for k, d in enumerate(descs):
        assert E.check_descriptor(d, U96, k)[0] == E.ErrorCode.NONE
    assert [lay.node for lay in prog.layers if not lay.node.startswith("(")] == [n.name for n in g.nodes]
    assert sum(lay.n_desc for lay in prog.layers) == prog.prog_len
    macs = g.macs()
    for lay in prog.layers:
        if lay.node in macs:
            assert lay.macs == macs[lay.node]
            if lay.n_desc:
                assert lay.bytes_rd > 0 and lay.bytes_wr > 0 and lay.est_cycles > 0
    # windows: page-aligned, the read-only one holds program and weights, the arena is read-write
    ro, rw = prog.windows
    assert not ro.write and rw.write and ro.base == prog.base and rw.base == ro.base + ro.size
    for w in prog.windows:
        assert w.base % 4096 == 0 and w.size % 4096 == 0
    for r in prog.regions:
        assert ro.base <= r.addr and r.addr + r.data.size <= ro.base + ro.size
    for s in list(prog.inputs.values()) + list(prog.outputs.values()):
        assert rw.base <= s.addr and s.addr + s.extent <= rw.base + rw.size


def test_liveness_reuses_memory():
    g = zoo.build("codenet-tiny")
    prog = compile_graph(g, U96)
    total = sum(int(np.prod(t.shape)) for t in g.tensors.values())
    assert prog.windows[1].size < total / 2, (prog.windows[1].size, total)


def test_save_load_and_relocate(tmp_path, backend):
    g = zoo.build("codenet-tiny", seed=2)
    prog = compile_graph(g, U96)
    prog.save(tmp_path / "tiny")
    back = Program.load(tmp_path / "tiny.json")
    assert back.to_json() == prog.to_json()
    for a, b in zip(prog.regions, back.regions):
        assert np.array_equal(a.data, b.data)
    at = compile_graph(g, U96, base=0x200000)
    moved = prog.relocated(0x200000)
    assert moved.to_json() == at.to_json()
    for a, b in zip(moved.regions, at.regions):
        assert np.array_equal(a.data, b.data)
    with pytest.raises(ValueError):
        prog.relocated(0x1234)
    ins = random_inputs(g, 1, 5)
    got = Runtime(make_device(backend, U96), back).run(ins)
    assert_same(got, golden.run(g, ins))


def _read_bytes(d: E.Descriptor) -> np.ndarray:
    parts = [d.inp.element_addresses().reshape(-1)]
    if d.op == E.Op.DEFORM_SQUARE:
        parts.append(E.View(d.side_addr, d.out.h, d.out.w, 1, 1, d.side_rs).element_addresses().reshape(-1))
    elif d.op == E.Op.DEFORM_OFFSETS:
        parts.append(E.View(d.side_addr, d.out.h, d.out.w, 18, d.side_ps, d.side_rs).element_addresses().reshape(-1))
    return np.concatenate(parts)


@pytest.mark.parametrize("which", ["codenet-tiny", "units", "wide"])
def test_no_descriptor_writes_what_it_reads(which):
    """The engine streams: a descriptor whose output overlaps its own input (memory reused too
    early) would read its own results. fsim computes whole ops, so check the program itself."""
    if which == "codenet-tiny":
        g, cfg = zoo.build("codenet-tiny"), U96
    elif which == "units":
        b = GraphBuilder("units", 1)
        x = _unit_s2(b, b.input("x", (9, 9, 15)), 20, "u0")
        for r in range(1, 4):
            x = _unit_s1(b, x, 20, f"u{r}")
        g, cfg = b.finish([x]), TINY
    else:
        g, cfg = layer_graph("deform-wide", TINY, 3), TINY
    prog = compile_graph(g, cfg)
    for k, d in enumerate(prog.descriptors()[:-1]):
        both = np.intersect1d(_read_bytes(d), d.out.element_addresses().reshape(-1))
        assert both.size == 0, (k, d.op.name, both[:4])
