"""The `pynq` backend: the engine on a Zynq board, driven through PYNQ.

Uses ``pynq.Overlay`` (load the bitstream, find the engine's AXI4-Lite slave in
``ip_dict``), ``pynq.MMIO`` (registers) and ``pynq.allocate`` (physically contiguous,
cache-managed buffers). ``pynq`` is imported only here, inside the constructor, so the rest
of ``codenet.sw`` runs without it. The engine's configuration is read back from its CFG_*
registers, so nothing about the bitstream needs to be told twice.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import engine as E
from .driver import Device, DeviceBuffer, DeviceError

__all__ = ["PynqDevice"]


class PynqDevice(Device):
    """`bitfile` (or a ready `overlay`); `ip`: the engine's name in ``overlay.ip_dict``
    (default: the first entry whose name or type mentions "codenet")."""

    poll_interval_s = 1e-4

    def __init__(self, bitfile: str | None = None, *, overlay: Any = None, ip: str | None = None, download: bool = True):
        import pynq  # only here: the board image has it, nothing else needs it

        super().__init__()
        self._pynq = pynq
        if overlay is None:
            if bitfile is None:
                raise DeviceError("the pynq backend needs a bitfile or an overlay")
            overlay = pynq.Overlay(bitfile, download=download)
        self.overlay = overlay
        ips = dict(getattr(overlay, "ip_dict", {}) or {})
        if ip is None:
            cands = [k for k, v in ips.items() if "codenet" in k.lower() or "codenet" in str(v.get("type", "")).lower()]
            if not cands:
                raise DeviceError(f"no codenet engine in the overlay's ip_dict ({sorted(ips)}); pass ip=NAME")
            ip = cands[0]
        if ip not in ips:
            raise DeviceError(f"overlay has no IP {ip!r}; it has {sorted(ips)}")
        desc = ips[ip]
        base = int(desc["phys_addr"])
        span = int(desc.get("addr_range") or (1 << E.AXIL_ADDR_BITS))
        self.ip = ip
        self.mmio = pynq.MMIO(base, span)
        self.identify()
        self._buffers: list[Any] = []

    # ------------------------------------------------------------------ registers
    def _read32(self, offset: int) -> int:
        return int(self.mmio.read(offset)) & 0xFFFFFFFF

    def _write32(self, offset: int, value: int) -> None:
        self.mmio.write(offset, int(value) & 0xFFFFFFFF)

    # ------------------------------------------------------------------ memory
    def alloc(self, nbytes: int) -> DeviceBuffer:
        size = max(E.WINDOW_GRANULE, -(-nbytes // E.WINDOW_GRANULE) * E.WINDOW_GRANULE)
        buf = self._pynq.allocate(shape=(size,), dtype=np.uint8)
        phys = getattr(buf, "physical_address", None)
        if phys is None:
            phys = buf.device_address
        if int(phys) % E.WINDOW_GRANULE:
            raise DeviceError(f"pynq.allocate returned 0x{int(phys):x}, not 4 KiB aligned (windows are page-granular)")
        self._buffers.append(buf)
        return DeviceBuffer(int(phys), nbytes, buf)

    def free(self, buf: DeviceBuffer) -> None:
        h = buf.handle
        # by identity: `in` / `remove` compare numpy buffers with ==, which fails on two of different sizes
        self._buffers = [b for b in self._buffers if b is not h]
        for name in ("freebuffer", "close"):
            fn = getattr(h, name, None)
            if callable(fn):
                fn()
                return

    def _check(self, buf: DeviceBuffer, offset: int, n: int) -> None:
        if offset < 0 or offset + n > buf.size:
            raise ValueError(f"[{offset}, {offset + n}) is outside the {buf.size}-byte buffer at 0x{buf.phys_addr:x}")

    def write(self, buf: DeviceBuffer, offset: int, data: bytes | np.ndarray) -> None:
        b = np.frombuffer(bytes(data), np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else np.asarray(data).view(np.uint8)
        b = b.reshape(-1)
        self._check(buf, offset, b.size)
        buf.handle[offset : offset + b.size] = b
        flush = getattr(buf.handle, "flush", None)
        if callable(flush):
            flush()  # the engine reads DRAM, not the CPU cache

    def read(self, buf: DeviceBuffer, offset: int, nbytes: int) -> np.ndarray:
        self._check(buf, offset, nbytes)
        inv = getattr(buf.handle, "invalidate", None)
        if callable(inv):
            inv()  # drop stale cache lines before reading what the engine wrote
        return np.array(buf.handle[offset : offset + nbytes], dtype=np.uint8)

    def close(self) -> None:
        for b in list(self._buffers):
            self.free(DeviceBuffer(0, 0, b))
