"""The window unit: line buffer, 3x3 samplers, depthwise MAC, max-pool and im2col.

One unit runs every 3x3 operation of the engine (docs/engine.md § Window unit):

- ``DW``       depthwise 3x3, padding 1, stride 1 or 2 (DWCONV3X3);
- ``SQUARE``   square-deformable: per-pixel dilation d = 1 + min(v, D-1) from a uint8 map;
- ``OFFSETS``  bounded-offset deformable: per pixel and tap an offset in [-R, R]^2 (3 cycles
  per pixel: one row of three taps per cycle);
- ``MAXPOOL``  max-pool 3x3, padding 1 (padding never wins), stride 1 or 2;
- ``IM2COL``   the dense 3x3 stem (input channels <= L): the 9 taps of a pixel are packed
  into ``ceil(9*cs/L)`` beats (cs = channels per tap slot, a power of two) for the
  pointwise array, stride 1, 2 or 4.

Channels are processed in groups of L (one beat per pixel and group); for each group the
input streams through a ring of ``lb_rows`` row slots. Every slot is stored three times
(one copy per tap column j), each copy a memory of max_width beats, so the nine taps of a
pixel are read in one cycle: tap (i, j) reads copy j of the slot holding its row, and all
slots of copy j share one column address. In the square sampler the three tap rows are
distinct, so no two taps ever need the same memory; the bounded sampler reads one tap row
(three taps, one per copy) per cycle.

The unit is the master of its own input: it asks for what it needs on `req` (weights and
parameters of a group, input row r of a group, side row y: the dilation map or the offsets)
only when the data can be stored at once, and takes the data on `rd` in request order. A
DMA that serves requests in order therefore never blocks, and loading overlaps compute as
far as the ring allows (a full output row ahead).
"""

from __future__ import annotations

import enum

from amaranth import C, Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sw.engine import EngineConfig, MulMap
from ..sw.intmath import MULT_BITS, SHIFT_MAX
from .pointwise import act9, registered_pairs, tree_sum
from .requant import Requant, unpack_params
from .skid import Skid

__all__ = ["WindowUnit", "WinMode", "Req"]


class WinMode(enum.IntEnum):
    DW = 0
    SQUARE = 1
    OFFSETS = 2
    MAXPOOL = 3
    IM2COL = 4


class Req(enum.IntEnum):
    """Kinds of `req`: what the unit wants loaded next (the sequencer turns each into a DMA read)."""

    WEIGHTS = 0  # group g's 9 x L weights: 5 beats (4-bit) or 9 beats (8-bit)
    PARAMS = 1  # group g's parameter tile: 6 beats
    ROW = 2  # input row `index` of group g: in_w beats, one per column (min(L, C - g*L) bytes each)
    SIDE = 3  # side row `index`: SQUARE: ceil(Wo / L) beats of map bytes; OFFSETS: Wo * ceil(18 / L) beats


REQ_LAYOUT = data.StructLayout({"kind": unsigned(2), "group": unsigned(16), "index": unsigned(16)})

NB_OFF = {4: 5, 8: 3, 16: 2, 32: 1}  # beats per pixel of offsets (18 bytes)


def _times(k: int, v: Value) -> Value:
    """`k * v` for a tap index k in {-1, 0, 1}, as a negation or a wire: Yosys keeps `-1 * v`
    as a multiplier, and on ECP5 that was a MULT18X18D on the engine's critical path (the
    dilation map's read data to the taps' offsets, 26.8 ns against 20)."""
    if k not in (-1, 0, 1):
        raise ValueError(f"tap index must be -1, 0 or 1, got {k}")
    return v if k == 1 else (-v if k == -1 else C(0, 1))


def _log2(v: int) -> int:
    return v.bit_length() - 1


class WindowUnit(wiring.Component):
    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        L = cfg.lanes
        beat = unsigned(8 * L)
        super().__init__(
            {
                "start": In(1),
                "done": Out(1),
                "mode": In(3),
                "stride_log2": In(2),
                "in_h": In(16),
                "in_w": In(16),
                "groups": In(16),
                "dmax": In(range(cfg.max_dilation + 1)),
                "rmax": In(range(max(cfg.max_offset, 1) + 1)),
                "cs_log2": In(range(_log2(L) + 1)),
                "in_signed": In(1),
                "w8": In(1),
                "shift": In(range(SHIFT_MAX + 1)),
                "relu": In(1),
                "req": Out(stream.Signature(REQ_LAYOUT)),
                "rd": In(stream.Signature(beat)),
                "out": Out(stream.Signature(beat)),
                "step": Out(1),
                "ict": Out(range(10)),
            }
        )

    def elaborate(self, platform):  # noqa: C901  (one pipeline, kept in one place)
        m = Module()
        cfg = self.cfg
        L = cfg.lanes
        NR = cfg.lb_rows
        MW = cfg.max_width
        has_off = cfg.max_offset > 0
        NB = NB_OFF[L]
        MB = -(-MW // L)  # map beats per row

        mode = self.mode
        # the mode's decodes: combinational for `start` and the registered geometry, registered
        # (valid from the cycle after `start`) for everything else, so that the pipeline's stall
        # logic starts at a register
        is_sq_c = mode == WinMode.SQUARE
        is_off_c = mode == WinMode.OFFSETS
        is_col_c = mode == WinMode.IM2COL
        is_mac_c = (mode == WinMode.DW) | is_sq_c | is_off_c
        is_sq, is_off, is_pool, is_col, is_mac = (Signal(name=f"is_{n}") for n in ("sq", "off", "pool", "col", "mac"))
        m.d.sync += [is_sq.eq(is_sq_c), is_off.eq(is_off_c), is_pool.eq(mode == WinMode.MAXPOOL), is_col.eq(is_col_c), is_mac.eq(is_mac_c)]
        has_side = is_sq | is_off

        # ------------------------------------------------------------ static geometry
        # Registered (the settings are held while an op runs): each value is one register
        # after the settings, valid in the cycle after `start` (the first use), except
        # out_total (three registers after) and side_m1 (two), used only when a group ends
        # and when side data arrive.
        out_h = Signal(16)
        out_w = Signal(16)
        out_h_m1 = Signal(16)  # the last output row / column, for the counters' wrap tests
        out_w_m1 = Signal(16)
        in_w_m1 = Signal(16)
        side_m1 = Signal(17)
        groups_m1 = Signal(16)
        out_h_c = ((self.in_h - 1) >> self.stride_log2) + 1
        out_w_c = ((self.in_w - 1) >> self.stride_log2) + 1
        m.d.sync += [
            out_h.eq(out_h_c),
            out_w.eq(out_w_c),
            out_h_m1.eq((self.in_h - 1) >> self.stride_log2),
            out_w_m1.eq((self.in_w - 1) >> self.stride_log2),
            in_w_m1.eq(self.in_w - 1),
            groups_m1.eq(self.groups - 1),
        ]
        reach = Signal(8)  # K: rows above/below the centre the op can touch
        reach_c = Mux(is_sq_c, self.dmax, Mux(is_off_c, self.rmax + 1, 1))
        m.d.sync += reach.eq(reach_c)
        side_beats = Signal(17)
        m.d.sync += side_beats.eq(Mux(is_sq_c, (out_w_c + L - 1) >> _log2(L), out_w_c * NB))
        m.d.sync += side_m1.eq(side_beats - 1)  # two registers after the settings: used when side data arrive
        ict = Signal(range(10))
        with m.Switch(self.cs_log2):
            for k in range(_log2(L) + 1):
                with m.Case(k):
                    m.d.comb += ict.eq(-(-9 * (1 << k) // L))
        m.d.comb += self.ict.eq(ict)
        ict_m1 = Signal(range(10))
        m.d.sync += ict_m1.eq(ict - 1)

        # ------------------------------------------------------------ control state
        state = Signal(range(4))  # 0 idle, 1 load weights/params, 2 run, 3 done
        group = Signal(16)
        m.d.comb += self.done.eq(state == 3)

        # request bookkeeping
        need_w = Signal()
        need_p = Signal()
        req_row = Signal(17)
        req_side = Signal(17)
        rows_loaded = Signal(17)
        side_loaded = Signal(17)
        load_slot = Signal(range(NR))
        load_col = Signal(16)

        # pixel counters (issue stage)
        py = Signal(16)
        py_p1 = Signal(17, init=1)  # py + 1, kept beside it
        px = Signal(16)
        pk = Signal(2)
        yc = Signal(17)
        xc = Signal(17)
        yslot = Signal(range(NR))
        issued_all = Signal()
        out_count = Signal(32)
        out_total = Signal(32)
        out_hw = Signal(32)  # out_h * out_w, then out_total: used only when a group ends
        m.d.sync += [out_hw.eq(out_h * out_w), out_total.eq(Mux(is_col, out_hw * ict, out_hw))]

        # ------------------------------------------------------------ memories
        lb = [[memory.Memory(shape=unsigned(8 * L), depth=MW, init=[]) for _ in range(3)] for _ in range(NR)]
        for s in range(NR):
            for j in range(3):
                m.submodules[f"lb{s}_{j}"] = lb[s][j]
        mapmem = memory.Memory(shape=unsigned(8 * L), depth=2 * MB, init=[])
        m.submodules.mapmem = mapmem
        offmems = []
        if has_off:
            offmems = [memory.Memory(shape=unsigned(8 * L), depth=2 * MW, init=[]) for _ in range(NB)]
            for b, mem in enumerate(offmems):
                m.submodules[f"offmem{b}"] = mem
        wraw = [Signal(8 * L, name=f"wraw{b}") for b in range(9)]
        praw = [Signal(8 * L, name=f"praw{b}") for b in range(6)]

        # ------------------------------------------------------------ requests
        kinds = fifo.SyncFIFO(width=2, depth=1 << (NR + 6).bit_length())
        m.submodules.kinds = kinds
        low_needed = Signal(17)
        y_oldest = Signal(16)
        v1, v1b = Signal(), Signal()
        y1, y1b = Signal(16), Signal(16)
        m.d.comb += y_oldest.eq(Mux(v1b, y1b, Mux(v1, y1, py)))  # the oldest pixel that has not read the line buffer
        low = Signal(signed(19))
        m.d.comb += low.eq((y_oldest << self.stride_log2) - reach)
        # registered: one cycle late, so never above the true bound (y_oldest only grows within a group)
        row_bound = Signal(18)  # rows below it may be requested: low_needed + NR
        m.d.comb += low_needed.eq(Mux(low < 0, 0, low))
        m.d.sync += row_bound.eq(low_needed + NR)

        # the last input row any output row reads: rows past it are never requested, so every
        # request of a group has been served by the time its last pixel issues
        last_row = Signal(19)
        lr = Signal(19)
        m.d.comb += lr.eq(((out_h_c - 1) << self.stride_log2) + reach_c)
        m.d.sync += last_row.eq(Mux(lr >= self.in_h, self.in_h - 1, lr))
        want_side = Signal()
        want_row = Signal()
        m.d.comb += [
            want_side.eq(has_side & (req_side < out_h) & (req_side <= py_p1)),
            want_row.eq((req_row <= last_row) & (req_row < row_bound)),
        ]
        rq_valid = self.req.valid
        with m.If(self.req.ready & rq_valid):
            m.d.sync += rq_valid.eq(0)
        can_req = ~rq_valid & kinds.w_rdy  # at most every other cycle, but `ready` reaches only rq_valid (timing)
        m.d.comb += [kinds.w_data.eq(self.req.payload.kind), kinds.w_en.eq(self.req.valid & self.req.ready)]
        with m.If(can_req):
            with m.If((state == 1) & need_w):
                m.d.sync += [rq_valid.eq(1), self.req.payload.kind.eq(Req.WEIGHTS), need_w.eq(0)]
            with m.Elif((state == 1) & need_p):
                m.d.sync += [rq_valid.eq(1), self.req.payload.kind.eq(Req.PARAMS), need_p.eq(0)]
            with m.Elif(((state == 1) | (state == 2)) & want_side):
                m.d.sync += [rq_valid.eq(1), self.req.payload.kind.eq(Req.SIDE), self.req.payload.index.eq(req_side)]
                m.d.sync += req_side.eq(req_side + 1)
            with m.Elif(((state == 1) | (state == 2)) & want_row):
                m.d.sync += [rq_valid.eq(1), self.req.payload.kind.eq(Req.ROW), self.req.payload.index.eq(req_row)]
                m.d.sync += req_row.eq(req_row + 1)
        m.d.sync += self.req.payload.group.eq(group)

        # ------------------------------------------------------------ data routing
        head = kinds.r_data
        beat_no = Signal(17)
        # the last beat of the head request: one equality per kind against a registered count
        last_beat = Signal()
        with m.Switch(head):
            with m.Case(Req.WEIGHTS):
                m.d.comb += last_beat.eq(beat_no == Mux(self.w8, 8, 4))
            with m.Case(Req.PARAMS):
                m.d.comb += last_beat.eq(beat_no == 5)
            with m.Case(Req.ROW):
                m.d.comb += last_beat.eq(beat_no == in_w_m1)
            with m.Case(Req.SIDE):
                m.d.comb += last_beat.eq(beat_no == side_m1)
        m.d.comb += self.rd.ready.eq(kinds.r_rdy)
        take = self.rd.valid & kinds.r_rdy
        m.d.comb += kinds.r_en.eq(take & last_beat)
        with m.If(take):
            m.d.sync += beat_no.eq(Mux(last_beat, 0, beat_no + 1))
        lbw = [[lb[s][j].write_port() for j in range(3)] for s in range(NR)]
        for s in range(NR):
            for j in range(3):
                m.d.comb += [
                    lbw[s][j].addr.eq(load_col),
                    lbw[s][j].data.eq(self.rd.payload),
                    lbw[s][j].en.eq(take & (head == Req.ROW) & (load_slot == s)),
                ]
        side_slot = side_loaded[0]
        mapw = mapmem.write_port()
        m.d.comb += [
            mapw.addr.eq(Mux(side_slot, MB, 0) + beat_no),
            mapw.data.eq(self.rd.payload),
            mapw.en.eq(take & (head == Req.SIDE) & is_sq),
        ]
        off_x = Signal(16)
        off_b = Signal(range(NB))
        for b, mem in enumerate(offmems):
            p = mem.write_port()
            m.d.comb += [
                p.addr.eq(Mux(side_slot, MW, 0) + off_x),
                p.data.eq(self.rd.payload),
                p.en.eq(take & (head == Req.SIDE) & is_off & (off_b == b)),
            ]
        with m.If(take):
            with m.Switch(head):
                with m.Case(Req.WEIGHTS):
                    for b in range(9):
                        with m.If(beat_no == b):
                            m.d.sync += wraw[b].eq(self.rd.payload)
                with m.Case(Req.PARAMS):
                    for b in range(6):
                        with m.If(beat_no == b):
                            m.d.sync += praw[b].eq(self.rd.payload)
                with m.Case(Req.ROW):
                    with m.If(last_beat):
                        m.d.sync += [load_col.eq(0), rows_loaded.eq(rows_loaded + 1)]
                        m.d.sync += load_slot.eq(Mux(load_slot == NR - 1, 0, load_slot + 1))
                    with m.Else():
                        m.d.sync += load_col.eq(load_col + 1)
                with m.Case(Req.SIDE):
                    with m.If(off_b == NB - 1):
                        m.d.sync += [off_b.eq(0), off_x.eq(off_x + 1)]
                    with m.Else():
                        m.d.sync += off_b.eq(off_b + 1)
                    with m.If(last_beat):
                        m.d.sync += [side_loaded.eq(side_loaded + 1), off_b.eq(0), off_x.eq(0)]
        # rows and side rows are requested while the group's weights load; pixels wait for both
        w_got = Signal()
        p_got = Signal()
        with m.If(take & last_beat & (head == Req.WEIGHTS)):
            m.d.sync += w_got.eq(1)
        with m.If(take & last_beat & (head == Req.PARAMS)):
            m.d.sync += p_got.eq(1)
        loaded_wp = Signal()
        m.d.comb += loaded_wp.eq(~need_w & ~need_p & ((w_got & p_got) | ~is_mac))

        # ------------------------------------------------------------ pipeline control
        en = Signal()
        rows_ready = Signal()
        need_rows = Signal(18)  # yc + reach + 1, kept beside yc
        m.d.comb += rows_ready.eq((rows_loaded >= need_rows) | (rows_loaded >= self.in_h))
        side_ready = ~has_side | (side_loaded > py)
        issue = Signal()
        m.d.comb += [issue.eq(en & (state == 2) & ~issued_all & rows_ready & side_ready)]
        m.d.comb += self.step.eq(issue)
        sub_last = ~is_off | (pk == 2)
        s = Signal(3)
        m.d.comb += s.eq(1 << self.stride_log2)
        with m.If(issue):
            with m.If(~sub_last):
                m.d.sync += pk.eq(pk + 1)
            with m.Else():
                m.d.sync += pk.eq(0)
                with m.If(px == out_w_m1):
                    m.d.sync += [px.eq(0), xc.eq(0), py.eq(py + 1), py_p1.eq(py_p1 + 1), yc.eq(yc + s), need_rows.eq(need_rows + s)]
                    nxt = yslot + s
                    m.d.sync += yslot.eq(Mux(nxt >= NR, nxt - NR, nxt))
                    with m.If(py == out_h_m1):
                        m.d.sync += issued_all.eq(1)
                with m.Else():
                    m.d.sync += [px.eq(px + 1), xc.eq(xc + s)]

        # side buffer reads (issue stage)
        mapr = mapmem.read_port()
        m.d.comb += [mapr.addr.eq(Mux(py[0], MB, 0) + (px >> _log2(L))), mapr.en.eq(en)]
        offr = [mem.read_port() for mem in offmems]
        for p in offr:
            m.d.comb += [p.addr.eq(Mux(py[0], MW, 0) + px), p.en.eq(en)]

        # ------------------------------------------------------------ stage 1: the taps' offsets
        k1 = Signal(2)
        x1 = Signal(16)
        yc1 = Signal(17)
        xc1 = Signal(17)
        ys1 = Signal(range(NR))
        with m.If(en):
            m.d.sync += [v1.eq(issue), y1.eq(py), x1.eq(px), k1.eq(pk), yc1.eq(yc), xc1.eq(xc), ys1.eq(yslot)]
        mapbyte = Signal(8)
        m.d.comb += mapbyte.eq(mapr.data.word_select(x1[: _log2(L)] if L > 1 else 0, 8))
        dil = Signal(range(cfg.max_dilation + 1))
        m.d.comb += dil.eq(Mux(is_sq, Mux(mapbyte >= self.dmax, self.dmax, mapbyte + 1), 1))
        offb = Cat(*[p.data for p in offr]) if has_off else C(0, 8 * 18)

        def clamp_off(v):
            r = Cat(self.rmax, C(0, 1)).as_signed()
            return Mux(v > r, r, Mux(v < -r, -r, v))

        # stage 1b: the taps' offsets from the centre are registered (the map / offset memories'
        # read data, then a compare and a clamp, stay in stage 1), the coordinates follow
        k1b = Signal(2)
        yc1b = Signal(17)
        xc1b = Signal(17)
        ys1b = Signal(range(NR))
        with m.If(en):
            m.d.sync += [v1b.eq(v1), y1b.eq(y1), k1b.eq(k1), yc1b.eq(yc1), xc1b.eq(xc1), ys1b.eq(ys1)]
        coord = signed(19)
        tap_row = [[Signal(coord, name=f"r{i}{j}") for j in range(3)] for i in range(3)]
        tap_col = [[Signal(coord, name=f"c{i}{j}") for j in range(3)] for i in range(3)]
        tap_slot = [[Signal(range(NR), name=f"sl{i}{j}") for j in range(3)] for i in range(3)]
        for i in range(3):
            for j in range(3):
                t = 3 * i + j
                dy = clamp_off(offb[8 * (2 * t) : 8 * (2 * t) + 8].as_signed())
                dx = clamp_off(offb[8 * (2 * t + 1) : 8 * (2 * t + 1) + 8].as_signed())
                ddy = Signal(signed(10), name=f"ddy{i}{j}")
                ddx = Signal(signed(10), name=f"ddx{i}{j}")
                with m.If(en):
                    m.d.sync += [
                        ddy.eq(Mux(is_off, (i - 1) + dy, _times(i - 1, dil))),
                        ddx.eq(Mux(is_off, (j - 1) + dx, _times(j - 1, dil))),
                    ]
                m.d.comb += [
                    tap_row[i][j].eq(yc1b + ddy),
                    tap_col[i][j].eq(xc1b + ddx),
                ]
                sl = Signal(signed(10), name=f"slraw{i}{j}")
                m.d.comb += sl.eq(ys1b + ddy)
                m.d.comb += tap_slot[i][j].eq(Mux(sl < 0, sl + NR, Mux(sl >= NR, sl - NR, sl)))
        # copy j is read at the column of tap (k, j) in OFFSETS mode, of any row otherwise
        lbr = [[lb[s_][j].read_port() for j in range(3)] for s_ in range(NR)]
        col_j = [Signal(coord, name=f"col{j}") for j in range(3)]
        for j in range(3):
            with m.Switch(Mux(is_off, k1b, 0)):
                for k in range(3):
                    with m.Case(k):
                        m.d.comb += col_j[j].eq(tap_col[k][j])
            for s_ in range(NR):
                m.d.comb += [lbr[s_][j].addr.eq(col_j[j][: max(1, (MW - 1).bit_length())]), lbr[s_][j].en.eq(en)]

        # ------------------------------------------------------------ stage 2: tap data
        v2 = Signal()
        k2 = Signal(2)
        slot2 = [[Signal(range(NR), name=f"slot2_{i}{j}") for j in range(3)] for i in range(3)]
        valid2 = Signal(9)
        last2 = Signal()
        with m.If(en):
            m.d.sync += [v2.eq(v1b), k2.eq(k1b), last2.eq(~is_off | (k1b == 2))]
            for i in range(3):
                for j in range(3):
                    r, c = tap_row[i][j], tap_col[i][j]
                    m.d.sync += [
                        slot2[i][j].eq(tap_slot[i][j]),
                        valid2[3 * i + j].eq((r >= 0) & (r < self.in_h) & (c >= 0) & (c < self.in_w)),
                    ]
        tap_now = [[Signal(8 * L, name=f"tap_now{i}{j}") for j in range(3)] for i in range(3)]
        for i in range(3):
            for j in range(3):
                with m.Switch(slot2[i][j]):
                    for s_ in range(NR):
                        with m.Case(s_):
                            m.d.comb += tap_now[i][j].eq(Mux(valid2[3 * i + j], lbr[s_][j].data, 0))
        # OFFSETS: rows 0 and 1 of the window are kept until row 2 arrives
        held = [[Signal(8 * L, name=f"held{i}{j}") for j in range(3)] for i in range(2)]
        held_v = Signal(6)
        with m.If(en & v2 & is_off):
            for i in range(2):
                with m.If(k2 == i):
                    for j in range(3):
                        m.d.sync += [held[i][j].eq(tap_now[i][j]), held_v[3 * i + j].eq(valid2[3 * i + j])]

        # ------------------------------------------------------------ stage 3: the window
        v3 = Signal()
        taps3 = [Signal(8 * L, name=f"tap3_{t}") for t in range(9)]
        valid3 = Signal(9)
        with m.If(en):
            m.d.sync += v3.eq(v2 & last2)
            for i in range(3):
                for j in range(3):
                    t = 3 * i + j
                    if i < 2:
                        m.d.sync += [
                            taps3[t].eq(Mux(is_off, held[i][j], tap_now[i][j])),
                            valid3[t].eq(Mux(is_off, held_v[t], valid2[t])),
                        ]
                    else:
                        m.d.sync += [taps3[t].eq(tap_now[i][j]), valid3[t].eq(valid2[t])]

        # ------------------------------------------------------------ stage 4a: depthwise MAC
        m.submodules.requant = rq = Requant(L)
        m.d.comb += [rq.shift.eq(self.shift), rq.relu.eq(self.relu)]
        res_valid = Signal()
        wts = []
        for t in range(9):
            row = []
            for lane in range(L):
                q = t * L + lane
                w4 = Cat(*wraw[:5]).word_select(q, 4).as_signed()
                w8v = Cat(*wraw).word_select(q, 8).as_signed()
                wv = Signal(signed(8), name=f"dw_w{t}_{lane}")
                m.d.sync += wv.eq(Mux(self.w8, w8v, w4))  # registered: the weights are loaded long before the group's pixels
                row.append(wv)
            wts.append(row)
        biases, multipliers = unpack_params(Cat(*praw), L)
        mul_attr = {"use_dsp": "no"} if cfg.dw_mul == MulMap.LUT else {"use_dsp": "yes"}
        accs = Signal(data.ArrayLayout(signed(32), L))
        mults = Signal(data.ArrayLayout(unsigned(MULT_BITS), L))
        # two stages: the products' pair sums (the last product with the bias) are registered
        # (4a), then summed in a tree (4b)
        v4 = Signal()
        for lane in range(L):
            prods = []
            for t in range(9):
                pr = Signal(signed(17), name=f"dw_p{t}_{lane}", attrs=mul_attr)
                m.d.comb += pr.eq(act9(taps3[t][8 * lane : 8 * lane + 8], self.in_signed) * wts[t][lane])
                prods.append(pr)
            pairs = registered_pairs(m, prods + [biases[lane]], en, f"dw_pair{lane}_")
            with m.If(en):
                m.d.sync += [
                    accs[lane].eq(tree_sum(pairs)),
                    mults[lane].eq(multipliers[lane]),
                ]
        with m.If(en):
            m.d.sync += [v4.eq(v3 & is_mac), res_valid.eq(v4)]
        m.d.comb += [rq.i.valid.eq(res_valid), rq.i.payload.acc.eq(accs), rq.i.payload.mult.eq(mults)]

        # ------------------------------------------------------------ stages 4b, 5b: max-pool
        # a tree of maxima over two stages: 9 -> 5 -> 3 keys registered, then 3 -> 2 -> 1
        pool_v4 = Signal()
        pool_valid = Signal()
        pool_out = Signal(8 * L)

        def max_level(keys, name):
            nxt = []
            for k in range(0, len(keys) - 1, 2):
                mx = Signal(8, name=f"{name}_{k // 2}")
                m.d.comb += mx.eq(Mux(keys[k + 1] > keys[k], keys[k + 1], keys[k]))
                nxt.append(mx)
            return nxt + keys[len(keys) - len(keys) % 2 :]

        for lane in range(L):
            keys = []
            for t in range(9):
                b = taps3[t][8 * lane : 8 * lane + 8]
                key = Signal(8, name=f"pool_key{t}_{lane}")
                m.d.comb += key.eq(Mux(valid3[t], Cat(b[:7], b[7] ^ self.in_signed), 0))  # order-preserving as unsigned
                keys.append(key)
            mid = max_level(max_level(keys, f"pool_a{lane}"), f"pool_b{lane}")
            mid_q = [Signal(8, name=f"pool_mid{k}_{lane}") for k in range(len(mid))]
            with m.If(en):
                m.d.sync += [q.eq(v) for q, v in zip(mid_q, mid)]
            (best,) = max_level(max_level(mid_q, f"pool_c{lane}"), f"pool_d{lane}")
            with m.If(en):
                m.d.sync += pool_out[8 * lane : 8 * lane + 8].eq(Cat(best[:7], best[7] ^ self.in_signed))
        with m.If(en):
            m.d.sync += [pool_v4.eq(v3 & is_pool), pool_valid.eq(pool_v4)]

        # ------------------------------------------------------------ stage 4b: im2col packing
        col_valid = Signal()
        col_beat = Signal(range(10))
        col_taps = [Signal(8 * L, name=f"col_tap{t}") for t in range(9)]
        packed = Signal(8 * L)
        with m.Switch(self.cs_log2):
            for k in range(_log2(L) + 1):
                cs = 1 << k
                nbeats = -(-9 * cs // L)
                vec = []
                for q in range(nbeats * L):
                    tap, c = divmod(q, cs)
                    vec.append(col_taps[tap][8 * c : 8 * c + 8] if tap < 9 else C(0, 8))
                with m.Case(k):
                    with m.Switch(col_beat):
                        for b in range(nbeats):
                            with m.Case(b):
                                m.d.comb += packed.eq(Cat(*vec[b * L : (b + 1) * L]))

        # ------------------------------------------------------------ output and stall
        # the pipeline stalls on a register slice's `ready`, not on the next unit's
        m.submodules.out_skid = out_skid = Skid(unsigned(8 * L))
        wiring.connect(m, out_skid.o, wiring.flipped(self.out))
        out = out_skid.i
        col_last = col_beat == ict_m1
        with m.If(is_mac):
            m.d.comb += [out.valid.eq(rq.o.valid), out.payload.eq(Cat(*[rq.o.payload[k] for k in range(L)])), rq.o.ready.eq(out.ready)]
            m.d.comb += en.eq(~res_valid | rq.i.ready)
        with m.Elif(is_pool):
            m.d.comb += [out.valid.eq(pool_valid), out.payload.eq(pool_out)]
            m.d.comb += en.eq(~pool_valid | out.ready)
        with m.Else():
            m.d.comb += [out.valid.eq(col_valid), out.payload.eq(packed)]
            m.d.comb += en.eq(~col_valid | (out.ready & col_last))
        with m.If(is_col):
            with m.If(out.valid & out.ready):
                m.d.sync += col_beat.eq(Mux(col_last, 0, col_beat + 1))
            with m.If(en):
                m.d.sync += col_valid.eq(v3)
                for t in range(9):
                    m.d.sync += col_taps[t].eq(taps3[t])
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += out_count.eq(out_count + 1)

        # ------------------------------------------------------------ sequencing of groups
        def reset_group():
            m.d.sync += [
                req_row.eq(0),
                req_side.eq(0),
                rows_loaded.eq(0),
                side_loaded.eq(0),
                load_slot.eq(0),
                load_col.eq(0),
                py.eq(0),
                py_p1.eq(1),
                px.eq(0),
                pk.eq(0),
                yc.eq(0),
                need_rows.eq(reach_c + 1),  # the settings: valid at `start` too
                xc.eq(0),
                yslot.eq(0),
                issued_all.eq(0),
                out_count.eq(0),
                off_b.eq(0),
                off_x.eq(0),
                w_got.eq(0),
                p_got.eq(0),
                row_bound.eq(NR),  # py = 0 and nothing in flight: low_needed = 0
            ]

        with m.Switch(state):
            with m.Case(0, 3):
                with m.If(self.start):
                    reset_group()
                    m.d.sync += [group.eq(0), state.eq(1), need_w.eq(is_mac_c), need_p.eq(is_mac_c)]
            with m.Case(1):
                with m.If(loaded_wp):
                    m.d.sync += state.eq(2)
            with m.Case(2):
                # (with every beat counted none can be on the way out: `valid`, a register, not the next unit's `ready`)
                with m.If(issued_all & (out_count == out_total) & ~self.out.valid):
                    reset_group()
                    with m.If(group == groups_m1):
                        m.d.sync += state.eq(3)
                    with m.Else():
                        m.d.sync += [group.eq(group + 1), state.eq(1), need_w.eq(is_mac), need_p.eq(is_mac)]
        return m
