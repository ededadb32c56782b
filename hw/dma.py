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

from amaranth import C, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sw.engine import NUM_WINDOWS, EngineConfig
from .axi import AXI_OKAY

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


def window_ok(m, win, addr, nbytes, write: bool, addr_bits: int):
    """1 when [addr, addr + nbytes) lies inside one permitted window and the address space."""
    end = Signal(34, name=f"win_end_{'w' if write else 'r'}")
    m.d.comb += end.eq(addr + nbytes)
    oks = []
    for k in range(NUM_WINDOWS):
        base = Cat(C(0, 12), getattr(win, f"base{k}"))
        top = Signal(34, name=f"win_top{k}_{'w' if write else 'r'}")
        m.d.comb += top.eq(base + Cat(C(0, 12), getattr(win, f"size{k}")))
        perm = getattr(win, f"write{k}" if write else f"read{k}")
        oks.append(perm & (addr >= base) & (end <= top))
    inside_space = end <= (1 << addr_bits)
    ok = Signal(name=f"win_ok_{'w' if write else 'r'}")
    anyok = oks[0]
    for o in oks[1:]:
        anyok = anyok | o
    m.d.comb += ok.eq(anyok & inside_space & (nbytes != 0))
    return ok


class _ChunkWalker:
    """Shared address walk: from a command to chunks, from a chunk to bursts."""

    def __init__(self, m, cfg: EngineConfig, name: str):
        L = cfg.lanes
        self.lg = L.bit_length() - 1
        self.cur = Signal(32, name=f"{name}_chunk_addr")  # current chunk's first byte
        self.left = Signal(16, name=f"{name}_chunks_left")
        self.nbytes = Signal(NBYTES_BITS, name=f"{name}_nbytes")
        self.stride = Signal(32, name=f"{name}_stride")
        self.beat_addr = Signal(32, name=f"{name}_beat_addr")  # next burst's first beat (aligned)
        self.beats_left = Signal(NBYTES_BITS, name=f"{name}_beats_left")  # bus beats left in the chunk
        self.burst_len = Signal(range(cfg.max_burst_beats + 1), name=f"{name}_burst_len")
        lg = self.lg
        n_axi = Signal(NBYTES_BITS, name=f"{name}_n_axi")
        last_byte = Signal(33, name=f"{name}_last_byte")
        m.d.comb += [
            last_byte.eq(self.cur + self.nbytes - 1),
            n_axi.eq((last_byte >> lg) - (self.cur >> lg) + 1),
        ]
        self.n_axi = n_axi
        self.n_out = Signal(NBYTES_BITS, name=f"{name}_n_out")
        m.d.comb += self.n_out.eq((self.nbytes + L - 1) >> lg)
        # the next burst: the chunk's first one (from `cur`) unless a chunk is under way
        self.in_chunk = Signal(name=f"{name}_in_chunk")
        self.start_addr = Signal(32, name=f"{name}_start_addr")
        self.start_left = Signal(NBYTES_BITS, name=f"{name}_start_left")
        m.d.comb += [
            self.start_addr.eq(Mux(self.in_chunk, self.beat_addr, Cat(C(0, lg), self.cur[lg:]))),
            self.start_left.eq(Mux(self.in_chunk, self.beats_left, n_axi)),
        ]
        to_page = Signal(13, name=f"{name}_to_page")
        m.d.comb += to_page.eq((4096 - self.start_addr[:12]) >> lg)
        lim = Signal(NBYTES_BITS, name=f"{name}_lim")
        m.d.comb += lim.eq(Mux(self.start_left < cfg.max_burst_beats, self.start_left, cfg.max_burst_beats))
        m.d.comb += self.burst_len.eq(Mux(to_page < lim, to_page, lim))

    def accept(self, m, cmd, busy, stopped):
        """Take a command when idle: the walk starts at its first chunk."""
        m.d.comb += cmd.ready.eq(~busy & ~stopped)
        with m.If(cmd.valid & cmd.ready):
            p = cmd.payload
            m.d.sync += [busy.eq(p.count != 0), self.cur.eq(p.addr), self.left.eq(p.count)]
            m.d.sync += [self.nbytes.eq(p.nbytes), self.stride.eq(p.stride)]

    def check(self, m, win, busy, stopped, write: bool, addr_bits: int, err, err_addr):
        """Window check of the chunk about to start; a failure stops the engine with its address.
        Returns (first, ok): a chunk is about to start, and it may."""
        ok = window_ok(m, win, self.cur, self.nbytes, write, addr_bits)
        first = busy & ~self.in_chunk & ~stopped
        with m.If(first & ~ok):
            m.d.sync += [err.eq(1), stopped.eq(1), err_addr.eq(self.cur)]
        return first, ok

    def advance(self, m, busy):
        """After a burst was issued: move to the chunk's next burst, or to the next chunk."""
        lg = self.lg
        with m.If(self.start_left == self.burst_len):
            m.d.sync += [self.in_chunk.eq(0), self.cur.eq(self.cur + self.stride), self.left.eq(self.left - 1)]
            with m.If(self.left == 1):
                m.d.sync += busy.eq(0)
        with m.Else():
            m.d.sync += [
                self.in_chunk.eq(1),
                self.beat_addr.eq(self.start_addr + (self.burst_len << lg)),
                self.beats_left.eq(self.start_left - self.burst_len),
            ]


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
        w = _ChunkWalker(m, cfg, "rd")

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
        first, ok = w.check(m, self.win, busy, stopped, False, cfg.axi_addr_bits, err, self.err_addr)
        # beats in flight or buffered, so that every issued burst has room in `raw`
        inflight = Signal(range(depth + 1))
        ar = self.axi_ar
        credit_ok = Signal()
        m.d.comb += credit_ok.eq(inflight + w.burst_len <= depth)
        # a chunk's first burst goes out in the cycle its checks pass (one chunk per cycle for
        # single-beat chunks); once raised, ARVALID stays up until taken, even after an abort
        hold = Signal()
        issue = Signal()
        m.d.comb += [
            ar.addr.eq(w.start_addr),
            ar.len.eq(w.burst_len - 1),
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
        m.d.sync += inflight.eq(inflight + inc - popped - (r.valid & r.ready & stopped))

        # ------------------------------------------------------------ realign: bus beats -> chunk-aligned beats
        off = info.r_data[:lg]
        n_axi = info.r_data[lg : lg + NBYTES_BITS]
        n_out = info.r_data[lg + NBYTES_BITS : lg + 2 * NBYTES_BITS]
        otag = info.r_data[lg + 2 * NBYTES_BITS : lg + 2 * NBYTES_BITS + self.tag_bits]
        have_prev = Signal()
        prev = Signal(8 * L)
        k = Signal(NBYTES_BITS)  # index of the next output beat
        j = Signal(NBYTES_BITS)  # raw beats consumed in this chunk
        out = self.data
        shift = Cat(C(0, 3), off)  # bits

        def combine(lo_beat, hi_beat):
            return (Cat(lo_beat, hi_beat) >> shift)[: 8 * L]

        emit = Signal()
        pop = Signal()
        payload = Signal(8 * L)
        last_out = k == n_out - 1
        can_out = ~out.valid | out.ready
        with m.If(info.r_rdy & can_out & ~stopped):
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
        with m.If(out.valid & out.ready):
            m.d.sync += out.valid.eq(0)
        with m.If(emit):
            m.d.sync += [out.valid.eq(1), out.payload.data.eq(payload), out.payload.tag.eq(otag), out.payload.last.eq(last_out)]
            m.d.sync += k.eq(k + 1)
            with m.If(last_out):
                m.d.sync += [k.eq(0), j.eq(0), have_prev.eq(0)]
                m.d.comb += info.r_en.eq(1)
        with m.If(stopped):
            m.d.comb += info.r_en.eq(info.r_rdy)
            m.d.sync += [k.eq(0), j.eq(0), have_prev.eq(0)]

        idle_run = ~busy & ~in_chunk & (inflight == 0) & ~info.r_rdy & ~out.valid & ~self.cmd.valid
        m.d.comb += self.idle.eq(Mux(stopped, (inflight == 0) & ~hold, idle_run))
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
        w = _ChunkWalker(m, cfg, "wr")

        dfifo = fifo.SyncFIFOBuffered(width=8 * L, depth=depth)
        # per burst: len-1, first bus beat index of the burst within its chunk, chunk offset, chunk bytes, chunk input beats
        binfo_w = 8 + NBYTES_BITS + lg + NBYTES_BITS + NBYTES_BITS
        binfo = fifo.SyncFIFOBuffered(width=binfo_w, depth=16)
        m.submodules.dfifo = dfifo
        m.submodules.binfo = binfo
        m.d.comb += [dfifo.w_data.eq(self.data.payload), dfifo.w_en.eq(self.data.valid), self.data.ready.eq(dfifo.w_rdy)]

        stopped = Signal()
        err = Signal()
        m.d.comb += self.error.eq(err)
        busy = Signal()
        in_chunk = w.in_chunk
        reserved = Signal(range(depth + 1))  # FIFO beats claimed by chunks whose bursts are issued
        consumed = Signal()
        w.accept(m, self.cmd, busy, stopped)
        first, ok = w.check(m, self.win, busy, stopped, True, cfg.axi_addr_bits, err, self.err_addr)
        chunk_beat = Signal(NBYTES_BITS)  # bus beats of the chunk already covered by issued bursts
        start_beat = Mux(in_chunk, chunk_beat, 0)
        have_data = dfifo.level >= reserved + w.n_out  # the whole chunk is in the FIFO, unclaimed

        aw = self.axi_aw
        outstanding = Signal(16)
        issue = Signal()
        hold = Signal()
        len_m1 = Signal(8)
        m.d.comb += len_m1.eq(w.burst_len - 1)
        m.d.comb += [
            aw.addr.eq(w.start_addr),
            aw.len.eq(len_m1),
            aw.valid.eq(hold | (~stopped & binfo.w_rdy & (in_chunk | (first & ok & have_data)))),
            issue.eq(aw.valid & aw.ready),
            binfo.w_en.eq(issue),
            binfo.w_data.eq(Cat(len_m1, start_beat, w.cur[:lg], w.nbytes, w.n_out)),
        ]
        m.d.sync += hold.eq(aw.valid & ~aw.ready)
        claim = issue & ~in_chunk
        m.d.sync += reserved.eq(reserved + Mux(claim, w.n_out, 0) - consumed)
        with m.If(issue):
            m.d.sync += chunk_beat.eq(start_beat + w.burst_len)
            w.advance(m, busy)

        # ------------------------------------------------------------ W channel
        bl = binfo.r_data[:8]
        b_first = binfo.r_data[8 : 8 + NBYTES_BITS]
        off = binfo.r_data[8 + NBYTES_BITS : 8 + NBYTES_BITS + lg]
        nbytes = binfo.r_data[8 + NBYTES_BITS + lg : 8 + 2 * NBYTES_BITS + lg]
        n_in = binfo.r_data[8 + 2 * NBYTES_BITS + lg : 8 + 3 * NBYTES_BITS + lg]
        wi = Signal(8)  # beat within the burst
        jb = Signal(NBYTES_BITS)
        m.d.comb += jb.eq(b_first + wi)  # bus beat index within the chunk
        prev = Signal(8 * L)  # previous input beat of this chunk
        cur_in = Mux(jb < n_in, dfifo.r_data, 0)
        shift = Cat(C(0, 3), off)
        wdata = (Cat(Mux(jb == 0, 0, prev), cur_in) << shift)[8 * L : 16 * L]
        # strobes: bytes [off, off + nbytes) of the chunk's bus span
        strb = Signal(L)
        for b in range(L):
            pos = Signal(NBYTES_BITS + lg + 1, name=f"wpos{b}")
            m.d.comb += pos.eq(Cat(Const(b, lg), jb))
            m.d.comb += strb[b].eq((pos >= off) & (pos < off + nbytes))
        wch = self.axi_w
        need_in = jb < n_in
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
        m.d.comb += [dfifo.r_en.eq(fire & need_in), consumed.eq(fire & need_in)]
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
