"""The engine contract (codenet.sw.engine): configuration, register map, descriptors, DRAM images.

Expectations come from the documented layouts written out independently here (index
formulas, hand-worked bytes), from intmath.pack_int4/unpack_int4 and from golden.conv2d;
never from the function under test alone.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from codenet.sw import engine as E
from codenet.sw import golden, intmath

ROOT = Path(__file__).resolve().parents[2]
#: The descriptor checks' limits below are written for 64 channels and dilations up to 3 (the
#: tiny preset before it grew to run codenet-tiny); the checks read them from the config.
TINY = E.EngineConfig.from_dict({"preset": "tiny", "name": "tiny64", "max_channels": 64, "max_dilation": 3})
U96 = E.PRESETS["ultra96"]
L4 = E.EngineConfig(
    name="l4",
    pw_ic=4,
    pw_oc=4,
    dw_lanes=4,
    axi_data_bits=32,
    max_width=16,
    max_channels=16,
    wbuf_depth=16,
    dma_fifo_beats=16,
    max_burst_beats=8,
)


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("name", sorted(E.PRESETS))
def test_presets_validate_and_round_trip(name):
    cfg = E.PRESETS[name]
    assert cfg.name == name
    assert E.EngineConfig.from_json(cfg.to_json()) == cfg
    assert E.preset(name) is cfg
    assert cfg.lb_rows >= 2 * cfg.reach + 3


def test_ultra96_matches_codenet_array_sizes():
    assert (U96.pw_ic, U96.pw_oc, U96.dw_lanes, U96.clock_mhz) == (16, 16, 16, 250)
    assert U96.max_dilation == 8


def test_from_json_preset_with_overrides():
    cfg = E.EngineConfig.from_json(json.dumps({"preset": "ultra96", "name": "u96-d4", "max_dilation": 4}))
    assert cfg.max_dilation == 4 and cfg.pw_ic == 16 and cfg.name == "u96-d4"


@pytest.mark.parametrize(
    "override, field",
    [
        ({"pw_ic": 12}, "pw_ic"),
        ({"pw_oc": 8}, "pw_oc"),
        ({"dw_lanes": 8}, "dw_lanes"),
        ({"axi_data_bits": 64}, "axi_data_bits"),
        ({"axi_addr_bits": 40}, "axi_addr_bits"),
        ({"max_width": 2}, "max_width"),
        ({"max_channels": 100}, "max_channels"),
        ({"max_dilation": 0}, "max_dilation"),
        ({"max_offset": -1}, "max_offset"),
        ({"wbuf_depth": 1000}, "wbuf_depth"),
        ({"wbuf_depth": 128}, "wbuf_depth"),
        ({"max_burst_beats": 3}, "max_burst_beats"),
        ({"dma_fifo_beats": 8}, "dma_fifo_beats"),
        ({"pw_mul": "magic"}, "pw_mul"),
        ({"dw_mul": "dsp_packed2"}, "dw_mul"),
        ({"clock_mhz": 0}, "clock_mhz"),
        ({"max_width": "64"}, "max_width"),
        ({"bogus": 1}, "bogus"),
        ({"preset": "nope"}, "preset"),
    ],
)
def test_bad_config_names_the_field(override, field):
    with pytest.raises(E.EngineConfigError) as ei:
        E.EngineConfig.from_dict({"preset": "ultra96", **override})
    assert ei.value.field == field
    assert repr(field) in str(ei.value)


def test_bad_json_text():
    with pytest.raises(E.EngineConfigError, match="not valid JSON"):
        E.EngineConfig.from_json("{")
    with pytest.raises(E.EngineConfigError, match="JSON object"):
        E.EngineConfig.from_json("[1]")


# --------------------------------------------------------------------------- register map


def test_register_map_layout_is_sound():
    regs = E.register_map(U96)
    offsets = [r.offset for r in regs]
    assert len(set(offsets)) == len(offsets), "two registers share an offset"
    assert len({r.name for r in regs}) == len(regs)
    for r in regs:
        assert r.offset % 4 == 0 and r.offset < 2**E.AXIL_ADDR_BITS
        used = 0
        for f in r.fields:
            assert f.access in ("ro", "rw", "w1c", "w1s")
            assert 0 <= f.lsb and f.lsb + f.width <= 32
            assert used & f.mask == 0, f"{r.name}.{f.name} overlaps"
            used |= f.mask
            assert 0 <= f.reset < 2**f.width, f"{r.name}.{f.name} reset does not fit"
    names = {r.name for r in regs}
    for must in ("ID", "VERSION", "CTRL", "STATUS", "IRQ_STATUS", "PROG_ADDR", "PROG_LEN", "WATCHDOG", "ERR_ADDR"):
        assert must in names
    for k in range(E.NUM_WINDOWS):
        assert {f"WIN{k}_BASE", f"WIN{k}_SIZE", f"WIN{k}_CTRL"} <= names
    for c, _ in E.PERF_COUNTERS:
        lo, hi = E.reg(f"PERF_{c}_LO"), E.reg(f"PERF_{c}_HI")
        assert hi.offset == lo.offset + 4 and lo.offset % 8 == 0
    assert {"CYCLES", "BUSY_PW", "BUSY_WIN", "BYTES_RD", "BYTES_WR", "DESC_DONE"} <= {c for c, _ in E.PERF_COUNTERS}


def test_config_readback_registers_carry_the_config():
    for cfg in E.PRESETS.values():
        r = {x.name: x.reset for x in E.register_map(cfg)}
        assert r["ID"] == 0x43444E45
        assert r["CFG_LANES"] & 0xFF == cfg.lanes
        assert r["CFG_LIMITS"] == cfg.max_width | cfg.max_channels << 16
        assert r["CFG_DEFORM"] == cfg.max_dilation | cfg.max_offset << 16
        assert r["CFG_AXI"] & 0xFFFF == cfg.axi_data_bits
        assert bool(r["CFG_OPS"] >> int(E.Op.DEFORM_OFFSETS) & 1) == (cfg.max_offset > 0)
        # the layout never depends on the configuration
        assert [x.offset for x in E.register_map(cfg)] == [x.offset for x in E.register_map(U96)]


def test_register_map_doc_matches_generator():
    committed = (ROOT / "docs" / "register-map.md").read_text()
    assert committed == E.register_map_markdown(), "docs/register-map.md is stale: python -m codenet.sw.engine > docs/register-map.md"


def test_engine_json_is_plain_json_with_everything():
    d = json.loads(json.dumps(E.engine_json(TINY)))
    assert d["config"] == TINY.to_dict()
    assert {r["name"] for r in d["registers"]} == {r.name for r in E.register_map(TINY)}
    assert {f["name"] for f in d["descriptor"]["fields"]} == {f.name for f in E.DESC_FIELDS}
    assert d["errors"]["WATCHDOG"]["code"] == int(E.ErrorCode.WATCHDOG)


def test_c_header_defines_everything_and_compiles(tmp_path):
    h = E.c_header(U96)
    for r in E.register_map(U96):
        assert f"#define CODENET_REG_{r.name} 0x{r.offset:03X}u" in h
    for e in E.ErrorCode:
        assert f"#define CODENET_ERR_{e.name} {int(e)}" in h
    for f in E.DESC_FIELDS:
        assert f"CODENET_DESC_{f.name.upper()}_WORD {f.word}" in h
    names = re.findall(r"#define (\w+)", h)
    assert len(names) == len(set(names)), "duplicate macro"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    (tmp_path / "engine.h").write_text(h)
    src = tmp_path / "t.c"
    src.write_text(
        '#include "engine.h"\n'
        '_Static_assert(CODENET_REG_STATUS == 0x00C, "status");\n'
        '_Static_assert(sizeof(codenet_desc_t) == CODENET_DESC_BYTES, "desc");\n'
        "int main(void) { return CODENET_DESC_OP_MASK == 0xFFu ? 0 : 1; }\n"
    )
    out = subprocess.run([cc, "-Wall", "-Werror", "-fsyntax-only", str(src)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_contract_imports_without_numpy():
    """The driver reads the register map and descriptor layout on boards with only the stdlib."""
    code = (
        "import sys\n"
        "sys.modules['numpy'] = None\n"
        "from codenet.sw import engine as E\n"
        "d = E.Descriptor(E.Op.COPY, E.View.dense(0, 2, 2, 3), E.View.dense(64, 2, 2, 3))\n"
        "raw = E.encode_descriptor(d, 5)\n"
        "assert E.decode_descriptor(raw, 5) == d\n"
        "assert E.check_descriptor(raw, E.PRESETS['tiny'], 5)[0] == E.ErrorCode.NONE\n"
        "print(len(E.register_map()), len(E.c_header(E.PRESETS['tiny'])) > 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


# --------------------------------------------------------------------------- descriptors


def test_descriptor_layout_has_no_overlaps():
    per_word: dict[int, int] = {}
    for f in E.DESC_FIELDS:
        m = ((1 << f.width) - 1) << f.lsb
        assert 0 <= f.word < E.DESC_WORDS and m >> 32 == 0
        assert per_word.get(f.word, 0) & m == 0, f.name
        per_word[f.word] = per_word.get(f.word, 0) | m
    for w, res in E.RESERVED_MASKS.items():
        assert per_word.get(w, 0) & res == 0 and (per_word.get(w, 0) | res) == 0xFFFFFFFF


def _random_desc(op: E.Op, rng) -> E.Descriptor:
    def view():
        c = int(rng.integers(1, 100))
        w = int(rng.integers(1, 300))
        ps = c + int(rng.integers(0, 20))
        return E.View(int(rng.integers(0, 2**32)), int(rng.integers(1, 300)), w, c, ps, w * ps + int(rng.integers(0, 99)))

    kw: dict = {"op": op}
    if op == E.Op.END:
        return E.Descriptor(op)
    allowed = E.OP_FIELDS[op]
    kw["inp"], kw["out"] = view(), view()
    for name in ("relu", "w8", "in_signed"):
        if name in allowed:
            kw[name] = bool(rng.integers(0, 2))
    if "stride" in allowed:
        kw["stride"] = int(rng.choice(E.OP_STRIDES[op]))
    if "shift" in allowed:
        kw["shift"] = int(rng.integers(0, 48))
    if "max_dilation" in allowed:
        kw["max_dilation"] = int(rng.integers(1, 257))
    if "max_offset" in allowed:
        kw["max_offset"] = int(rng.integers(0, 128))
    for name in ("side_addr", "side_rs", "weight_addr", "param_addr"):
        if name in allowed:
            kw[name] = int(rng.integers(0, 2**32))
    if "side_ps" in allowed:
        kw["side_ps"] = int(rng.integers(0, 2**16))
    return E.Descriptor(**kw)


@pytest.mark.parametrize("op", list(E.Op))
def test_descriptor_round_trip(op):
    rng = np.random.default_rng(int(op))
    for _ in range(20):
        d = _random_desc(op, rng)
        index = int(rng.integers(0, 2**20))
        raw = E.encode_descriptor(d, index)
        assert len(raw) == 64
        assert E.decode_descriptor(raw, index) == d
        w = struct.unpack("<16I", raw)
        assert w[15] == 0xC0DE << 16 | (index & 0xFFFF)
        assert w[0] & 0xFF == int(op)


def test_descriptor_known_image():
    """Word-by-word against the documented layout, worked out by hand."""
    d = E.Descriptor(
        E.Op.DEFORM_SQUARE,
        E.View(0x1000, 8, 6, 32, 32, 192),
        E.View(0x2000, 4, 3, 32, 48, 144),
        relu=True,
        in_signed=True,
        stride=2,
        shift=17,
        max_dilation=8,
        side_addr=0x3000,
        side_ps=1,
        side_rs=3,
        weight_addr=0x4000,
        param_addr=0x5000,
    )
    w = struct.unpack("<16I", E.encode_descriptor(d, 3))
    assert w[0] == 4 | 1 << 8 | 1 << 10 | 1 << 11 | 17 << 13
    assert w[1] == 8
    assert w[2:6] == (0x1000, 8 | 6 << 16, 32 | 32 << 16, 192)
    assert w[6:10] == (0x2000, 4 | 3 << 16, 32 | 48 << 16, 144)
    assert w[10:15] == (0x3000, 1, 3, 0x4000, 0x5000)
    assert w[15] == 0xC0DE0003


def _words(d: E.Descriptor, index: int = 0) -> list[int]:
    return list(struct.unpack("<16I", E.encode_descriptor(d, index)))


def _raw(words: list[int]) -> bytes:
    return struct.pack("<16I", *words)


GOOD_DW = E.Descriptor(
    E.Op.DWCONV3X3, E.View.dense(0, 10, 12, 20), E.View.dense(4096, 5, 6, 20), stride=2, shift=8, weight_addr=64, param_addr=128
)


def test_decode_errors_carry_codes():
    w = _words(GOOD_DW, 7)
    assert E.check_descriptor(_raw(w), TINY, 7)[0] == E.ErrorCode.NONE
    assert E.check_descriptor(_raw(w), TINY, 8)[0] == E.ErrorCode.BAD_MAGIC  # wrong sequence number
    bad = list(w)
    bad[15] ^= 1 << 20
    assert E.check_descriptor(_raw(bad), TINY, 7)[0] == E.ErrorCode.BAD_MAGIC
    bad = list(w)
    bad[0] = (bad[0] & ~0xFF) | 99
    with pytest.raises(E.DescriptorError) as ei:
        E.decode_descriptor(_raw(bad), 7)
    assert ei.value.code == E.ErrorCode.BAD_OP and ei.value.field == "op"
    bad = list(w)
    bad[0] |= 1 << 31  # reserved
    assert E.check_descriptor(_raw(bad), TINY, 7)[:2] == (E.ErrorCode.BAD_FIELD, "word0")
    bad = list(w)
    bad[11] = 5  # side_ps: DWCONV3X3 reads no side tensor
    assert E.check_descriptor(_raw(bad), TINY, 7)[:2] == (E.ErrorCode.BAD_FIELD, "side_ps")
    bad = list(w)
    bad[0] = (bad[0] & ~(3 << 11)) | (2 << 11)  # stride 4 is only for CONV3X3
    assert E.check_descriptor(_raw(bad), TINY, 7)[:2] == (E.ErrorCode.BAD_FIELD, "stride")
    bad = list(w)
    bad[0] |= 3 << 11  # no stride code 3
    assert E.check_descriptor(_raw(bad), TINY, 7)[:2] == (E.ErrorCode.BAD_FIELD, "stride")
    with pytest.raises(E.DescriptorError, match="64 bytes"):
        E.decode_descriptor(b"\0" * 63, 0)
    # an all-zero image (memory never written) is refused, never run
    assert E.check_descriptor(bytes(64), TINY, 0)[0] == E.ErrorCode.BAD_MAGIC


def test_encode_refuses_unrepresentable():
    with pytest.raises(E.DescriptorError, match="stride"):
        E.encode_descriptor(E.Descriptor(E.Op.CONV3X3, stride=3), 0)
    with pytest.raises(E.DescriptorError, match="in_h"):
        E.encode_descriptor(E.Descriptor(E.Op.COPY, E.View(0, 2**16, 1, 1, 1, 1)), 0)
    with pytest.raises(E.DescriptorError, match="shift"):
        E.encode_descriptor(E.Descriptor(E.Op.CONV1X1, shift=64), 0)


def _replace(d: E.Descriptor, **kw) -> E.Descriptor:
    from dataclasses import replace

    return replace(d, **kw)


@pytest.mark.parametrize(
    "desc, code, field",
    [
        (GOOD_DW, E.ErrorCode.NONE, None),
        (_replace(GOOD_DW, shift=48), E.ErrorCode.BAD_FIELD, "shift"),
        (_replace(GOOD_DW, inp=E.View(0, 10, 12, 20, 19, 240)), E.ErrorCode.BAD_VIEW, "in_ps"),
        (_replace(GOOD_DW, inp=E.View(0, 10, 12, 20, 20, 239)), E.ErrorCode.BAD_VIEW, "in_rs"),
        (_replace(GOOD_DW, out=E.View(4096, 0, 6, 20, 20, 120)), E.ErrorCode.BAD_VIEW, "out_h"),
        (_replace(GOOD_DW, out=E.View.dense(4096, 5, 5, 20)), E.ErrorCode.BAD_SHAPE, "out_h"),
        (_replace(GOOD_DW, out=E.View.dense(4096, 5, 6, 21)), E.ErrorCode.BAD_SHAPE, "out_c"),
        (_replace(GOOD_DW, stride=1, out=E.View.dense(4096, 10, 12, 20)), E.ErrorCode.NONE, None),
        (_replace(GOOD_DW, inp=E.View.dense(0, 10, 40, 20), out=E.View.dense(4096, 5, 20, 20)), E.ErrorCode.LIMIT, "in_w"),
        (_replace(GOOD_DW, inp=E.View.dense(0, 10, 12, 65), out=E.View.dense(4096, 5, 6, 65)), E.ErrorCode.LIMIT, "in_c"),
        (
            E.Descriptor(E.Op.DEFORM_SQUARE, GOOD_DW.inp, GOOD_DW.out, stride=2, max_dilation=4, side_ps=1, side_rs=6),
            E.ErrorCode.LIMIT,
            "max_dilation",
        ),
        (
            E.Descriptor(E.Op.DEFORM_SQUARE, GOOD_DW.inp, GOOD_DW.out, stride=2, max_dilation=0, side_ps=1, side_rs=6),
            E.ErrorCode.BAD_FIELD,
            "max_dilation",
        ),
        (
            E.Descriptor(E.Op.DEFORM_SQUARE, GOOD_DW.inp, GOOD_DW.out, stride=2, max_dilation=3, side_ps=2, side_rs=12),
            E.ErrorCode.BAD_VIEW,
            "side_ps",
        ),
        (
            E.Descriptor(E.Op.DEFORM_SQUARE, GOOD_DW.inp, GOOD_DW.out, stride=2, max_dilation=3, side_ps=1, side_rs=5),
            E.ErrorCode.BAD_VIEW,
            "side_rs",
        ),
        (
            E.Descriptor(E.Op.DEFORM_SQUARE, GOOD_DW.inp, GOOD_DW.out, stride=2, max_dilation=3, side_ps=1, side_rs=6),
            E.ErrorCode.NONE,
            None,
        ),
        (
            E.Descriptor(E.Op.DEFORM_OFFSETS, GOOD_DW.inp, GOOD_DW.out, stride=2, max_offset=2, side_ps=18, side_rs=108),
            E.ErrorCode.LIMIT,
            "max_offset",
        ),
        (
            E.Descriptor(E.Op.DEFORM_OFFSETS, GOOD_DW.inp, GOOD_DW.out, stride=2, max_offset=1, side_ps=17, side_rs=108),
            E.ErrorCode.BAD_VIEW,
            "side_ps",
        ),
        (E.Descriptor(E.Op.CONV1X1, E.View.dense(0, 4, 4, 64), E.View.dense(0, 4, 4, 64)), E.ErrorCode.NONE, None),
        (E.Descriptor(E.Op.CONV1X1, E.View.dense(0, 4, 4, 64), E.View.dense(0, 4, 4, 32), w8=True), E.ErrorCode.NONE, None),
        (E.Descriptor(E.Op.CONV1X1, E.View.dense(0, 4, 4, 64), E.View.dense(0, 4, 4, 2)), E.ErrorCode.NONE, None),
        (E.Descriptor(E.Op.CONV1X1, E.View.dense(0, 4, 4, 3), E.View.dense(0, 4, 5, 8)), E.ErrorCode.BAD_SHAPE, "out_h"),
        (E.Descriptor(E.Op.CONV3X3, E.View.dense(0, 9, 9, 3), E.View.dense(0, 3, 3, 8), stride=4), E.ErrorCode.NONE, None),
        (E.Descriptor(E.Op.CONV3X3, E.View.dense(0, 9, 9, 9), E.View.dense(0, 3, 3, 8), stride=4), E.ErrorCode.LIMIT, "in_c"),
        (E.Descriptor(E.Op.MAXPOOL3X3, E.View.dense(0, 5, 5, 3), E.View.dense(0, 3, 3, 3), stride=2), E.ErrorCode.NONE, None),
        (E.Descriptor(E.Op.UPSAMPLE2X, E.View.dense(0, 5, 5, 3), E.View.dense(0, 10, 10, 3)), E.ErrorCode.NONE, None),
        (E.Descriptor(E.Op.UPSAMPLE2X, E.View.dense(0, 5, 5, 3), E.View.dense(0, 10, 9, 3)), E.ErrorCode.BAD_SHAPE, "out_h"),
        (E.Descriptor(E.Op.COPY, E.View.dense(0, 5, 5, 3), E.View(99, 5, 5, 3, 7, 35)), E.ErrorCode.NONE, None),
        (E.Descriptor(E.Op.END), E.ErrorCode.NONE, None),
    ],
)
def test_check_descriptor_codes(desc, code, field):
    got = E.check_descriptor(desc, TINY, 2)
    assert got[:2] == (code, field), got
    raw = E.encode_descriptor(desc, 2)
    assert E.check_descriptor(raw, TINY, 2)[:2] == (code, field)
    if code == E.ErrorCode.NONE:
        assert E.validate_descriptor(desc, TINY, 2) == desc
    else:
        with pytest.raises(E.DescriptorError) as ei:
            E.validate_descriptor(raw, TINY, 2)
        assert ei.value.code == code and ei.value.field == field


def test_weight_buffer_limit():
    # tiny: L = 8, wbuf 64 words. 64 -> 64 channels at 4 bits: 8 x 8 = 64 words (fits), at 8 bits 128 (does not).
    d = E.Descriptor(E.Op.CONV1X1, E.View.dense(0, 2, 2, 64), E.View.dense(0, 2, 2, 64))
    assert E.weight_words(d, TINY) == 64
    assert E.check_descriptor(d, TINY)[0] == E.ErrorCode.NONE
    assert E.check_descriptor(_replace(d, w8=True), TINY)[:2] == (E.ErrorCode.LIMIT, "out_c")
    assert E.check_descriptor(_replace(d, w8=True, out=E.View.dense(0, 2, 2, 32)), TINY)[0] == E.ErrorCode.NONE


def test_view_helpers():
    v = E.View.dense(100, 3, 4, 6)
    s = v.slice_channels(2, 3)
    a = s.element_addresses()
    assert a.shape == (3, 4, 3)
    assert a[1, 2, 0] == 100 + 1 * 24 + 2 * 6 + 2
    assert s.extent() == (102, 100 + 2 * 24 + 3 * 6 + 2 + 3)
    with pytest.raises(ValueError):
        v.slice_channels(5, 2)


def test_program_is_concatenated_images():
    descs = [GOOD_DW, E.Descriptor(E.Op.END)]
    prog = E.encode_program(descs)
    assert len(prog) == 128
    assert [E.decode_descriptor(prog[64 * k : 64 * k + 64], k) for k in range(2)] == descs


# --------------------------------------------------------------------------- weight and parameter images


def _nibbles(image: np.ndarray) -> np.ndarray:
    return intmath.unpack_int4(image, 2 * image.size).astype(np.int64)


@pytest.mark.parametrize("cfg", [L4, TINY], ids=lambda c: c.name)
def test_pack_conv1x1_w4_order(cfg):
    L = cfg.lanes
    rng = np.random.default_rng(1)
    oc, ic = 2 * L + 3, L + 5
    w = rng.integers(-8, 8, size=(oc, 1, 1, ic))
    img = E.pack_weights(E.Op.CONV1X1, w, cfg, 4)
    octs, icts = -(-oc // L), -(-ic // L)
    d = E.Descriptor(E.Op.CONV1X1, E.View.dense(0, 1, 1, ic), E.View.dense(0, 1, 1, oc))
    assert img.size == E.weight_bytes(d, cfg) == octs * icts * L * L // 2
    nib = _nibbles(img)
    for u in range(octs):
        for t in range(icts):
            for o in range(L):
                for i in range(L):
                    want = w[u * L + o, 0, 0, t * L + i] if u * L + o < oc and t * L + i < ic else 0
                    assert nib[((u * icts + t) * L + o) * L + i] == want


def test_pack_conv1x1_w4_bytes_by_hand():
    # L = 4, OC = 1, IC = 3: word 0 holds lane o=0: [1, -2, 7, pad 0], lanes 1..3 zero.
    img = E.pack_weights(E.Op.CONV1X1, np.array([[1, -2, 7]]), L4, 4)
    assert img.tolist() == [0xE1, 0x07, 0, 0, 0, 0, 0, 0]


def test_pack_conv1x1_w8_order_and_arithmetic():
    """8-bit weights: lane 2o holds the low nibble (read unsigned), lane 2o+1 the high nibble
    (signed); w = 16*hi + lo. A model of the array built on that reading reproduces golden."""
    cfg = TINY
    L = cfg.lanes
    rng = np.random.default_rng(2)
    oc, ic = 11, 13
    w = rng.integers(-128, 128, size=(oc, 1, 1, ic))
    w[0, 0, 0, :2] = [-128, 127]
    img = E.pack_weights(E.Op.CONV1X1, w, cfg, 8)
    octs, icts = -(-oc // L), -(-ic // L)
    assert img.size == octs * icts * 2 * L * L // 2
    nib = _nibbles(img).reshape(octs, icts, 2, L, L)
    lo = nib[:, :, :, 0::2, :] & 0xF
    hi = nib[:, :, :, 1::2, :]
    wrec = 16 * hi + lo  # (u, t, h, o, i)
    full = wrec.transpose(0, 2, 3, 1, 4).reshape(octs * L, icts * L)
    assert np.array_equal(full[:oc, :ic], w[:, 0, 0, :])
    assert not full[oc:].any() and not full[:, ic:].any()
    x = rng.integers(0, 256, size=(1, 3, 2, ic))
    acc = np.einsum("nhwi,oi->nhwo", np.pad(x, ((0, 0), (0, 0), (0, 0), (0, icts * L - ic))), full)[..., :oc]
    assert np.array_equal(acc, golden.conv2d(x, w))


def test_pack_conv3x3_im2col_order():
    cfg = TINY
    L = cfg.lanes
    rng = np.random.default_rng(3)
    oc, ic = 5, 3
    slot = E.im2col_slot(ic)
    assert slot == 4 and E.im2col_slot(1) == 1 and E.im2col_slot(8) == 8 and E.im2col_slot(5) == 8
    w = rng.integers(-128, 128, size=(oc, 3, 3, ic))
    img = E.pack_weights(E.Op.CONV3X3, w, cfg, 8)
    k = 9 * slot
    icts = -(-k // L)
    nib = _nibbles(img).reshape(1, icts, 2, L, L)
    full = (16 * nib[:, :, :, 1::2, :] + (nib[:, :, :, 0::2, :] & 0xF)).transpose(0, 2, 3, 1, 4).reshape(L, icts * L)
    for o in range(oc):
        for q in range(icts * L):
            tap, c = divmod(q, slot)
            want = w[o, tap // 3, tap % 3, c] if q < k and c < ic else 0
            assert full[o, q] == want


@pytest.mark.parametrize("w_bits", [4, 8])
def test_pack_depthwise_order(w_bits):
    cfg = TINY
    L = cfg.lanes
    rng = np.random.default_rng(4)
    c = L + 3
    lo, hi = intmath.weight_range(w_bits)
    w = rng.integers(lo, hi + 1, size=(c, 3, 3))
    img = E.pack_weights(E.Op.DWCONV3X3, w, cfg, w_bits)
    per_group = (9 if w_bits == 8 else 5) * L
    d = E.Descriptor(E.Op.DWCONV3X3, E.View.dense(0, 1, 1, c), E.View.dense(0, 1, 1, c), w8=w_bits == 8)
    assert img.size == 2 * per_group == E.weight_bytes(d, cfg)
    for g in range(2):
        part = img[g * per_group : (g + 1) * per_group]
        vals = part.view(np.int8).astype(np.int64) if w_bits == 8 else _nibbles(part)
        for t in range(9):
            for lane in range(L):
                ch = g * L + lane
                want = w[ch, t // 3, t % 3] if ch < c else 0
                assert vals[t * L + lane] == want
        if w_bits == 4:
            assert not vals[9 * L :].any()


def test_pack_weights_refuses_bad_input():
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        E.pack_weights(E.Op.CONV1X1, np.array([[8]]), TINY, 4)
    with pytest.raises(ValueError, match="at most"):
        E.pack_weights(E.Op.CONV3X3, np.zeros((2, 3, 3, 9), np.int8), TINY, 8)
    with pytest.raises(ValueError, match="no weights"):
        E.pack_weights(E.Op.MAXPOOL3X3, np.zeros((2, 3, 3), np.int8), TINY)
    with pytest.raises(ValueError, match="integers"):
        E.pack_weights(E.Op.CONV1X1, np.zeros((2, 3)), TINY)


def test_pack_params_layout():
    cfg = L4
    bias = np.array([1, -2, 2**31 - 1, -(2**31), 7])
    mult = np.array([0, 65535, 3, 4, 5])
    img = E.pack_params(bias, mult, cfg).tobytes()
    assert len(img) == 2 * 6 * 4
    assert struct.unpack("<4i4H", img[:24]) == (1, -2, 2**31 - 1, -(2**31), 0, 65535, 3, 4)
    assert struct.unpack("<4i4H", img[24:]) == (7, 0, 0, 0, 5, 0, 0, 0)
    with pytest.raises(ValueError):
        E.pack_params([2**31], [0], cfg)
    with pytest.raises(ValueError):
        E.pack_params([0], [70000], cfg)


def test_estimate_cycles_formulas():
    d = E.Descriptor(E.Op.CONV1X1, E.View.dense(0, 64, 64, 256), E.View.dense(0, 64, 64, 256))
    est = E.estimate_cycles(d, U96)
    assert est["compute"] == 64 * 64 * 16 * 16
    dd = E.Descriptor(E.Op.DEFORM_SQUARE, E.View.dense(0, 64, 64, 256), E.View.dense(0, 64, 64, 256), max_dilation=8, side_ps=1, side_rs=64)
    assert E.estimate_cycles(dd, U96)["compute"] == 16 * 64 * 64
