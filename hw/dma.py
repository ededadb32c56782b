"""The DMA: an AXI4 master with INCR bursts, a read engine and a write engine.

Both engines take commands of the form ``(addr, nbytes, count, stride)``: `count` *chunks*
of `nbytes` bytes, chunk k at ``addr + k * stride``, any byte alignment. Unit-side data is
*chunk-aligned*: a chunk of n bytes is ``ceil(n / L)`` beats, its first byte in lane 0 of
its first beat; the lanes after its last byte are don't-care. The engines shift data
between this form and the bus's address-aligned beats (docs/engine.md § DMA).

Safety (docs/engine.md § Address windows): before a chunk's first request is issued, its
byte range must lie inside one window granted for reading (reads) or writing (writes) and
below ``2**axi_addr_bits``; otherwise the engine issues nothing more, raises `error` with
the chunk's address, and lets what is in flight finish. A read burst is issued only when
the data FIFO has room for all of it, so R is never back-pressured for long and an abort
can always drain; a write burst's address is issued only once all of its data is in the
FIFO, so every AW is followed by its W beats even when the producer stops.

Bursts: at most `max_burst_beats` beats, never across a 4 KiB boundary; one ID (0); reads
and writes complete in order.
"""

from __future__ import annotations

from amaranth import C, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sw.engine import NUM_WINDOWS, EngineConfig
from .axi import AXI_OKAY
from .skid import Skid

__all__ = ["DmaReader", "DmaWriter", "cmd_layout", "window_signature"]

NBYTES_BITS = 24


def cmd_layout(tag_bits: int = 0) -> data.StructLayout:
    fields = {"addr": unsigned(32), "nbytes": unsigned(NBYTES_BITS), "count": unsigned(16), "stride": unsigned(32)}
    if tag_bits:
        fields["tag"] = unsigned(tag_bits)
    return data.StructLayout(fields)


def window_signature() -> wiring.Signature:
    """The granted windows, as the register file holds them (4 KiB pages)."""
    members = {}
    for k in range(NUM_WINDOWS):
        members[f"base{k}"] = Out(20)
        members[f"size{k}"] = Out(20)
        members[f"read{k}"] = Out(1)
        members[f"write{k}"] = Out(1)
    return wiring.Signature(members)


def window_ok(m, win, addr, last, nonzero, write: bool, addr_bits: int):
    """1 when the bytes [addr, last] lie inside one permitted window and the address space
    (`last` = addr + nbytes - 1, 34 bits; `nonzero`: nbytes != 0)."""
    oks = []
    for k in range(NUM_WINDOWS):
        base = Cat(C(0, 12), getattr(win, f"base{k}"))
        top = Signal(34, name=f"win_top{k}_{'w' if write else 'r'}")
        m.d.comb += top.eq(base + Cat(C(0, 12), getattr(win, f"size{k}")))
        perm = getattr(win, f"write{k}" if write else f"read{k}")
        oks.append(perm & (addr >= base) & (last < top))
    inside_space = last < (1 << addr_bits)
    ok = Signal(name=f"win_ok_{'w' if write else 'r'}")
    anyok = oks[0]
    for o in oks[1:]:
        anyok = anyok | o
    m.d.comb += ok.eq(anyok & inside_space & nonzero)
    return ok


class _ChunkWalker:
    """Shared address walk: from a command to chunks, from a chunk to bursts.

    Everything the issue decision needs is a register, computed ahead (50 MHz on ECP5): the
    next chunk's address (`nxt` = cur + stride), and for the current burst its address,
    its length - 1, the bus beats left in the chunk - 1 and the beats to the next 4 KiB page
    - 1; for the current chunk its window check and bus beat count. A command is taken in one
    cycle and its first chunk is set up in the next (`prime`), then one burst may issue per
    cycle: a chunk's next burst, or the next chunk's first. The burst registers come in two
    sets, the chunk's first burst (set up with the chunk) and a following one (set up when
    the previous burst issues), selected by `in_chunk`: with one set, Yosys shares the two
    length computations behind the issue decision.
    """

    def __init__(self, m, cfg: EngineConfig, name: str, win, write: bool):
        L = cfg.lanes
        MB = cfg.max_burst_beats
        self.lg = lg = L.bit_length() - 1
        pb = 12 - lg  # bits of a beat index within a page
        self.cur = Signal(32, name=f"{name}_chunk_addr")  # current chunk's first byte
        self.nxt = Signal(32, name=f"{name}_next_addr")  # next chunk's first byte
        self.left = Signal(16, name=f"{name}_chunks_left")
        self.nbytes = Signal(NBYTES_BITS, name=f"{name}_nbytes")
        self.nbm1 = Signal(NBYTES_BITS, name=f"{name}_nbytes_m1")
        self.nonzero = Signal(name=f"{name}_nonzero")
        self.stride = Signal(32, name=f"{name}_stride")
        self.prime = Signal(name=f"{name}_prime")  # a command was taken: set up its first chunk
        self.in_chunk = Signal(name=f"{name}_in_chunk")  # the chunk's first burst was issued; more follow
        self.n_axi = Signal(NBYTES_BITS, name=f"{name}_n_axi")  # bus beats of the current chunk
        self.n_out = Signal(NBYTES_BITS, name=f"{name}_n_out")  # chunk-aligned beats of a chunk
        self.ok = Signal(name=f"{name}_chunk_ok")  # the current chunk passed its window check
        # the current burst: its first beat (aligned), length, length - 1, the bus beats of the
        # chunk from it on - 1, the beats from it to the page end - 1
        shapes = {"start_addr": 32, "burst_len": range(MB + 1), "len_m1": range(MB), "left_m1": NBYTES_BITS, "page_m1": pb}
        ch = {k: Signal(v, name=f"{name}_ch_{k}") for k, v in shapes.items()}  # the chunk's first burst
        co = {k: Signal(v, name=f"{name}_co_{k}") for k, v in shapes.items()}  # a following burst
        for k, v in shapes.items():
            sig = Signal(v, name=f"{name}_{k}")
            m.d.comb += sig.eq(Mux(self.in_chunk, co[k], ch[k]))
            setattr(self, k, sig)
        self.last_burst = Signal(name=f"{name}_last_burst")
        m.d.comb += self.last_burst.eq(self.left_m1 == self.len_m1)

        def first_burst(nm1, page_m1):
            """(len - 1, len) of a burst with nm1 + 1 beats left and page_m1 + 1 beats to the page end."""
            lim = Mux(nm1 < MB - 1, nm1, MB - 1)
            len_m1 = Mux(page_m1 < lim, page_m1, lim)
            lim1 = Mux(nm1 < MB, nm1 + 1, MB)
            blen = Mux(page_m1 < lim1, page_m1 + 1, lim1)
            return len_m1, blen

        # the next chunk, from `nxt`
        a = self.nxt
        c_nm1 = Signal(NBYTES_BITS, name=f"{name}_c_nm1")
        c_last = Signal(34, name=f"{name}_c_last")
        m.d.comb += [c_nm1.eq((a[:lg] + self.nbm1) >> lg), c_last.eq(a + self.nbm1)]
        c_page_m1 = ~a[lg:12]
        c_len_m1, c_len = first_burst(c_nm1, c_page_m1)
        c_ok = window_ok(m, win, a, c_last, self.nonzero, write, cfg.axi_addr_bits)
        self.load_chunk = [
            self.cur.eq(a),
            self.nxt.eq(a + self.stride),
            self.n_axi.eq(c_nm1 + 1),
            self.ok.eq(c_ok),
            ch["start_addr"].eq(Cat(C(0, lg), a[lg:])),
            ch["left_m1"].eq(c_nm1),
            ch["page_m1"].eq(c_page_m1),
            ch["len_m1"].eq(c_len_m1),
            ch["burst_len"].eq(c_len),
            self.in_chunk.eq(0),
        ]
        # the chunk's next burst
        n_left_m1 = Signal(NBYTES_BITS, name=f"{name}_n_left_m1")
        n_page_m1 = Signal(pb, name=f"{name}_n_page_m1")
        m.d.comb += [
            n_left_m1.eq(self.left_m1 - self.burst_len),
            n_page_m1.eq(Mux(self.len_m1 == self.page_m1, (1 << pb) - 1, self.page_m1 - self.burst_len)),
        ]
        n_len_m1, n_len = first_burst(n_left_m1, n_page_m1)
        self.next_burst = [
            self.in_chunk.eq(1),
            co["start_addr"].eq(self.start_addr + (self.burst_len << lg)),
            co["left_m1"].eq(n_left_m1),
            co["page_m1"].eq(n_page_m1),
            co["len_m1"].eq(n_len_m1),
            co["burst_len"].eq(n_len),
        ]

    def accept(self, m, cmd, busy, stopped):
        """Take a command when idle; its first chunk is set up in the next cycle."""
        L = 1 << self.lg
        m.d.comb += cmd.ready.eq(~busy & ~stopped)
        with m.If(self.prime):
            m.d.sync += [self.prime.eq(0)] + self.load_chunk
        with m.If(cmd.valid & cmd.ready):
            p = cmd.payload
            m.d.sync += [busy.eq(p.count != 0), self.prime.eq(p.count != 0), self.nxt.eq(p.addr), self.left.eq(p.count)]
            m.d.sync += [self.nbytes.eq(p.nbytes), self.nbm1.eq(p.nbytes - 1), self.nonzero.eq(p.nbytes != 0), self.stride.eq(p.stride)]
            m.d.sync += self.n_out.eq((p.nbytes + L - 1) >> self.lg)

    def check(self, m, busy, stopped, err, err_addr):
        """Window check of the chunk about to start; a failure stops the engine with its address.
        Returns (first, ok): a chunk is about to start, and it may."""
        first = busy & ~self.prime & ~self.in_chunk & ~stopped
        with m.If(first & ~self.ok):
            m.d.sync += [err.eq(1), stopped.eq(1), err_addr.eq(self.cur)]
        return first, self.ok

    def advance(self, m, busy):
        """After a burst was issued: move to the chunk's next burst, or to the next chunk."""
        with m.If(self.last_burst):
            m.d.sync += self.left.eq(self.left - 1)
            with m.If(self.left == 1):
                m.d.sync += [busy.eq(0), self.in_chunk.eq(0)]
            with m.Else():
                m.d.sync += self.load_chunk
        with m.Else():
            m.d.sync += self.next_burst


class DmaReader(wiring.Component):
    """Read engine. `cmd` in; `data` out: chunk-aligned beats with the command's tag and a
    last-beat-of-chunk flag. `idle` when nothing is queued or in flight."""

    def __init__(self, cfg: EngineConfig, tag_bits: int = 3):
        self.cfg = cfg
        L = cfg.lanes
        self.out_layout = data.StructLayout({"data": unsigned(8 * L), "tag": unsigned(tag_bits), "last": unsigned(1)})
        super().__init__(
            {
                "cmd": In(stream.Signature(cmd_layout(tag_bits))),
                "data": Out(stream.Signature(self.out_layout)),
                "axi_ar": Out(wiring.Signature({"addr": Out(32), "len": Out(8), "valid": Out(1), "ready": In(1)})),
                "axi_r": In(wiring.Signature({"data": Out(8 * L), "resp": Out(2), "last": Out(1), "valid": Out(1), "ready": In(1)})),
                "win": In(window_signature()),
                "abort": In(1),
                "error": Out(1),
                "bus_error": Out(1),
                "err_addr": Out(32),
                "idle": Out(1),
                "beat": Out(1),
            }
        )
        self.tag_bits = tag_bits

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        L = cfg.lanes
        lg = L.bit_length() - 1
        depth = cfg.dma_fifo_beats
        w = _ChunkWalker(m, cfg, "rd", self.win, write=False)

        raw = fifo.SyncFIFOBuffered(width=8 * L, depth=depth)
        info = fifo.SyncFIFOBuffered(width=lg + 2 * NBYTES_BITS + self.tag_bits + 1, depth=depth)
        m.submodules.raw = raw
        m.submodules.info = info
        stopped = Signal()  # error or abort: issue nothing more, drain what is in flight
        err = Signal()
        m.d.comb += self.error.eq(err)

        # ------------------------------------------------------------ commands -> chunks -> bursts
        busy = Signal()  # a command is being walked
        in_chunk = w.in_chunk  # the chunk's first burst was issued; more follow
        tag = Signal(self.tag_bits)
        w.accept(m, self.cmd, busy, stopped)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += tag.eq(self.cmd.payload.tag)
        first, ok = w.check(m, busy, stopped, err, self.err_addr)
        # room in `raw` for bursts still to issue (depth minus the beats in flight or buffered),
        # kept as one register so that the credit test is one compare
        space = Signal(range(depth + 1), init=depth)
        ar = self.axi_ar
        credit_ok = Signal()
        m.d.comb += credit_ok.eq(w.burst_len <= space)
        # a chunk's first burst goes out in the cycle its checks pass (one chunk per cycle for
        # single-beat chunks); once raised, ARVALID stays up until taken, even after an abort
        hold = Signal()
        issue = Signal()
        m.d.comb += [
            ar.addr.eq(w.start_addr),
            ar.len.eq(w.len_m1),
            ar.valid.eq(hold | (~stopped & credit_ok & (in_chunk | (first & ok & info.w_rdy)))),
            issue.eq(ar.valid & ar.ready),
        ]
        m.d.sync += hold.eq(ar.valid & ~ar.ready)
        m.d.comb += [info.w_en.eq(issue & ~in_chunk), info.w_data.eq(Cat(w.cur[:lg], w.n_axi, w.n_out, tag, w.left == 1))]
        with m.If(issue):
            w.advance(m, busy)

        # ------------------------------------------------------------ R channel
        r = self.axi_r
        m.d.comb += [r.ready.eq(raw.w_rdy | stopped), raw.w_data.eq(r.data), raw.w_en.eq(r.valid & ~stopped)]
        m.d.comb += self.beat.eq(r.valid & r.ready)
        with m.If(r.valid & r.ready & (r.resp != AXI_OKAY) & ~stopped):
            m.d.sync += [self.bus_error.eq(1), err.eq(1), stopped.eq(1)]
        with m.If(self.abort):
            m.d.sync += stopped.eq(1)
        popped = Signal()
        inc = Mux(issue, w.burst_len, 0)
        m.d.sync += space.eq(space - inc + popped + (r.valid & r.ready & stopped))

        # ------------------------------------------------------------ realign: bus beats -> chunk-aligned beats
        # the chunk information goes through a register slice: a FIFO in block RAM gives its
        # data late in the cycle, and its read enable is a long way into its level logic
        m.submodules.info_q = info_q = Skid(unsigned(info.width))
        m.d.comb += [info_q.i.valid.eq(info.r_rdy), info_q.i.payload.eq(info.r_data), info.r_en.eq(info_q.i.ready)]
        iq = info_q.o
        off = iq.payload[:lg]
        n_axi = iq.payload[lg : lg + NBYTES_BITS]
        n_out = iq.payload[lg + NBYTES_BITS : lg + 2 * NBYTES_BITS]
        otag = iq.payload[lg + 2 * NBYTES_BITS : lg + 2 * NBYTES_BITS + self.tag_bits]
        have_prev = Signal()
        prev = Signal(8 * L)
        k = Signal(NBYTES_BITS)  # index of the next output beat
        j = Signal(NBYTES_BITS)  # raw beats consumed in this chunk
        # the output register is a skid buffer: its `ready` is a register, so the sinks' ready
        # logic (in other units) does not reach the realignment and the FIFOs (timing)
        m.submodules.out_skid = out_skid = Skid(self.out_layout)
        wiring.connect(m, out_skid.o, wiring.flipped(self.data))
        out = out_skid.i
        shift = Cat(C(0, 3), off)  # bits

        def combine(lo_beat, hi_beat):
            return (Cat(lo_beat, hi_beat) >> shift)[: 8 * L]

        emit = Signal()
        pop = Signal()
        payload = Signal(8 * L)
        last_out = k == n_out - 1
        can_out = out.ready
        with m.If(iq.valid & can_out & ~stopped):
            with m.If(off == 0):
                with m.If(raw.r_rdy):
                    m.d.comb += [emit.eq(1), pop.eq(1), payload.eq(raw.r_data)]
            with m.Elif(~have_prev):
                with m.If(raw.r_rdy):
                    m.d.comb += pop.eq(1)
                    with m.If(n_axi == 1):
                        m.d.comb += [emit.eq(1), payload.eq(combine(raw.r_data, C(0, 8 * L)))]
                    with m.Else():
                        m.d.sync += [have_prev.eq(1), prev.eq(raw.r_data)]
            with m.Elif(j < n_axi):
                with m.If(raw.r_rdy):
                    m.d.comb += [emit.eq(1), pop.eq(1), payload.eq(combine(prev, raw.r_data))]
                    m.d.sync += prev.eq(raw.r_data)
            with m.Else():
                m.d.comb += [emit.eq(1), payload.eq(combine(prev, C(0, 8 * L)))]
        m.d.comb += [raw.r_en.eq(pop | (stopped & raw.r_rdy)), popped.eq(raw.r_en)]
        with m.If(pop):
            m.d.sync += j.eq(j + 1)
        m.d.comb += [out.valid.eq(emit), out.payload.data.eq(payload), out.payload.tag.eq(otag), out.payload.last.eq(last_out)]
        with m.If(emit):
            m.d.sync += k.eq(k + 1)
            with m.If(last_out):
                m.d.sync += [k.eq(0), j.eq(0), have_prev.eq(0)]
                m.d.comb += iq.ready.eq(1)
        with m.If(stopped):
            m.d.comb += iq.ready.eq(1)
            m.d.sync += [k.eq(0), j.eq(0), have_prev.eq(0)]

        idle_run = ~busy & ~in_chunk & (space == depth) & ~info.r_rdy & ~iq.valid & ~self.data.valid & ~self.cmd.valid
        m.d.comb += self.idle.eq(Mux(stopped, (space == depth) & ~hold, idle_run))
        return m


class DmaWriter(wiring.Component):
    """Write engine. `cmd` in, `data` in (chunk-aligned beats, in command order).
    `idle` when every command has been written and acknowledged."""

    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        L = cfg.lanes
        super().__init__(
            {
                "cmd": In(stream.Signature(cmd_layout())),
                "data": In(stream.Signature(unsigned(8 * L))),
                "axi_aw": Out(wiring.Signature({"addr": Out(32), "len": Out(8), "valid": Out(1), "ready": In(1)})),
                "axi_w": Out(wiring.Signature({"data": Out(8 * L), "strb": Out(L), "last": Out(1), "valid": Out(1), "ready": In(1)})),
                "axi_b": In(wiring.Signature({"resp": Out(2), "valid": Out(1), "ready": In(1)})),
                "win": In(window_signature()),
                "abort": In(1),
                "error": Out(1),
                "bus_error": Out(1),
                "err_addr": Out(32),
                "idle": Out(1),
                "beat": Out(1),
                "strobed": Out(range(L + 1)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        L = cfg.lanes
        lg = L.bit_length() - 1
        depth = cfg.dma_fifo_beats
        w = _ChunkWalker(m, cfg, "wr", self.win, write=True)

        dfifo = fifo.SyncFIFOBuffered(width=8 * L, depth=depth)
        # per burst, worked out when its address is issued so that each W beat needs only
        # narrow compares against its beat index `wi`: len - 1; the chunk's input beats left
        # from the burst's first beat (clamped to 0..256); whether the burst starts the chunk;
        # the chunk's byte offset; the end of the chunk's bytes counted from the burst's first
        # byte (clamped to 0..256 L)
        qb = 8 + lg + 1  # bits of a byte position within a burst, up to 256 L
        binfo_w = 8 + 9 + 1 + lg + qb
        binfo = fifo.SyncFIFOBuffered(width=binfo_w, depth=16)
        m.submodules.dfifo = dfifo
        m.submodules.binfo = binfo
        m.d.comb += [dfifo.w_data.eq(self.data.payload), dfifo.w_en.eq(self.data.valid), self.data.ready.eq(dfifo.w_rdy)]

        stopped = Signal()
        err = Signal()
        m.d.comb += self.error.eq(err)
        busy = Signal()
        in_chunk = w.in_chunk
        # FIFO beats not yet claimed by a chunk whose bursts are issued (the FIFO's level minus
        # the claimed beats still in it), kept as one register so that the issue test is one compare
        avail = Signal(range(depth + 1))
        w.accept(m, self.cmd, busy, stopped)
        first, ok = w.check(m, busy, stopped, err, self.err_addr)
        chunk_beat = Signal(NBYTES_BITS)  # bus beats of the chunk already covered by issued bursts
        start_beat = Mux(in_chunk, chunk_beat, 0)
        have_data = avail >= w.n_out  # the whole chunk is in the FIFO, unclaimed
        in_left_full = Signal(signed(NBYTES_BITS + 1))
        end_full = Signal(signed(NBYTES_BITS + lg + 2))
        m.d.comb += [in_left_full.eq(w.n_out - start_beat), end_full.eq(w.cur[:lg] + w.nbytes - (start_beat << lg))]
        in_left = Mux(in_left_full < 0, 0, Mux(in_left_full > 256, 256, in_left_full))[:9]
        end_q = Mux(end_full < 0, 0, Mux(end_full > 256 * L, 256 * L, end_full))[:qb]

        aw = self.axi_aw
        outstanding = Signal(16)
        issue = Signal()
        hold = Signal()
        len_m1 = Signal(8)
        m.d.comb += len_m1.eq(w.len_m1)
        m.d.comb += [
            aw.addr.eq(w.start_addr),
            aw.len.eq(len_m1),
            aw.valid.eq(hold | (~stopped & binfo.w_rdy & (in_chunk | (first & ok & have_data)))),
            issue.eq(aw.valid & aw.ready),
            binfo.w_en.eq(issue),
            binfo.w_data.eq(Cat(len_m1, in_left, ~in_chunk, w.cur[:lg], end_q)),
        ]
        m.d.sync += hold.eq(aw.valid & ~aw.ready)
        claim = issue & ~in_chunk
        m.d.sync += avail.eq(avail + (self.data.valid & dfifo.w_rdy) - Mux(claim, w.n_out, 0))
        with m.If(issue):
            m.d.sync += chunk_beat.eq(start_beat + w.burst_len)
            w.advance(m, busy)

        # ------------------------------------------------------------ W channel
        bl = binfo.r_data[:8]
        in_left_b = binfo.r_data[8:17]
        starts = binfo.r_data[17]
        off = binfo.r_data[18 : 18 + lg]
        end_b = binfo.r_data[18 + lg : 18 + lg + qb]
        wi = Signal(8)  # beat within the burst
        need_in = Signal()  # this bus beat takes an input beat (jb < n_in, jb the bus beat in the chunk)
        m.d.comb += need_in.eq(wi < in_left_b)
        prev = Signal(8 * L)  # previous input beat of this chunk
        cur_in = Mux(need_in, dfifo.r_data, 0)
        shift = Cat(C(0, 3), off)
        wdata = (Cat(Mux(starts & (wi == 0), 0, prev), cur_in) << shift)[8 * L : 16 * L]
        # strobes: bytes [off, off + nbytes) of the chunk's bus span, counted from the burst's first byte
        strb = Signal(L)
        lo = Mux(starts, off, 0)
        for b in range(L):
            pos = Signal(qb, name=f"wpos{b}")
            m.d.comb += pos.eq(Cat(Const(b, lg), wi))
            m.d.comb += strb[b].eq((pos >= lo) & (pos < end_b))
        wch = self.axi_w
        m.d.comb += [
            wch.data.eq(wdata),
            wch.strb.eq(strb),
            wch.last.eq(wi == bl),
            wch.valid.eq(binfo.r_rdy & (~need_in | dfifo.r_rdy)),
        ]
        fire = Signal()
        m.d.comb += [fire.eq(wch.valid & wch.ready), self.beat.eq(fire)]
        popcount = 0
        for b in range(L):
            popcount = popcount + strb[b]
        m.d.comb += self.strobed.eq(Mux(fire, popcount, 0))
        m.d.comb += dfifo.r_en.eq(fire & need_in)
        with m.If(fire):
            with m.If(need_in):
                m.d.sync += prev.eq(dfifo.r_data)
            with m.If(wi == bl):
                m.d.sync += wi.eq(0)
                m.d.comb += binfo.r_en.eq(1)
            with m.Else():
                m.d.sync += wi.eq(wi + 1)

        # ------------------------------------------------------------ B channel
        b = self.axi_b
        m.d.comb += b.ready.eq(1)
        m.d.sync += outstanding.eq(outstanding + issue - (b.valid & b.ready))
        with m.If(b.valid & (b.resp != AXI_OKAY) & ~stopped):
            m.d.sync += [self.bus_error.eq(1), err.eq(1), stopped.eq(1)]
        with m.If(self.abort):
            m.d.sync += stopped.eq(1)
        # stopped: the bursts already issued complete (their data is in the FIFO); nothing else
        idle_run = ~busy & ~in_chunk & ~binfo.r_rdy & (outstanding == 0) & ~self.cmd.valid & ~dfifo.r_rdy
        m.d.comb += self.idle.eq(Mux(stopped, ~binfo.r_rdy & (outstanding == 0) & ~hold, idle_run))
        return m
