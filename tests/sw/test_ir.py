"""The .cnir contract: round trips, and a clear error for every class of bad file."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from codenet.sw import golden, ir, zoo
from codenet.sw.builder import GraphBuilder


def all_ops_graph(seed: int = 0) -> ir.Graph:
    """A small graph that uses every op of the contract at least once."""
    b = GraphBuilder("all-ops", seed)
    x = b.input("image", (16, 12, 3))
    x = b.conv(x, 8, 3, 2, 1, w_bits=8, name="stem")
    x = b.maxpool(x, 3, 2, 1, name="pool")
    a, c = b.split(x, [4, 4], name="split")
    c = b.conv(c, 4, 1, name="pw", out_scale=b.scale(a))
    x = b.shuffle(b.concat([a, c], name="cat"), 2, name="shuffle")
    v = b.dilation_map(x, 4, name="vmap")
    x = b.deform(x, v, max_dilation=4, name="deform")
    off = b.offset_map(x, 2, name="offmap")
    x = b.deform_offsets(x, off, max_offset=2, relu=True, name="deform_off")
    x = b.conv(x, 6, (1, 3), 1, (0, 1), groups=2, relu=False, name="grouped")
    y = b.upsample(x, name="up")
    return b.finish([y, v], {"classes": ["a", "b"], "note": "test"})


def graphs_equal(a: ir.Graph, b: ir.Graph) -> None:
    assert (a.name, a.inputs, a.outputs, a.metadata) == (b.name, b.inputs, b.outputs, b.metadata)
    assert a.tensors == b.tensors
    assert len(a.nodes) == len(b.nodes)
    for na, nb in zip(a.nodes, b.nodes):
        assert (na.name, na.op, na.inputs, na.outputs) == (nb.name, nb.op, nb.inputs, nb.outputs)
        assert {k: list(v) if isinstance(v, tuple) else v for k, v in na.attrs.items()} == nb.attrs
        assert set(na.arrays) == set(nb.arrays)
        for k in na.arrays:
            assert na.arrays[k].dtype == nb.arrays[k].dtype
            assert np.array_equal(na.arrays[k], nb.arrays[k])


@pytest.mark.parametrize("make", [all_ops_graph, lambda: zoo.build("codenet-tiny", seed=3)], ids=["all-ops", "tiny"])
def test_round_trip_preserves_graph_and_results(tmp_path, make):
    g = make()
    path = ir.save(g, tmp_path / "m.cnir")
    back = ir.load(path)
    graphs_equal(g, back)
    x = np.random.default_rng(1).integers(0, 256, size=(2, *g.tensors["image"].shape)).astype(np.uint8)
    ref, got = golden.run(g, x), golden.run(back, x)
    assert set(ref) == set(g.outputs)
    for k in ref:
        assert np.array_equal(ref[k], got[k])


def test_round_trip_is_byte_stable(tmp_path):
    """Saving a loaded graph again must not drift (same members, same content)."""
    g = all_ops_graph()
    p1 = ir.save(g, tmp_path / "a.cnir")
    p2 = ir.save(ir.load(p1), tmp_path / "b.cnir")
    with zipfile.ZipFile(p1) as z1, zipfile.ZipFile(p2) as z2:
        assert z1.namelist() == z2.namelist()
        for n in z1.namelist():
            assert z1.read(n) == z2.read(n)


# ----------------------------------------------------------------------------- bad files


def rewrite(src: Path, dst: Path, doc_edit=None, members: dict[str, bytes | None] | None = None) -> Path:
    """Copy a .cnir, editing graph.json and replacing (or, with None, dropping) members."""
    with zipfile.ZipFile(src) as z:
        items = {n: z.read(n) for n in z.namelist()}
    if doc_edit is not None:
        doc = json.loads(items["graph.json"])
        doc_edit(doc)
        items["graph.json"] = json.dumps(doc).encode()
    for name, data in (members or {}).items():
        if data is None:
            items.pop(name, None)
        else:
            items[name] = data
    with zipfile.ZipFile(dst, "w") as z:
        for n, data in items.items():
            z.writestr(n, data)
    return dst


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return ir.save(all_ops_graph(), tmp_path_factory.mktemp("cnir") / "good.cnir")


def node_doc(doc: dict, name: str) -> dict:
    return next(n for n in doc["nodes"] if n["name"] == name)


def member_of(good: Path, node: str, fld: str) -> str:
    with zipfile.ZipFile(good) as z:
        doc = json.loads(z.read("graph.json"))
    return node_doc(doc, node)["arrays"][fld]["member"]


def expect_error(path: Path, *needles: str, node: str | None = None, field: str | None = None) -> ir.CnirError:
    with pytest.raises(ir.CnirError) as info:
        ir.load(path)
    err = info.value
    msg = str(err)
    assert path.name in msg, msg
    for needle in needles:
        assert needle in msg, msg
    if node is not None:
        assert err.node == node and repr(node) in msg, msg
    if field is not None:
        assert err.field == field and repr(field) in msg, msg
    return err


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.cnir", "no such file")


def test_not_a_zip(tmp_path):
    p = tmp_path / "junk.cnir"
    p.write_bytes(b"this is not a zip archive" * 10)
    expect_error(p, "not a .cnir archive")


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_file(tmp_path, good, fraction):
    data = good.read_bytes()
    p = tmp_path / "cut.cnir"
    p.write_bytes(data[: int(len(data) * fraction)])
    expect_error(p)


def test_corrupted_array_member_names_node_and_field(tmp_path, good):
    member = member_of(good, "pw", "weight")
    with zipfile.ZipFile(good) as z:
        info = z.getinfo(member)
    data = bytearray(good.read_bytes())
    # local header: 30 bytes + name + extra; flip bytes inside the compressed payload
    name_len = int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    for k in range(min(8, info.compress_size)):
        data[start + k] ^= 0xFF
    p = tmp_path / "corrupt.cnir"
    p.write_bytes(bytes(data))
    expect_error(p, "corrupt", node="pw", field="weight")


def test_missing_graph_json(tmp_path, good):
    expect_error(rewrite(good, tmp_path / "m.cnir", members={"graph.json": None}), "no graph.json")


def test_graph_json_not_json(tmp_path, good):
    expect_error(rewrite(good, tmp_path / "m.cnir", members={"graph.json": b"{not json"}), "not valid JSON")


def test_newer_version_refused(tmp_path, good):
    p = rewrite(good, tmp_path / "v.cnir", lambda d: d.update(version=ir.VERSION + 1))
    expect_error(p, f"version {ir.VERSION + 1}", "upgrade", field="version")


@pytest.mark.parametrize("bad", [0, -1, "1", None, 1.5, True])
def test_invalid_version(tmp_path, good, bad):
    expect_error(rewrite(good, tmp_path / "v.cnir", lambda d: d.update(version=bad)), field="version")


def test_wrong_format_tag(tmp_path, good):
    expect_error(rewrite(good, tmp_path / "f.cnir", lambda d: d.update(format="onnx")), "not a codenet", field="format")


def test_out_of_range_int4_weight(tmp_path, good):
    member = member_of(good, "pw", "weight")
    with zipfile.ZipFile(good) as z:
        w = np.load(io.BytesIO(z.read(member)))
    w = w.copy()
    w.flat[3] = 9  # int4 holds -8..7
    p = rewrite(good, tmp_path / "w.cnir", members={member: npy_bytes(w)})
    expect_error(p, "4-bit range", node="pw", field="weight")


def test_array_dtype_mismatch(tmp_path, good):
    member = member_of(good, "pw", "weight")
    with zipfile.ZipFile(good) as z:
        w = np.load(io.BytesIO(z.read(member)))

    def edit(doc):
        node_doc(doc, "pw")["arrays"]["weight"]["dtype"] = "int16"

    p = rewrite(good, tmp_path / "d.cnir", edit, members={member: npy_bytes(w.astype(np.int16))})
    expect_error(p, "int8", node="pw", field="weight")


def test_array_disagrees_with_header(tmp_path, good):
    member = member_of(good, "pw", "bias")
    p = rewrite(good, tmp_path / "h.cnir", members={member: npy_bytes(np.zeros(3, np.int32))})
    expect_error(p, "graph.json says", node="pw", field="bias")


def test_pickled_array_refused(tmp_path, good):
    member = member_of(good, "pw", "bias")
    buf = io.BytesIO()
    np.save(buf, np.array([object()] * 4, dtype=object), allow_pickle=True)
    expect_error(rewrite(good, tmp_path / "p.cnir", members={member: buf.getvalue()}), node="pw", field="bias")


def test_missing_array_member(tmp_path, good):
    member = member_of(good, "deform", "mult")
    expect_error(rewrite(good, tmp_path / "m.cnir", members={member: None}), "missing", node="deform", field="mult")


def test_weight_shape_mismatch(tmp_path, good):
    member = member_of(good, "pw", "weight")
    w = np.zeros((4, 1, 1, 3), np.int8)  # input has 4 channels

    def edit(doc):
        node_doc(doc, "pw")["arrays"]["weight"]["shape"] = [4, 1, 1, 3]

    expect_error(rewrite(good, tmp_path / "s.cnir", edit, members={member: npy_bytes(w)}), node="pw", field="weight")


def test_declared_shape_mismatch(tmp_path, good):
    def edit(doc):
        next(t for t in doc["tensors"] if t["name"] == "pool")["shape"] = [5, 3, 8]

    expect_error(rewrite(good, tmp_path / "s.cnir", edit), "produces", node="pool", field="outputs")


def test_concat_scale_mismatch(tmp_path, good):
    def edit(doc):
        t = next(t for t in doc["tensors"] if t["name"] == "pw")
        t["scale"] *= 1.5

    expect_error(rewrite(good, tmp_path / "c.cnir", edit), "share one scale", node="cat", field="inputs")


def test_requant_parameters_out_of_range(tmp_path, good):
    member = member_of(good, "pw", "mult")
    with zipfile.ZipFile(good) as z:
        m = np.load(io.BytesIO(z.read(member))).copy()
    m[0] = 1 << 20
    expect_error(rewrite(good, tmp_path / "m.cnir", members={member: npy_bytes(m)}), node="pw", field="mult")
    p = rewrite(good, tmp_path / "s.cnir", lambda d: node_doc(d, "pw")["attrs"].update(shift=99))
    expect_error(p, node="pw", field="shift")


def test_accumulator_overflow_refused():
    """A layer whose worst case does not fit int32 is outside the contract."""
    b = GraphBuilder("wide", 0)
    x = b.input("image", (2, 2, 3))
    b.conv(x, 2, 1, name="c")
    g = b.finish(["c"])
    node = g.node("c")
    node.arrays["bias"] = np.full(2, 2**31 - 100, np.int32)
    with pytest.raises(ir.CnirError, match="int32") as info:
        g.validate()
    assert info.value.node == "c"


def test_unknown_op_and_missing_attr(tmp_path, good):
    expect_error(rewrite(good, tmp_path / "o.cnir", lambda d: node_doc(d, "up").update(op="resize")), "unknown op", node="up", field="op")
    p = rewrite(good, tmp_path / "a.cnir", lambda d: node_doc(d, "shuffle")["attrs"].pop("groups"))
    expect_error(p, "missing", node="shuffle", field="groups")


def test_nodes_out_of_order(tmp_path, good):
    def edit(doc):
        doc["nodes"][0], doc["nodes"][1] = doc["nodes"][1], doc["nodes"][0]

    expect_error(rewrite(good, tmp_path / "o.cnir", edit), "before any node produces it", node="pool", field="inputs")


def test_duplicate_node_name(tmp_path, good):
    expect_error(rewrite(good, tmp_path / "d.cnir", lambda d: d["nodes"][1].update(name="stem")), "twice", node="stem")


def test_missing_graph_output(tmp_path, good):
    expect_error(rewrite(good, tmp_path / "g.cnir", lambda d: d["outputs"].append("ghost")), "ghost", field="outputs")


def test_bad_metadata_type(tmp_path, good):
    expect_error(rewrite(good, tmp_path / "m.cnir", lambda d: d.update(metadata=[1, 2])), field="metadata")


def test_deform_side_input_checked(tmp_path, good):
    def edit(doc):
        next(t for t in doc["tensors"] if t["name"] == "vmap")["dtype"] = "int8"

    # the producer (a ReLU conv) and the consumer both object; the producer comes first
    expect_error(rewrite(good, tmp_path / "v.cnir", edit), node="vmap", field="outputs")


# ----------------------------------------------------------------------------- fuzzing


def _mutations(doc: dict, rng: np.random.Generator):
    """Yield (path, container, key) of every JSON leaf and container in `doc`."""
    stack = [((), doc)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, dict):
            for k, c in v.items():
                yield path + (k,), v, k
                stack.append((path + (k,), c))
        elif isinstance(v, list):
            for k, c in enumerate(v):
                yield path + (k,), v, k
                stack.append((path + (k,), c))


_JUNK = [None, -1, 0, 3.5, "x", [], {}, [1, "a"], True, 10**30, float("nan")]


@pytest.mark.parametrize("seed", range(300))
def test_fuzzed_graph_json_never_escapes_as_another_exception(tmp_path, good, seed):
    """Any mutation of graph.json either loads as a valid graph or raises CnirError."""
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(good) as z:
        doc = json.loads(z.read("graph.json"))
    sites = list(_mutations(doc, rng))
    for _ in range(1 + seed % 3):
        _, container, key = sites[rng.integers(len(sites))]
        junk = _JUNK[rng.integers(len(_JUNK))]
        if isinstance(container, dict) and rng.random() < 0.2:
            container.pop(key, None)
        else:
            container[key] = junk
        sites = list(_mutations(doc, rng))
    p = tmp_path / "fuzz.cnir"
    with zipfile.ZipFile(good) as z, zipfile.ZipFile(p, "w") as out:
        for n in z.namelist():
            out.writestr(n, json.dumps(doc) if n == "graph.json" else z.read(n))
    try:
        g = ir.load(p)
    except ir.CnirError as e:
        assert "fuzz.cnir" in str(e)
    else:
        g.validate()


@pytest.mark.parametrize("seed", range(150))
def test_fuzzed_bytes_never_escape_as_another_exception(tmp_path, good, seed):
    rng = np.random.default_rng(seed)
    data = bytearray(good.read_bytes())
    for pos in rng.integers(0, len(data), size=1 + seed % 5):
        data[pos] = int(rng.integers(256))
    p = tmp_path / "fuzz.cnir"
    p.write_bytes(bytes(data))
    try:
        ir.load(p)
    except ir.CnirError:
        pass


# ----------------------------------------------------------------------------- saving


def test_save_is_atomic(tmp_path, monkeypatch):
    """A crash while writing leaves the previous file intact and no temporary behind."""
    g = all_ops_graph()
    target = ir.save(g, tmp_path / "m.cnir")
    before = target.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", boom)
    with pytest.raises(OSError, match="disk full"):
        ir.save(zoo.build("codenet-tiny"), target)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.cnir"]


def test_save_refuses_invalid_graph(tmp_path):
    g = all_ops_graph()
    g.node("pw").arrays["weight"][0, 0, 0, 0] = -9
    with pytest.raises(ir.CnirError, match="4-bit") as info:
        ir.save(g, tmp_path / "bad.cnir")
    assert info.value.node == "pw"
    assert not (tmp_path / "bad.cnir").exists()


def test_macs_and_params_count_what_papers_count():
    b = GraphBuilder("count", 0)
    x = b.input("image", (8, 8, 4))
    y = b.conv(x, 6, 3, 1, 1, name="c")  # 8*8*6 outputs * 3*3*4 MACs
    v = b.dilation_map(y, 4, name="v")  # 8*8*1 * 6
    b.deform(y, v, max_dilation=4, name="d")  # 8*8*6 * 9
    g = b.finish(["d"])
    assert g.macs() == {"c": 8 * 8 * 6 * 36, "v": 8 * 8 * 6, "d": 8 * 8 * 6 * 9}
    assert g.param_count() == (6 * 36 + 6) + (6 + 1) + (6 * 9 + 6)


def test_empty_kernel_refused():
    g = all_ops_graph()
    g.node("pw").arrays["weight"] = np.zeros((4, 0, 1, 4), np.int8)
    with pytest.raises(ir.CnirError, match="at least 1") as info:
        g.validate()
    assert (info.value.node, info.value.field) == ("pw", "weight")


def test_side_map_must_hold_raw_integers(tmp_path, good):
    """A dilation map with a scale other than 1.0 would mean something the op ignores."""

    def edit(doc):
        next(t for t in doc["tensors"] if t["name"] == "vmap")["scale"] = 0.5

    expect_error(rewrite(good, tmp_path / "v.cnir", edit), "scale 1.0", node="deform", field="inputs")


def test_duplicate_graph_outputs(tmp_path, good):
    expect_error(rewrite(good, tmp_path / "d.cnir", lambda d: d["outputs"].append(d["outputs"][0])), "twice", field="outputs")
