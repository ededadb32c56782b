"""codenet.quant.export: the integer graph of a QAT model, checked against the zoo and the golden executor.

The zoo (`codenet.sw.zoo.build`) fixes the topology; the golden executor on the exported
`.cnir` must reproduce the Brevitas model: bit for bit in float64 (the design of
`codenet.quant.qlayers` makes every requantization exact), and within 1 LSB on >= 99.9 % of
the elements in float32. QONNX (``dw`` decoders only) is executed with the qonnx package.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from codenet.quant.export import ExportError, compare_golden, export_cnir, export_qonnx, images_to_nhwc
from codenet.quant.models import CoDeNet, build_model, quantize
from codenet.quant.qlayers import calibrate, set_integer_path
from codenet.sw import golden, ir, zoo
from codenet.sw.zoo import arch

SIZE = 64
KINDS = ("square", "bounded", "dw")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add synchronisation (see test_models.py)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_images(n: int, seed: int, size: int = SIZE) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g).float()


def structured_images(size: int = SIZE) -> torch.Tensor:
    """Flat black and white, ramps, a checkerboard and stripes: saturation, edges, periodicity."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    planes = [
        torch.zeros(size, size),
        torch.full((size, size), 255.0),
        (x * 255 // (size - 1)).float(),
        (((x // 4 + y // 4) % 2) * 255).float(),
    ]
    imgs = [torch.stack([p, p.flip(0), 255 - p]) for p in planes]
    imgs.append(torch.stack([((x % 8) < 3).float() * 255, (y * 4 % 256).float(), ((x + y) % 256).float()]))
    return torch.stack(imgs)


def qat_model(kind: str, seed: int = 0) -> CoDeNet:
    """A calibrated, briefly QAT-trained tiny model whose BN statistics and offsets are non-trivial."""
    torch.manual_seed(seed)
    x = random_images(2, seed)
    model = build_model("codenet-tiny", kind, input_size=SIZE)
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = 0.5 + torch.rand(m.weight.shape, generator=g)
            m.bias.data = 0.1 + 0.2 * torch.randn(m.bias.shape, generator=g)
            m.momentum = None
    for head in model.head.values():  # trained heads have spread weights; the fresh init (std 0.001) gives flat outputs
        torch.nn.init.kaiming_normal_(head.out.conv.weight, generator=g)
    if kind != "dw":
        for dec in model.decoders:  # predict varied dilations / offsets, not the d = 1 of a fresh model
            dec.offset.conv.weight.data = 0.05 * torch.randn(dec.offset.conv.weight.shape, generator=g)
            dec.offset.conv.bias.data.fill_(2.0 if kind == "square" else 0.0)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
    q = quantize(model.eval())
    calibrate(q, [x[:1], x[1:]])
    q.train()
    opt = torch.optim.SGD(q.parameters(), lr=1e-3, momentum=0.9)
    for _ in range(2):  # a few QAT steps move weights and the learned power-of-two scales
        out = q(x)
        loss = sum(v.square().mean() for v in out.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return q.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """kind -> (qmodel, graph loaded back from its .cnir file)."""
    out = {}
    for k, kind in enumerate(KINDS):
        q = qat_model(kind, seed=k)
        path = tmp_path_factory.mktemp("cnir") / f"tiny-{kind}.cnir"
        g = export_cnir(q, None, path, classes=[f"c{i}" for i in range(5)], name=f"tiny-{kind}")
        out[kind] = (q, g, ir.load(path))
    return out


def signature(graph: ir.Graph) -> list[tuple]:
    return [(n.name, n.op, n.inputs, n.outputs, {k: v for k, v in n.attrs.items() if k != "shift"}) for n in graph.nodes]


# --------------------------------------------------------------------------- topology


@pytest.mark.parametrize("kind", KINDS)
def test_topology_equals_the_zoo(exported, kind):
    q, graph, loaded = exported[kind]
    ref = zoo.build(arch("codenet-tiny", input_size=SIZE, deform=kind))
    assert signature(graph) == signature(ref)
    assert graph.inputs == ref.inputs and graph.outputs == ref.outputs
    shapes = {k: (tuple(t.shape), t.dtype) for k, t in graph.tensors.items()}
    assert shapes == {k: (tuple(t.shape), t.dtype) for k, t in ref.tensors.items()}
    assert graph.param_count() == ref.param_count()
    # what the file gives back is what was exported
    assert signature(loaded) == signature(graph)
    for a, b in zip(loaded.nodes, graph.nodes):
        assert a.attrs == b.attrs and a.arrays.keys() == b.arrays.keys()
        for key in a.arrays:
            assert np.array_equal(a.arrays[key], b.arrays[key]) and a.arrays[key].dtype == b.arrays[key].dtype


@pytest.mark.parametrize("kind", KINDS)
def test_metadata_follows_the_zoo(exported, kind):
    _, graph, _ = exported[kind]
    ref = zoo.build(arch("codenet-tiny", input_size=SIZE, deform=kind))
    meta = graph.metadata
    assert set(ref.metadata) <= set(meta)
    for key in ("arch", "input_size", "output_stride", "heads", "decode"):
        assert meta[key] == ref.metadata[key], key
    assert meta["classes"] == [f"c{i}" for i in range(5)]
    assert meta["quant"]["requant_exact"] is True and meta["quant"]["inexact_layers"] == []
    assert graph.tensors["image"].dtype == "uint8" and graph.tensors["image"].scale == 1.0


def test_integers_and_requantization_are_consistent(exported):
    """Every multiplier is the exact ratio s_in * w_scale / s_out, weights fit their bits, biases int32."""
    _, graph, _ = exported["square"]
    for node in graph.nodes:
        if "weight" not in node.arrays:
            continue
        s_in = graph.tensors[node.inputs[0]].scale
        s_out = graph.tensors[node.outputs[0]].scale
        ratio = s_in * node.arrays["w_scale"].astype(np.float64) / s_out
        assert np.array_equal(node.arrays["mult"] / 2.0 ** node.attrs["shift"], ratio), node.name
        lo, hi = -(2 ** (node.attrs["w_bits"] - 1)) + 1, 2 ** (node.attrs["w_bits"] - 1) - 1  # narrow range
        assert node.arrays["weight"].min() >= lo and node.arrays["weight"].max() <= hi, node.name
        assert node.attrs["w_bits"] == (8 if node.name == "stem.conv" else 4)
        if node.op != "concat":
            assert np.log2(s_out) == round(np.log2(s_out)), node.name  # power-of-two activations
    offsets = [n.outputs[0] for n in graph.nodes if n.name.endswith(".offset")]
    assert len(offsets) == len(graph.metadata["arch"]["decoder_channels"])
    for name in offsets:
        assert graph.tensors[name].scale == 1.0 and graph.tensors[name].dtype == "uint8"


def test_export_at_another_input_size(exported):
    q, _, _ = exported["dw"]
    spec = arch("codenet-tiny", input_size=96, deform="dw")
    graph = export_cnir(q, spec, None)
    assert signature(graph) == signature(zoo.build(spec))
    agreement = compare_golden(q, graph, random_images(1, 7, 96))
    assert agreement.fraction_exact == 1.0


# --------------------------------------------------------------------------- golden vs Brevitas


@pytest.mark.parametrize("kind", KINDS)
def test_golden_reproduces_brevitas_bit_exactly_in_float64(exported, kind):
    q, graph, _ = exported[kind]
    images = torch.cat([random_images(2, 100), structured_images()])
    agreement = compare_golden(q, graph, images, dtype=torch.float64, all_nodes=True)
    bad = {k: v for k, v in agreement.per_tensor.items() if v["exact"] < 1.0}
    assert agreement.fraction_exact == 1.0, bad
    assert len(agreement.per_tensor) == sum(1 for n in graph.nodes if "weight" in n.arrays)

    # the comparison is not vacuous: outputs vary, and the deformable layers really deform
    env = golden.run(graph, images_to_nhwc(images), keep_all=True)
    for tname in graph.outputs:
        assert env[tname].astype(np.float64).std() > 2.0, tname
    n_dec = len(graph.metadata["arch"]["decoder_channels"])
    if kind == "square":
        codes = np.concatenate([env[f"decoder{k}.offset"].ravel() for k in range(n_dec)])
        assert len(np.unique(np.minimum(codes, 7))) >= 3  # several dilations d = 1 + min(v, 7)
    if kind == "bounded":
        offs = np.concatenate([env[f"decoder{k}.offset"].ravel() for k in range(n_dec)])
        assert (np.clip(offs, -2, 2) != 0).mean() > 0.05  # taps really move


@pytest.mark.parametrize("kind", KINDS)
def test_golden_reproduces_brevitas_within_1_lsb_in_float32(exported, kind):
    q, graph, _ = exported[kind]
    images = torch.cat([random_images(2, 200), structured_images()])
    agreement = compare_golden(q, graph, images, dtype=torch.float32, all_nodes=True)
    assert agreement.fraction_within_1 >= 0.999, agreement.per_tensor
    assert agreement.elements > 100_000


def test_plain_brevitas_arithmetic_is_exact_in_float64(exported):
    """Without the integer path (Brevitas' own float conv), float64 is still exact: the scales do it."""
    q, graph, _ = exported["square"]
    plain = set_integer_path(copy.deepcopy(q), False)
    agreement = compare_golden(plain, graph, random_images(1, 500), dtype=torch.float64, all_nodes=True)
    assert agreement.fraction_exact == 1.0


def test_a_corrupted_graph_is_detected(exported):
    """The comparison can fail: a bias one output LSB off in one layer shows up there."""
    q, graph, _ = exported["square"]
    bad = copy.deepcopy(graph)
    node = bad.node("stage3.0.b1.pw")
    delta = int(np.ceil(2.0 ** node.attrs["shift"] / max(int(node.arrays["mult"].max()), 1)))
    node.arrays["bias"] = (node.arrays["bias"].astype(np.int64) + delta).astype(np.int32)
    agreement = compare_golden(q, bad.validate(), random_images(2, 300), all_nodes=True)
    assert agreement.per_tensor["stage3.0.b1.pw"]["exact"] < 0.99


# --------------------------------------------------------------------------- refusals


def test_refuses_the_bilinear_variant():
    q = quantize(build_model("codenet-tiny", "full", input_size=SIZE))
    with pytest.raises(ExportError, match=r"'decoder0\.deform'.*'full'.*not deployable"):
        export_cnir(q, None, None)


def test_refuses_what_it_cannot_write(exported, tmp_path):
    fresh = quantize(build_model("codenet-tiny", "dw", input_size=SIZE))
    with pytest.raises(ExportError, match="calibrate"):
        export_cnir(fresh, None, tmp_path / "x.cnir")
    with pytest.raises(ExportError, match="quantized model"):
        export_cnir(build_model("codenet-tiny", "dw"), None, None)
    q, _, _ = exported["dw"]
    with pytest.raises(ExportError, match="class names"):
        export_cnir(q, None, None, classes=["a", "b"])
    with pytest.raises(ExportError, match="does not describe the model"):
        export_cnir(q, arch("codenet-tiny", input_size=SIZE, deform="square"), None)
    assert not (tmp_path / "x.cnir").exists()


# --------------------------------------------------------------------------- QONNX


def test_qonnx_refuses_deformable_decoders(exported, tmp_path):
    q, _, _ = exported["square"]
    with pytest.raises(ExportError, match=r"'decoder0\.deform'.*QONNX"):
        export_qonnx(q, tmp_path / "m.onnx")


def test_qonnx_dw_model_executes_like_brevitas(exported, tmp_path):
    pytest.importorskip("onnxoptimizer")
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("qonnx")
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    q, _, _ = exported["dw"]
    path = export_qonnx(q, tmp_path / "tiny-dw.onnx")
    proto = onnx.load(str(path))
    inits = {i.name for i in proto.graph.initializer}
    act_quants = [n for n in proto.graph.node if n.op_type == "Quant" and n.input[0] not in inits]
    modes = {onnx.helper.get_attribute_value(a) for n in act_quants for a in n.attribute if a.name == "rounding_mode"}
    assert modes == {b"HALF_UP", b"FLOOR"}  # the contract's rounding, unsigned and signed

    model = ModelWrapper(str(path)).transform(InferShapes())
    total = exact = within = 0
    for img in random_images(1, 400):  # one image: the exporter's tracing dominates the time
        res = execute_onnx(model, {"image": img[None].numpy()})
        with torch.no_grad():
            raw = q.forward_raw(img[None])
        for head in ("hm", "wh", "reg"):
            s = float(raw[head].scale)
            d = np.abs(np.round(res[head] / s) - np.round((raw[head].value / s).numpy()))
            total, exact, within = total + d.size, exact + int((d == 0).sum()), within + int((d <= 1).sum())
    assert within / total >= 0.999 and exact / total >= 0.99, (exact / total, within / total)
