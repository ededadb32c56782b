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
    """A registered DMA command stage: returns (source fields, source valid, taken).

    A source drives the fields and `valid`; the stage registers the command, with
    ``addr = base + y * ystride + goff``, whenever the DMA's command port is free, and
    `taken` tells the source that its command was registered.
    """
    fields = {k: Signal(32, name=f"{name}_{k}") for k in ("base", "ystride", "goff", "nbytes", "count", "stride")}
    fields["y"] = Signal(16, name=f"{name}_y")  # a row index: 16 x 32-bit multiply
    has_tag = "tag" in port.payload.shape().members
    if has_tag:
        fields["tag"] = Signal(port.payload.tag.shape(), name=f"{name}_tag")
    valid, taken = Signal(name=f"{name}_valid"), Signal(name=f"{name}_taken")
    with m.If(port.valid & port.ready):
        m.d.sync += port.valid.eq(0)
    m.d.comb += taken.eq(valid & (~port.valid | port.ready))
    with m.If(taken):
        m.d.sync += [
            port.valid.eq(1),
            port.payload.addr.eq(fields["base"] + fields["y"] * fields["ystride"] + fields["goff"]),
            port.payload.nbytes.eq(fields["nbytes"]),
            port.payload.count.eq(fields["count"]),
            port.payload.stride.eq(fields["stride"]),
        ]
        if has_tag:
            m.d.sync += port.payload.tag.eq(fields["tag"])
    return fields, valid, taken


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
        """ErrorCode of the descriptor held in `f` (field name -> Value), as check_descriptor."""
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
        m.d.comb += words.eq((octs * icts) << f["w8"])
        limit_bad = (f["in_c"] > cfg.max_channels) | (f["out_c"] > cfg.max_channels)
        limit_bad = limit_bad | (window & (f["in_w"] > cfg.max_width))
        limit_bad = limit_bad | (is_op(E.Op.CONV3X3) & (f["in_c"] > L))
        limit_bad = limit_bad | (square & (f["max_dilation"] > cfg.max_dilation))
        limit_bad = limit_bad | (offs & ((cfg.max_offset == 0) | (f["max_offset"] > cfg.max_offset)))
        limit_bad = limit_bad | (is_op(E.Op.CONV1X1, E.Op.CONV3X3) & (words > cfg.wbuf_depth))

        code = Signal(8)
        EC = E.ErrorCode
        with m.If(~magic_ok):
            m.d.comb += code.eq(EC.BAD_MAGIC)
        with m.Elif(~op_ok):
            m.d.comb += code.eq(EC.BAD_OP)
        with m.Elif(field_bad):
            m.d.comb += code.eq(EC.BAD_FIELD)
        with m.Elif(is_op(E.Op.END)):
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
        check_code = self._check(m, f, index)

        # ------------------------------------------------------------ op decode
        def is_op(*ops):
            r = C(0, 1)
            for o in ops:
                r = r | (op == int(o))
            return r

        is_c1 = is_op(E.Op.CONV1X1)
        is_c3 = is_op(E.Op.CONV3X3)
        is_pw = is_c1 | is_c3
        is_win = is_op(E.Op.DWCONV3X3, E.Op.DEFORM_SQUARE, E.Op.DEFORM_OFFSETS, E.Op.MAXPOOL3X3)
        is_move = is_op(E.Op.COPY, E.Op.UPSAMPLE2X)
        is_offs = is_op(E.Op.DEFORM_OFFSETS)
        groups = Signal(16)
        m.d.comb += groups.eq(Mux(is_win, _ceil_div_pow2(f["in_c"], lg), 1))
        octs = Signal(16)
        m.d.comb += octs.eq(_ceil_div_pow2(f["out_c"], lg))
        ict = Signal(range(max(cfg.ktiles_max, 9) + 1))
        m.d.comb += ict.eq(Mux(is_c3, win.ict, _ceil_div_pow2(f["in_c"], lg)))
        wwords = Signal(32)
        m.d.comb += wwords.eq((octs * ict) << f["w8"])

        # unit settings (held while the descriptor runs)
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
        m.d.comb += [
            win.mode.eq(mode),
            win.stride_log2.eq(f["stride"]),
            win.in_h.eq(f["in_h"]),
            win.in_w.eq(f["in_w"]),
            win.groups.eq(groups),
            win.dmax.eq(f["max_dilation"]),
            win.rmax.eq(f["max_offset"]),
            win.cs_log2.eq(cs_log2),
            win.in_signed.eq(f["in_signed"]),
            win.w8.eq(f["w8"]),
            win.shift.eq(f["shift"]),
            win.relu.eq(f["relu"]),
            pw.ict.eq(ict),
            pw.oct.eq(octs),
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
        # each source offers (base, y, ystride, goff, nbytes, count, stride[, tag]); the
        # address addr = base + y * ystride + goff is formed in the registered stage
        cmd, wcmd = rd.cmd, wr.cmd
        src, src_valid, src_take = _command_stage(m, cmd, "rsrc")
        src_tag = src["tag"]
        wsrc, wsrc_valid, wsrc_take = _command_stage(m, wcmd, "wsrc")

        # ------------------------------------------------------------ phase state inside EXEC
        fetch_sent = Signal()
        fetch_beats = Signal(range(E.DESC_BYTES // L + 1))
        load_step = Signal(2)  # CONV: 0 params, 1 weights, 2 done
        started = Signal()  # unit start pulse given
        rrow = Signal(16)  # CONV1X1 pixel rows requested
        wg = Signal(16)  # output writes: group
        wy = Signal(16)  # output writes: row
        wdone = Signal()  # all output write commands issued
        exec_cycles = Signal(2)

        # DESC fetch
        with m.If((state == St.FETCH) & ~fetch_sent):
            m.d.comb += [
                src_valid.eq(1),
                src["base"].eq(self.prog_addr),
                src["goff"].eq(index * E.DESC_BYTES),
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
        with m.Elif((state == St.EXEC) & is_c1 & (rrow < f["in_h"])):
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
                m.d.sync += rrow.eq(rrow + 1)
        with m.Elif((state == St.EXEC) & (is_win | is_c3) & started):
            req = win.req.payload
            g = req.group
            m.d.comb += [src_valid.eq(win.req.valid), win.req.ready.eq(src_take), src_tag.eq(Tag.WIN), src["count"].eq(1)]
            with m.Switch(req.kind):
                with m.Case(Req.WEIGHTS):
                    per = Mux(f["w8"], 9 * L, 5 * L)
                    m.d.comb += [src["base"].eq(f["weight_addr"]), src["goff"].eq(g * per), src["nbytes"].eq(per)]
                with m.Case(Req.PARAMS):
                    m.d.comb += [src["base"].eq(f["param_addr"]), src["goff"].eq(g * (6 * L)), src["nbytes"].eq(6 * L)]
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
                move.rreq.ready.eq(src_take),
                src["base"].eq(f["in_addr"]),
                src["y"].eq(req.y),
                src["ystride"].eq(f["in_rs"]),
                src["goff"].eq(req.x * f["in_ps"]),
                src["nbytes"].eq(f["in_c"]),
                src["count"].eq(req.count),
                src["stride"].eq(f["in_ps"]),
                src_tag.eq(Tag.MOVE),
            ]

        # ------------------------------------------------------------ write command sources
        with m.If((state == St.EXEC) & is_move & started):
            req = move.wreq.payload
            m.d.comb += [
                wsrc_valid.eq(move.wreq.valid),
                move.wreq.ready.eq(wsrc_take),
                wsrc["base"].eq(f["out_addr"]),
                wsrc["y"].eq(req.y),
                wsrc["ystride"].eq(f["out_rs"]),
                wsrc["goff"].eq(req.x * f["out_ps"]),
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
                with m.If(wy == f["out_h"] - 1):
                    m.d.sync += [wy.eq(0), wg.eq(wg + 1)]
                    with m.If(wg == groups - 1):
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
        drained = ~wcmd.valid & wr.idle & rd.idle & ~cmd.valid & (exec_cycles == 3)
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
        with m.Switch(state):
            with m.Case(St.IDLE):
                with m.If(self.start):
                    m.d.sync += [self.done.eq(0), self.error.eq(0), self.err_desc.eq(0), self.err_addr.eq(0), index.eq(0)]
                    # a run that ended in an error may have left a command the stopped DMA never took
                    m.d.sync += [cmd.valid.eq(0), wcmd.valid.eq(0)]
                    with m.If((self.prog_len == 0) | (self.prog_addr[:6] != 0)):
                        finish(EC.BAD_PROGRAM)
                    with m.Else():
                        m.d.comb += self.dp_reset.eq(1)
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
                    m.d.sync += exec_cycles.eq(0)
                    m.d.comb += pw.clear.eq(1)
            with m.Case(St.EXEC):
                with m.If(exec_cycles != 3):
                    m.d.sync += exec_cycles.eq(exec_cycles + 1)
                # units start once the pointwise loads (if any) have been requested
                with m.If(~started & (~is_pw | (load_step == 2))):
                    m.d.sync += started.eq(1)
                    m.d.comb += [win.start.eq(is_win | is_c3), move.start.eq(is_move)]
                with m.If(finished):
                    m.d.sync += [index.eq(index + 1), fetch_sent.eq(0), fetch_beats.eq(0)]
                    with m.If(index + 1 == self.prog_len):
                        finish(EC.NONE)
                    with m.Else():
                        m.d.sync += state.eq(St.FETCH)
            with m.Case(St.DRAIN):
                with m.If(rd.idle & wr.idle):
                    finish(err_code)
        # DMA errors (window, bus) end the run from any state
        with m.If((state != St.IDLE) & (state != St.DRAIN) & dma_err):
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
        for name, _ in E.PERF_COUNTERS:
            sig = getattr(perf, name.lower())
            with m.If((state == St.IDLE) & self.start):
                m.d.sync += sig.eq(0)
            with m.Elif(state != St.IDLE):
                m.d.sync += sig.eq(sig + counts[name.lower()])
        return m
