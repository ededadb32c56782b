"""The whole engine in the Amaranth simulator: registers, command processor, DMA, units.

A Python AXI4 memory (random ready/valid delays) holds the program, weights and tensors;
the testbench drives the AXI4-Lite registers like a driver would. One simulation runs
several programs in turn (elaboration dominates the cost):

1. a program of one descriptor per op (CONV1X1 into a channel slice = concat, CONV3X3 stem,
   DWCONV3X3, DEFORM_SQUARE, DEFORM_OFFSETS, MAXPOOL3X3, UPSAMPLE2X, COPY, END), every
   output checked against the golden executor and every byte outside the outputs unchanged;
2. error runs: a malformed descriptor (BAD_MAGIC), a write outside the windows
   (WRITE_WINDOW: nothing written outside), PROG_LEN = 0 (BAD_PROGRAM), a stalled bus
   (WATCHDOG); each ends with STATUS.ERROR, ERR_DESC and the interrupt.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import simkit
from test_pointwise import mini
from test_regfile import axil_read, axil_write

from codenet.hw.engine import Engine
from codenet.sw import engine as E
from codenet.sw import golden

CFG = mini()
L = CFG.lanes
MEM_BYTES = 0x10000
REG = {r.name: r.offset for r in E.register_map(CFG)}


class Program:
    """A tiny bump allocator + descriptor list: the test's own stand-in for the compiler."""

    def __init__(self, rng, mem_bytes=MEM_BYTES):
        self.rng = rng
        self.mem = rng.integers(0, 256, size=mem_bytes).astype(np.uint8)  # garbage everywhere
        self.top = 0x1000
        self.descs: list[E.Descriptor] = []
        self.checks = []  # (name, view, expected (H, W, C) bytes)
        self.outputs = []

    def alloc(self, nbytes, align=16):
        self.top = -(-self.top // align) * align
        a = self.top
        self.top += nbytes
        assert self.top <= self.mem.size
        return a

    def put(self, arr):
        arr = np.asarray(arr).astype(np.int64) & 0xFF
        a = self.alloc(arr.size)
        self.mem[a : a + arr.size] = arr.reshape(-1)
        return a

    def tensor(self, x, pad_ps=0):
        h, w, c = x.shape
        ps = c + pad_ps
        v = E.View(self.alloc(h * w * ps), h, w, c, ps, w * ps)
        addrs = v.element_addresses()
        self.mem[addrs] = np.asarray(x).astype(np.int64) & 0xFF
        return v

    def out_view(self, h, w, c, ps=None, c0=0):
        ps = ps or c
        base = self.alloc(h * w * ps)
        self.outputs.append((base, h * w * ps))
        return E.View(base + c0, h, w, c, ps, w * ps)

    def add(self, desc, name=None, want=None, cfg=CFG):
        check = E.check_descriptor(desc, cfg, len(self.descs))
        assert check[0] == E.ErrorCode.NONE, check
        self.descs.append(desc)
        if want is not None:
            self.checks.append((name, desc.out, np.asarray(want).astype(np.int64) & 0xFF))

    def image(self, at=0x800):
        img = E.encode_program(self.descs)
        self.mem[at : at + len(img)] = np.frombuffer(img, np.uint8)
        return at


def conv_params(rng, oc):
    return rng.integers(-800, 800, size=oc), rng.integers(2**13, 2**16, size=oc)


def build_ops_program(seed=5):
    rng = np.random.default_rng(seed)
    p = Program(rng)
    # CONV1X1: 4x3x6 uint8 -> 5 channels, written into channels [2, 7) of an 8-channel buffer (concat)
    x = rng.integers(0, 256, size=(4, 3, 6))
    w = rng.integers(-8, 8, size=(5, 1, 1, 6))
    b, mlt = conv_params(rng, 5)
    xin = p.tensor(x, pad_ps=2)
    out = p.out_view(4, 3, 5, ps=8, c0=2)
    want = golden.requantize(golden.conv2d(x[None], w, b)[0], mlt, 14, True)
    p.add(
        E.Descriptor(
            E.Op.CONV1X1,
            xin,
            out,
            relu=True,
            shift=14,
            weight_addr=p.put(E.pack_weights(E.Op.CONV1X1, w, CFG)),
            param_addr=p.put(E.pack_params(b, mlt, CFG)),
        ),  # fmt: skip
        "conv1x1-concat",
        want,
    )
    # CONV3X3 stem: 5x6x3 image, stride 2, 8-bit weights, 6 output channels
    img = rng.integers(0, 256, size=(5, 6, 3))
    ws = rng.integers(-128, 128, size=(6, 3, 3, 3))
    b, mlt = conv_params(rng, 6)
    want = golden.requantize(golden.conv2d(img[None], ws, b, 2, 1)[0], mlt, 20, True)
    p.add(
        E.Descriptor(
            E.Op.CONV3X3,
            p.tensor(img),
            p.out_view(3, 3, 6),
            relu=True,
            w8=True,
            stride=2,
            shift=20,
            weight_addr=p.put(E.pack_weights(E.Op.CONV3X3, ws, CFG, 8)),
            param_addr=p.put(E.pack_params(b, mlt, CFG)),
        ),  # fmt: skip
        "stem",
        want,
    )
    # DWCONV3X3: int8 input, 5 channels (two groups), stride 1
    x = rng.integers(-128, 128, size=(4, 5, 5))
    wd = rng.integers(-8, 8, size=(5, 3, 3))
    b, mlt = conv_params(rng, 5)
    want = golden.requantize(golden.conv2d(x[None], wd[..., None], b, 1, 1, groups=5)[0], mlt, 13, False)
    p.add(
        E.Descriptor(
            E.Op.DWCONV3X3,
            p.tensor(x),
            p.out_view(4, 5, 5),
            in_signed=True,
            shift=13,
            weight_addr=p.put(E.pack_weights(E.Op.DWCONV3X3, wd, CFG)),
            param_addr=p.put(E.pack_params(b, mlt, CFG)),
        ),  # fmt: skip
        "dwconv",
        want,
    )
    # DEFORM_SQUARE: stride 2, map values up to 5 (D = 3)
    x = rng.integers(0, 256, size=(6, 5, 4))
    wd = rng.integers(-8, 8, size=(4, 3, 3))
    b, mlt = conv_params(rng, 4)
    v = rng.integers(0, 6, size=(3, 3))
    vmap = p.tensor(v[..., None])
    d = golden.dilation_from_map(v[None], 3)
    want = golden.requantize(golden.deform_dw3x3(x[None], wd, d, 2)[0] + b, mlt, 12, True)
    p.add(
        E.Descriptor(
            E.Op.DEFORM_SQUARE,
            p.tensor(x),
            p.out_view(3, 3, 4),
            relu=True,
            stride=2,
            shift=12,
            max_dilation=3,
            side_addr=vmap.addr,
            side_ps=1,
            side_rs=vmap.rs,
            weight_addr=p.put(E.pack_weights(E.Op.DEFORM_SQUARE, wd, CFG)),
            param_addr=p.put(E.pack_params(b, mlt, CFG)),
        ),  # fmt: skip
        "deform-square",
        want,
    )
    # DEFORM_OFFSETS: stride 1, offsets clamped to R = 1
    x = rng.integers(0, 256, size=(4, 4, 3))
    wd = rng.integers(-8, 8, size=(3, 3, 3))
    b, mlt = conv_params(rng, 3)
    off = rng.integers(-2, 3, size=(4, 4, 18))
    offv = p.tensor(off)
    want = golden.requantize(golden.deform_dw3x3_offsets(x[None], wd, np.clip(off, -1, 1).reshape(1, 4, 4, 9, 2), 1)[0] + b, mlt, 12, True)
    p.add(
        E.Descriptor(
            E.Op.DEFORM_OFFSETS,
            p.tensor(x),
            p.out_view(4, 4, 3),
            relu=True,
            shift=12,
            max_offset=1,
            side_addr=offv.addr,
            side_ps=18,
            side_rs=offv.rs,
            weight_addr=p.put(E.pack_weights(E.Op.DEFORM_OFFSETS, wd, CFG)),
            param_addr=p.put(E.pack_params(b, mlt, CFG)),
        ),  # fmt: skip
        "deform-offsets",
        want,
    )
    # MAXPOOL3X3 s2 p1, int8
    x = rng.integers(-128, 128, size=(5, 5, 6))
    want = golden.maxpool2d(x[None].astype(np.int8), 3, 2, 1)[0]
    p.add(E.Descriptor(E.Op.MAXPOOL3X3, p.tensor(x), p.out_view(3, 3, 6), in_signed=True, stride=2), "maxpool", want)
    # UPSAMPLE2X
    x = rng.integers(0, 256, size=(2, 3, 5))
    p.add(E.Descriptor(E.Op.UPSAMPLE2X, p.tensor(x), p.out_view(4, 6, 5)), "upsample", golden.upsample_nearest2x(x[None])[0])
    # COPY: channels [1, 4) of a 6-channel tensor into a 3-channel one (split materialisation)
    x = rng.integers(0, 256, size=(3, 2, 6))
    src = p.tensor(x)
    p.add(E.Descriptor(E.Op.COPY, src.slice_channels(1, 3), p.out_view(3, 2, 3)), "copy-slice", x[..., 1:4])
    p.add(E.Descriptor(E.Op.END))
    return p


class Bench:
    """The AXI4 memory model and the register driver around one Engine simulation."""

    def __init__(self, seed=0):
        self.dut = Engine(CFG)
        self.prng = random.Random(seed)
        self.mem = np.zeros(MEM_BYTES, np.uint8)
        self.stall_reads = False
        self.writes_outside: list[int] = []
        self.allowed_writes = (0, MEM_BYTES)
        self.stopped = False

    async def memory(self, ctx):
        d = self.dut
        ar, aw = [], []
        bq = []
        while not self.stopped:
            ctx.set(d.m_axi_arready, self.prng.random() < 0.8)
            ctx.set(d.m_axi_awready, self.prng.random() < 0.8)
            ctx.set(d.m_axi_wready, self.prng.random() < 0.9)
            rv = bool(ar) and not self.stall_reads and self.prng.random() < 0.85
            if rv:
                a = ar[0][0]
                ctx.set(d.m_axi_rdata, int.from_bytes(self.mem[a : a + L].tobytes(), "little"))
                ctx.set(d.m_axi_rlast, ar[0][1] == 1)
                ctx.set(d.m_axi_rresp, 0)
            ctx.set(d.m_axi_rvalid, rv)
            bv = bool(bq) and bq[0] <= 0
            ctx.set(d.m_axi_bvalid, bv)
            ctx.set(d.m_axi_bresp, 0)
            _, _, arv, arr, ara, arl, rr, awv, awr, awa, awl, wv, wr, wd, ws, wl, br = await ctx.tick().sample(
                d.m_axi_arvalid, d.m_axi_arready, d.m_axi_araddr, d.m_axi_arlen, d.m_axi_rready,
                d.m_axi_awvalid, d.m_axi_awready, d.m_axi_awaddr, d.m_axi_awlen,
                d.m_axi_wvalid, d.m_axi_wready, d.m_axi_wdata, d.m_axi_wstrb, d.m_axi_wlast, d.m_axi_bready,
            )  # fmt: skip
            bq = [x - 1 for x in bq]
            if bv and br:
                bq.pop(0)
            if arv and arr:
                ar += [[ara + k * L, arl + 1 - k] for k in range(arl + 1)]
            if rv and rr:
                ar.pop(0)
            if awv and awr:
                aw.append([awa, awl + 1])
            if wv and wr:
                a = aw[0][0]
                data = int(wd).to_bytes(L, "little")
                for b in range(L):
                    if ws >> b & 1:
                        if not self.allowed_writes[0] <= a + b < self.allowed_writes[1]:
                            self.writes_outside.append(a + b)
                        self.mem[a + b] = data[b]
                aw[0][0] += L
                aw[0][1] -= 1
                assert bool(wl) == (aw[0][1] == 0)
                if aw[0][1] == 0:
                    aw.pop(0)
                    bq.append(self.prng.randint(0, 4))

    async def run_program(self, ctx, prog_addr, prog_len, windows, watchdog=None):
        """Write the registers like a driver, start, wait for the interrupt; returns STATUS fields."""
        bus = self.dut
        axil = _FlatAxil(bus)
        for k in range(E.NUM_WINDOWS):
            base, size, r, w = windows[k] if k < len(windows) else (0, 0, 0, 0)
            await axil_write(ctx, axil, REG[f"WIN{k}_BASE"], base)
            await axil_write(ctx, axil, REG[f"WIN{k}_SIZE"], size)
            await axil_write(ctx, axil, REG[f"WIN{k}_CTRL"], r | w << 1)
        await axil_write(ctx, axil, REG["PROG_ADDR"], prog_addr)
        await axil_write(ctx, axil, REG["PROG_LEN"], prog_len)
        if watchdog is not None:
            await axil_write(ctx, axil, REG["WATCHDOG"], watchdog)
        await axil_write(ctx, axil, REG["IRQ_STATUS"], 0b11)
        await axil_write(ctx, axil, REG["CTRL"], 0b101)  # IRQ_EN | START
        await ctx.tick().until(bus.irq)
        status = await axil_read(ctx, axil, REG["STATUS"])
        irq = await axil_read(ctx, axil, REG["IRQ_STATUS"])
        counters = {}
        for name, _ in E.PERF_COUNTERS:
            lo = await axil_read(ctx, axil, REG[f"PERF_{name}_LO"])
            hi = await axil_read(ctx, axil, REG[f"PERF_{name}_HI"])
            counters[name] = lo | hi << 32
        err_addr = await axil_read(ctx, axil, REG["ERR_ADDR"])
        await axil_write(ctx, axil, REG["IRQ_STATUS"], irq)
        return {
            "busy": status & 1,
            "done": status >> 1 & 1,
            "error": status >> 8 & 0xFF,
            "err_desc": status >> 16,
            "irq": irq,
            "err_addr": err_addr,
            "counters": counters,
        }


class _FlatAxil:
    """The engine's flat s_axil_* ports seen as the interface test_regfile's helpers expect."""

    def __init__(self, dut):
        self._dut = dut

    def __getattr__(self, name):
        return getattr(self._dut, f"s_axil_{name}")


@pytest.fixture(scope="module")
def runs():
    bench = Bench(seed=3)
    prog = build_ops_program()
    results = {}
    whole = [(0, MEM_BYTES, 1, 1)]

    async def driver(ctx):
        # ---- 1. every op, one program
        at = prog.image()
        bench.mem[:] = prog.mem
        results["ops"] = await bench.run_program(ctx, at, len(prog.descs), whole)
        results["ops_mem"] = bench.mem.copy()
        # ---- 2. malformed descriptor: descriptor 1 carries index 2 in its sequence field
        bad = E.encode_descriptor(E.Descriptor(E.Op.COPY, E.View.dense(0x1000, 1, 1, 4), E.View.dense(0x2000, 1, 1, 4)), 2)
        good = E.encode_descriptor(E.Descriptor(E.Op.COPY, E.View.dense(0x1000, 1, 1, 4), E.View.dense(0x2000, 1, 1, 4)), 0)
        bench.mem[0x800 : 0x800 + 128] = np.frombuffer(good + bad, np.uint8)
        results["magic"] = await bench.run_program(ctx, 0x800, 2, whole)
        # ---- 3. a COPY whose output runs past the write window: nothing may be written outside
        copy = E.Descriptor(E.Op.COPY, E.View.dense(0x1000, 4, 4, 4), E.View.dense(0x2FF0, 4, 4, 4))
        bench.mem[0x800:0x840] = np.frombuffer(E.encode_descriptor(copy, 0), np.uint8)
        bench.allowed_writes = (0x2000, 0x3000)
        bench.writes_outside.clear()
        before = bench.mem.copy()
        results["window"] = await bench.run_program(ctx, 0x800, 1, [(0, 0x2000, 1, 0), (0x2000, 0x1000, 0, 1)])
        results["window_outside"] = list(bench.writes_outside)
        results["window_changed"] = np.flatnonzero(bench.mem != before)
        bench.allowed_writes = (0, MEM_BYTES)
        # ---- 4. PROG_LEN = 0
        results["empty"] = await bench.run_program(ctx, 0x800, 0, whole)
        # ---- 5. the bus stops answering reads: the watchdog ends the run
        bench.stall_reads = True
        results["watchdog"] = await bench.run_program(ctx, 0x800, 1, whole, watchdog=200)
        bench.stopped = True

    async def memory(ctx):
        await bench.memory(ctx)

    simkit.run(bench.dut, driver, memory, deadline_cycles=60000)
    results["prog"] = prog
    return results


def test_every_op_matches_golden(runs):
    st = runs["ops"]
    assert st["error"] == 0 and st["done"] == 1 and st["irq"] == 0b01, st
    prog = runs["prog"]
    mem = runs["ops_mem"]
    for name, view, want in prog.checks:
        got = mem[view.element_addresses()].astype(np.int64)
        assert np.array_equal(got, want), name


def test_nothing_but_the_outputs_is_written(runs):
    prog = runs["prog"]
    mem = runs["ops_mem"]
    changed = set(np.flatnonzero(mem != prog.mem).tolist())
    allowed = set()
    for _, view, _ in prog.checks:
        allowed |= set(view.element_addresses().reshape(-1).tolist())
    assert changed <= allowed, sorted(changed - allowed)[:10]


def test_counters(runs):
    c = runs["ops"]["counters"]
    prog = runs["prog"]
    assert c["DESC_DONE"] == len(prog.descs) - 1  # END is not an op
    assert c["CYCLES"] > 0 and c["BUSY_PW"] > 0 and c["BUSY_WIN"] > 0 and c["BUSY_MOVE"] > 0
    written = sum(int(np.prod(v.element_addresses().shape)) for _, v, _ in prog.checks)
    assert c["BYTES_WR"] == written
    assert c["BYTES_RD"] == L * c["BUSY_DMA_RD"]


def test_malformed_descriptor_stops_with_bad_magic(runs):
    st = runs["magic"]
    assert st["error"] == E.ErrorCode.BAD_MAGIC and st["err_desc"] == 1 and st["irq"] == 0b10 and st["done"] == 1


def test_write_outside_windows_is_refused(runs):
    st = runs["window"]
    assert st["error"] == E.ErrorCode.WRITE_WINDOW and st["err_desc"] == 0 and st["irq"] == 0b10
    assert 0x2FF0 <= st["err_addr"] < 0x3000 + 64
    assert runs["window_outside"] == []
    changed = runs["window_changed"]
    assert changed.size == 0 or (changed.min() >= 0x2000 and changed.max() < 0x3000)


def test_empty_program_is_refused(runs):
    assert runs["empty"]["error"] == E.ErrorCode.BAD_PROGRAM and runs["empty"]["irq"] == 0b10


def test_watchdog_ends_a_stalled_run(runs):
    st = runs["watchdog"]
    assert st["error"] == E.ErrorCode.WATCHDOG and st["irq"] == 0b10 and st["busy"] == 0


# --------------------------------------------------------------------------- validation: hardware == check_descriptor

MUTABLE = [f for f in E.DESC_FIELDS]
PROG_PAGE = 0x4000


def valid_descriptor(rng, op: E.Op) -> E.Descriptor:
    """A random descriptor that passes check_descriptor on CFG; its data lives far from PROG_PAGE."""
    if op == E.Op.END:
        return E.Descriptor(op)
    stride = int(rng.choice(E.OP_STRIDES.get(op, (1,))))
    h, w = int(rng.integers(1, 9)), int(rng.integers(1, CFG.max_width + 1))
    c = int(rng.integers(1, L + 1 if op == E.Op.CONV3X3 else 12))
    ho, wo = E.out_hw(op, h, w, stride)
    oc = int(rng.integers(1, 9)) if op in (E.Op.CONV1X1, E.Op.CONV3X3) else c
    far = 0x100000

    def view(hh, ww, cc):
        ps = cc + int(rng.integers(0, 3))
        return E.View(far + int(rng.integers(0, 1 << 16)), hh, ww, cc, ps, ww * ps + int(rng.integers(0, 5)))

    kw = dict(op=op, inp=view(h, w, c), out=view(ho, wo, oc))
    allowed = E.OP_FIELDS[op]
    if "stride" in allowed:
        kw["stride"] = stride
    for f in ("relu", "w8", "in_signed"):
        if f in allowed:
            kw[f] = bool(rng.integers(0, 2))
    if "shift" in allowed:
        kw["shift"] = int(rng.integers(0, 48))
    if "max_dilation" in allowed:
        kw["max_dilation"] = int(rng.integers(1, CFG.max_dilation + 1))
        kw.update(side_ps=1, side_rs=wo + int(rng.integers(0, 3)), side_addr=far + 0x20000)
    if "max_offset" in allowed:
        kw["max_offset"] = int(rng.integers(0, CFG.max_offset + 1))
        kw.update(side_ps=18, side_rs=18 * wo, side_addr=far + 0x20000)
    if "weight_addr" in allowed:
        kw.update(weight_addr=far + 0x30000, param_addr=far + 0x40000)
    d = E.Descriptor(**kw)
    if E.check_descriptor(d, CFG)[0] != E.ErrorCode.NONE:  # e.g. 8-bit weights too big for the buffer
        d = E.Descriptor(**{**kw, "w8": False}) if "w8" in kw else d
    return d


def mutate(rng, raw: bytes) -> bytes:
    words = list(np.frombuffer(raw, "<u4").astype(np.int64))
    kind = rng.integers(0, 4)
    if kind == 0:  # flip one bit anywhere
        k = int(rng.integers(0, 16 * 32))
        words[k // 32] ^= 1 << (k % 32)
    else:  # set one field to a boundary or random value
        f = MUTABLE[int(rng.integers(0, len(MUTABLE)))]
        if f.name in ("magic", "seq") and rng.random() < 0.7:
            f = MUTABLE[int(rng.integers(0, len(MUTABLE)))]
        mask = (1 << f.width) - 1
        v = int(rng.choice([0, 1, 2, 3, 17, 18, 47, 48, 257, mask, int(rng.integers(0, mask + 1))])) & mask
        words[f.word] = (words[f.word] & ~(mask << f.lsb)) | (v << f.lsb)
    return np.array(words, "<u4").tobytes()


def validation_cases(n=120, seed=11):
    rng = np.random.default_rng(seed)
    ops = list(E.Op)
    cases = []
    for k in range(n):
        op = ops[k % len(ops)]
        raw = E.encode_descriptor(valid_descriptor(rng, op), 0)
        if rng.random() < 0.85:
            raw = mutate(rng, raw)
        cases.append((raw, E.check_descriptor(raw, CFG, 0)[0]))
    return cases


@pytest.fixture(scope="module")
def validation_runs():
    bench = Bench(seed=7)
    cases = validation_cases()
    got = []

    async def driver(ctx):
        for raw, _ in cases:
            bench.mem[PROG_PAGE : PROG_PAGE + 64] = np.frombuffer(raw, np.uint8)
            st = await bench.run_program(ctx, PROG_PAGE, 1, [(PROG_PAGE, 0x1000, 1, 0)])
            got.append(st["error"])
        bench.stopped = True

    async def memory(ctx):
        await bench.memory(ctx)

    simkit.run(bench.dut, driver, memory, deadline_cycles=400 * len(cases) + 5000)
    return cases, got


def test_hardware_validation_matches_check_descriptor(validation_runs):
    cases, got = validation_runs
    codes = {int(c) for _, c in cases}
    assert len(codes) >= 6, f"the random cases reach too few error codes: {codes}"
    for k, ((raw, want), hw) in enumerate(zip(cases, got)):
        op = raw[0]
        if want == E.ErrorCode.NONE:
            # the descriptor is accepted and starts: its data lies outside every window
            ok = hw == 0 if op == int(E.Op.END) else hw in (E.ErrorCode.READ_WINDOW, E.ErrorCode.WRITE_WINDOW)
            assert ok, (k, E.decode_descriptor(raw, 0), E.ErrorCode(hw))
        else:
            assert hw == want, (k, raw.hex(), E.ErrorCode(want).name, E.ErrorCode(hw).name if hw in set(E.ErrorCode) else hw)
