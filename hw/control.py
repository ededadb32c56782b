"""The command processor: fetch, validate and run descriptors; errors, interrupt, watchdog, counters.

Run (docs/engine.md § Program execution): on START the engine checks PROG_ADDR/PROG_LEN,
then for each descriptor index i: fetch 64 bytes from PROG_ADDR + 64 i through the DMA,
validate them (the same checks, in the same order, as codenet.sw.engine.check_descriptor),
stop at END, otherwise run the op to completion (every output byte written and
acknowledged) and go on, until PROG_LEN descriptors have run. The first error stops the
run: DMA traffic in flight drains, STATUS gets the error code and the failing index,
IRQ_STATUS.ERROR is set. A watchdog ends the run with WATCHDOG when no bus handshake and no
unit step happens for WATCHDOG cycles.

Op sequencing: the controller turns unit requests (window unit rows, side rows, weights;
move unit runs) and its own row counters (pointwise pixels, output rows) into DMA commands,
routes read data to the unit that asked for it (by the command's tag) and feeds the write
engine from the unit that produces the op's output.
"""

from __future__ import annotations

import enum

from amaranth import C, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..sw import engine as E
from .window import Req, WinMode

__all__ = ["Controller", "Tag"]


class Tag(enum.IntEnum):
    DESC = 0
    PW_WEIGHTS = 1
    PW_PARAMS = 2
    PIX = 3
    WIN = 4
    MOVE = 5


class St(enum.IntEnum):
    IDLE = 0
    FETCH = 1
    CHECK = 2
    EXEC = 3
    DRAIN = 4


def _ceil_div_pow2(v, lg):
    return (v + (1 << lg) - 1) >> lg


def _command_stage(m, port, name):
    """A pipelined DMA command stage: returns (source fields, source valid, taken, busy, clear
    statements, free).

    A source drives the fields and `valid`; `taken` tells it that its command was
    registered; `free` (taken = valid & free) gives a source selected by registered
    conditions a `ready` that does not depend on its own `valid`. The command then goes
    through three registered steps so that no step has more than one multiplier or one adder
    behind a register (50 MHz on ECP5): the fields (A), the products ``y * ystride`` and
    ``x * xstride`` and ``base + goff`` (B), their sum ``addr`` on the DMA's command port
    (C). One command per cycle; `busy` is 1 while any step holds one.
    """
    fields = {k: Signal(32, name=f"{name}_{k}") for k in ("base", "ystride", "goff", "nbytes", "count", "stride")}
    fields["y"] = Signal(16, name=f"{name}_y")  # a row index: 16 x 32-bit multiply
    fields["x"] = Signal(16, name=f"{name}_x")  # a pixel or group index: 16 x 16-bit multiply
    fields["xstride"] = Signal(16, name=f"{name}_xstride")
    has_tag = "tag" in port.payload.shape().members
    if has_tag:
        fields["tag"] = Signal(port.payload.tag.shape(), name=f"{name}_tag")
    passed = ["nbytes", "count", "stride"] + (["tag"] if has_tag else [])
    valid, taken = Signal(name=f"{name}_valid"), Signal(name=f"{name}_taken")
    a = {k: Signal.like(v, name=f"{name}_a_{k}") for k, v in fields.items()}
    b = {k: Signal.like(fields[k], name=f"{name}_b_{k}") for k in passed}
    b_yprod, b_xprod, b_sum = Signal(32, name=f"{name}_b_yprod"), Signal(32, name=f"{name}_b_xprod"), Signal(32, name=f"{name}_b_sum")
    a_valid, b_valid = Signal(name=f"{name}_a_valid"), Signal(name=f"{name}_b_valid")
    c_free = ~port.valid | port.ready
    b_go = b_valid & c_free
    a_go = a_valid & (~b_valid | b_go)
    free = Signal(name=f"{name}_free")
    m.d.comb += [free.eq(~a_valid | a_go), taken.eq(valid & free)]
    with m.If(port.valid & port.ready):
        m.d.sync += port.valid.eq(0)
    with m.If(b_go):
        m.d.sync += [b_valid.eq(0), port.valid.eq(1), port.payload.addr.eq(b_sum + b_yprod + b_xprod)]
        m.d.sync += [getattr(port.payload, k).eq(b[k]) for k in passed]
    with m.If(a_go):
        m.d.sync += [
            b_valid.eq(1),
            b_yprod.eq(a["y"] * a["ystride"]),
            b_xprod.eq(a["x"] * a["xstride"]),
            b_sum.eq(a["base"] + a["goff"]),
        ]
        m.d.sync += [b[k].eq(a[k]) for k in passed]
    # step A loads whenever it is free, valid or not: its enable then depends on the stage's
    # own registers only, not on the sources' selection logic (timing)
    with m.If(free):
        m.d.sync += [a_valid.eq(valid)] + [a[k].eq(v) for k, v in fields.items()]
    busy = a_valid | b_valid | port.valid
    clear = [a_valid.eq(0), b_valid.eq(0), port.valid.eq(0)]
    return fields, valid, taken, busy, clear, free


class Controller(wiring.Component):
    def __init__(self, cfg: E.EngineConfig, pw, win, move, rd, wr):
        self.cfg = cfg
        self.pw, self.win, self.move, self.rd, self.wr = pw, win, move, rd, wr
        super().__init__(
            {
                "start": In(1),
                "prog_addr": In(32),
                "prog_len": In(32),
                "watchdog": In(32),
                "busy": Out(1),
                "done": Out(1),
                "error": Out(8),
                "err_desc": Out(16),
                "err_addr": Out(32),
                "desc_index": Out(32),
                "irq_done": Out(1),
                "irq_error": Out(1),
                "dp_reset": Out(1),
                "perf": Out(wiring.Signature({name.lower(): Out(64) for name, _ in E.PERF_COUNTERS})),
            }
        )

    # ------------------------------------------------------------------ validation
    def _check(self, m, f, index):
        """ErrorCode of the descriptor held in `f` (field name -> Value), as check_descriptor.

        Two steps for timing: every check's flag (and the weight-word product) is registered
        in the last FETCH cycle, the compare and the priority of the codes follow in CHECK.
        """
        cfg = self.cfg
        L = cfg.lanes
        lg = L.bit_length() - 1
        op = f["op"]

        def is_op(*ops):
            r = C(0, 1)
            for o in ops:
                r = r | (op == int(o))
            return r

        magic_ok = (f["magic"] == E.DESC_MAGIC) & (f["seq"] == index[:16])
        op_ok = op <= max(int(o) for o in E.Op)
        res_bad = C(0, 1)
        for w, mask in E.RESERVED_MASKS.items():
            res_bad = res_bad | ((self.words[w] & mask) != 0)
        unused_bad = C(0, 1)
        for fld in E.DESC_FIELDS:
            if fld.name in ("op", "seq", "magic"):
                continue
            users = [o for o in E.Op if fld.name in E.OP_FIELDS[o]]
            unused_bad = unused_bad | ((f[fld.name] != 0) & ~is_op(*users))
        stride = f["stride"]
        stride_ok = C(0, 1)
        for o in E.Op:
            for s in E.OP_STRIDES.get(o, (1,)):
                stride_ok = stride_ok | ((op == int(o)) & (stride == E.STRIDE_CODES[s]))
        field_bad = res_bad | unused_bad | ~stride_ok
        conv = is_op(*E.CONV_OPS)
        square = is_op(E.Op.DEFORM_SQUARE)
        offs = is_op(E.Op.DEFORM_OFFSETS)
        shift_bad = (conv & (f["shift"] > E.SHIFT_MAX)) | (square & ((f["max_dilation"] == 0) | (f["max_dilation"] > 256)))

        view_bad = C(0, 1)
        for p in ("in", "out"):
            h, w_, c, ps, rs = (f[f"{p}_{x}"] for x in ("h", "w", "c", "ps", "rs"))
            prod = Signal(32, name=f"{p}_wps")
            m.d.comb += prod.eq(w_ * ps)
            view_bad = view_bad | (h == 0) | (w_ == 0) | (c == 0) | (ps < c) | (rs < prod)
        side_prod = Signal(32)
        m.d.comb += side_prod.eq(f["out_w"] * f["side_ps"])
        view_bad = view_bad | (square & (f["side_ps"] != 1)) | (offs & (f["side_ps"] < 18))
        view_bad = view_bad | ((square | offs) & (f["side_rs"] < side_prod))

        window = is_op(*E.WINDOW_OPS)
        up = is_op(E.Op.UPSAMPLE2X)
        exp_h = Signal(17)
        exp_w = Signal(17)
        m.d.comb += [
            exp_h.eq(Mux(window, ((f["in_h"] - 1) >> stride) + 1, Mux(up, f["in_h"] << 1, f["in_h"]))),
            exp_w.eq(Mux(window, ((f["in_w"] - 1) >> stride) + 1, Mux(up, f["in_w"] << 1, f["in_w"]))),
        ]
        keeps_c = ~is_op(E.Op.CONV1X1, E.Op.CONV3X3)
        shape_bad = (f["out_h"] != exp_h) | (f["out_w"] != exp_w) | (keeps_c & (f["out_c"] != f["in_c"]))

        # weight words of CONV1X1 / CONV3X3: OC tiles x IC tiles x (2 for 8-bit weights)
        cs_log2 = self.cs_log2
        octs = _ceil_div_pow2(f["out_c"], lg)
        icts = Mux(is_op(E.Op.CONV3X3), _ceil_div_pow2(9 << cs_log2, lg), _ceil_div_pow2(f["in_c"], lg))
        words = Signal(32)
        m.d.sync += words.eq((octs * icts) << f["w8"])
        limit_bad = (f["in_c"] > cfg.max_channels) | (f["out_c"] > cfg.max_channels)
        limit_bad = limit_bad | (window & (f["in_w"] > cfg.max_width))
        limit_bad = limit_bad | (is_op(E.Op.CONV3X3) & (f["in_c"] > L))
        limit_bad = limit_bad | (square & (f["max_dilation"] > cfg.max_dilation))
        limit_bad = limit_bad | (offs & ((cfg.max_offset == 0) | (f["max_offset"] > cfg.max_offset)))
        flags = {
            "magic_ok": magic_ok,
            "op_ok": op_ok,
            "field_bad": field_bad,
            "end": is_op(E.Op.END),
            "shift_bad": shift_bad,
            "view_bad": view_bad,
            "shape_bad": shape_bad,
            "limit_bad": limit_bad,
            "pw": is_op(E.Op.CONV1X1, E.Op.CONV3X3),
        }
        q = {k: Signal(name=f"chk_{k}") for k in flags}
        m.d.sync += [q[k].eq(v) for k, v in flags.items()]
        magic_ok, op_ok, field_bad, shift_bad = q["magic_ok"], q["op_ok"], q["field_bad"], q["shift_bad"]
        view_bad, shape_bad = q["view_bad"], q["shape_bad"]
        limit_bad = q["limit_bad"] | (q["pw"] & (words > cfg.wbuf_depth))

        code = Signal(8)
        EC = E.ErrorCode
        with m.If(~magic_ok):
            m.d.comb += code.eq(EC.BAD_MAGIC)
        with m.Elif(~op_ok):
            m.d.comb += code.eq(EC.BAD_OP)
        with m.Elif(field_bad):
            m.d.comb += code.eq(EC.BAD_FIELD)
        with m.Elif(q["end"]):
            m.d.comb += code.eq(EC.NONE)
        with m.Elif(shift_bad):
            m.d.comb += code.eq(EC.BAD_FIELD)
        with m.Elif(view_bad):
            m.d.comb += code.eq(EC.BAD_VIEW)
        with m.Elif(shape_bad):
            m.d.comb += code.eq(EC.BAD_SHAPE)
        with m.Elif(limit_bad):
            m.d.comb += code.eq(EC.LIMIT)
        return code

    # ------------------------------------------------------------------ elaborate
    def elaborate(self, platform):  # noqa: C901  (the controller is one state machine)
        m = Module()
        cfg = self.cfg
        L = cfg.lanes
        lg = L.bit_length() - 1
        pw, win, move, rd, wr = self.pw, self.win, self.move, self.rd, self.wr
        EC = E.ErrorCode

        # ------------------------------------------------------------ descriptor registers
        self.words = words = [Signal(32, name=f"desc_w{k}") for k in range(E.DESC_WORDS)]
        f = {fld.name: words[fld.word][fld.lsb : fld.lsb + fld.width] for fld in E.DESC_FIELDS}
        op = f["op"]
        # CONV3X3: channels per im2col tap slot, log2 (the next power of two >= C)
        self.cs_log2 = cs_log2 = Signal(range(lg + 1))
        for k in range(lg + 1):
            with m.If(f["in_c"] > (1 << k)):
                m.d.comb += cs_log2.eq(k + 1)

        self.state = state = Signal(St)
        index = Signal(32)
        m.d.comb += self.desc_index.eq(index)
        # The checks and everything decoded from the descriptor are registered: the words are
        # complete in the last FETCH cycle (fetch_beats == DESC_BYTES / L), so the registered
        # check flags are valid in CHECK and the registered unit settings from EXEC on, with no
        # extra cycle; nothing downstream sees the descriptor through more than one register.
        check_code = self._check(m, f, index)

        # ------------------------------------------------------------ op decode
        def is_op(*ops):
            r = C(0, 1)
            for o in ops:
                r = r | (op == int(o))
            return r

        def reg(value, shape=1, name=None):
            q = Signal(shape, name=name)
            m.d.sync += q.eq(value)
            return q

        win_ops = (E.Op.DWCONV3X3, E.Op.DEFORM_SQUARE, E.Op.DEFORM_OFFSETS, E.Op.MAXPOOL3X3)
        is_c1 = reg(is_op(E.Op.CONV1X1), name="is_c1")
        is_c3 = reg(is_op(E.Op.CONV3X3), name="is_c3")
        is_pw = reg(is_op(E.Op.CONV1X1, E.Op.CONV3X3), name="is_pw")
        is_win = reg(is_op(*win_ops), name="is_win")
        is_move = reg(is_op(E.Op.COPY, E.Op.UPSAMPLE2X), name="is_move")
        is_offs = reg(is_op(E.Op.DEFORM_OFFSETS), name="is_offs")
        groups = reg(Mux(is_op(*win_ops), _ceil_div_pow2(f["in_c"], lg), 1), 16, name="groups")
        octs = reg(_ceil_div_pow2(f["out_c"], lg), 16, name="octs")
        ict_c = Mux(is_op(E.Op.CONV3X3), _ceil_div_pow2(9 << cs_log2, lg), _ceil_div_pow2(f["in_c"], lg))  # win.ict for CONV3X3
        ict = reg(ict_c, range(max(cfg.ktiles_max, 9) + 1), name="ict")
        wwords = reg((octs * ict) << f["w8"], 32, name="wwords")  # from registers: valid from EXEC on, used only there
        out_h_m1 = reg(f["out_h"] - 1, 16, name="out_h_m1")  # wrap values of the row counters
        in_h_m1 = reg(f["in_h"] - 1, 16, name="in_h_m1")
        groups_m1 = reg(groups - 1, 16, name="groups_m1")  # from a register: valid from EXEC on

        # unit settings (held while the descriptor runs; registered, see above); the counts the
        # controller keeps for itself are the units' too
        m.d.comb += [win.groups.eq(groups), pw.ict.eq(ict), pw.oct.eq(octs)]
        mode = Signal(3)
        with m.Switch(op):
            with m.Case(int(E.Op.CONV3X3)):
                m.d.comb += mode.eq(WinMode.IM2COL)
            with m.Case(int(E.Op.DEFORM_SQUARE)):
                m.d.comb += mode.eq(WinMode.SQUARE)
            with m.Case(int(E.Op.DEFORM_OFFSETS)):
                m.d.comb += mode.eq(WinMode.OFFSETS)
            with m.Case(int(E.Op.MAXPOOL3X3)):
                m.d.comb += mode.eq(WinMode.MAXPOOL)
            with m.Default():
                m.d.comb += mode.eq(WinMode.DW)
        m.d.sync += [
            win.mode.eq(mode),
            win.stride_log2.eq(f["stride"]),
            win.in_h.eq(f["in_h"]),
            win.in_w.eq(f["in_w"]),
            win.dmax.eq(f["max_dilation"]),
            win.rmax.eq(f["max_offset"]),
            win.cs_log2.eq(cs_log2),
            win.in_signed.eq(f["in_signed"]),
            win.w8.eq(f["w8"]),
            win.shift.eq(f["shift"]),
            win.relu.eq(f["relu"]),
            pw.w8.eq(f["w8"]),
            pw.in_signed.eq(f["in_signed"]),
            pw.shift.eq(f["shift"]),
            pw.relu.eq(f["relu"]),
            move.upsample.eq(is_op(E.Op.UPSAMPLE2X)),
            move.in_h.eq(f["in_h"]),
            move.in_w.eq(f["in_w"]),
            move.nbp.eq(_ceil_div_pow2(f["in_c"], lg)),
        ]

        # ------------------------------------------------------------ command sources
        # each source offers (base, goff, y, ystride, x, xstride, nbytes, count, stride[, tag]);
        # the address addr = base + goff + y * ystride + x * xstride is formed in the stage
        cmd, wcmd = rd.cmd, wr.cmd
        src, src_valid, src_take, src_busy, src_clear, src_free = _command_stage(m, cmd, "rsrc")
        src_tag = src["tag"]
        wsrc, wsrc_valid, wsrc_take, wsrc_busy, wsrc_clear, wsrc_free = _command_stage(m, wcmd, "wsrc")

        # ------------------------------------------------------------ phase state inside EXEC
        fetch_sent = Signal()
        fetch_beats = Signal(range(E.DESC_BYTES // L + 1))
        load_step = Signal(2)  # CONV: 0 params, 1 weights, 2 done
        started = Signal()  # unit start pulse given
        rrow = Signal(16)  # CONV1X1 pixel rows requested
        rows_left = Signal()  # rrow < in_h, kept as a flag
        wg = Signal(16)  # output writes: group
        wy = Signal(16)  # output writes: row
        wdone = Signal()  # all output write commands issued
        exec_cycles = Signal(2)

        # DESC fetch
        with m.If((state == St.FETCH) & ~fetch_sent):
            m.d.comb += [
                src_valid.eq(1),
                src["base"].eq(self.prog_addr),
                src["goff"].eq(index << (E.DESC_BYTES.bit_length() - 1)),
                src["nbytes"].eq(E.DESC_BYTES),
                src["count"].eq(1),
                src_tag.eq(Tag.DESC),
            ]
            with m.If(src_take):
                m.d.sync += fetch_sent.eq(1)
        with m.Elif((state == St.EXEC) & is_pw & (load_step < 2)):
            m.d.comb += [src_valid.eq(1), src["count"].eq(1)]
            with m.If(load_step == 0):
                m.d.comb += [src["base"].eq(f["param_addr"]), src["nbytes"].eq(octs * 6 * L), src_tag.eq(Tag.PW_PARAMS)]
            with m.Else():
                m.d.comb += [src["base"].eq(f["weight_addr"]), src["nbytes"].eq(wwords << (2 * lg - 1)), src_tag.eq(Tag.PW_WEIGHTS)]
            with m.If(src_take):
                m.d.sync += load_step.eq(load_step + 1)
        with m.Elif((state == St.EXEC) & is_c1 & rows_left):
            m.d.comb += [
                src_valid.eq(1),
                src["base"].eq(f["in_addr"]),
                src["y"].eq(rrow),
                src["ystride"].eq(f["in_rs"]),
                src["nbytes"].eq(f["in_c"]),
                src["count"].eq(f["in_w"]),
                src["stride"].eq(f["in_ps"]),
                src_tag.eq(Tag.PIX),
            ]
            with m.If(src_take):
                m.d.sync += [rrow.eq(rrow + 1), rows_left.eq(rrow != in_h_m1)]
        with m.Elif((state == St.EXEC) & (is_win | is_c3) & started):
            req = win.req.payload
            g = req.group
            m.d.comb += [src_valid.eq(win.req.valid), src_tag.eq(Tag.WIN), src["count"].eq(1)]
            with m.Switch(req.kind):
                with m.Case(Req.WEIGHTS):
                    per = Mux(f["w8"], 9 * L, 5 * L)
                    m.d.comb += [src["base"].eq(f["weight_addr"]), src["x"].eq(g), src["xstride"].eq(per), src["nbytes"].eq(per)]
                with m.Case(Req.PARAMS):
                    m.d.comb += [src["base"].eq(f["param_addr"]), src["x"].eq(g), src["xstride"].eq(6 * L), src["nbytes"].eq(6 * L)]
                with m.Case(Req.ROW):
                    left = f["in_c"] - (g << lg)
                    m.d.comb += [
                        src["base"].eq(f["in_addr"]),
                        src["y"].eq(req.index),
                        src["ystride"].eq(f["in_rs"]),
                        src["goff"].eq(g << lg),
                        src["nbytes"].eq(Mux(left > L, L, left)),
                        src["count"].eq(f["in_w"]),
                        src["stride"].eq(f["in_ps"]),
                    ]
                with m.Case(Req.SIDE):
                    m.d.comb += [src["base"].eq(f["side_addr"]), src["y"].eq(req.index), src["ystride"].eq(f["side_rs"])]
                    with m.If(is_offs):
                        m.d.comb += [src["nbytes"].eq(18), src["count"].eq(f["out_w"]), src["stride"].eq(f["side_ps"])]
                    with m.Else():
                        m.d.comb += src["nbytes"].eq(f["out_w"])
        with m.Elif((state == St.EXEC) & is_move & started):
            req = move.rreq.payload
            m.d.comb += [
                src_valid.eq(move.rreq.valid),
                src["base"].eq(f["in_addr"]),
                src["y"].eq(req.y),
                src["ystride"].eq(f["in_rs"]),
                src["x"].eq(req.x),
                src["xstride"].eq(f["in_ps"]),
                src["nbytes"].eq(f["in_c"]),
                src["count"].eq(req.count),
                src["stride"].eq(f["in_ps"]),
                src_tag.eq(Tag.MOVE),
            ]

        # the units' request streams see `ready` from registered conditions only (their
        # branches above and below are exclusive with the others)
        m.d.comb += [
            win.req.ready.eq((state == St.EXEC) & (is_win | is_c3) & started & src_free),
            move.rreq.ready.eq((state == St.EXEC) & is_move & started & src_free),
            move.wreq.ready.eq((state == St.EXEC) & is_move & started & wsrc_free),
        ]

        # ------------------------------------------------------------ write command sources
        with m.If((state == St.EXEC) & is_move & started):
            req = move.wreq.payload
            m.d.comb += [
                wsrc_valid.eq(move.wreq.valid),
                wsrc["base"].eq(f["out_addr"]),
                wsrc["y"].eq(req.y),
                wsrc["ystride"].eq(f["out_rs"]),
                wsrc["x"].eq(req.x),
                wsrc["xstride"].eq(f["out_ps"]),
                wsrc["nbytes"].eq(f["out_c"]),
                wsrc["count"].eq(req.count),
                wsrc["stride"].eq(f["out_ps"]),
            ]
        with m.Elif((state == St.EXEC) & ~is_move & ~wdone):
            left = f["out_c"] - (wg << lg)
            m.d.comb += [
                wsrc_valid.eq(1),
                wsrc["base"].eq(f["out_addr"]),
                wsrc["y"].eq(wy),
                wsrc["ystride"].eq(f["out_rs"]),
                wsrc["goff"].eq(wg << lg),
                wsrc["nbytes"].eq(Mux(is_win & (left > L), L, left)),
                wsrc["count"].eq(f["out_w"]),
                wsrc["stride"].eq(f["out_ps"]),
            ]
            with m.If(wsrc_take):
                with m.If(wy == out_h_m1):
                    m.d.sync += [wy.eq(0), wg.eq(wg + 1)]
                    with m.If(wg == groups_m1):
                        m.d.sync += wdone.eq(1)
                with m.Else():
                    m.d.sync += wy.eq(wy + 1)

        # ------------------------------------------------------------ read data routing
        data = rd.data
        tag = data.payload.tag
        sinks = {
            Tag.PW_WEIGHTS: pw.wload,
            Tag.PW_PARAMS: pw.pload,
            Tag.WIN: win.rd,
            Tag.MOVE: move.rd,
        }
        ready = C(0, 1)
        for t, port in sinks.items():
            sel = tag == int(t)
            m.d.comb += [port.valid.eq(data.valid & sel), port.payload.eq(data.payload.data)]
            ready = ready | (sel & port.ready)
        # pointwise pixels: from the DMA (CONV1X1) or from the window unit's im2col (CONV3X3)
        with m.If(is_c3):
            m.d.comb += [pw.pix.valid.eq(win.out.valid), pw.pix.payload.eq(win.out.payload), win.out.ready.eq(pw.pix.ready)]
        with m.Else():
            m.d.comb += [pw.pix.valid.eq(data.valid & (tag == Tag.PIX)), pw.pix.payload.eq(data.payload.data)]
            ready = ready | ((tag == Tag.PIX) & pw.pix.ready)
        desc_sel = tag == Tag.DESC
        m.d.comb += data.ready.eq(ready | desc_sel)
        with m.If(data.valid & desc_sel):
            per = L // 4
            for b in range(E.DESC_BYTES // L):
                with m.If(fetch_beats == b):
                    for k in range(per):
                        m.d.sync += words[b * per + k].eq(data.payload.data[32 * k : 32 * k + 32])
            m.d.sync += fetch_beats.eq(fetch_beats + 1)

        # ------------------------------------------------------------ write data
        wdata = wr.data
        with m.If(is_pw):
            m.d.comb += [wdata.valid.eq(pw.out.valid), wdata.payload.eq(pw.out.payload), pw.out.ready.eq(wdata.ready)]
        with m.Elif(is_win):
            m.d.comb += [wdata.valid.eq(win.out.valid), wdata.payload.eq(win.out.payload), win.out.ready.eq(wdata.ready)]
        with m.Else():
            m.d.comb += [wdata.valid.eq(move.wd.valid), wdata.payload.eq(move.wd.payload), move.wd.ready.eq(wdata.ready)]

        # ------------------------------------------------------------ run control
        # an op has finished when every output write was issued and acknowledged and no
        # read is left (exec_cycles: the units have seen their start)
        finished = Signal()
        drained = ~wsrc_busy & wr.idle & rd.idle & ~src_busy & (exec_cycles == 3)
        m.d.comb += finished.eq((state == St.EXEC) & drained & Mux(is_move, started & move.done, wdone))
        err_code = Signal(8)
        dma_err = rd.error | wr.error
        wd_count = Signal(32)
        progress = Signal()
        handshakes = rd.beat | wr.beat | (cmd.valid & cmd.ready) | (wcmd.valid & wcmd.ready)
        m.d.comb += progress.eq(handshakes | pw.mac_step | win.step | move.step)
        wd_fire = (self.watchdog != 0) & (wd_count >= self.watchdog)
        m.d.comb += self.busy.eq(state != St.IDLE)

        def finish(code):
            m.d.sync += [state.eq(St.IDLE), self.done.eq(1), self.error.eq(code)]
            m.d.comb += [self.irq_done.eq(code == 0), self.irq_error.eq(code != 0)]

        def fail(code):
            m.d.sync += [err_code.eq(code), self.err_desc.eq(index[:16]), state.eq(St.DRAIN)]

        with m.If(state == St.IDLE):
            m.d.sync += wd_count.eq(0)
        with m.Elif(progress):
            m.d.sync += wd_count.eq(0)
        with m.Else():
            m.d.sync += wd_count.eq(wd_count + 1)

        m.d.comb += [rd.abort.eq(state == St.DRAIN), wr.abort.eq(state == St.DRAIN)]
        m.d.sync += [pw.clear.eq(0), self.dp_reset.eq(0), win.start.eq(0), move.start.eq(0)]
        with m.Switch(state):
            with m.Case(St.IDLE):
                with m.If(self.start):
                    m.d.sync += [self.done.eq(0), self.error.eq(0), self.err_desc.eq(0), self.err_addr.eq(0), index.eq(0)]
                    # a run that ended in an error may have left a command the stopped DMA never took
                    m.d.sync += src_clear + wsrc_clear
                    with m.If((self.prog_len == 0) | (self.prog_addr[:6] != 0)):
                        finish(EC.BAD_PROGRAM)
                    with m.Else():
                        m.d.sync += self.dp_reset.eq(1)  # registered (it resets every unit): in FETCH's first cycle, units and DMA idle
                        m.d.sync += [state.eq(St.FETCH), fetch_sent.eq(0), fetch_beats.eq(0)]
            with m.Case(St.FETCH):
                with m.If(fetch_beats == E.DESC_BYTES // L):
                    m.d.sync += state.eq(St.CHECK)
            with m.Case(St.CHECK):
                with m.If(check_code != EC.NONE):
                    fail(check_code)
                with m.Elif(op == int(E.Op.END)):
                    finish(EC.NONE)
                with m.Else():
                    m.d.sync += [state.eq(St.EXEC), load_step.eq(0), started.eq(0), rrow.eq(0), wg.eq(0), wy.eq(0), wdone.eq(0)]
                    m.d.sync += rows_left.eq(1)  # in_h >= 1: the view check passed
                    m.d.sync += exec_cycles.eq(0)
                    m.d.sync += pw.clear.eq(1)  # registered (a wide reset): it takes effect in EXEC's first cycle, before any load
            with m.Case(St.EXEC):
                with m.If(exec_cycles != 3):
                    m.d.sync += exec_cycles.eq(exec_cycles + 1)
                # units start once the pointwise loads (if any) have been requested
                with m.If(~started & (~is_pw | (load_step == 2))):
                    m.d.sync += started.eq(1)
                    # registered: the units see it one cycle later (exec_cycles covers that)
                    m.d.sync += [win.start.eq(is_win | is_c3), move.start.eq(is_move)]
                with m.If(finished):
                    m.d.sync += [index.eq(index + 1), fetch_sent.eq(0), fetch_beats.eq(0)]
                    with m.If(index + 1 == self.prog_len):
                        finish(EC.NONE)
                    with m.Else():
                        m.d.sync += state.eq(St.FETCH)
            with m.Case(St.DRAIN):
                with m.If(rd.idle & wr.idle):
                    finish(err_code)
        # DMA errors (window, bus) end the run from any state; not in FETCH's first cycle, while
        # the registered datapath reset clears what a previous run's error left in the DMA
        with m.If((state != St.IDLE) & (state != St.DRAIN) & dma_err & ~self.dp_reset):
            fail(Mux(rd.bus_error | wr.bus_error, EC.BUS_ERROR, Mux(rd.error, EC.READ_WINDOW, EC.WRITE_WINDOW)))
            m.d.sync += self.err_addr.eq(Mux(rd.error, rd.err_addr, wr.err_addr))
        with m.If((state != St.IDLE) & wd_fire):
            m.d.sync += [state.eq(St.IDLE), self.done.eq(1), self.error.eq(EC.WATCHDOG), self.err_desc.eq(index[:16])]
            m.d.comb += self.irq_error.eq(1)

        # ------------------------------------------------------------ performance counters
        perf = self.perf
        counts = {
            "cycles": self.busy,
            "busy_pw": pw.mac_step,
            "busy_win": win.step,
            "busy_move": move.step,
            "busy_dma_rd": rd.beat,
            "busy_dma_wr": wr.beat,
            "bytes_rd": Mux(rd.beat, L, 0),
            "bytes_wr": wr.strobed,
            "desc_done": finished,
            "stall_dma": (state == St.EXEC) & ~(pw.mac_step | win.step | move.step),
        }
        # the increments are registered (the events come from deep in the units, the adders are
        # 64 bits): every counter lags one cycle, and the last busy cycle's increment lands in
        # the first idle one; START clears both
        for name, _ in E.PERF_COUNTERS:
            sig = getattr(perf, name.lower())
            inc = Signal(range(L + 1) if name in ("BYTES_RD", "BYTES_WR") else 1, name=f"inc_{name.lower()}")
            m.d.sync += inc.eq(Mux(state != St.IDLE, counts[name.lower()], 0))
            with m.If((state == St.IDLE) & self.start):
                m.d.sync += sig.eq(0)
            with m.Else():
                m.d.sync += sig.eq(sig + inc)
        return m
