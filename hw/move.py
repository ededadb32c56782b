"""The move unit: COPY (strided view to view) and UPSAMPLE2X (nearest, 2x).

Pure data movement, pixel chunks at a time (docs/engine.md § Move unit). The unit asks for
reads and writes as runs of pixel chunks, ``(y, x, count)``: `count` chunks of C bytes
starting at pixel (y, x) of the input (reads) or output (writes) view; the sequencer turns
each into one DMA command. Data comes in on `rd` (``ceil(C / L)`` beats per pixel) and goes
out on `wd` in the order of the write requests.

- COPY: read row r = write row r; the beats pass straight through.
- UPSAMPLE2X: each input pixel is read once into a two-pixel ping-pong buffer and written
  four times: two chunks at output (2y, 2x) and two at (2y+1, 2x). Writes dominate: 4
  beats out per beat in.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sw.engine import EngineConfig
from .skid import Skid

__all__ = ["MoveUnit", "RUN_LAYOUT"]

RUN_LAYOUT = data.StructLayout({"y": unsigned(16), "x": unsigned(16), "count": unsigned(16)})


class MoveUnit(wiring.Component):
    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        beat = unsigned(8 * cfg.lanes)
        super().__init__(
            {
                "start": In(1),
                "done": Out(1),
                "upsample": In(1),
                "in_h": In(16),
                "in_w": In(16),
                "nbp": In(range(cfg.ktiles_max + 1)),  # beats per pixel: ceil(C / L)
                "rreq": Out(stream.Signature(RUN_LAYOUT)),
                "wreq": Out(stream.Signature(RUN_LAYOUT)),
                "rd": In(stream.Signature(beat)),
                "wd": Out(stream.Signature(beat)),
                "step": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        K = cfg.ktiles_max
        busy = Signal()
        m.d.comb += self.done.eq(~busy)
        # the settings are held while an op runs: the counters' wrap values are registered
        in_h_m1, in_w_m1 = Signal(16), Signal(16)
        m.d.sync += [in_h_m1.eq(self.in_h - 1), in_w_m1.eq(self.in_w - 1)]

        # ------------------------------------------------------------ read requests: one per input row
        rrow = Signal(16)
        rreq_busy = Signal()
        with m.If(self.rreq.valid & self.rreq.ready):
            m.d.sync += self.rreq.valid.eq(0)
        # requests go out at most every other cycle: `ready` (from the sequencer's command
        # stage) then reaches only `valid`, not the request logic (timing)
        with m.If(rreq_busy & ~self.rreq.valid):
            m.d.sync += [self.rreq.valid.eq(1), self.rreq.payload.y.eq(rrow), rrow.eq(rrow + 1)]
            with m.If(rrow == in_h_m1):
                m.d.sync += rreq_busy.eq(0)
        m.d.comb += [self.rreq.payload.x.eq(0), self.rreq.payload.count.eq(self.in_w)]

        # ------------------------------------------------------------ COPY: straight through
        # UPSAMPLE2X: ping-pong pixel buffer, four replays per pixel
        buf = memory.Memory(shape=unsigned(8 * cfg.lanes), depth=2 * K, init=[])
        m.submodules.buf = buf
        wp = buf.write_port()
        rp = buf.read_port(transparent_for=())
        full = Signal(2)
        set_full = Signal(2)
        clr_full = Signal(2)
        wbank = Signal()
        widx = Signal(range(K))
        rbank = Signal()
        ridx = Signal(range(K))
        rep = Signal(2)  # replay number 0..3
        px = Signal(16)  # input pixel being written out
        py = Signal(16)

        # the output goes through a register slice: COPY's pass-through otherwise chains the
        # DMA write FIFO's `ready` into the read engine
        m.submodules.wd_skid = wd_skid = Skid(unsigned(8 * cfg.lanes))
        wiring.connect(m, wd_skid.o, wiring.flipped(self.wd))
        wd = wd_skid.i
        m.d.comb += [
            wp.addr.eq(Mux(wbank, K, 0) + widx),
            wp.data.eq(self.rd.payload),
        ]
        with m.If(~self.upsample):
            m.d.comb += [
                wd.valid.eq(self.rd.valid),
                wd.payload.eq(self.rd.payload),
                self.rd.ready.eq(wd.ready),
                self.step.eq(self.rd.valid & wd.ready),
            ]
        with m.Else():
            m.d.comb += [self.rd.ready.eq(~full.bit_select(wbank, 1)), wp.en.eq(self.rd.valid & self.rd.ready)]
            with m.If(self.rd.valid & self.rd.ready):
                with m.If(widx == self.nbp - 1):
                    m.d.sync += [widx.eq(0), wbank.eq(~wbank)]
                    m.d.comb += set_full.eq(Mux(wbank, 2, 1))
                with m.Else():
                    m.d.sync += widx.eq(widx + 1)
            # replay: read address presented one cycle ahead of the output register
            out_v = Signal()
            m.d.comb += wd.valid.eq(out_v)
            adv = Signal()
            m.d.comb += adv.eq(full.bit_select(rbank, 1) & (~out_v | wd.ready))
            m.d.comb += [rp.addr.eq(Mux(rbank, K, 0) + ridx), rp.en.eq(adv | ~out_v | wd.ready)]
            m.d.comb += [wd.payload.eq(rp.data), self.step.eq(wd.valid & wd.ready)]
            with m.If(wd.ready & out_v):
                m.d.sync += out_v.eq(0)
            with m.If(adv):
                m.d.sync += out_v.eq(1)
                with m.If(ridx == self.nbp - 1):
                    m.d.sync += [ridx.eq(0), rep.eq(rep + 1)]
                    with m.If(rep == 3):
                        m.d.sync += rbank.eq(~rbank)
                        m.d.comb += clr_full.eq(Mux(rbank, 2, 1))
                with m.Else():
                    m.d.sync += ridx.eq(ridx + 1)
        m.d.sync += full.eq((full | set_full) & ~clr_full)

        # ------------------------------------------------------------ write requests
        wrow = Signal(16)
        wstage = Signal()  # UPSAMPLE2X: 0 -> row 2y, 1 -> row 2y+1
        wreq_busy = Signal()
        with m.If(self.wreq.valid & self.wreq.ready):
            m.d.sync += self.wreq.valid.eq(0)
        fire = wreq_busy & ~self.wreq.valid
        with m.If(fire):
            m.d.sync += self.wreq.valid.eq(1)
            with m.If(~self.upsample):
                m.d.sync += [self.wreq.payload.y.eq(wrow), self.wreq.payload.x.eq(0), self.wreq.payload.count.eq(self.in_w)]
                with m.If(wrow == in_h_m1):
                    m.d.sync += wreq_busy.eq(0)
                m.d.sync += wrow.eq(wrow + 1)
            with m.Else():
                m.d.sync += [
                    self.wreq.payload.y.eq((py << 1) + wstage),
                    self.wreq.payload.x.eq(px << 1),
                    self.wreq.payload.count.eq(2),
                    wstage.eq(~wstage),
                ]
                with m.If(wstage):
                    with m.If(px == in_w_m1):
                        m.d.sync += [px.eq(0), py.eq(py + 1)]
                        with m.If(py == in_h_m1):
                            m.d.sync += wreq_busy.eq(0)
                    with m.Else():
                        m.d.sync += px.eq(px + 1)

        # ------------------------------------------------------------ completion: every beat written
        out_beats = Signal(40)
        total = Signal(40)
        pixels = Signal(32)  # two registers after the settings: `total` is used only once the last write request is out
        prod = pixels * self.nbp
        m.d.sync += [pixels.eq(self.in_h * self.in_w), total.eq(Mux(self.upsample, prod << 2, prod))]
        with m.If(self.wd.valid & self.wd.ready):
            m.d.sync += out_beats.eq(out_beats + 1)
        with m.If(busy & ~rreq_busy & ~wreq_busy & (out_beats == total)):
            m.d.sync += busy.eq(0)
        with m.If(self.start):
            m.d.sync += [
                busy.eq(1),
                rreq_busy.eq(1),
                wreq_busy.eq(1),
                rrow.eq(0),
                wrow.eq(0),
                wstage.eq(0),
                px.eq(0),
                py.eq(0),
                out_beats.eq(0),
                full.eq(0),
                wbank.eq(0),
                widx.eq(0),
                rbank.eq(0),
                ridx.eq(0),
                rep.eq(0),
            ]
        return m
