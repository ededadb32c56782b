"""CenterNet decoding: by hand, against an independent torch implementation, tie order, graph outputs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from codenet.sw import golden, zoo
from codenet.sw.decode import DEFAULT_SCORE_THRESHOLD, Detections, decode, decode_graph_outputs, decode_params


def _logit(p):
    return np.log(p / (1 - p))


def _blank(h=8, w=10, c=3):
    return np.full((h, w, c), -10.0), np.zeros((h, w, 2)), np.zeros((h, w, 2))


def test_one_peak_by_hand():
    hm, wh, reg = _blank()
    hm[3, 5, 2] = _logit(0.9)
    wh[3, 5] = (4.0, 2.0)  # grid units
    reg[3, 5] = (0.25, 0.5)
    d = decode(hm, wh, reg, output_stride=4, score_threshold=0.1)
    assert isinstance(d, Detections) and len(d) == 1
    # centre (5.25, 3.5) cells -> box ((5.25 - 2) * 4, (3.5 - 1) * 4, (5.25 + 2) * 4, (3.5 + 1) * 4)
    np.testing.assert_allclose(d.boxes, [[13.0, 10.0, 29.0, 18.0]])
    np.testing.assert_allclose(d.scores, [0.9], rtol=1e-6)
    assert d.labels.tolist() == [2]
    assert d.boxes.dtype == np.float32 and d.scores.dtype == np.float32 and d.labels.dtype == np.int64
    assert set(d.as_dict()) == {"boxes", "scores", "labels"}


def test_peak_suppression_is_per_class_and_within_the_kernel():
    hm, wh, reg = _blank(c=2)
    row = {4: 3.0, 5: 2.0, 6: 1.5, 7: 1.8}  # class 0 along row 4; the background (-10) is under the threshold
    for x, v in row.items():
        hm[4, x, 0] = v
    hm[4, 5, 1] = 1.0  # beside class 0's peak, but another class: kept

    def found(d):
        return sorted(zip(d.labels.tolist(), np.round(d.scores.astype(np.float64), 5).tolist()))

    def sig(v):
        return round(float(1 / (1 + np.exp(-v))), 5)

    # 3x3: 2.0 sees 3.0, 1.5 sees 2.0 -> suppressed; 1.8 sees only 1.5 -> a peak
    assert found(decode(hm, wh, reg, score_threshold=0.5)) == sorted([(0, sig(3.0)), (0, sig(1.8)), (1, sig(1.0))])
    # 5x5: 1.8 now sees 2.0 two cells away
    assert found(decode(hm, wh, reg, score_threshold=0.5, peak_kernel=5)) == sorted([(0, sig(3.0)), (1, sig(1.0))])
    # 1x1: no suppression at all
    assert len(decode(hm, wh, reg, score_threshold=0.5, peak_kernel=1)) == 5
    with pytest.raises(ValueError, match="odd"):
        decode(hm, wh, reg, peak_kernel=2)


def test_threshold_limit_and_negative_sizes():
    rng = np.random.default_rng(0)
    hm = rng.normal(0, 2, (16, 16, 4))
    wh = rng.normal(0, 3, (16, 16, 2))
    reg = rng.uniform(0, 1, (16, 16, 2))
    all_ = decode(hm, wh, reg, score_threshold=0.0, max_detections=10_000)
    some = decode(hm, wh, reg, score_threshold=0.7, max_detections=10_000)
    assert len(some) < len(all_) and (some.scores >= 0.7).all() and (all_.scores[len(some) :] < 0.7).all()
    top = decode(hm, wh, reg, score_threshold=0.0, max_detections=7)
    np.testing.assert_array_equal(top.boxes, all_.boxes[:7])
    assert (all_.boxes[:, 2] >= all_.boxes[:, 0]).all() and (all_.boxes[:, 3] >= all_.boxes[:, 1]).all()  # negative wh -> 0
    assert np.all(np.diff(all_.scores) <= 0)
    assert len(decode(hm, wh, reg, max_detections=0)) == 0


def _cells(d):
    """(y, x, class) of each detection, from boxes of 1x1 cells at stride 4 with zero offsets."""
    return [(int((b[1] + b[3]) / 8), int((b[0] + b[2]) / 8), int(lab)) for b, lab in zip(d.boxes, d.labels)]


def test_ties_are_broken_by_flat_index():
    """Equal scores rank by (y, x, c) row-major index; truncation keeps the first ones."""
    h, w, c = 6, 8, 2
    hm = np.full((h, w, c), -10.0)
    wh = np.ones((h, w, 2))
    reg = np.zeros((h, w, 2))
    # isolated single-cell peaks (3 cells apart), all with logit 0, in both classes
    spots = [(y, x) for y in (0, 3) for x in (1, 4, 7)]
    for y, x in spots:
        hm[y, x, :] = 0.0
    d = decode(hm, wh, reg, score_threshold=0.1, max_detections=100)
    assert _cells(d) == [(y, x, k) for y, x in spots for k in range(c)]
    # a higher class-1 logit comes first, in the same index order
    for y, x in spots:
        hm[y, x, 1] = 0.5
    d = decode(hm, wh, reg, score_threshold=0.1, max_detections=5)
    assert _cells(d) == [(y, x, 1) for y, x in spots][:5]


def test_a_plateau_is_one_peak_at_its_first_cell():
    """Integer heads tie: equal neighbours must not become duplicate boxes (the bug that cost 2 AP50 points)."""
    hm, wh, reg = _blank(h=8, w=10, c=2)
    hm[2:4, 3:5, 0] = 2.0  # a 2x2 plateau: only (2, 3) survives
    hm[6, 1:9, 1] = 1.0  # a plateau longer than the kernel: still one peak, its first cell
    hm[0, 9, 0] = hm[1, 8, 0] = 1.5  # diagonal neighbours: the earlier one in raster order
    d = decode(hm, wh, reg, score_threshold=0.5)
    assert sorted(_cells(d)) == [(0, 9, 0), (2, 3, 0), (6, 1, 1)]
    # the whole heat-map flat: one peak per class
    d = decode(np.zeros((5, 7, 3)), np.ones((5, 7, 2)), np.zeros((5, 7, 2)), score_threshold=0.0)
    assert _cells(d) == [(0, 0, 0), (0, 0, 1), (0, 0, 2)]


def _brute_force_peaks(hm, k):
    """The peak rule of docs/cnir-format.md § 6 cell by cell: no larger neighbour, no equal earlier one."""
    h, w, c = hm.shape
    r = k // 2
    out = set()
    for y in range(h):
        for x in range(w):
            for ch in range(c):
                v, ok = hm[y, x, ch], True
                for yy in range(max(0, y - r), min(h, y + r + 1)):
                    for xx in range(max(0, x - r), min(w, x + r + 1)):
                        u = hm[yy, xx, ch]
                        if u > v or (u == v and (yy, xx) < (y, x)):
                            ok = False
                if ok:
                    out.add((y, x, ch))
    return out


@pytest.mark.parametrize("seed,kernel", [(0, 3), (1, 3), (2, 5), (3, 1)])
def test_peaks_on_quantized_heads_match_a_brute_force_reading_of_the_rule(seed, kernel):
    rng = np.random.default_rng(seed)
    hm = rng.integers(-4, 4, (9, 11, 3)) * 0.5  # few levels: plateaus everywhere
    d = decode(hm, np.ones((9, 11, 2)), np.zeros((9, 11, 2)), score_threshold=0.0, max_detections=10_000, peak_kernel=kernel)
    assert set(_cells(d)) == _brute_force_peaks(hm, kernel) and len(d) == len(set(_cells(d)))


def test_identical_integer_heads_decode_identically():
    """Two backends' int8 heads, equal bit for bit, with many ties: the same detections."""
    rng = np.random.default_rng(5)
    q = rng.integers(-3, 3, (32, 32, 5)).astype(np.int8)  # few levels: plateaus and ties everywhere
    whq = rng.integers(0, 20, (32, 32, 2)).astype(np.int8)
    rq = rng.integers(0, 10, (32, 32, 2)).astype(np.int8)
    a = decode(q * 0.5, whq * 0.25, rq * 0.1, score_threshold=0.0)
    b = decode(q.copy().astype(np.float64) * 0.5, np.array(whq) * 0.25, np.array(rq) * 0.1, score_threshold=0.0)
    for f in dataclasses.fields(Detections):
        np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name))
    assert len(a) == 100


def _torch_decode(hm, wh, reg, k, stride, kernel, thr):
    """CenterNet's ctdet_decode, written with torch: sigmoid, max_pool2d == heat, topk over classes x cells."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    heat = torch.sigmoid(torch.from_numpy(hm).permute(2, 0, 1)[None])  # (1, C, H, W), float64
    hmax = F.max_pool2d(heat, kernel, stride=1, padding=kernel // 2)
    heat = heat * (hmax == heat).to(heat.dtype)
    _, c, h, w = heat.shape
    scores, inds = torch.topk(heat.reshape(-1), min(k, heat.numel()))
    cls = inds // (h * w)
    ys = (inds % (h * w)) // w
    xs = inds % w
    wh_t, reg_t = torch.from_numpy(wh), torch.from_numpy(reg)
    cx = xs.double() + reg_t[ys, xs, 0]
    cy = ys.double() + reg_t[ys, xs, 1]
    bw = wh_t[ys, xs, 0].clamp(min=0) / 2
    bh = wh_t[ys, xs, 1].clamp(min=0) / 2
    boxes = torch.stack([cx - bw, cy - bh, cx + bw, cy + bh], 1) * stride
    keep = scores >= thr
    return boxes[keep].numpy(), scores[keep].numpy(), cls[keep].numpy()


@pytest.mark.parametrize(
    "seed,shape,kernel,thr,k", [(0, (16, 16, 5), 3, 0.05, 100), (1, (8, 12, 20), 3, 0.3, 40), (2, (20, 8, 3), 5, 0.01, 60)]
)
def test_against_torch_reference(seed, shape, kernel, thr, k):
    rng = np.random.default_rng(seed)
    hm = rng.normal(-1, 2, shape)
    wh = rng.normal(4, 3, shape[:2] + (2,))
    reg = rng.uniform(0, 1, shape[:2] + (2,))
    boxes, scores, labels = _torch_decode(hm, wh, reg, k, 4, kernel, thr)
    d = decode(hm, wh, reg, output_stride=4, max_detections=k, score_threshold=thr, peak_kernel=kernel)
    assert len(d) == len(scores) > 0
    np.testing.assert_allclose(d.scores, scores, rtol=1e-6)
    np.testing.assert_array_equal(d.labels, labels)
    np.testing.assert_allclose(d.boxes, boxes, rtol=1e-6, atol=1e-4)


# --------------------------------------------------------------------------- graph outputs


@pytest.fixture(scope="module")
def tiny_graph():
    return zoo.build("codenet-tiny", seed=0)


def _planted_heads(graph, n=2):
    heads = graph.metadata["heads"]
    shapes = {h: graph.tensors[heads[h]].shape for h in heads}
    out = {heads[h]: np.full((n, *shapes[h]), -100 if h == "hm" else 0, np.int8) for h in heads}
    return heads, out


def test_decode_graph_outputs_dequantizes_each_head(tiny_graph):
    g = tiny_graph
    heads, out = _planted_heads(g)
    s_hm, s_wh, s_reg = (g.tensors[heads[h]].scale for h in ("hm", "wh", "reg"))
    out[heads["hm"]][1, 10, 12, 3] = 7
    out[heads["wh"]][1, 10, 12] = (5, 3)
    out[heads["reg"]][1, 10, 12] = (2, 1)
    meta = dict(g.metadata, decode={**g.metadata["decode"], "score_threshold": 0.5})
    graph = dataclasses.replace(g, metadata=meta)
    dets = decode_graph_outputs(out, graph)
    assert len(dets) == 2 and len(dets[0]) == 0
    d = dets[1]
    assert d.labels.tolist() == [3]
    cx, cy = 12 + 2 * s_reg, 10 + 1 * s_reg
    np.testing.assert_allclose(d.boxes[0], np.array([cx - 2.5 * s_wh, cy - 1.5 * s_wh, cx + 2.5 * s_wh, cy + 1.5 * s_wh]) * 4, rtol=1e-5)
    np.testing.assert_allclose(d.scores, [1 / (1 + np.exp(-7 * s_hm))], rtol=1e-6)


def test_decode_params_defaults_and_validation(tiny_graph):
    p = decode_params(tiny_graph.metadata)  # the zoo's metadata names no score_threshold
    assert p == {"output_stride": 4, "max_detections": 100, "score_threshold": DEFAULT_SCORE_THRESHOLD, "peak_kernel": 3}
    assert decode_params({"decode": {"score_threshold": 0.25}, "output_stride": 8})["score_threshold"] == 0.25
    with pytest.raises(ValueError, match="kind"):
        decode_params({"decode": {"kind": "yolo"}})
    with pytest.raises(ValueError, match="score_threshold"):
        decode_params({"decode": {"score_threshold": "high"}})


def test_decode_graph_outputs_errors(tiny_graph):
    heads, out = _planted_heads(tiny_graph)
    with pytest.raises(ValueError, match="head.wh.out"):
        decode_graph_outputs({k: v for k, v in out.items() if k != heads["wh"]}, tiny_graph)
    with pytest.raises(ValueError, match="integers"):
        decode_graph_outputs({**out, heads["hm"]: out[heads["hm"]].astype(np.float32)}, tiny_graph)
    with pytest.raises(ValueError, match="must be"):
        decode_graph_outputs({**out, heads["reg"]: out[heads["reg"]][0]}, tiny_graph)
    with pytest.raises(TypeError, match="unknown"):
        decode_graph_outputs(out, tiny_graph, threshold=0.3)


def test_golden_run_then_decode(tiny_graph):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    outs = golden.run(tiny_graph, images)
    dets = decode_graph_outputs(outs, tiny_graph, score_threshold=0.0)
    assert len(dets) == 2
    for i, d in enumerate(dets):
        assert 0 < len(d) <= 100 and np.all(np.diff(d.scores) <= 0)
        heads = tiny_graph.metadata["heads"]
        scale = {h: tiny_graph.tensors[heads[h]].scale for h in heads}
        ref = decode(*(outs[heads[h]][i].astype(np.float64) * scale[h] for h in ("hm", "wh", "reg")), score_threshold=0.0)
        np.testing.assert_array_equal(d.boxes, ref.boxes)
