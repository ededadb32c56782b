"""A stand-in ``pynq`` module backed by a simulated engine, to test the ``pynq`` backend off-board.

``codenet.sw.pynq_backend.PynqDevice`` drives a board through three things of PYNQ:
``Overlay`` (its ``ip_dict``), ``MMIO`` (32-bit register reads and writes) and ``allocate``
(physically contiguous arrays with ``flush`` / ``invalidate`` for the CPU cache). This module
builds a module object with the same three, wired to another :class:`Device` (normally an
:class:`~codenet.sim.rtl_backend.RtlDevice`), so the very code that runs on a board runs here
against the Verilated engine::

    sys.modules["pynq"] = make_pynq(RtlDevice("tiny"))
    dev = open_device("pynq", bitfile="codenet.bit")     # PynqDevice, over the RTL simulation

The arrays ``allocate`` returns behave like cached memory: writes stay in the array until
``flush`` copies the bytes that changed into device memory, and ``invalidate`` reloads the
array from device memory. Between STATUS polls of ``MMIO.read`` simulated time passes
(`poll_cycles` per poll), as a board's engine keeps running while its CPU sleeps.
"""

from __future__ import annotations

import types

import numpy as np

from codenet.sw import engine as E
from codenet.sw.driver import Device

__all__ = ["make_pynq", "IP_NAME", "IP_BASE"]

IP_NAME = "codenet_engine_0"
IP_BASE = 0xA000_0000


class StandinBuffer(np.ndarray):
    """What ``pynq.allocate`` returns: an array with a physical address and cache maintenance."""

    physical_address: int
    device_address: int
    _state: dict

    def __array_finalize__(self, obj):
        if obj is not None:
            self._state = getattr(obj, "_state", None)
            self.physical_address = getattr(obj, "physical_address", 0)
            self.device_address = self.physical_address

    def flush(self) -> None:
        """Write the bytes that changed since the last flush / invalidate to device memory."""
        st = self._state
        arr, shadow = st["array"].view(np.ndarray).reshape(-1), st["shadow"]
        dirty = np.flatnonzero(arr != shadow)
        if dirty.size:
            lo, hi = int(dirty[0]), int(dirty[-1]) + 1
            st["device"].write(st["buf"], lo, arr[lo:hi])
            shadow[lo:hi] = arr[lo:hi]
        st["flushes"] += 1

    def invalidate(self) -> None:
        """Reload the array from device memory (what the engine wrote)."""
        st = self._state
        data = st["device"].read(st["buf"], 0, st["buf"].size)
        st["array"].view(np.ndarray).reshape(-1)[:] = data
        st["shadow"][:] = data
        st["invalidates"] += 1

    def freebuffer(self) -> None:
        st = self._state
        if not st["freed"]:
            st["device"].free(st["buf"])
            st["freed"] = True

    close = freebuffer


def make_pynq(device: Device, *, poll_cycles: int = 20_000) -> types.ModuleType:
    """A module object usable as ``pynq`` whose one engine is `device`.

    ``module.allocations`` lists the state of every buffer (``flushes``, ``invalidates``,
    ``freed``), for tests.
    """
    mod = types.ModuleType("pynq")
    mod.__doc__ = "stand-in pynq (codenet.sim.pynq_standin): Overlay, MMIO, allocate over a simulated engine"
    status_off = E.reg("STATUS").offset
    allocations: list[dict] = []
    span = 1 << E.AXIL_ADDR_BITS

    class Overlay:
        def __init__(self, bitfile: str, download: bool = True):
            self.bitfile, self.downloaded = bitfile, download
            self.ip_dict = {
                "axi_intc_0": {"phys_addr": 0xA001_0000, "addr_range": 0x1000, "type": "xilinx.com:ip:axi_intc:4.1"},
                IP_NAME: {"phys_addr": IP_BASE, "addr_range": span, "type": "codenet:engine:1.0"},
            }

    class MMIO:
        def __init__(self, base_addr: int, length: int = 4):
            if base_addr != IP_BASE:
                raise ValueError(f"stand-in MMIO: nothing at 0x{base_addr:x} (the engine is at 0x{IP_BASE:x})")
            self.base_addr, self.length = base_addr, length

        def read(self, offset: int = 0, length: int = 4) -> int:
            if offset == status_off and hasattr(device, "advance"):
                device.advance(poll_cycles)  # the engine runs while the CPU waits between polls
            return device._read32(offset)

        def write(self, offset: int, value: int) -> None:
            device._write32(offset, int(value))

    def allocate(shape, dtype=np.uint8, **_kw) -> StandinBuffer:
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        buf = device.alloc(n)
        data = device.read(buf, 0, n)
        arr = np.empty(n, np.uint8)
        arr[:] = data
        state = {"device": device, "buf": buf, "shadow": data.copy(), "flushes": 0, "invalidates": 0, "freed": False}
        out = arr.view(StandinBuffer)
        out._state = state
        out.physical_address = out.device_address = buf.phys_addr
        state["array"] = out
        allocations.append(state)
        return out.view(np.dtype(dtype)).reshape(shape)

    mod.Overlay, mod.MMIO, mod.allocate = Overlay, MMIO, allocate
    mod.allocations = allocations
    mod.device = device
    return mod
