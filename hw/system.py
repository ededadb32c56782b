"""The engine as a stand-alone system: engine + on-chip AXI4 RAM + UART host bridge.

What a board without a processor runs (the ULX3S bitstream, codenet.boards.ecp5): the host
reaches the engine's registers and the RAM through the serial line (codenet.hw.uart), the
engine's AXI4 master reads and writes the RAM (codenet.hw.axi_ram), and the interrupt is a
port (a LED on the board, and bit 0 of the bridge's STATUS response). Everything is in the
``sync`` domain; the clock, its reset and the pins are the board top's business.

::

    uart_rx --> HostBridge --AXI4-Lite--> Engine --AXI4--> AxiRam
    uart_tx <--    |  \\____________ byte port ___________/   |
                   +<-- irq --------- Engine.irq --> irq port
"""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..sw.engine import AXIL_ADDR_BITS, EngineConfig
from .axi import axi4_lite_signature, axi4_signature
from .axi_ram import AxiRam
from .engine import Engine
from .uart import HostBridge

__all__ = ["EngineSystem"]


def _connect_flat_master(m: Module, sig: wiring.Signature, master, master_prefix: str | None, slave, slave_prefix: str | None) -> None:
    """Wire a master to a slave member by member; either side may be flat ports (`prefix_name`)."""
    for name, member in sig.members.items():
        src = getattr(master, f"{master_prefix}_{name}") if master_prefix else getattr(master, name)
        dst = getattr(slave, f"{slave_prefix}_{name}") if slave_prefix else getattr(slave, name)
        if member.flow == Out:  # driven by the master
            m.d.comb += dst.eq(src)
        else:
            m.d.comb += src.eq(dst)


class EngineSystem(wiring.Component):
    """Engine(`cfg`) + AxiRam(`ram_bytes`) + HostBridge(`divisor` cycles per bit, `timeout` cycles)."""

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)
    irq: Out(1)

    def __init__(self, cfg: EngineConfig, ram_bytes: int, divisor: int, timeout: int):
        self.cfg = cfg.validate()
        self.ram_bytes = ram_bytes
        self.divisor = divisor
        self.timeout = timeout
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        m.submodules.engine = engine = Engine(cfg)
        m.submodules.ram = ram = AxiRam(self.ram_bytes, cfg.axi_data_bits, cfg.axi_addr_bits, cfg.axi_id_bits)
        m.submodules.bridge = bridge = HostBridge(self.divisor, self.timeout, AXIL_ADDR_BITS, ram.byte_bits)
        self.parts = {"engine": engine, "ram": ram, "bridge": bridge}  # for testbenches

        _connect_flat_master(m, axi4_lite_signature(AXIL_ADDR_BITS), bridge.axil, None, engine, "s_axil")
        _connect_flat_master(m, axi4_signature(cfg.axi_addr_bits, cfg.axi_data_bits, cfg.axi_id_bits), engine, "m_axi", ram.axi, None)
        m.d.comb += [
            bridge.rx.eq(self.uart_rx),
            self.uart_tx.eq(bridge.tx),
            bridge.irq.eq(engine.irq),
            self.irq.eq(engine.irq),
            ram.host_addr.eq(bridge.ram_addr),
            ram.host_wdata.eq(bridge.ram_wdata),
            ram.host_we.eq(bridge.ram_we),
            ram.host_re.eq(bridge.ram_re),
            bridge.ram_r_ready.eq(ram.host_r_ready),
            bridge.ram_r_valid.eq(ram.host_r_valid),
            bridge.ram_rdata.eq(ram.host_rdata),
        ]
        return m
