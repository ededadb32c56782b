"""The HAL (sw/driver.py), its backends and the runtime (sw/runtime.py).

Backend registry and lazy loading (a missing backend is a clear error), memory and
registers by name, runs that fail (corrupted descriptor, out-of-window access, timeout,
watchdog) raising DeviceError with the code and counters and leaving the device usable,
memory untouched outside the granted windows, the runtime's batches and input checks,
precompiled programs, and the pynq backend against a stand-in `pynq` module backed by fsim.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest
from test_compiler import BACKENDS, U96, assert_same, make_device, random_inputs

from codenet.sw import engine as E
from codenet.sw import fsim, golden, zoo
from codenet.sw.builder import GraphBuilder
from codenet.sw.compiler import compile_graph
from codenet.sw.driver import BackendUnavailable, Device, DeviceError, FsimDevice, backends, open_device, register_backend
from codenet.sw.runtime import Runtime, RuntimeInputError, run_graph


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def small():
    """A small graph with most ops, its ultra96 program and two images."""
    b = GraphBuilder("small", 3)
    x = b.input("image", (40, 36, 3))
    x = b.conv(x, 16, 3, 2, 1, w_bits=8, name="stem")
    y = b.conv(x, 20, name="pw")
    v = b.dilation_map(y, 8)
    z = b.deform(y, v, 1, 8, name="deform")
    g = b.finish([z, b.upsample(b.conv(z, 5, relu=False, name="head"), name="up")])
    return g, compile_graph(g, U96), random_inputs(g, 2, 9)


# --------------------------------------------------------------------------- registry


def test_registry_and_lazy_backends():
    assert {"fsim", "rtl", "pynq"} <= set(backends())
    dev = open_device("fsim", config="tiny")
    assert isinstance(dev, FsimDevice) and isinstance(dev, Device) and dev.config.name == "tiny"
    with pytest.raises(BackendUnavailable, match="unknown backend 'nope'"):
        open_device("nope")
    register_backend("ghost", "codenet.sim.no_such_module:Ghost")
    with pytest.raises(BackendUnavailable, match="codenet.sim.no_such_module"):
        open_device("ghost")
    register_backend("ghost2", "codenet.sw.driver:NoSuchClass")
    with pytest.raises(BackendUnavailable, match="NoSuchClass"):
        open_device("ghost2")
    register_backend("mine", lambda **kw: FsimDevice(**kw))
    assert isinstance(open_device("mine", config="tiny"), FsimDevice)
    with pytest.raises(ValueError):
        register_backend("bad", "no-colon")


def test_missing_rtl_backend_is_a_clear_error():
    if importlib.util.find_spec("codenet.sim") is not None and importlib.util.find_spec("codenet.sim.rtl_backend") is not None:
        pytest.skip("codenet.sim.rtl_backend exists here")
    with pytest.raises(BackendUnavailable, match="codenet.sim.rtl_backend.*sim"):
        open_device("rtl", config="tiny")


def test_driver_does_not_import_pynq_or_sim():
    import subprocess

    code = (
        "import sys\n"
        "from codenet.sw import driver, runtime, compiler, fsim, pynq_backend\n"
        "bad = [m for m in ('pynq', 'codenet.sim', 'amaranth', 'torch', 'cocotb') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- memory and registers


def test_memory_and_registers():
    dev = open_device("fsim", config="tiny")
    a, b = dev.alloc(100), dev.alloc(5000)
    assert a.phys_addr % 4096 == 0 and b.phys_addr % 4096 == 0 and b.phys_addr >= a.phys_addr + 4096
    dev.write(a, 3, b"\x01\x02\x03")
    dev.write(b, 4990, np.arange(10, dtype=np.uint8))
    assert dev.read(a, 3, 3).tolist() == [1, 2, 3] and dev.read(b, 4990, 10).tolist() == list(range(10))
    with pytest.raises(ValueError):
        dev.read(a, 99, 2)
    dev.free(a)
    c = dev.alloc(10)
    assert c.phys_addr == a.phys_addr  # freed memory is reused
    assert dev.read_reg("ID") == E.ENGINE_ID and dev.identify()[0] == E.ENGINE_ID
    dev.write_reg("PROG_LEN", 7)
    assert dev.read_reg("PROG_LEN") == 7
    dev.write_reg("WIN2_CTRL", READ=1, WRITE=1)
    assert dev.read_reg("WIN2_CTRL", "WRITE") == 1
    assert dev.read_reg("CFG_LANES", "LANES") == 8
    with pytest.raises(KeyError):
        dev.read_reg("NOPE")
    with pytest.raises(KeyError):
        dev.write_reg("CTRL", BOGUS=1)
    assert set(dev.read_counters()) == {n for n, _ in E.PERF_COUNTERS}


# --------------------------------------------------------------------------- runs and errors


def _loaded(prog, backend):
    dev = make_device(backend, prog.config)
    return dev, Runtime(dev, prog)


def test_runtime_matches_golden_and_counts(small, backend):
    g, prog, ins = small
    dev, rt = _loaded(prog, backend)
    got = rt.run(ins)
    assert_same(got, golden.run(g, ins))
    assert len(rt.counters) == 2 and rt.counters[0]["DESC_DONE"] == prog.prog_len - 1
    assert rt.counters[0]["BYTES_WR"] == rt.counters[1]["BYTES_WR"] == prog.totals()["bytes_wr"]
    one = rt.run({"image": ins["image"][1:]})  # weights stay loaded; image by image
    assert_same(one, {k: v[1:] for k, v in golden.run(g, ins).items()})
    rt.close()


def test_runtime_refuses_bad_inputs(small, backend):
    _, prog, ins = small
    _, rt = _loaded(prog, backend)
    img = ins["image"]
    for bad in (img.astype(np.int8), img[:, :5], img[0], {"other": img}, {}):
        with pytest.raises(RuntimeInputError):
            rt.run(bad)


def test_runtime_refuses_a_program_for_another_engine(small):
    _, prog, _ = small
    with pytest.raises(DeviceError, match="compiled for another engine"):
        Runtime(open_device("fsim", config="ulx3s"), prog)


def _dram_outside(dev: FsimDevice, windows) -> np.ndarray:
    keep = np.ones(dev.dram.size, bool)
    for w in windows:
        if w.write:
            keep[w.base - dev.dram.base : w.base - dev.dram.base + w.size] = False
    return dev.dram.data[keep].copy()


@pytest.mark.parametrize("corruption", ["magic", "opcode", "reserved", "shape"])
def test_corrupted_descriptor_then_recovery(small, backend, corruption):
    g, prog, ins = small
    dev, rt = _loaded(prog, backend)
    p = rt.program
    k = 3
    at = p.prog_addr - p.base + 64 * k
    good = dev.read(rt.buffer, at, 64)
    words = good.view("<u4").copy()
    want = {
        "magic": E.ErrorCode.BAD_MAGIC,
        "opcode": E.ErrorCode.BAD_OP,
        "reserved": E.ErrorCode.BAD_FIELD,
        "shape": E.ErrorCode.BAD_SHAPE,
    }[corruption]
    if corruption == "magic":
        words[15] ^= 1 << 20
    elif corruption == "opcode":
        words[0] = (words[0] & np.uint32(0xFFFFFF00)) | np.uint32(0x7E)
    elif corruption == "reserved":
        words[0] |= 1 << 31
    else:
        words[7] += 1  # out_h
    dev.write(rt.buffer, at, words.view(np.uint8))
    with pytest.raises(DeviceError) as e:
        rt.run({"image": ins["image"][:1]})
    err = e.value
    assert err.code == want and err.err_desc == k and not err.timeout
    assert err.counters["DESC_DONE"] == k
    assert dev.read_reg("STATUS", "BUSY") == 0
    dev.write(rt.buffer, at, good)  # the device is usable again
    assert_same(rt.run(ins), golden.run(g, ins))


def test_out_of_window_access_touches_nothing_outside(small, backend):
    g, prog, ins = small
    dev, rt = _loaded(prog, backend)
    p = rt.program
    ro, rw = p.windows
    # 1. the arena is granted read-only: the first output write is refused, nothing written
    before = dev.dram.data.copy() if isinstance(dev, FsimDevice) else None
    with pytest.raises(DeviceError) as e:
        dev.run(p.prog_addr, p.prog_len, [ro, type(rw)(rw.base, rw.size, True, False)])
    assert e.value.code == E.ErrorCode.WRITE_WINDOW and e.value.err_desc == 0
    assert rw.base <= e.value.err_addr < rw.base + rw.size
    if before is not None:
        assert np.array_equal(dev.dram.data, before)
    # 2. a shrunken arena: some descriptor writes beyond it; memory outside stays as it was
    small_rw = type(rw)(rw.base, 4096, True, True)
    if isinstance(dev, FsimDevice):
        outside = _dram_outside(dev, [small_rw])
    with pytest.raises(DeviceError) as e:
        dev.run(p.prog_addr, p.prog_len, [ro, small_rw])
    assert e.value.code in (E.ErrorCode.READ_WINDOW, E.ErrorCode.WRITE_WINDOW)
    assert not (small_rw.base <= e.value.err_addr < small_rw.base + 4096 - 64)
    if isinstance(dev, FsimDevice):
        assert np.array_equal(_dram_outside(dev, [small_rw]), outside)
    # 3. still usable
    assert_same(rt.run(ins), golden.run(g, ins))


def test_timeout_and_watchdog_leave_the_device_usable(small):
    g, prog, ins = small
    dev, rt = _loaded(prog, "fsim")
    dev.engine.faults.add("stall")
    dev.watchdog_cycles = 0  # no watchdog: only the host's timeout ends the wait
    rt.timeout_s = 0.05
    with pytest.raises(DeviceError) as e:
        rt.run({"image": ins["image"][:1]})
    assert e.value.timeout and e.value.code is None and "timed out" in str(e.value)
    assert dev.read_reg("STATUS", "BUSY") == 0  # soft-reset
    dev.watchdog_cycles = 1000
    with pytest.raises(DeviceError) as e:
        rt.run({"image": ins["image"][:1]})
    assert e.value.code == E.ErrorCode.WATCHDOG and e.value.counters["CYCLES"] == 1000
    dev.engine.faults.clear()
    assert_same(rt.run(ins), golden.run(g, ins))


def test_run_graph_compiles_or_loads(small, tmp_path, backend):
    g, prog, ins = small
    want = golden.run(g, ins)
    res = run_graph(g, ins, device=make_device(backend, U96), config=U96)
    assert_same(res.outputs, want)
    assert len(res.counters) == 2 and res.program.prog_len == prog.prog_len
    prog.save(tmp_path / "small")
    outs, counters, loaded = run_graph(None, ins, device=make_device(backend, U96), program=tmp_path / "small")
    assert_same(outs, want)
    assert loaded.to_json() == prog.to_json()
    outs, _, _ = run_graph(g, ins, device="fsim", config=U96)  # a backend by name
    assert_same(outs, want)


def test_codenet_tiny_batch_on_one_runtime(backend):
    g = zoo.build("codenet-tiny", seed=5)
    prog = compile_graph(g, U96)
    ins = random_inputs(g, 3, 21)
    _, rt = _loaded(prog, backend)
    assert_same(rt.run(ins), golden.run(g, ins))


# --------------------------------------------------------------------------- pynq, with a stand-in module


class _FakeBuffer(np.ndarray):
    physical_address: int
    flushes = 0
    invalidates = 0

    def flush(self):
        type(self).flushes += 1

    def invalidate(self):
        type(self).invalidates += 1

    def freebuffer(self):
        self._free(self.physical_address)


def _fake_pynq(cfg: E.EngineConfig) -> types.ModuleType:
    """`pynq` as the backend uses it: Overlay.ip_dict, MMIO, allocate; the engine is fsim."""
    mod = types.ModuleType("pynq")
    dram = fsim.Dram(16 << 20, 0x1000_0000)
    engine = fsim.FsimEngine(cfg, dram)
    state = {"next": dram.base, "free": []}

    class Overlay:
        def __init__(self, bitfile, download=True):
            self.bitfile = bitfile
            self.ip_dict = {
                "axi_dma_0": {"phys_addr": 0xA001_0000, "addr_range": 0x1000, "type": "xilinx.com:ip:axi_dma:7.1"},
                "codenet_engine_0": {"phys_addr": 0xA000_0000, "addr_range": 0x1000, "type": "codenet:engine:1.0"},
            }

    class MMIO:
        def __init__(self, base, length):
            assert base == 0xA000_0000 and length == 0x1000
            self.base = base

        def read(self, offset):
            return engine.read_reg(offset)

        def write(self, offset, value):
            engine.write_reg(offset, value)

    def allocate(shape, dtype):
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        addr = state["next"]
        state["next"] += -(-n // 4096) * 4096
        arr = dram.data[addr - dram.base : addr - dram.base + n].view(_FakeBuffer)
        arr.physical_address = addr
        arr._free = state["free"].append
        return arr

    mod.Overlay, mod.MMIO, mod.allocate = Overlay, MMIO, allocate
    mod._engine, mod._state = engine, state
    return mod


def test_pynq_backend_with_a_stand_in_module(small, monkeypatch):
    g, prog, ins = small
    fake = _fake_pynq(U96)
    monkeypatch.setitem(sys.modules, "pynq", fake)
    dev = open_device("pynq", bitfile="codenet.bit")
    assert dev.ip == "codenet_engine_0" and dev.config.max_width == U96.max_width
    flushes = _FakeBuffer.flushes
    with Runtime(dev, prog) as rt:
        assert_same(rt.run(ins), golden.run(g, ins))
        assert rt.buffer.phys_addr >= 0x1000_0000 and rt.program.base == rt.buffer.phys_addr
    assert _FakeBuffer.flushes > flushes and _FakeBuffer.invalidates > 0
    assert fake._state["free"], "the runtime's buffer was not freed"
    with pytest.raises(DeviceError, match="no IP"):
        open_device("pynq", bitfile="codenet.bit", ip="nope")
