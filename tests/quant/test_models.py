"""codenet.quant.models and codenet.quant.qlayers: the CoDeNet family in PyTorch, folding, quantizers.

The zoo (`codenet.sw.zoo`) is the reference for the topology and the parameter counts; the
paper's numbers (design.md § Reference numbers) bound them from outside.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantReLU

from codenet.quant.deform import KINDS
from codenet.quant.models import (
    HM_BIAS_INIT,
    CoDeNet,
    ConvBlock,
    DeformBlock,
    build_model,
    conv_blocks,
    fuse_bn,
    param_count,
    quantize,
)
from codenet.quant.qlayers import Int8ActPoT, Int8ActUnitScale, Uint8ActPoT, calibrate, is_calibrated, quant_conv
from codenet.sw import zoo
from codenet.sw.zoo import PRESETS, arch

CONV_OPS = ("conv2d", "deform_dw3x3", "deform_dw3x3_offsets")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add synchronisation, which on a shared 2-core machine
    (OpenMP spin-waiting against other processes) makes small convolutions 100x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def images(n: int, h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), generator=g).float()


def with_bn_statistics(model: CoDeNet, x: torch.Tensor, seed: int = 0) -> CoDeNet:
    """Random BN affine parameters and running statistics from a few train-mode passes."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = 0.5 + torch.rand(m.weight.shape, generator=g, dtype=m.weight.dtype)
            m.bias.data = 0.1 + 0.2 * torch.randn(m.bias.shape, generator=g, dtype=m.bias.dtype)
            m.reset_running_stats()
            m.momentum = None  # exact averages: eval-mode activations stay normalised, none dies
    for head in model.head.values():  # trained heads have spread weights; the fresh init (std 0.001) gives flat outputs
        torch.nn.init.kaiming_normal_(head.out.conv.weight, generator=g)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
    return model.eval()


def live_offsets(model: CoDeNet, seed: int = 0, bias: float = 2.0) -> CoDeNet:
    """Offset convs that predict varied dilations/offsets (a fresh model predicts d = 1 everywhere)."""
    g = torch.Generator().manual_seed(seed)
    for dec in model.decoders:
        if hasattr(dec, "offset"):
            w = dec.offset.conv.weight
            w.data = 0.05 * torch.randn(w.shape, generator=g, dtype=w.dtype)
            dec.offset.conv.bias.data.fill_(bias)
    return model


# --------------------------------------------------------------------------- architecture


def test_param_count_1x_matches_zoo_and_paper():
    spec = arch("codenet-1x-b", input_size=64)  # parameters do not depend on the input size
    model = build_model(spec)
    n = param_count(model)
    assert n == zoo.build(spec).param_count() == 1_580_517
    assert abs(n - 1.588e6) / 1.588e6 < 0.01
    assert sum(p.numel() for p in fuse_bn(model).parameters()) == n  # folded: weights + biases only


def test_param_count_2x_matches_zoo_and_paper():
    spec = arch("codenet-2x-d", input_size=64)
    model = build_model(spec)
    n = param_count(model)
    assert n == zoo.build(spec).param_count() == 6_067_169
    assert abs(n - 6.08e6) / 6.08e6 < 0.01


@pytest.mark.parametrize("kind", ["square", "bounded", "dw"])
def test_blocks_are_the_zoo_nodes_in_order(kind):
    spec = arch("codenet-tiny", input_size=64, deform=kind)
    want = [(n.name, n.op) for n in zoo.build(spec).nodes if n.op in CONV_OPS]
    blocks = conv_blocks(build_model(spec))
    deform_op = "deform_dw3x3" if kind == "square" else "deform_dw3x3_offsets"
    got = [(name, "conv2d" if isinstance(b, ConvBlock) else deform_op) for name, b in blocks.items()]
    assert got == want
    zoo_nodes = {n.name: n for n in zoo.build(spec).nodes}
    for name, b in blocks.items():
        node = zoo_nodes[name]
        assert b.relu == node.attrs["relu"], name
        if isinstance(b, ConvBlock):
            assert list(b.conv.stride) == node.attrs["stride"] and b.conv.groups == node.attrs["groups"], name


@pytest.mark.parametrize("stem", ["s2mp", "s4"])
@pytest.mark.parametrize("kind", KINDS)
def test_forward_shapes(kind, stem):
    model = build_model("codenet-tiny", kind, stem=stem).eval()
    with torch.no_grad():
        out = model(images(2, 64, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"hm": (2, 5, 16, 24), "wh": (2, 2, 16, 24), "reg": (2, 2, 16, 24)}
    assert all(torch.isfinite(v).all() for v in out.values())


def test_presets_and_variants():
    for name in zoo.names():
        assert build_model(name).spec == PRESETS[name]
    m = build_model("codenet-1x-a", "bounded", num_classes=80)
    assert m.deform == "bounded" and m.spec.deform == "bounded" and m.spec.num_classes == 80
    full = build_model("codenet-tiny", "full")
    assert full.deform == "full" and full.decoder0.deform.conv.kind == "full"
    assert full.decoder0.offset.conv.out_channels == 18
    assert build_model("codenet-tiny", "square").decoder0.offset.conv.out_channels == 1
    assert not hasattr(build_model("codenet-tiny", "dw").decoder0, "offset")


def test_full_variant_quantizes_for_accuracy_baselines():
    """``full`` is not deployable, but its QAT model must run (the float-offset accuracy baseline)."""
    torch.manual_seed(4)
    x = images(1)
    q = quantize(build_model("codenet-tiny", "full"))
    calibrate(q, [x])
    with torch.no_grad():
        out = q.eval()(x)
    assert out["hm"].shape == (1, 5, 16, 16) and all(torch.isfinite(v).all() for v in out.values())


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("codenet-3x")
    with pytest.raises(ValueError, match="deform must be one of"):
        build_model("codenet-tiny", "circle")
    model = build_model("codenet-tiny")
    with pytest.raises(ValueError, match="multiples of 32"):
        model(images(1, 48, 64))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="fuse_bn expects a float model"):
        fuse_bn(fuse_bn(model))
    with pytest.raises(ValueError, match="quantize expects"):
        quantize(quantize(model))
    # a decoder that does not undo the backbone's strides would put the heads off stride 4
    with pytest.raises(ValueError, match="one decoder block per backbone stage"):
        build_model("codenet-tiny", decoder_channels=(64, 32, 32))
    with pytest.raises(ValueError, match="one repeat count each"):
        build_model("codenet-tiny", stage_repeats=(1, 2, 1))
    with pytest.raises(ValueError, match="1-3 stages"):
        build_model("codenet-tiny", stage_channels=(16, 32, 64, 128), stage_repeats=(1, 1, 1, 1), decoder_channels=(8, 8, 8, 8))


@pytest.mark.parametrize("stages", [1, 2, 3])
def test_heads_sit_at_output_stride_4_for_any_stage_count(stages):
    spec = dict(stage_channels=(16, 32, 64)[:stages], stage_repeats=(1, 1, 1)[:stages], decoder_channels=(16, 16, 16)[:stages])
    out = build_model("codenet-tiny", "square", input_size=64, **spec).eval()(images(1, 64, 64))
    assert {k: tuple(v.shape[2:]) for k, v in out.items()} == {"hm": (16, 16), "wh": (16, 16), "reg": (16, 16)}


def test_fresh_deformable_decoders_start_as_plain_dw():
    """Offset convs start at d = 1 / zero offsets, with the square ReLU alive so gradients flow."""
    x = images(1)
    for kind in ("square", "bounded", "full"):
        model = build_model("codenet-tiny", kind).eval()
        dw = build_model("codenet-tiny", "dw").eval()
        state = {k.replace(".deform.", ".dw."): v for k, v in model.state_dict().items() if ".offset." not in k}
        dw.load_state_dict(state)
        with torch.no_grad():
            a, b = model(x), dw(x)
        for k in a:
            torch.testing.assert_close(a[k], b[k], msg=kind)
    v = build_model("codenet-tiny", "square").decoder0.offset.conv.bias
    assert torch.all((v > 0) & (v < 0.5))


# --------------------------------------------------------------------------- folding


@pytest.mark.parametrize("kind", ["full", "square"])
def test_fuse_bn_equals_the_float_model_in_eval(kind):
    """BN and the input normalisation fold exactly, image borders included (float64)."""
    torch.manual_seed(3)
    x = images(2, 64, 64, seed=1)
    x[:, :, :2] = 255.0  # bright borders: a wrong padding fold shows up here
    x[:, :, :, -2:] = 0.0
    model = live_offsets(build_model("codenet-tiny", kind)).double()
    model = with_bn_statistics(model, x.double())
    folded = fuse_bn(model).eval()
    assert folded.mode == "folded" and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        a, b = model(x.double()), folded(x.double())
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------- quantization


def test_quantize_builds_brevitas_layers_with_shared_concat_scales():
    model = build_model("codenet-tiny", "square")
    q = quantize(model)
    assert q.mode == "quant" and param_count(q) == param_count(model)
    blocks = conv_blocks(q)
    assert all(isinstance(b.conv, QuantConv2d) for b in blocks.values())
    bits = {name: int(b.conv.quant_weight().bit_width) for name, b in blocks.items()}
    assert bits.pop("stem.conv") == 8 and set(bits.values()) == {4}
    for stage in q.stages:  # every concat input of a stage comes from one quantizer instance
        acts = {id(stage[0].b1.pw.act), id(stage[0].b2.pw2.act)} | {id(u.pw2.act) for u in list(stage)[1:]}
        assert len(acts) == 1
    assert q.stage2[0].b1.pw.act is not q.stage3[0].b1.pw.act
    for name, b in blocks.items():
        if isinstance(b, DeformBlock) or not b.relu:
            continue
        assert isinstance(b.act, QuantReLU), name
    # folded weights arrive unchanged
    folded = fuse_bn(model)
    for name, b in conv_blocks(folded).items():
        assert torch.equal(blocks[name].conv.weight, b.conv.weight), name
        assert torch.equal(blocks[name].conv.bias, b.conv.bias), name


def test_side_inputs_have_unit_scale():
    for kind, signed in (("square", False), ("bounded", True)):
        q = quantize(build_model("codenet-tiny", kind))
        act = q.decoder1.offset.act
        assert float(act.act_quant.scale()) == 1.0
        assert bool(act.act_quant.is_signed) == signed
        assert isinstance(act, QuantReLU if kind == "square" else QuantIdentity)


def test_activation_quantizers_round_half_up_and_clamp():
    act = QuantIdentity(act_quant=Int8ActUnitScale, return_quant_tensor=True)
    x = torch.tensor([-300.0, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 126.5, 300.0])
    assert act(x).value.tolist() == [-128, -2, -1, 0, 1, 2, 3, 127, 127]  # half-even would give -2,-2,0,0,2,2
    for quant, lo in ((Uint8ActPoT, 0), (Int8ActPoT, -128)):
        a = QuantReLU(act_quant=quant, return_quant_tensor=True) if lo == 0 else QuantIdentity(act_quant=quant, return_quant_tensor=True)
        a.eval()
        y = a(torch.linspace(-10, 10, 101))
        s = float(y.scale)
        assert math.log2(s) == round(math.log2(s)), "activation scales are powers of two"
        q = (y.value / y.scale).round()
        assert q.min() >= lo and q.max() <= (255 if lo == 0 else 127)


def test_weight_scales_are_dyadic_16_bit():
    torch.manual_seed(0)
    conv = quant_conv(16, 8, 3, padding=1)
    conv.weight.data = torch.randn_like(conv.weight) * torch.logspace(-3, 0, 8).view(8, 1, 1, 1)  # 1000x spread of channel scales
    qw = conv.quant_weight()
    s = qw.scale.detach().double().flatten()
    k = math.floor(math.log2(65535 / float(s.max())))
    m = s * 2.0**k
    assert torch.equal(m, m.round()) and m.min() >= 1 and m.max() <= 65535 and m.max() >= 32768
    absmax = conv.weight.detach().abs().amax(dim=(1, 2, 3)).double() / 7
    assert torch.all((s - absmax).abs() <= 2.0 ** (-k - 1) + 1e-12)  # the nearest grid point
    ints = qw.int()
    assert ints.min() >= -7 and ints.max() <= 7  # 4-bit narrow range


def _weight_mse(w: torch.Tensor, scale: torch.Tensor, top: int) -> torch.Tensor:
    """Per-channel squared error of symmetric rounding to [-top, top] steps of `scale`, written out here."""
    w = w.double().flatten(1)
    s = scale.double().reshape(-1, 1)
    return ((torch.clamp(torch.round(w / s), -top, top) * s - w) ** 2).sum(dim=1)


def test_mse_weight_clip_lowers_each_channels_error_and_keeps_the_stem_at_abs_max():
    torch.manual_seed(0)
    model = build_model("codenet-tiny", "square")
    with torch.no_grad():  # heavy-tailed weights: one outlier per channel, where clipping pays
        for b in conv_blocks(model).values():
            b.conv.weight.mul_(torch.where(torch.rand_like(b.conv.weight) < 0.05, 4.0, 1.0))
    plain, clipped = quantize(model, weight_clip="max"), quantize(model)
    lowered = 0
    for name, b in conv_blocks(clipped).items():
        ref = conv_blocks(plain)[name].conv
        qa, qb = ref.quant_weight(), b.conv.quant_weight()
        clip = b.conv.weight_quant.tensor_quant.scaling_impl.clip.flatten()
        if name == "stem.conv":  # 8-bit: untouched
            assert torch.equal(clip, torch.ones_like(clip)) and torch.equal(qa.scale, qb.scale)
            continue
        assert torch.all((clip > 0.39) & (clip <= 1.0)), name
        top = 7
        err_max, err_mse = _weight_mse(b.conv.weight, qa.scale, top), _weight_mse(b.conv.weight, qb.scale, top)
        # never worse than abs-max per channel (up to the dyadic snapping of the scale)
        assert torch.all(err_mse <= err_max * (1 + 1e-3) + 1e-12), name
        lowered += int((err_mse < 0.9 * err_max).sum())
        assert int(qb.int().abs().max()) <= top  # still 4-bit narrow range
    assert lowered > 100
    with pytest.raises(ValueError, match="weight_clip"):
        quantize(model, weight_clip="percentile")


@pytest.mark.parametrize("reinit", [True, False])
def test_checkpoints_without_clip_factors_load_at_abs_max(monkeypatch, reinit):
    """Brevitas models saved before the clip buffer existed must quantize as they did.

    With Brevitas' re-initialisation on load off, the quantizer is not rebuilt: the loader
    itself must reset the factors.
    """
    import brevitas.config

    monkeypatch.setattr(brevitas.config, "REINIT_ON_STATE_DICT_LOAD", reinit)
    torch.manual_seed(1)
    model = build_model("codenet-tiny", "square")
    old = calibrate(quantize(model, weight_clip="max"), [images(1)])
    state = {k: v for k, v in old.state_dict().items() if not k.endswith("scaling_impl.clip")}
    assert len(state) < len(old.state_dict())
    fresh = calibrate(quantize(build_model("codenet-tiny", "square")), [images(1)])  # mse clips of other weights

    def same_scales() -> bool:
        theirs = conv_blocks(old)
        return all(torch.equal(b.conv.quant_weight().scale, theirs[n].conv.quant_weight().scale) for n, b in conv_blocks(fresh).items())

    assert not same_scales()
    fresh.load_state_dict(state)
    assert same_scales()


def test_calibration_fixes_power_of_two_scales():
    torch.manual_seed(0)
    x = images(2)
    model = with_bn_statistics(build_model("codenet-tiny", "square"), x)
    q = quantize(model)
    assert not is_calibrated(q)
    with pytest.raises(ValueError, match="at least one batch"):
        calibrate(q, [])
    calibrate(q, [x[:1], x[1:]])
    assert is_calibrated(q)
    for name, m in q.named_modules():
        if isinstance(m, (QuantReLU, QuantIdentity)):
            s = float(m.act_quant.scale().detach())
            assert math.log2(s) == round(math.log2(s)), name


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.detach().flatten().numpy(), b.detach().flatten().numpy())[0, 1])


def test_quantized_model_tracks_the_float_model():
    """Coarse fidelity: a broken weight layout, bias scale or shared scale drives these to ~0.

    8-bit weights isolate the machinery from 4-bit noise, which an untrained network does not
    tolerate (that is what QAT is for); the stem (8-bit weights in any case) must be close.
    """
    torch.manual_seed(1)
    x = images(2)
    model = with_bn_statistics(build_model("codenet-tiny", "square"), x)
    q = quantize(model, weight_bits=8)
    calibrate(q, [x])
    q.eval()
    stems = []
    hooks = [m.stem.conv.register_forward_hook(lambda mod, i, o: stems.append(o)) for m in (model, q)]
    with torch.no_grad():
        f, r = model(x), q(x)
    for h in hooks:
        h.remove()
    assert _corr(stems[0], stems[1].value) > 0.999
    for k in f:
        assert _corr(f[k], r[k]) > 0.6, k


@pytest.mark.parametrize("kind", ["square", "bounded"])
def test_qat_gradients_reach_the_offset_conv(kind):
    torch.manual_seed(2)
    x = images(2, 128, 128)  # decoder0 works at 4x4: large enough for taps to move inside the map
    model = with_bn_statistics(build_model("codenet-tiny", kind, input_size=128), x)
    q = quantize(live_offsets(model, bias=1.0))
    calibrate(q, [x])
    q.train()
    out = q(x)
    sum(v.square().mean() for v in out.values()).backward()
    for dec in q.decoders:
        g = dec.offset.conv.weight.grad
        assert g is not None and g.abs().sum() > 0, kind
    assert q.stem.conv.conv.weight.grad.abs().sum() > 0


def test_initial_heatmap_logits_sit_at_the_prior():
    """A fresh float model scores every pixel near CenterNet's prior (sigmoid(-2.19) ~ 0.1).

    Kaiming-sized final weights once gave logits of +-10 and a first focal loss in the hundreds.
    """
    torch.manual_seed(0)
    model = build_model("codenet-tiny", mode="float", input_size=64)
    images = torch.randint(0, 256, (2, 3, 64, 64)).float()
    with torch.no_grad():
        out = model(images)
    hm = out["hm"]
    assert abs(float(hm.mean()) - HM_BIAS_INIT) < 0.1
    assert float(hm.std()) < 0.1
    assert float(out["wh"].abs().max()) < 0.5 and float(out["reg"].abs().max()) < 0.5
