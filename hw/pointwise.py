"""The pointwise (1x1) MAC array: L input x L output channels per cycle, weights resident.

Dataflow (docs/engine.md § Pointwise array): the whole weight image of a layer (or of an
output-channel slice of it, one descriptor each) sits in the weight buffer; pixels stream in
as `ict` beats (one per tile of L input channels) into a two-pixel ping-pong buffer; for each
pixel the array steps through every (output tile u, input tile t) pair, one weight word per
cycle, accumulating L int32 sums that start from the bias; after the last input tile of an
output tile the L sums go through requantization and leave as one beat of L bytes. The next
pixel loads while the current one computes, so the array is busy ict * oct cycles per pixel
(twice that for 8-bit weights) as long as the pixel stream keeps up.

Weights are 4-bit. 8-bit weights (the stem, or any layer with w_bits > 4) use the same
buffer and multipliers: lanes 2o and 2o+1 hold the low nibble (unsigned) and the high nibble
(signed) of one weight, and their sums combine as lo + 16 * hi; each output tile then takes
two words per input tile (half h covers output lanes [h*L/2, (h+1)*L/2)).

Multipliers (`EngineConfig.pw_mul`): "lut" and "dsp" form one 9x5-bit product per lane and
input; "dsp_packed2" forms one product per *pair* of lanes, ``x * (w_lo + w_hi * 2**K)``,
sums those over the L inputs and splits the sum, so each DSP48E2 does two 4-bit MACs and
one adder tree serves two lanes (the split is exact because |sum of the low products| <
2**(K-1)). With 8-bit weights the pair's operand is simply the 8-bit weight. All three give
identical results; tests run each.
"""

from __future__ import annotations

from amaranth import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sw.engine import EngineConfig, MulMap
from ..sw.intmath import MULT_BITS, SHIFT_MAX
from .requant import Requant, unpack_params
from .skid import Skid

__all__ = ["PointwiseArray", "packed_split_bits", "registered_pairs", "shift_add_mul", "tree_sum"]


def packed_split_bits(lanes: int) -> int:
    """K for the dsp_packed2 mapping: |sum of L products x*w_lo| <= L * 255 * 8 < 2**(K-1)."""
    return (lanes * 255 * 8).bit_length() + 1


def act9(byte, in_signed):
    """An activation byte as a 9-bit signed value (int8 or uint8)."""
    return Mux(in_signed, byte.as_signed(), Cat(byte, C(0, 1)).as_signed())


def tree_sum(values):
    """Sum as a balanced tree of adders (log2 deep, not a chain)."""
    values = list(values)
    while len(values) > 1:
        nxt = [values[k] + values[k + 1] for k in range(0, len(values) - 1, 2)]
        if len(values) % 2:
            nxt.append(values[-1])
        values = nxt
    return values[0]


def shift_add_mul(x, w):
    """x * w for a narrow signed `w` as shifted copies of `x` added in a tree: LUT logic with
    no multiplier cell. Yosys 0.70 ignores ``use_dsp``, and its soft multipliers (the flow's
    workaround, boards/synth.py) followed by a clock-enabled register trip an ABC9
    assertion on the ulx3s engine."""
    n = len(w)
    terms = [Mux(w[k], x << k, 0) for k in range(n - 1)]
    terms.append(-Mux(w[n - 1], x << (n - 1), 0))
    return tree_sum(terms)


def registered_pairs(m, values, en, name):
    """Sums of adjacent pairs (an odd last value alone), registered under `en`: the first
    level of an adder tree stays in the multipliers' stage, the rest goes to the next (50 MHz
    on ECP5; a register right at a LUT multiplier's output also trips Yosys 0.70's ABC9)."""
    out = []
    for k in range(0, len(values), 2):
        v = values[k] + values[k + 1] if k + 1 < len(values) else values[k]
        q = Signal(v.shape(), name=f"{name}{k // 2}")
        with m.If(en):
            m.d.sync += q.eq(v)
        out.append(q)
    return out


class PointwiseArray(wiring.Component):
    """Ports: `wload`/`pload` take the weight and parameter images beat by beat (after a
    `clear` pulse), `pix` takes `ict` beats per pixel, `out` gives `oct` beats per pixel."""

    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        L = cfg.lanes
        self.ict_max = max(cfg.ktiles_max, 9)  # CONV3X3 feeds up to 9 tiles per pixel
        self.oct_max = cfg.ktiles_max
        beat = unsigned(8 * L)
        super().__init__(
            {
                "wload": In(stream.Signature(beat)),
                "pload": In(stream.Signature(beat)),
                "pix": In(stream.Signature(beat)),
                "out": Out(stream.Signature(beat)),
                "clear": In(1),
                "ict": In(range(self.ict_max + 1)),
                "oct": In(range(self.oct_max + 1)),
                "w8": In(1),
                "in_signed": In(1),
                "shift": In(range(SHIFT_MAX + 1)),
                "relu": In(1),
                "mac_step": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        L = cfg.lanes
        H = L // 2
        ICT, OCT = self.ict_max, self.oct_max

        # ------------------------------------------------------------ buffers
        wmems = [memory.Memory(shape=unsigned(8 * L), depth=cfg.wbuf_depth, init=[]) for _ in range(H)]
        pmems = [memory.Memory(shape=unsigned(8 * L), depth=OCT, init=[]) for _ in range(6)]
        xmem = memory.Memory(shape=unsigned(8 * L), depth=2 * ICT, init=[])
        for k, mem in enumerate(wmems):
            m.submodules[f"wmem{k}"] = mem
        for k, mem in enumerate(pmems):
            m.submodules[f"pmem{k}"] = mem
        m.submodules.xmem = xmem
        m.submodules.requant = rq = Requant(L)
        m.d.comb += [rq.shift.eq(self.shift), rq.relu.eq(self.relu)]
        # the pipeline stalls on a register slice's `ready`, not on the next unit's
        m.submodules.out_skid = out_skid = Skid(unsigned(8 * L))
        m.d.comb += [out_skid.i.valid.eq(rq.o.valid), out_skid.i.payload.eq(rq.o.payload.as_value()), rq.o.ready.eq(out_skid.i.ready)]
        wiring.connect(m, out_skid.o, wiring.flipped(self.out))

        # ------------------------------------------------------------ loading
        wptr = Signal(range(cfg.wbuf_depth))
        wsub = Signal(range(H))
        pptr = Signal(range(OCT))
        psub = Signal(range(6))
        m.d.comb += [self.wload.ready.eq(1), self.pload.ready.eq(1)]
        wwp = [mem.write_port() for mem in wmems]
        for k, p in enumerate(wwp):
            m.d.comb += [p.addr.eq(wptr), p.data.eq(self.wload.payload), p.en.eq(self.wload.valid & (wsub == k))]
        with m.If(self.wload.valid):
            with m.If(wsub == H - 1):
                m.d.sync += [wsub.eq(0), wptr.eq(wptr + 1)]
            with m.Else():
                m.d.sync += wsub.eq(wsub + 1)
        pwp = [mem.write_port() for mem in pmems]
        for k, p in enumerate(pwp):
            m.d.comb += [p.addr.eq(pptr), p.data.eq(self.pload.payload), p.en.eq(self.pload.valid & (psub == k))]
        with m.If(self.pload.valid):
            with m.If(psub == 5):
                m.d.sync += [psub.eq(0), pptr.eq(pptr + 1)]
            with m.Else():
                m.d.sync += psub.eq(psub + 1)

        # ------------------------------------------------------------ pixel ping-pong
        full = Signal(2)
        wbank = Signal()
        widx = Signal(range(ICT))
        rbank = Signal()
        xwp = xmem.write_port()
        m.d.comb += [
            self.pix.ready.eq(~full.bit_select(wbank, 1)),
            xwp.addr.eq(Mux(wbank, ICT, 0) + widx),
            xwp.data.eq(self.pix.payload),
            xwp.en.eq(self.pix.valid & self.pix.ready),
        ]
        set_full = Signal(2)
        clr_full = Signal(2)
        with m.If(self.pix.valid & self.pix.ready):
            with m.If(widx == self.ict - 1):
                m.d.sync += [widx.eq(0), wbank.eq(~wbank)]
                m.d.comb += set_full.eq(Mux(wbank, 2, 1))
            with m.Else():
                m.d.sync += widx.eq(widx + 1)
        m.d.sync += full.eq((full | set_full) & ~clr_full)

        # ------------------------------------------------------------ issue (stage A)
        en = Signal()
        res_valid = Signal()
        m.d.comb += en.eq(~res_valid | rq.i.ready)
        u = Signal(range(OCT))
        t = Signal(range(ICT))
        h = Signal()
        waddr = Signal(range(cfg.wbuf_depth))
        va = Signal()
        m.d.comb += va.eq(full.bit_select(rbank, 1))
        last_t = (t == self.ict - 1) & (h | ~self.w8)
        wrp = [mem.read_port() for mem in wmems]
        prp = [mem.read_port() for mem in pmems]
        xrp = xmem.read_port()
        for p in wrp:
            m.d.comb += [p.addr.eq(waddr), p.en.eq(en)]
        for p in prp:
            m.d.comb += [p.addr.eq(u), p.en.eq(en)]
        m.d.comb += [xrp.addr.eq(Mux(rbank, ICT, 0) + t), xrp.en.eq(en)]
        issue = Signal()
        m.d.comb += [issue.eq(en & va), self.mac_step.eq(issue)]
        with m.If(issue):
            m.d.sync += waddr.eq(waddr + 1)
            with m.If(self.w8 & ~h):
                m.d.sync += h.eq(1)
            with m.Else():
                m.d.sync += h.eq(0)
                with m.If(t == self.ict - 1):
                    m.d.sync += t.eq(0)
                    with m.If(u == self.oct - 1):
                        m.d.sync += [u.eq(0), waddr.eq(0), rbank.eq(~rbank)]
                        m.d.comb += clr_full.eq(Mux(rbank, 2, 1))
                    with m.Else():
                        m.d.sync += u.eq(u + 1)
                with m.Else():
                    m.d.sync += t.eq(t + 1)

        # ------------------------------------------------------------ stage B: buffer outputs
        vb, first_b, last_b, h_b = Signal(), Signal(), Signal(), Signal()
        with m.If(en):
            m.d.sync += [vb.eq(issue), first_b.eq(t == 0), last_b.eq(last_t), h_b.eq(h)]
        # stage B1: the buffers' read data are registered (block RAM data come late in a cycle)
        vb1, first_b1, last_b1, h_b1 = Signal(), Signal(), Signal(), Signal()
        word = Signal(L * L * 4)
        xbeat = Signal(8 * L)
        ptile = Signal(6 * 8 * L)
        with m.If(en):
            m.d.sync += [vb1.eq(vb), first_b1.eq(first_b), last_b1.eq(last_b), h_b1.eq(h_b)]
            m.d.sync += [word.eq(Cat(*[p.data for p in wrp])), xbeat.eq(xrp.data), ptile.eq(Cat(*[p.data for p in prp]))]
        nib = [[word[4 * (o * L + i) : 4 * (o * L + i) + 4] for i in range(L)] for o in range(L)]
        x = [act9(xbeat[8 * i : 8 * i + 8], self.in_signed) for i in range(L)]
        bias, mult = unpack_params(ptile, L)

        # stage B2: the products' pair sums are registered (a multiplier and one adder are one
        # stage, the rest of the adder trees the next), with the control and parameters beside them
        vb2, first_b2, last_b2, h_b2 = Signal(), Signal(), Signal(), Signal()
        bias_b2 = [Signal(signed(32), name=f"bias_b2_{o}") for o in range(L)]
        mult_b2 = [Signal(unsigned(MULT_BITS), name=f"mult_b2_{o}") for o in range(L)]
        with m.If(en):
            m.d.sync += [vb2.eq(vb1), first_b2.eq(first_b1), last_b2.eq(last_b1), h_b2.eq(h_b1)]
            m.d.sync += [bias_b2[o].eq(bias[o]) for o in range(L)] + [mult_b2[o].eq(mult[o]) for o in range(L)]

        # products and per-lane sums: sv (4-bit lanes), cv (8-bit pairs)
        sum_shape = signed(9 + 8 + 4 + max(1, (L - 1).bit_length()) + 1)
        sv = [Signal(sum_shape, name=f"sv{o}") for o in range(L)]
        cv = [Signal(sum_shape, name=f"cv{p}") for p in range(H)]
        mul_attr = {"use_dsp": "no"} if cfg.pw_mul == MulMap.LUT else {"use_dsp": "yes"}
        if cfg.pw_mul == MulMap.DSP_PACKED2:
            K = packed_split_bits(L)
            for p in range(H):
                prods = []
                for i in range(L):
                    lo, hi = nib[2 * p][i], nib[2 * p + 1][i]
                    a = Signal(signed(K + 5), name=f"pk_a{p}_{i}")
                    m.d.comb += a.eq(Mux(self.w8, Cat(lo, hi).as_signed(), lo.as_signed() + (hi.as_signed() << K)))
                    pr = Signal(signed(K + 5 + 9), name=f"pk_p{p}_{i}", attrs=mul_attr)
                    m.d.comb += pr.eq(x[i] * a)
                    prods.append(pr)
                s = Signal(signed(K + 5 + 9 + L.bit_length()), name=f"pk_s{p}")
                m.d.comb += s.eq(tree_sum(registered_pairs(m, prods, en, f"pk_pair{p}_")))
                s_lo = Signal(signed(K), name=f"pk_lo{p}")
                m.d.comb += s_lo.eq(s[:K].as_signed())
                m.d.comb += [sv[2 * p].eq(s_lo), sv[2 * p + 1].eq((s - s_lo) >> K), cv[p].eq(s)]
        else:
            for o in range(L):
                prods = []
                for i in range(L):
                    wv = Signal(signed(5), name=f"w{o}_{i}")
                    n = nib[o][i]
                    unsigned_lo = self.w8 if o % 2 == 0 else C(0, 1)  # 8-bit weights: even lanes hold the low nibble
                    m.d.comb += wv.eq(Mux(unsigned_lo, Cat(n, C(0, 1)).as_signed(), n.as_signed()))
                    pr = Signal(signed(14), name=f"p{o}_{i}", attrs=mul_attr)
                    m.d.comb += pr.eq(shift_add_mul(x[i], wv) if cfg.pw_mul == MulMap.LUT else x[i] * wv)
                    prods.append(pr)
                m.d.comb += sv[o].eq(tree_sum(registered_pairs(m, prods, en, f"pair{o}_")))
            for p in range(H):
                m.d.comb += cv[p].eq(sv[2 * p] + (sv[2 * p + 1] << 4))

        # ------------------------------------------------------------ stage C: registered sums
        vc, first_c, last_c = Signal(), Signal(), Signal()
        add_c = [Signal(sum_shape, name=f"add_c{o}") for o in range(L)]
        mask_c = Signal(L)
        bias_c = [Signal(signed(32), name=f"bias_c{o}") for o in range(L)]
        mult_c = [Signal(unsigned(MULT_BITS), name=f"mult_c{o}") for o in range(L)]
        with m.If(en):
            m.d.sync += [vc.eq(vb2), first_c.eq(first_b2), last_c.eq(last_b2)]
            for o in range(L):
                in_half = h_b2 if o >= H else ~h_b2
                m.d.sync += [
                    add_c[o].eq(Mux(self.w8, Mux(in_half, cv[o % H], 0), sv[o])),
                    mask_c[o].eq(~self.w8 | in_half),
                    bias_c[o].eq(bias_b2[o]),
                    mult_c[o].eq(mult_b2[o]),
                ]

        # ------------------------------------------------------------ stage D: accumulate
        acc = [Signal(signed(32), name=f"acc{o}") for o in range(L)]
        res = Signal(data.ArrayLayout(signed(32), L))
        res_mult = Signal(data.ArrayLayout(unsigned(MULT_BITS), L))
        with m.If(en):
            m.d.sync += res_valid.eq(vc & last_c)
            for o in range(L):
                new = Mux(first_c & mask_c[o], bias_c[o], acc[o]) + add_c[o]
                with m.If(vc & mask_c[o]):
                    m.d.sync += acc[o].eq(new)
                m.d.sync += [res[o].eq(Mux(mask_c[o], new, acc[o])), res_mult[o].eq(mult_c[o])]
        m.d.comb += [rq.i.valid.eq(res_valid), rq.i.payload.acc.eq(res), rq.i.payload.mult.eq(res_mult)]

        # ------------------------------------------------------------ clear
        with m.If(self.clear):
            m.d.sync += [wptr.eq(0), wsub.eq(0), pptr.eq(0), psub.eq(0), full.eq(0), wbank.eq(0), widx.eq(0), rbank.eq(0)]
            m.d.sync += [u.eq(0), t.eq(0), h.eq(0), waddr.eq(0)]
        return m
