"""The ``rtl`` device backend: the generated engine under Verilator, driven through the HAL.

``RtlDevice(config)`` is a :class:`codenet.sw.driver.Device` whose engine is the Verilog that
``codenet.hw.gen`` generates for `config`, simulated by Verilator on the HDL DRAM model
(``sim/hdl/rtl_top.sv`` + ``axi_dram.sv``), with the DRAM timing of a board
(:mod:`codenet.sim.dram`: ULTRA96, ULX3S, IDEAL). It runs from ordinary Python, so
``Runtime(RtlDevice(...), program).run(images)`` works in pytest, the CLI or a notebook.

How: the simulation runs in its own process (Verilator's executable with cocotb inside), and
its one cocotb test (:mod:`codenet.sim.rtl_server`) serves this process over a local Unix
socket. Each HAL primitive is one request:

- registers: one AXI4-Lite transaction each (cocotbext-axi's ``AxiLiteMaster``);
- memory: bulk hex load / dump of the DRAM model (no AXI traffic, one clock cycle each);
- a run: the driver writes the registers and START as on a board; ``_wait`` asks the server
  to let the engine run until ``irq`` with nothing in Python per cycle, checking the
  wall-clock deadline only between timers of many thousand cycles.

While the host is not asking for anything the simulation stands still, so the sequential
driver code needs no threads and sees the engine exactly as a board's CPU would. A timeout or
an error status raises ``DeviceError`` (code, descriptor, address, counters) from the shared
``Device.run``; :meth:`RtlDevice.reset` then also pulses the system reset (the "interconnect
reset" docs/engine.md asks for after a WATCHDOG), so the device is usable afterwards.

Start-up costs: generating the Verilog (Amaranth + Yosys) and compiling it with Verilator
happen once per configuration and are cached (``build/hw``, ``build/sim``); starting a
simulator process takes about a second. Simulator processes are therefore pooled: a device
that is closed (or garbage-collected) gives its process back, and the next ``RtlDevice`` of the
same build and DRAM timing takes it over after a system reset, instead of starting another.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import os
import pickle
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from codenet.sim import dram as dram_mod
from codenet.sw import engine as E
from codenet.sw.driver import Device, DeviceBuffer, DeviceError

__all__ = [
    "RtlDevice",
    "BOARD_DRAM",
    "board_for",
    "board_timing",
    "engine_verilog",
    "build_engine_harness",
    "build_harness",
    "shutdown",
    "CLOCK_PERIOD_NS",
    "HARNESS_ARGS",
]

REPO = Path(__file__).resolve().parents[1]
#: simulated clock period; only cycles matter, the period just has to be a whole number of ns
CLOCK_PERIOD_NS = 10
#: Verilator arguments of the engine harnesses (their clock is driven by sim/hdl/harness_main.cpp)
HARNESS_ARGS = ["-Wno-fatal", "--timescale", "1ns/1ps"]
TOP = "rtl_top"
SERVER_MODULE = "codenet.sim.rtl_server"
DEFAULT_DRAM_BYTES = 16 << 20
DEFAULT_DRAM_BASE = 0x4000_0000
#: idle simulator processes kept for reuse (all builds together)
MAX_IDLE = int(os.environ.get("CODENET_RTL_POOL", "2"))


# =========================================================================== wire protocol


def send_msg(sock: socket.socket, obj: Any) -> None:
    """One pickled message, length-prefixed (both ends are our own processes on a private socket)."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(struct.pack("<Q", len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 22))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return bytes(buf)


def recv_msg(sock: socket.socket) -> Any:
    (n,) = struct.unpack("<Q", _recv_exact(sock, 8))
    return pickle.loads(_recv_exact(sock, n))


# =========================================================================== boards' DRAM


@dataclass(frozen=True)
class BoardDram:
    """A board's DRAM as the engine sees it: peak MB/s and latencies in ns (converted at the engine clock)."""

    name: str
    mb_per_s: int
    read_ns: int
    write_ns: int
    about: str

    def timing(self, clock_mhz: int) -> dram_mod.DramTiming:
        """The DRAM model's timing in cycles of an engine clocked at `clock_mhz`."""
        return dram_mod.DramTiming(
            read_latency=max(3, round(self.read_ns * clock_mhz / 1000)),
            write_latency=max(2, round(self.write_ns * clock_mhz / 1000)),
            bw_num=self.mb_per_s,
            bw_den=clock_mhz,
        )


#: The boards' memories (sim/dram.py's presets are these at the boards' own engine clocks).
BOARD_DRAM: dict[str, BoardDram] = {
    "ultra96": BoardDram(
        "ultra96",
        1066 * 4,
        160,
        80,
        "Ultra96-V2: 32-bit LPDDR4 at 1066 MT/s = 4264 MB/s peak; ~160 ns read, ~80 ns write response (estimates)",
    ),
    "ulx3s": BoardDram(
        "ulx3s", 200, 240, 120, "ULX3S: 16-bit SDR SDRAM at 100 MHz = 200 MB/s peak; ~240 ns read, ~120 ns write (estimates)"
    ),
}
_PRESET_BOARD = {"ultra96": "ultra96", "ulx3s": "ulx3s"}


def board_for(cfg: E.EngineConfig) -> str:
    """The board whose DRAM models an engine: its preset's own, else the Ultra96 (the project's main board)."""
    return _PRESET_BOARD.get(cfg.name, "ultra96")


def board_timing(board: str, clock_mhz: int) -> dram_mod.DramTiming:
    """DRAM model timing: "ideal", or a board of BOARD_DRAM at an engine clock."""
    if board == "ideal":
        return dram_mod.IDEAL
    try:
        return BOARD_DRAM[board].timing(clock_mhz)
    except KeyError:
        raise ValueError(f"unknown DRAM model {board!r}; known: ideal, {', '.join(BOARD_DRAM)}") from None


def _timing(dram: str | dram_mod.DramTiming | None, cfg: E.EngineConfig) -> tuple[str, dram_mod.DramTiming]:
    if isinstance(dram, dram_mod.DramTiming):
        return "custom", dram
    name = dram or os.environ.get("CODENET_RTL_DRAM") or board_for(cfg)
    return name, board_timing(name, cfg.clock_mhz)


# =========================================================================== builds


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def engine_verilog(cfg: E.EngineConfig, root: Path | None = None) -> Path:
    """engine.v for `cfg`, generated once per (configuration, generator sources) under build/hw.

    The folder is named by a hash of the configuration and of hw/*.py, sw/engine.py and
    sw/intmath.py (tests/hw build from it too); generation goes to a temporary
    folder that is renamed into place, so a half-written engine.v is never picked up.
    """
    h = hashlib.sha256(cfg.to_json().encode())
    for p in sorted((REPO / "hw").glob("*.py")) + [REPO / "sw" / "engine.py", REPO / "sw" / "intmath.py"]:
        h.update(p.read_bytes())
    root = root or REPO / "build" / "hw"
    out = root / f"{cfg.name}-{h.hexdigest()[:12]}"
    if (out / "engine.v").is_file():
        return out / "engine.v"
    with _file_lock(root / f".{out.name}.lock"):
        if not (out / "engine.v").is_file():
            from codenet.hw import gen  # Amaranth: only when a build is needed

            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=root))
            try:
                gen.generate(cfg, tmp)
                if out.exists():
                    shutil.rmtree(out)
                os.replace(tmp, out)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return out / "engine.v"


def build_engine_harness(
    sources: list[Path], top: str, parameters: dict[str, int], *, clock_ns: int = CLOCK_PERIOD_NS, waves: bool | str = False
):
    """The Verilator build (codenet.sim.runner, cached) of a harness around the engine's ports (engine_ports.svh).

    Every such harness (rtl_top here, tests/hw/tb_engine.sv) is built alike: its ports are
    marked public in the sources (public_depth=None; anything more slows every cycle) and its
    clock is toggled by sim/hdl/harness_main.cpp every `clock_ns`.
    """
    from codenet.sim import runner

    return runner.build(
        sources,
        top,
        parameters=parameters,
        includes=[runner.HDL_DIR],
        build_args=HARNESS_ARGS,
        waves=waves,
        public_depth=None,
        clock_ps=clock_ns * 1000,
    )


def build_harness(
    cfg: E.EngineConfig, *, dram_bytes: int = DEFAULT_DRAM_BYTES, dram_base: int = DEFAULT_DRAM_BASE, waves: bool | str = False
):
    """The Verilator build of rtl_top for an engine configuration."""
    from codenet.sim import runner

    sources = [engine_verilog(cfg), *runner.hdl("rtl_top.sv", "axi_dram.sv")]
    params = {
        "DATA_WIDTH": cfg.axi_data_bits,
        "ADDR_WIDTH": cfg.axi_addr_bits,
        "ID_WIDTH": cfg.axi_id_bits,
        "MEM_BYTES": dram_bytes,
        "BASE_ADDR": dram_base,
    }
    return build_engine_harness(sources, TOP, params, waves=waves)


# =========================================================================== simulator processes


class SimProcessError(DeviceError):
    """The simulator process died, hung or could not start; the message carries its log's tail."""


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _Session:
    """One running simulator and the socket to its server."""

    def __init__(self, build, plusargs: list[str], word_bytes: int, base: int, *, startup_timeout_s: float, keep_files: bool):
        from codenet.sim import runner

        self.key = (str(build.build_dir), tuple(plusargs))
        self.word_bytes, self.base = word_bytes, base
        self.keep_files = keep_files
        runs = build.build_dir.parent / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="rtl-", dir=runs))
        self.log = self.workdir / "sim.log"
        self._sockdir = tempfile.mkdtemp(prefix="cnrtl-")  # short path: AF_UNIX paths are limited to ~100 bytes
        path = os.path.join(self._sockdir, "s")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        listener.settimeout(0.2)
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.dead: str | None = None
        t0 = time.monotonic()

        base_cls = runner._runner_class()
        holder: dict[str, subprocess.Popen] = {}
        log_path = self.log

        class _Launcher(base_cls):  # cocotb's runner sets up the environment; we only start the process
            def _execute(self, cmds, cwd):
                (cmd,) = cmds
                fh = open(log_path, "w")  # noqa: SIM115 (owned by the child for its lifetime)
                holder["proc"] = subprocess.Popen(cmd, cwd=cwd, env=self.env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                fh.close()

        env = {
            "CODENET_RTL_SOCKET": path,
            "CODENET_RTL_WORD_BYTES": str(word_bytes),
            "CODENET_RTL_BASE": str(base),
            "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "WARNING"),
        }
        try:
            with runner._without_env("WAVES", "PYTEST_CURRENT_TEST"):
                _Launcher().test(
                    test_module=SERVER_MODULE,
                    hdl_toplevel=build.toplevel,
                    hdl_toplevel_lang="verilog",
                    build_dir=str(build.build_dir),
                    test_dir=str(self.workdir),
                    plusargs=list(plusargs),
                    extra_env=env,
                    waves=build.waves is not None,
                    results_xml=str(self.workdir / "results.xml"),
                    log_file=str(self.log),
                )
            self.proc = holder["proc"]
            while self.sock is None:
                try:
                    self.sock, _ = listener.accept()
                except TimeoutError:
                    if self.proc.poll() is not None:
                        raise SimProcessError(
                            f"the simulator exited with code {self.proc.returncode} before connecting; log {self.log}:\n{_tail(self.log)}"
                        ) from None
                    if time.monotonic() - t0 > startup_timeout_s:
                        raise SimProcessError(
                            f"the simulator did not connect within {startup_timeout_s} s; log {self.log}:\n{_tail(self.log)}"
                        ) from None
            self.sock.settimeout(None)
            hello = recv_msg(self.sock)
            if hello[0] != "hello":
                raise SimProcessError(f"unexpected greeting {hello!r} from the simulator")
        except BaseException:
            self.kill(keep_files=True)  # keep sim.log: the error names it
            raise
        finally:
            listener.close()
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.startup_s = time.monotonic() - t0
        self.owner: weakref.ref | None = None

    def call(self, op: str, *args: Any, timeout_s: float = 600.0) -> Any:
        if self.dead:
            raise SimProcessError(f"the simulator process is gone ({self.dead}); open a new RtlDevice")
        assert self.sock is not None
        try:
            self.sock.settimeout(timeout_s)
            send_msg(self.sock, (op, *args))
            reply = recv_msg(self.sock)
        except (OSError, EOFError) as e:
            what = "did not answer in time" if isinstance(e, TimeoutError) else f"connection lost ({e!r})"
            self.dead = what
            self.kill(keep_files=True)
            raise SimProcessError(f"simulator request {op!r}: {what}; log {self.log}:\n{_tail(self.log)}") from None
        if reply[0] == "ok":
            return reply[1]
        raise DeviceError(f"simulator request {op!r} failed: {reply[1]}\n{reply[2] if len(reply) > 2 else ''}")

    def alive(self) -> bool:
        return not self.dead and self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        """Ask the server to finish, then make sure the process is gone."""
        if self.alive():
            with contextlib.suppress(Exception):
                self.call("quit", timeout_s=10)
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=10)
        self.kill()

    def kill(self, keep_files: bool = False) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.dead = self.dead or "closed"
        shutil.rmtree(self._sockdir, ignore_errors=True)
        if not (self.keep_files or keep_files):
            shutil.rmtree(self.workdir, ignore_errors=True)


class _Pool:
    """Idle simulator processes by (build, DRAM timing), for the next device that needs the same."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[_Session] = []
        self.all: weakref.WeakSet[_Session] = weakref.WeakSet()

    def take(self, key) -> _Session | None:
        with self.lock:
            for s in self.idle:
                if s.key == key and s.alive():
                    self.idle.remove(s)
                    return s
        return None

    def give(self, s: _Session) -> None:
        if not s.alive():
            s.kill()
            return
        with self.lock:
            self.idle.append(s)
            extra = self.idle[: max(0, len(self.idle) - MAX_IDLE)]
            del self.idle[: len(extra)]
        for e in extra:
            e.close()

    def shutdown(self) -> None:
        with self.lock:
            sessions = list(self.all)
            self.idle.clear()
        for s in sessions:
            s.close()


_POOL = _Pool()
atexit.register(_POOL.shutdown)


def shutdown() -> None:
    """Stop every simulator process this interpreter started (idle or not)."""
    _POOL.shutdown()


def _release(session: _Session, reuse: bool) -> None:
    if reuse:
        _POOL.give(session)
    else:
        session.close()


# =========================================================================== the device


class RtlDevice(Device):
    """The generated engine in Verilator on the HDL DRAM model, behind the HAL.

    `config`: an EngineConfig or preset name. `dram`: "ideal", a board of :data:`BOARD_DRAM`
    ("ultra96", "ulx3s") converted at the engine's clock, or a DramTiming; default
    ``$CODENET_RTL_DRAM`` or the board of the preset (:func:`board_for`). Memory: `dram_bytes`
    at bus address `dram_base` (build parameters: one build per size). Fresh allocations are
    filled with seeded garbage (`garbage_seed`, None: leave memory as it is), as in fsim.
    `reuse`: take over an idle simulator of the same build and timing, and give it back on
    :meth:`close`. Timeouts are wall-clock, as on a board, but a simulated engine is some
    thousand times slower than a real one: a caller's timeout is multiplied by `timeout_scale`
    (10; the Runtime's 60 s become 10 minutes) unless `wall_timeout_s` is set, which replaces
    it. `max_cycles` bounds a run in simulated cycles. `keep_files` keeps the simulator's folder (sim.log, hex files) after close.
    `waves` (True or "vcd", or "fst", which needs the lz4 headers) traces every signal into
    :attr:`waves_file`, from a separate build; traces grow by megabytes per thousand cycles.
    """

    poll_interval_s = 0.0
    #: simulated cycles per timer while waiting for irq (Python wakes once per chunk)
    wait_chunk_cycles = 50_000

    def __init__(
        self,
        config: E.EngineConfig | str = "tiny",
        *,
        dram: str | dram_mod.DramTiming | None = None,
        dram_bytes: int = DEFAULT_DRAM_BYTES,
        dram_base: int = DEFAULT_DRAM_BASE,
        garbage_seed: int | None = 0,
        reuse: bool = True,
        wall_timeout_s: float | None = None,
        timeout_scale: float = 10.0,
        max_cycles: int | None = None,
        watchdog_cycles: int | None = None,
        waves: bool | str = False,
        keep_files: bool = False,
        startup_timeout_s: float = 120.0,
    ):
        super().__init__()
        cfg = E.preset(config) if isinstance(config, str) else config
        cfg = cfg.validate()
        if dram_base % E.WINDOW_GRANULE or dram_bytes % E.WINDOW_GRANULE or dram_bytes <= 0:
            raise ValueError("dram_base and dram_bytes must be positive multiples of 4 KiB")
        if dram_base + dram_bytes > (1 << cfg.axi_addr_bits):
            raise ValueError(f"DRAM [0x{dram_base:x}, +0x{dram_bytes:x}) does not fit the engine's {cfg.axi_addr_bits}-bit addresses")
        self._cfg_built = cfg
        self.dram_name, self.timing = _timing(dram, cfg)
        self.dram_base, self.dram_bytes = dram_base, dram_bytes
        self.wall_timeout_s, self.timeout_scale, self.max_cycles = wall_timeout_s, timeout_scale, max_cycles
        if watchdog_cycles is not None:
            self.watchdog_cycles = watchdog_cycles
        self.reuse = reuse and not waves and not keep_files
        self._rng = None if garbage_seed is None else np.random.default_rng(garbage_seed)
        self._allocs: dict[int, int] = {}
        #: the last wait: simulated cycles, wall seconds (for cycles/s)
        self.last_wait: dict[str, float] = {}
        self.sim_cycles = 0
        self.sim_seconds = 0.0

        t0 = time.monotonic()
        self.build = build_harness(cfg, dram_bytes=dram_bytes, dram_base=dram_base, waves=waves)
        self.build_seconds = time.monotonic() - t0
        plusargs = self.timing.plusargs("dram")
        key = (str(self.build.build_dir), tuple(plusargs))
        session = _POOL.take(key) if self.reuse else None
        self.reused = session is not None
        if session is not None:
            session.call("reset")  # a fresh engine: registers at reset values, no transfers in flight
            self.startup_seconds = 0.0
        else:
            session = _Session(
                self.build, plusargs, cfg.lanes, dram_base, startup_timeout_s=startup_timeout_s, keep_files=keep_files or waves
            )
            _POOL.all.add(session)
            self.startup_seconds = session.startup_s
        self._session = session
        self._finalizer = weakref.finalize(self, _release, session, self.reuse)
        self.identify()
        self.check_config(cfg)  # what the CFG_* registers say is what we built
        self._config = cfg  # the full configuration (name, clock, ...) from here on

    # ------------------------------------------------------------------ plumbing
    @property
    def sim_log(self) -> Path:
        """The simulator's log (kept after close only with keep_files)."""
        return self._session.log

    @property
    def workdir(self) -> Path:
        return self._session.workdir

    @property
    def waves_file(self) -> Path | None:
        """The trace the simulator writes with `waves` (complete once the device is closed), else None."""
        return self.build.trace_in(self.workdir)

    def _call(self, op: str, *args: Any, timeout_s: float = 600.0) -> Any:
        return self._session.call(op, *args, timeout_s=timeout_s)

    def close(self) -> None:
        """Give the simulator back to the pool (or stop it when not reusing)."""
        if self._finalizer.alive:
            self._finalizer()

    # ------------------------------------------------------------------ HAL primitives
    def _read32(self, offset: int) -> int:
        return int(self._call("read32", int(offset))) & 0xFFFFFFFF

    def _write32(self, offset: int, value: int) -> None:
        self._call("write32", int(offset), int(value) & 0xFFFFFFFF)

    def read_counters(self) -> dict[str, int]:
        """All performance counters in one request (LO then HI of each, as the HAL reads them)."""
        offs = []
        for name, _ in E.PERF_COUNTERS:
            offs += [self._reg(f"PERF_{name}_LO").offset, self._reg(f"PERF_{name}_HI").offset]
        vals = self._call("read_many", offs)
        return {name: vals[2 * k] | vals[2 * k + 1] << 32 for k, (name, _) in enumerate(E.PERF_COUNTERS)}

    def alloc(self, nbytes: int) -> DeviceBuffer:
        size = max(E.WINDOW_GRANULE, -(-nbytes // E.WINDOW_GRANULE) * E.WINDOW_GRANULE)
        addr = self.dram_base
        for a in sorted(self._allocs):
            if addr + size <= a:
                break
            addr = max(addr, a + self._allocs[a])
        if addr + size > self.dram_base + self.dram_bytes:
            raise DeviceError(f"out of device memory: {nbytes} bytes requested, the simulated DRAM is {self.dram_bytes} bytes")
        self._allocs[addr] = size
        if self._rng is not None:
            self._call("fill", addr, size, int(self._rng.integers(0, 2**63)))
        return DeviceBuffer(addr, nbytes, addr)

    def free(self, buf: DeviceBuffer) -> None:
        self._allocs.pop(buf.phys_addr, None)

    def _range(self, buf: DeviceBuffer, offset: int, n: int) -> int:
        if offset < 0 or offset + n > buf.size:
            raise ValueError(f"[{offset}, {offset + n}) is outside the {buf.size}-byte buffer at 0x{buf.phys_addr:x}")
        return buf.phys_addr + offset

    def write(self, buf: DeviceBuffer, offset: int, data: bytes | np.ndarray) -> None:
        b = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else np.ascontiguousarray(data).view(np.uint8).tobytes()
        self._call("write", self._range(buf, offset, len(b)), b)

    def read(self, buf: DeviceBuffer, offset: int, nbytes: int) -> np.ndarray:
        return np.frombuffer(self._call("dump", self._range(buf, offset, nbytes), int(nbytes)), np.uint8).copy()

    # ------------------------------------------------------------------ runs
    def run(self, prog_addr: int, prog_len: int, windows: Iterable | None = None, *, timeout_s: float = 30.0) -> dict[str, int]:
        timeout_s = self.wall_timeout_s if self.wall_timeout_s is not None else timeout_s * self.timeout_scale
        return super().run(prog_addr, prog_len, windows, timeout_s=timeout_s)

    def _wait(self, timeout_s: float) -> bool:
        r = self._call("wait", float(timeout_s), self.max_cycles, int(self.wait_chunk_cycles), timeout_s=timeout_s + 120)
        self.last_wait = r
        self.sim_cycles += r["cycles"]
        self.sim_seconds += r["seconds"]
        return bool(r["done"])

    def advance(self, max_cycles: int) -> bool:
        """Let simulated time pass (at most `max_cycles`, less if irq rises); True if the engine is done."""
        r = self._call("wait", 1e9, int(max_cycles), int(min(max_cycles, self.wait_chunk_cycles)))
        self.sim_cycles += r["cycles"]
        self.sim_seconds += r["seconds"]
        return bool(r["done"])

    def reset(self) -> None:
        """Soft reset, then the system reset (engine and interconnect; DRAM contents are kept)."""
        super().reset()
        self._call("reset")

    def stall_bus(self, on: bool = True) -> None:
        """Freeze (or release) the engine <-> DRAM interconnect: a fault for the watchdog / timeout paths."""
        self._call("stall", bool(on))

    def dram_counters(self) -> dict[str, int]:
        """The DRAM model's own counters since the last system reset (beats, bytes, protocol error flags)."""
        return self._call("dram_counters")

    def cycle(self) -> int:
        """Simulated cycles since the last system reset."""
        return int(self._call("cycle"))

    @property
    def cycles_per_second(self) -> float:
        """Simulated cycles per wall-clock second while runs were waited for."""
        return self.sim_cycles / self.sim_seconds if self.sim_seconds else 0.0
