"""cocotb handle on an axi_dram instance: bulk load / dump and counters, no Python per cycle.

Why: a test bench (or the ``rtl`` backend) needs to put a network's weights and input into the
HDL DRAM model and read results back without an AXI transaction per word. The harness top wires
the model's ``load``, ``dump``, ``dump_first``, ``dump_last`` and counter ports to top-level
ports named ``<prefix>load`` etc. (``tb_axi_dram.sv`` uses the prefix ``dram_``); each bulk
operation is one strobe of one clock cycle plus a file written or read with numpy.

The file names are the model's: ``+<name>_load=`` / ``+<name>_dump=`` plusargs if given,
else ``<name>_load.hex`` / ``<name>_dump.hex`` in the simulation's working directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from codenet.sim import dram


@dataclass(frozen=True)
class DramCounters:
    """The model's traffic counters since reset (see axi_dram.sv)."""

    rd_beats: int
    wr_beats: int
    rd_bytes: int
    wr_bytes: int
    err_flags: int


ERR_FLAGS = {
    0: "read burst crosses 4 KiB",
    1: "write burst crosses 4 KiB",
    2: "AxSIZE wider than the bus",
    3: "bad burst type / WRAP length or alignment / FIXED longer than 16",
    4: "WLAST does not match AWLEN",
    5: "read outside the memory",
    6: "write outside the memory",
    7: "write strobe outside the beat's byte lanes",
}


def describe_errors(flags: int) -> list[str]:
    """Human-readable names of the bits set in err_flags."""
    return [text for bit, text in ERR_FLAGS.items() if flags >> bit & 1]


class DramPort:
    """Bulk access to one axi_dram through the top-level ports ``<prefix>load`` ... of ``dut``."""

    def __init__(self, dut: Any, clk: Any, word_bytes: int, *, prefix: str = "dram_", name: str = "dram", base_addr: int = 0) -> None:
        self.dut = dut
        self.clk = clk
        self.word_bytes = word_bytes
        self.prefix = prefix
        self.base_addr = base_addr
        self.load_file = Path(cocotb.plusargs.get(f"{name}_load", f"{name}_load.hex")).resolve()
        self.dump_file = Path(cocotb.plusargs.get(f"{name}_dump", f"{name}_dump.hex")).resolve()
        self._sig("load").value = 0
        self._sig("dump").value = 0

    def _sig(self, what: str) -> Any:
        return getattr(self.dut, self.prefix + what)

    async def _strobe(self, what: str) -> None:
        sig = self._sig(what)
        sig.value = 1
        await RisingEdge(self.clk)  # the model acts on this edge
        sig.value = 0
        await RisingEdge(self.clk)

    async def load(self, addr: int, data: np.ndarray | bytes | bytearray) -> None:
        """Place ``data`` at bus address ``addr`` (word-aligned); other words keep their contents."""
        await self.load_regions([(addr, data)])

    async def load_regions(self, regions: list[tuple[int, np.ndarray | bytes | bytearray]]) -> None:
        """Place several regions in one strobe (see :func:`codenet.sim.dram.hex_image`)."""
        dram.write_hex(self.load_file, regions, self.word_bytes, self.base_addr)
        await self._strobe("load")

    async def dump(self, addr: int, nbytes: int) -> np.ndarray:
        """The bytes at bus addresses [addr, addr + nbytes), any alignment, as uint8."""
        if nbytes <= 0:
            return np.zeros(0, np.uint8)
        off = addr - self.base_addr
        first = off // self.word_bytes
        last = (off + nbytes - 1) // self.word_bytes
        self._sig("dump_first").value = first
        self._sig("dump_last").value = last
        self.dump_file.unlink(missing_ok=True)
        await self._strobe("dump")
        words = dram.read_hex(self.dump_file, self.word_bytes, words=last - first + 1)
        skip = off - first * self.word_bytes
        return words[skip : skip + nbytes]

    def counters(self) -> DramCounters:
        """Read the counters (no clock needed)."""
        return DramCounters(
            rd_beats=int(self._sig("rd_beats").value),
            wr_beats=int(self._sig("wr_beats").value),
            rd_bytes=int(self._sig("rd_bytes").value),
            wr_bytes=int(self._sig("wr_bytes").value),
            err_flags=int(self._sig("err_flags").value),
        )
