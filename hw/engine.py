"""The top level: one engine with an AXI4-Lite slave, an AXI4 master and an interrupt.

Ports (named for cocotbext-axi and Vivado's interface inference): ``clk``, ``rst`` (the
``sync`` domain), ``s_axil_*`` (registers, docs/register-map.md), ``m_axi_*`` (DRAM, INCR
bursts, ID 0, full-width beats) and ``irq``. Inside: the register file, the command
processor, the DMA read and write engines, the pointwise array, the window unit and the
move unit (docs/engine.md § Block diagram). CTRL.SOFT_RESET, and every START, reset the
datapath (DMA, units); the register file keeps its contents.
"""

from __future__ import annotations

from amaranth import Module
from amaranth.hdl import ResetInserter
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from ..sw.engine import AXIL_ADDR_BITS, NUM_WINDOWS, EngineConfig
from .axi import AXI_INCR, axi4_lite_signature, axi4_signature, connect_flat, flat_members
from .control import Controller
from .dma import DmaReader, DmaWriter
from .move import MoveUnit
from .pointwise import PointwiseArray
from .regfile import RegFile
from .window import WindowUnit

__all__ = ["Engine"]


class Engine(wiring.Component):
    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg.validate()
        L = cfg.lanes
        members = {}
        members.update(flat_members("s_axil", axi4_lite_signature(AXIL_ADDR_BITS), flipped=True))
        members.update(flat_members("m_axi", axi4_signature(cfg.axi_addr_bits, 8 * L, cfg.axi_id_bits), flipped=False))
        members["irq"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        L = cfg.lanes
        lg = L.bit_length() - 1

        regs = RegFile(cfg)
        pw, win, move = PointwiseArray(cfg), WindowUnit(cfg), MoveUnit(cfg)
        rd, wr = DmaReader(cfg), DmaWriter(cfg)
        ctrl = Controller(cfg, pw, win, move, rd, wr)
        self.parts = {"regs": regs, "pw": pw, "win": win, "move": move, "dma_rd": rd, "dma_wr": wr, "ctrl": ctrl}  # for testbenches
        m.submodules.regs = regs
        soft = regs.ctrl_soft_reset
        dp_reset = ctrl.dp_reset | soft
        for name, unit in (("pw", pw), ("win", win), ("move", move), ("dma_rd", rd), ("dma_wr", wr)):
            m.submodules[name] = ResetInserter(dp_reset)(unit)
        m.submodules.ctrl = ResetInserter(soft)(ctrl)

        # ------------------------------------------------------------ registers <-> controller
        connect_flat(m, self, "s_axil", regs.axil)
        m.d.comb += [
            ctrl.start.eq(regs.ctrl_start),
            ctrl.prog_addr.eq(regs.prog_addr),
            ctrl.prog_len.eq(regs.prog_len),
            ctrl.watchdog.eq(regs.watchdog),
            regs.status_busy.eq(ctrl.busy),
            regs.status_done.eq(ctrl.done),
            regs.status_error.eq(ctrl.error),
            regs.status_err_desc.eq(ctrl.err_desc),
            regs.err_addr.eq(ctrl.err_addr),
            regs.desc_index.eq(ctrl.desc_index),
            regs.irq_status_done_set.eq(ctrl.irq_done),
            regs.irq_status_error_set.eq(ctrl.irq_error),
            self.irq.eq(regs.ctrl_irq_en & (regs.irq_status_done | regs.irq_status_error)),
        ]
        for counter in regs.counters:
            m.d.comb += getattr(regs, f"perf_{counter.lower()}").eq(getattr(ctrl.perf, counter.lower()))
        for k in range(NUM_WINDOWS):
            for dma in (rd, wr):
                m.d.comb += [
                    getattr(dma.win, f"base{k}").eq(getattr(regs, f"win{k}_base")),
                    getattr(dma.win, f"size{k}").eq(getattr(regs, f"win{k}_size")),
                    getattr(dma.win, f"read{k}").eq(getattr(regs, f"win{k}_ctrl_read")),
                    getattr(dma.win, f"write{k}").eq(getattr(regs, f"win{k}_ctrl_write")),
                ]

        # ------------------------------------------------------------ AXI4 master
        A = self
        m.d.comb += [
            A.m_axi_arid.eq(0),
            A.m_axi_araddr.eq(rd.axi_ar.addr),
            A.m_axi_arlen.eq(rd.axi_ar.len),
            A.m_axi_arsize.eq(lg),
            A.m_axi_arburst.eq(AXI_INCR),
            A.m_axi_arvalid.eq(rd.axi_ar.valid),
            rd.axi_ar.ready.eq(A.m_axi_arready),
            rd.axi_r.data.eq(A.m_axi_rdata),
            rd.axi_r.resp.eq(A.m_axi_rresp),
            rd.axi_r.last.eq(A.m_axi_rlast),
            rd.axi_r.valid.eq(A.m_axi_rvalid),
            A.m_axi_rready.eq(rd.axi_r.ready),
            A.m_axi_awid.eq(0),
            A.m_axi_awaddr.eq(wr.axi_aw.addr),
            A.m_axi_awlen.eq(wr.axi_aw.len),
            A.m_axi_awsize.eq(lg),
            A.m_axi_awburst.eq(AXI_INCR),
            A.m_axi_awvalid.eq(wr.axi_aw.valid),
            wr.axi_aw.ready.eq(A.m_axi_awready),
            A.m_axi_wdata.eq(wr.axi_w.data),
            A.m_axi_wstrb.eq(wr.axi_w.strb),
            A.m_axi_wlast.eq(wr.axi_w.last),
            A.m_axi_wvalid.eq(wr.axi_w.valid),
            wr.axi_w.ready.eq(A.m_axi_wready),
            wr.axi_b.resp.eq(A.m_axi_bresp),
            wr.axi_b.valid.eq(A.m_axi_bvalid),
            A.m_axi_bready.eq(wr.axi_b.ready),
        ]
        return m
