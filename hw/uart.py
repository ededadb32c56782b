"""A UART (8N1) and the host bridge behind it: engine registers and RAM over a serial line.

Used where a board has no processor between the host and the engine (the ULX3S, whose FTDI
chip is a USB serial port; docs/ecp5.md). The protocol is request / response, the host
speaks first and waits for the whole response before sending the next request; all
multi-byte fields are little-endian. docs/ecp5.md § UART protocol is the normative text;
the command bytes and frame builders here are its code form (the tests and any host tool
use them).

| request | bytes after the command byte | response |
|---|---|---|
| ``0x00`` NOP | — | none (for resynchronisation) |
| ``0x01`` REG_WRITE | addr u16, data u32 | ``0x01`` once the AXI4-Lite write completed |
| ``0x02`` REG_READ | addr u16 | ``0x02``, data u32 |
| ``0x03`` MEM_WRITE | addr u32, n u16, then n data bytes | ``0x03`` after the last byte is written |
| ``0x04`` MEM_READ | addr u32, n u16 | ``0x04``, then n data bytes |
| ``0x05`` STATUS | — | ``0x05``, status byte: bit 0 the engine's interrupt line |
| anything else | — | ``0xEE`` |

A request whose bytes stop arriving for `timeout` cycles is dropped (the bridge goes back to
waiting for a command byte), so a host that lost its place recovers by pausing.
"""

import struct

from amaranth import C, Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from .axi import axi4_lite_signature

__all__ = [
    "UartRx",
    "UartTx",
    "HostBridge",
    "NOP",
    "REG_WRITE",
    "REG_READ",
    "MEM_WRITE",
    "MEM_READ",
    "STATUS",
    "ERROR",
    "ARG_BYTES",
    "reg_write",
    "reg_read",
    "mem_write",
    "mem_read",
    "status",
    "baud_divisor",
]

NOP, REG_WRITE, REG_READ, MEM_WRITE, MEM_READ, STATUS = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05
ERROR = 0xEE
#: argument bytes that follow each command byte (MEM_WRITE's data bytes come after these)
ARG_BYTES = {NOP: 0, REG_WRITE: 6, REG_READ: 2, MEM_WRITE: 6, MEM_READ: 6, STATUS: 0}
MAX_TRANSFER = 0xFFFF


# --------------------------------------------------------------------------- host side (frames)


def reg_write(addr: int, value: int) -> bytes:
    """The REG_WRITE request; the response is the single byte 0x01."""
    return struct.pack("<BHI", REG_WRITE, addr, value & 0xFFFFFFFF)


def reg_read(addr: int) -> bytes:
    """The REG_READ request; the response is 0x02 and the register's u32."""
    return struct.pack("<BH", REG_READ, addr)


def mem_write(addr: int, data: bytes) -> bytes:
    """The MEM_WRITE request with its data (at most 65,535 bytes); the response is 0x03."""
    if len(data) > MAX_TRANSFER:
        raise ValueError(f"at most {MAX_TRANSFER} bytes per MEM_WRITE, got {len(data)}")
    return struct.pack("<BIH", MEM_WRITE, addr, len(data)) + bytes(data)


def mem_read(addr: int, n: int) -> bytes:
    """The MEM_READ request; the response is 0x04 and `n` bytes."""
    if not 0 <= n <= MAX_TRANSFER:
        raise ValueError(f"0..{MAX_TRANSFER} bytes per MEM_READ, got {n}")
    return struct.pack("<BIH", MEM_READ, addr, n)


def status() -> bytes:
    """The STATUS request; the response is 0x05 and a byte whose bit 0 is the interrupt."""
    return bytes([STATUS])


def baud_divisor(clock_hz: float, baud: int) -> int:
    """Clock cycles per bit; refuses a rate the clock cannot make within 2 % (8N1 tolerates ~4 %)."""
    div = round(clock_hz / baud)
    if div < 4:
        raise ValueError(f"{baud} baud is too fast for a {clock_hz / 1e6:g} MHz clock (needs >= 4 cycles per bit)")
    err = abs(clock_hz / div - baud) / baud
    if err > 0.02:
        raise ValueError(f"{baud} baud from {clock_hz / 1e6:g} MHz is off by {100 * err:.1f} % (divisor {div})")
    return div


# --------------------------------------------------------------------------- hardware


def _checked_divisor(divisor: int) -> int:
    """Cycles per bit for UartRx / UartTx: at least 4, so that a bit has a middle to sample."""
    if divisor < 4:
        raise ValueError(f"divisor must be >= 4 cycles per bit, got {divisor}")
    return divisor


class UartRx(wiring.Component):
    """8N1 receiver: `valid` pulses for one cycle with `data`; a byte whose stop bit is low is dropped."""

    rx: In(1, init=1)
    data: Out(8)
    valid: Out(1)

    def __init__(self, divisor: int):
        self.divisor = _checked_divisor(divisor)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        div = self.divisor
        rx = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, rx, init=1)
        timer = Signal(range(div * 3 // 2 + 1))
        bit = Signal(range(10))
        shreg = Signal(8)
        m.d.sync += self.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += [timer.eq(div // 2 - 1), bit.eq(0)]
                    m.next = "START"
            with m.State("START"):  # re-check the start bit in its middle
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):
                    m.next = "IDLE"  # a glitch
                with m.Else():
                    m.d.sync += timer.eq(div - 1)
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [timer.eq(div - 1), shreg.eq(Cat(shreg[1:], rx)), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [self.data.eq(shreg), self.valid.eq(rx)]
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """8N1 transmitter: takes `data` when `valid` and `ready` are both high."""

    tx: Out(1, init=1)
    data: In(8)
    valid: In(1)
    ready: Out(1)

    def __init__(self, divisor: int):
        self.divisor = _checked_divisor(divisor)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        div = self.divisor
        timer = Signal(range(div))
        bits = Signal(range(11))
        shreg = Signal(10, init=0x3FF)
        m.d.comb += [self.ready.eq(bits == 0), self.tx.eq(shreg[0])]
        with m.If(self.valid & self.ready):
            m.d.sync += [shreg.eq(Cat(C(0, 1), self.data, C(1, 1))), bits.eq(10), timer.eq(div - 1)]
        with m.Elif(bits != 0):
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Else():
                m.d.sync += [timer.eq(div - 1), shreg.eq(Cat(shreg[1:], C(1, 1))), bits.eq(bits - 1)]
        return m


class HostBridge(wiring.Component):
    """The protocol above, between a UART (`rx`, `tx`) and an AXI4-Lite master (`axil`, the
    engine's registers) plus a byte RAM port (`ram_*`, codenet.hw.axi_ram.AxiRam's host port).

    `divisor`: clock cycles per bit; `timeout`: cycles of silence inside a request after which
    it is dropped; `addr_bits`: the AXI4-Lite address width; `ram_addr_bits`: the RAM's byte
    address width (addresses are taken modulo the RAM).
    """

    def __init__(self, divisor: int, timeout: int, addr_bits: int = 12, ram_addr_bits: int = 15):
        self.divisor = divisor
        self.timeout = max(int(timeout), 16 * divisor)
        self.addr_bits = addr_bits
        super().__init__(
            {
                "rx": In(1, init=1),
                "tx": Out(1, init=1),
                "irq": In(1),
                "axil": Out(axi4_lite_signature(addr_bits)),
                "ram_addr": Out(ram_addr_bits),
                "ram_wdata": Out(8),
                "ram_we": Out(1),
                "ram_re": Out(1),
                "ram_r_ready": In(1),
                "ram_r_valid": In(1),
                "ram_rdata": In(8),
            }
        )

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx = rx = UartRx(self.divisor)
        m.submodules.tx = tx = UartTx(self.divisor)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx)]
        bus = self.axil

        cmd = Signal(8)
        args = Signal(48)
        nargs = Signal(range(7))
        k = Signal(range(7))
        addr = Signal(32)
        count = Signal(16)
        reply = Signal(40)  # bytes to send, first in the low byte
        nreply = Signal(range(6))
        aw_done, w_done = Signal(), Signal()
        idle_timer = Signal(range(self.timeout + 1))
        expired = Signal()
        m.d.comb += expired.eq(idle_timer == self.timeout)
        with m.If(rx.valid):
            m.d.sync += idle_timer.eq(0)
        with m.Elif(~expired):
            m.d.sync += idle_timer.eq(idle_timer + 1)

        m.d.comb += [
            bus.awprot.eq(0),
            bus.arprot.eq(0),
            bus.wstrb.eq(0xF),
            bus.awaddr.eq(args[: self.addr_bits]),
            bus.araddr.eq(args[: self.addr_bits]),
            bus.wdata.eq(args[16:48]),
            self.ram_addr.eq(addr),
            self.ram_wdata.eq(rx.data),
        ]

        def send(m, data: list, n: int):
            m.d.sync += [reply.eq(Cat(*data)), nreply.eq(n)]
            m.next = "SEND"

        with m.FSM():
            with m.State("IDLE"):
                with m.If(rx.valid):
                    m.d.sync += [cmd.eq(rx.data), k.eq(0)]
                    with m.Switch(rx.data):
                        for c in (REG_WRITE, REG_READ, MEM_WRITE, MEM_READ):
                            with m.Case(c):
                                m.d.sync += nargs.eq(ARG_BYTES[c])
                                m.next = "ARGS"
                        with m.Case(NOP):
                            pass
                        with m.Case(STATUS):
                            send(m, [rx.data, self.irq], 2)
                        with m.Default():
                            send(m, [C(ERROR, 8)], 1)
            with m.State("ARGS"):
                with m.If(rx.valid):
                    with m.Switch(k):
                        for i in range(6):
                            with m.Case(i):
                                m.d.sync += args[8 * i : 8 * i + 8].eq(rx.data)
                    m.d.sync += k.eq(k + 1)
                    with m.If(k == nargs - 1):
                        m.next = "EXEC"
                with m.Elif(expired):
                    m.next = "IDLE"
            with m.State("EXEC"):
                m.d.sync += [addr.eq(args[:32]), count.eq(args[32:48]), aw_done.eq(0), w_done.eq(0)]
                with m.Switch(cmd):
                    with m.Case(REG_WRITE):
                        m.next = "REG_W"
                    with m.Case(REG_READ):
                        m.next = "REG_AR"
                    with m.Case(MEM_WRITE):
                        m.next = "MEM_W"
                    with m.Default():  # MEM_READ
                        m.next = "MEM_R_HEAD"
            with m.State("REG_W"):
                m.d.comb += [bus.awvalid.eq(~aw_done), bus.wvalid.eq(~w_done)]
                with m.If(bus.awvalid & bus.awready):
                    m.d.sync += aw_done.eq(1)
                with m.If(bus.wvalid & bus.wready):
                    m.d.sync += w_done.eq(1)
                with m.If((aw_done | bus.awready) & (w_done | bus.wready)):
                    m.next = "REG_B"
            with m.State("REG_B"):
                m.d.comb += bus.bready.eq(1)
                with m.If(bus.bvalid):
                    send(m, [cmd], 1)
            with m.State("REG_AR"):
                m.d.comb += bus.arvalid.eq(1)
                with m.If(bus.arready):
                    m.next = "REG_R"
            with m.State("REG_R"):
                m.d.comb += bus.rready.eq(1)
                with m.If(bus.rvalid):
                    send(m, [cmd, bus.rdata], 5)
            with m.State("MEM_W"):
                with m.If(count == 0):
                    send(m, [cmd], 1)
                with m.Elif(rx.valid):
                    m.d.comb += self.ram_we.eq(1)
                    m.d.sync += [addr.eq(addr + 1), count.eq(count - 1)]
                with m.Elif(expired):
                    m.next = "IDLE"
            with m.State("MEM_R_HEAD"):
                m.d.comb += [tx.data.eq(cmd), tx.valid.eq(1)]
                with m.If(tx.ready):
                    m.next = "MEM_R"
            with m.State("MEM_R"):
                with m.If(count == 0):
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += self.ram_re.eq(1)
                    with m.If(self.ram_r_ready):
                        m.next = "MEM_R_WAIT"
            with m.State("MEM_R_WAIT"):
                with m.If(self.ram_r_valid):
                    m.d.sync += [reply[:8].eq(self.ram_rdata), addr.eq(addr + 1), count.eq(count - 1)]
                    m.next = "MEM_R_SEND"
            with m.State("MEM_R_SEND"):
                m.d.comb += [tx.data.eq(reply[:8]), tx.valid.eq(1)]
                with m.If(tx.ready):
                    m.next = "MEM_R"
            with m.State("SEND"):
                m.d.comb += [tx.data.eq(reply[:8]), tx.valid.eq(nreply != 0)]
                with m.If(nreply == 0):
                    m.next = "IDLE"
                with m.Elif(tx.ready):
                    m.d.sync += [reply.eq(reply >> 8), nreply.eq(nreply - 1)]
        return m
