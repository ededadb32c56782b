"""A device server: one Device (fsim, rtl or a PYNQ board's engine) offered over TCP to one client at a time.

``python3 -m codenet.sw.serve --backend pynq --bitfile codenet.bit --host 0.0.0.0`` on a board
(numpy and the standard library only: no click, no rich), or ``codenet serve`` on a host. The
``remote`` backend (:mod:`codenet.sw.remote`) is the client. The protocol, the limits and the
security model are normative in docs/deploy.md; in short:

- binds 127.0.0.1 unless told otherwise; every connection starts with ``hello`` carrying the
  token (compared with ``hmac.compare_digest``), within a few seconds and a 4 KiB frame;
- frames are a fixed 16-byte header, a JSON object and raw payload bytes, all bounded
  (:class:`Limits`); no pickle, nothing a client sends is executed;
- every field is checked (type, range, alignment, ownership) before the device sees it: register
  offsets inside the 4 KiB register space and 4-aligned, buffer handles of this session only,
  offsets and lengths inside the buffer, allocation sizes and counts bounded. The engine's DMA is
  confined as well: a START (a ``run``, or a raw CTRL write) is refused unless every enabled
  window lies inside one of this session's buffers, and windows cannot be moved during a run;
- a bad request gets an error reply and the session goes on; a frame whose framing is broken (bad
  magic, over a limit) gets an error reply and the connection is closed; the server keeps serving;
- sessions are exclusive: one device, one client. A client that authenticates while another holds
  the device is refused at once with ``busy`` (the client may retry: ``RemoteDevice(busy_wait_s=...)``);
- when a session ends (bye, disconnect, idle timeout, a broken frame) the engine is reset if it is
  still busy and the session's buffers are freed before the next client is served.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import itertools
import json
import logging
import math
import os
import secrets
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import engine as E
from .driver import Device, DeviceBuffer, DeviceError, open_device
from .remote import (
    DEFAULT_PORT,
    MAX_JSON,
    MAX_PAYLOAD,
    PROTO_VERSION,
    ProtocolError,
    default_token_path,
    read_token,
    recv_frame,
    send_frame,
    write_token,
)

__all__ = ["DeviceServer", "Limits", "BadRequest", "open_backend", "resolve_token", "serve", "setup_logging", "main", "BACKENDS"]

log = logging.getLogger("codenet.serve")

BACKENDS = ("fsim", "rtl", "pynq")
#: the register space a client may address: [0, REG_SPACE), 4-byte aligned
REG_SPACE = 1 << E.AXIL_ADDR_BITS
U32 = 0xFFFF_FFFF


@dataclass
class Limits:
    """What one client may ask for. Sizes in bytes, times in seconds."""

    max_payload: int = MAX_PAYLOAD  # one frame's raw bytes (a bulk write or read)
    max_json: int = MAX_JSON  # one frame's JSON
    max_hello_json: int = 4096  # the first frame, before the token is checked
    max_alloc_bytes: int = 256 << 20  # all of a session's buffers together (page-rounded)
    max_buffers: int = 1024  # buffers a session may hold
    max_connections: int = 16  # connections at once (the session plus clients being refused)
    handshake_timeout_s: float = 10.0  # from connect to a complete hello
    idle_timeout_s: float = 600.0  # a session whose next request is not complete within this is ended
    io_timeout_s: float = 60.0  # sending one reply
    max_run_s: float = 3600.0  # a run's timeout is clamped to this (before the backend's scaling)


class BadRequest(ValueError):
    """A request the server refuses (the session goes on)."""


def _int(req: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = req.get(key)
    if type(v) is not int:  # not bool, not float, not a string of digits
        raise BadRequest(f"field {key!r} must be an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise BadRequest(f"field {key!r} = {v} is outside [{lo}, {hi}]")
    return v


def _page_extent(nbytes: int) -> int:
    return max(E.WINDOW_GRANULE, -(-nbytes // E.WINDOW_GRANULE) * E.WINDOW_GRANULE)


class _Session:
    def __init__(self, sid: int, peer: str):
        self.sid, self.peer, self.since = sid, peer, time.monotonic()
        self.buffers: dict[int, DeviceBuffer] = {}
        self.allocated = 0  # page-rounded bytes


class DeviceServer:
    """Serve `device` on (host, port) to clients holding `token`; see the module docstring.

    ``start()`` serves from a background thread (tests, benchmarks); ``serve_forever()`` from the
    caller's. `zero_fill`: clear fresh buffers before handing them out, so a session never sees a
    previous session's data (a board's memory; the simulators fill fresh memory with seeded garbage).
    """

    def __init__(
        self,
        device: Device,
        token: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: Limits | None = None,
        backend: str = "",
        zero_fill: bool = False,
    ):
        self.device, self.backend, self.zero_fill = device, backend or type(device).__name__, zero_fill
        self.limits = limits or Limits()
        self.set_token(token)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=16)
        self._listener.settimeout(0.2)
        self.host, self.port = self._listener.getsockname()[:2]
        self._stop = threading.Event()
        self._device_lock = threading.Lock()  # held by the session: one client at a time
        self._conn_count = 0
        self._conn_lock = threading.Lock()
        self._handles = itertools.count(1)  # never reused: a stale handle is never someone else's
        self._sids = itertools.count(1)
        self._session: _Session | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        #: counters for tests and logs
        self.stats = {"connections": 0, "sessions": 0, "refused_busy": 0, "refused_auth": 0, "bad_requests": 0, "buffers_freed": 0}
        ctrl = E.reg("CTRL")
        self._start_mask = next(f.mask for f in ctrl.fields if f.name == "START")
        self._ctrl_off = ctrl.offset
        names = ["PROG_ADDR", "PROG_LEN"] + [f"WIN{k}_{x}" for k in range(E.NUM_WINDOWS) for x in ("BASE", "SIZE", "CTRL")]
        self._guarded = {E.reg(n).offset for n in names}
        self._ops = {
            "ping": self._op_ping,
            "read32": self._op_read32,
            "write32": self._op_write32,
            "counters": self._op_counters,
            "alloc": self._op_alloc,
            "free": self._op_free,
            "write": self._op_write,
            "read": self._op_read,
            "run": self._op_run,
            "reset": self._op_reset,
        }

    # ------------------------------------------------------------------ lifecycle
    def set_token(self, token: str) -> None:
        """Replace the token (new connections); serve() binds first, then reads or writes the token file."""
        if not token or len(token) < 16:
            raise ValueError("a server token must be at least 16 characters (use secrets.token_urlsafe(32))")
        self._token = token.encode()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"remote://{host}:{self.port}"

    def start(self) -> DeviceServer:
        """Serve from a daemon thread; returns self (``url`` says where)."""
        self._thread = threading.Thread(target=self.serve_forever, name=f"codenet-serve:{self.port}", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Accept connections until :meth:`stop`; each connection is handled on its own thread."""
        log.info("listening on %s (backend %s)", self.url, self.backend)
        try:
            while not self._stop.is_set():
                try:
                    conn, addr = self._listener.accept()
                except TimeoutError:  # socket.timeout (an alias from Python 3.10 on)
                    continue
                except OSError:
                    if self._stop.is_set():
                        break
                    raise
                peer = f"{addr[0]}:{addr[1]}"
                with self._conn_lock:
                    full = self._conn_count >= self.limits.max_connections
                    if not full:
                        self._conn_count += 1
                        self._conns.add(conn)
                self.stats["connections"] += 1
                if full:
                    log.warning("%s: refused, %d connections already open", peer, self.limits.max_connections)
                    _close(conn)
                    continue
                threading.Thread(target=self._handle, args=(conn, peer), name=f"codenet-serve {peer}", daemon=True).start()
        finally:
            _close(self._listener)

    def stop(self) -> None:
        """Stop accepting and drop open connections (their sessions end and free their buffers)."""
        self._stop.set()
        _close(self._listener)
        with self._conn_lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def close(self) -> None:
        """Stop, wait for the session to end, and close the device."""
        self.stop()
        if self._device_lock.acquire(timeout=30):
            self._device_lock.release()
        self.device.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ connections
    def _reply(self, conn: socket.socket, obj: dict[str, Any], payload: Any = b"") -> None:
        conn.settimeout(self.limits.io_timeout_s)
        send_frame(conn, obj, payload)

    def _error(self, conn: socket.socket, kind: str, message: str, **extra: Any) -> None:
        with contextlib.suppress(OSError, ProtocolError):
            self._reply(conn, {"ok": False, "error": kind, "message": message, **extra})

    def _refuse(self, conn: socket.socket, kind: str, message: str) -> None:
        """Error reply, then a graceful close: what the client may still be sending is drained (briefly), so
        that it reads the reply instead of a connection reset."""
        self._error(conn, kind, message)
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(0.5)
            left = 1 << 20
            while left > 0 and conn.recv(min(left, 65536)):
                left -= 65536

    def _handle(self, conn: socket.socket, peer: str) -> None:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(self.limits.handshake_timeout_s)
            try:
                deadline = time.monotonic() + self.limits.handshake_timeout_s
                req, _ = recv_frame(conn, max_json=self.limits.max_hello_json, max_payload=0, deadline=deadline)
            except ProtocolError as e:
                log.warning("%s: refused before hello: %s", peer, e)
                self._refuse(conn, e.kind, str(e))
                return
            if req.get("op") != "hello":
                log.warning("%s: refused: first request %r is not hello", peer, req.get("op"))
                self._refuse(conn, "protocol", "the first request must be hello (with the token)")
                return
            token = req.get("token")
            if not isinstance(token, str) or not hmac.compare_digest(token.encode("utf-8", "replace"), self._token):
                self.stats["refused_auth"] += 1
                log.warning("%s: refused: wrong token", peer)
                self._refuse(conn, "auth", "wrong token")
                return
            if req.get("proto") != PROTO_VERSION:
                self._refuse(conn, "protocol", f"protocol version {req.get('proto')!r}; this server speaks {PROTO_VERSION}")
                return
            if not self._device_lock.acquire(blocking=False):
                s = self._session
                held = f" by {s.peer} for {time.monotonic() - s.since:.0f} s" if s else ""
                self.stats["refused_busy"] += 1
                log.info("%s: refused: busy (device held%s)", peer, held)
                self._refuse(conn, "busy", f"busy: the device is in use{held}; sessions are exclusive, retry when it is free")
                return
            try:
                last = self._session_loop(conn, peer, req)
            finally:
                self._device_lock.release()
            # the last word comes after the buffers are freed and the device is free: the client may reconnect at once
            if last == ("ok", ""):
                self._reply(conn, {"ok": True})
            elif last is not None:
                self._refuse(conn, *last)
        except (OSError, EOFError) as e:
            log.info("%s: connection ended: %s", peer, e)
        except Exception:  # a bug must not take the server down
            log.exception("%s: internal error; connection closed", peer)
        finally:
            with self._conn_lock:
                self._conn_count -= 1
                self._conns.discard(conn)
            _close(conn)

    def _hello(self, s: _Session) -> dict[str, Any]:
        try:
            cfg = self.device.config.to_dict()
        except Exception:  # a device that cannot say: the client reads the CFG registers itself
            cfg = None
        return {
            "ok": True,
            "server": "codenet-serve",
            "proto": PROTO_VERSION,
            "session": s.sid,
            "backend": self.backend,
            "config": cfg,
            "timeout_scale": float(getattr(self.device, "timeout_scale", 1.0) or 1.0),
            "wall_timeout_s": getattr(self.device, "wall_timeout_s", None),
            "limits": {
                "max_payload": self.limits.max_payload,
                "max_json": self.limits.max_json,
                "max_alloc_bytes": self.limits.max_alloc_bytes,
                "max_buffers": self.limits.max_buffers,
                "max_run_s": self.limits.max_run_s,
                "idle_timeout_s": self.limits.idle_timeout_s,
            },
        }

    def _session_loop(self, conn: socket.socket, peer: str, hello: dict[str, Any]) -> tuple[str, str] | None:
        """Serve one session until it ends (its buffers freed on the way out). Returns the reply still owed:
        ("ok", "") to a bye, (kind, message) for a broken frame, None when nothing is owed."""
        s = _Session(next(self._sids), peer)
        self._session = s
        self.stats["sessions"] += 1
        log.info("%s: session %d opened (%s)", peer, s.sid, str(hello.get("client", "?"))[:80])
        reason = "?"
        lim = self.limits
        try:
            self._reply(conn, self._hello(s))
            while True:
                deadline = time.monotonic() + self.limits.idle_timeout_s  # for the next whole request
                try:
                    req, payload = recv_frame(conn, max_json=lim.max_json, max_payload=lim.max_payload, deadline=deadline)
                except ProtocolError as e:
                    self.stats["bad_requests"] += 1
                    log.warning("%s: %s", peer, e)
                    if e.fatal:
                        reason = f"broken frame ({e.kind})"
                        return e.kind, str(e)
                    self._error(conn, e.kind, str(e))
                    continue
                except TimeoutError:
                    reason = f"idle for {self.limits.idle_timeout_s:.0f} s"
                    self._error(conn, "timeout", f"session ended: no request for {self.limits.idle_timeout_s:.0f} s")
                    return None
                except (EOFError, OSError) as e:
                    reason = f"disconnected ({e})"
                    return None
                op = req.get("op")
                if op == "bye":
                    reason = "bye"
                    return "ok", ""
                try:
                    fn = self._ops.get(op) if isinstance(op, str) else None
                    if fn is None:
                        raise BadRequest(f"unknown op {op!r}; known: bye, {', '.join(sorted(self._ops))}")
                    if payload and op != "write":
                        raise BadRequest(f"op {op!r} takes no payload ({len(payload)} bytes sent)")
                    reply, out = fn(s, req, payload)
                except BadRequest as e:
                    self.stats["bad_requests"] += 1
                    log.warning("%s: bad request %s: %s", peer, op, e)
                    self._reply(conn, {"ok": False, "error": "bad_request", "message": str(e)})
                    continue
                except DeviceError as e:
                    log.info("%s: %s: device error: %s", peer, op, e)
                    self._reply(conn, _device_error(e))
                    continue
                except Exception as e:  # the device raised something unexpected: report it, keep serving
                    log.exception("%s: %s failed", peer, op)
                    self._reply(conn, {"ok": False, "error": "internal", "message": f"{type(e).__name__}: {e}"})
                    continue
                try:
                    self._reply(conn, {"ok": True, **reply}, out)
                except OSError as e:
                    reason = f"disconnected before the reply to {op} ({e})"
                    return None
        finally:
            self._end_session(s, reason)

    def _end_session(self, s: _Session, reason: str) -> None:
        """Stop the engine if a run is left behind, then free the session's buffers."""
        try:
            if self.device.read_reg("STATUS", "BUSY"):
                self.device.reset()
        except Exception:
            log.exception("session %d: could not check / reset the engine", s.sid)
        n = len(s.buffers)
        for buf in list(s.buffers.values()):
            try:
                self.device.free(buf)
            except Exception:
                log.exception("session %d: freeing a buffer at 0x%x failed", s.sid, buf.phys_addr)
        s.buffers.clear()
        self.stats["buffers_freed"] += n
        self._session = None
        log.info("%s: session %d closed: %s; %d buffer(s) freed", s.peer, s.sid, reason, n)

    # ------------------------------------------------------------------ checks
    def _reg_offset(self, req: dict[str, Any]) -> int:
        off = _int(req, "offset", 0, REG_SPACE - 4)
        if off % 4:
            raise BadRequest(f"register offset 0x{off:x} is not 4-byte aligned")
        return off

    def _buffer(self, s: _Session, req: dict[str, Any]) -> DeviceBuffer:
        h = req.get("handle")
        if type(h) is not int or h not in s.buffers:
            raise BadRequest(f"handle {h!r} is not a buffer of this session")
        return s.buffers[h]

    def _span(self, buf: DeviceBuffer, offset: int, n: int) -> None:
        if offset + n > buf.size:
            raise BadRequest(f"[{offset}, {offset + n}) is outside the {buf.size}-byte buffer")

    def _check_windows(self, s: _Session, windows: list[tuple[int, int, bool, bool]]) -> None:
        """Every enabled window inside one of this session's buffers (page-rounded extents)."""
        for k, (base, size, rd, wr) in enumerate(windows):
            if size == 0 or not (rd or wr):
                continue
            if not any(b.phys_addr <= base and base + size <= b.phys_addr + _page_extent(b.size) for b in s.buffers.values()):
                raise BadRequest(
                    f"window {k} [0x{base:x}, +0x{size:x}) is not inside a buffer of this session: "
                    "the engine may only reach the memory allocated to its client"
                )

    def _live_windows(self) -> list[tuple[int, int, bool, bool]]:
        d = self.device
        return [
            (
                d.read_reg(f"WIN{k}_BASE"),
                d.read_reg(f"WIN{k}_SIZE"),
                bool(d.read_reg(f"WIN{k}_CTRL", "READ")),
                bool(d.read_reg(f"WIN{k}_CTRL", "WRITE")),
            )
            for k in range(E.NUM_WINDOWS)
        ]

    # ------------------------------------------------------------------ operations
    def _op_ping(self, s: _Session, req: dict[str, Any], payload: bytearray):
        return {}, b""

    def _op_read32(self, s: _Session, req: dict[str, Any], payload: bytearray):
        return {"value": int(self.device._read32(self._reg_offset(req))) & U32}, b""

    def _op_write32(self, s: _Session, req: dict[str, Any], payload: bytearray):
        off = self._reg_offset(req)
        value = _int(req, "value", 0, U32)
        if off in self._guarded and self.device.read_reg("STATUS", "BUSY"):
            raise BadRequest(f"register 0x{off:x} (program / windows) cannot change while the engine runs")
        if off == self._ctrl_off and value & self._start_mask:
            self._check_windows(s, self._live_windows())
        self.device._write32(off, value)
        return {}, b""

    def _op_counters(self, s: _Session, req: dict[str, Any], payload: bytearray):
        return {"counters": {k: int(v) for k, v in self.device.read_counters().items()}}, b""

    def _op_alloc(self, s: _Session, req: dict[str, Any], payload: bytearray):
        lim = self.limits
        n = _int(req, "nbytes", 1, lim.max_alloc_bytes)
        ext = _page_extent(n)
        if len(s.buffers) >= lim.max_buffers:
            raise BadRequest(f"a session may hold {lim.max_buffers} buffers")
        if s.allocated + ext > lim.max_alloc_bytes:
            raise BadRequest(f"{n} more bytes would exceed the session's {lim.max_alloc_bytes} bytes ({s.allocated} held)")
        buf = self.device.alloc(n)
        if self.zero_fill:
            self.device.write(buf, 0, np.zeros(n, np.uint8))
        h = next(self._handles)
        s.buffers[h] = buf
        s.allocated += ext
        return {"handle": h, "phys_addr": int(buf.phys_addr), "size": n}, b""

    def _op_free(self, s: _Session, req: dict[str, Any], payload: bytearray):
        buf = self._buffer(s, req)
        if self.device.read_reg("STATUS", "BUSY"):
            raise BadRequest("a buffer cannot be freed while the engine runs")
        del s.buffers[req["handle"]]
        s.allocated -= _page_extent(buf.size)
        self.device.free(buf)
        return {}, b""

    def _op_write(self, s: _Session, req: dict[str, Any], payload: bytearray):
        buf = self._buffer(s, req)
        off = _int(req, "offset", 0, buf.size)
        self._span(buf, off, len(payload))
        if payload:
            self.device.write(buf, off, payload)
        return {}, b""

    def _op_read(self, s: _Session, req: dict[str, Any], payload: bytearray):
        buf = self._buffer(s, req)
        off = _int(req, "offset", 0, buf.size)
        n = _int(req, "nbytes", 0, self.limits.max_payload)
        self._span(buf, off, n)
        data = self.device.read(buf, off, n) if n else np.empty(0, np.uint8)
        return {"nbytes": n}, np.ascontiguousarray(data, np.uint8)

    def _op_run(self, s: _Session, req: dict[str, Any], payload: bytearray):
        prog_addr = _int(req, "prog_addr", 0, U32)
        prog_len = _int(req, "prog_len", 1, U32)
        t = req.get("timeout_s", 30.0)
        if type(t) not in (int, float) or not math.isfinite(t) or t <= 0:
            raise BadRequest(f"field 'timeout_s' must be a positive number of seconds, got {t!r}")
        t = min(float(t), self.limits.max_run_s)
        raw = req.get("windows")
        windows = None
        if raw is not None:
            if not isinstance(raw, list) or len(raw) > E.NUM_WINDOWS:
                raise BadRequest(f"field 'windows' must be null or a list of at most {E.NUM_WINDOWS} [base, size, read, write]")
            windows = []
            for k, w in enumerate(raw):
                if not isinstance(w, list) or len(w) != 4 or type(w[2]) is not bool or type(w[3]) is not bool:
                    raise BadRequest(f"window {k} must be [base, size, read, write] (two integers, two booleans)")
                base = _int({"base": w[0]}, "base", 0, U32)
                size = _int({"size": w[1]}, "size", 0, U32)
                if base % E.WINDOW_GRANULE or size % E.WINDOW_GRANULE:
                    raise BadRequest(f"window {k} [0x{base:x}, +0x{size:x}) is not {E.WINDOW_GRANULE}-byte aligned")
                windows.append((base, size, w[2], w[3]))
        # a run left going by a raw START is reset by Device.run before the new windows are set
        self._check_windows(s, windows if windows is not None else self._live_windows())
        t0 = time.monotonic()
        counters = self.device.run(prog_addr, prog_len, windows, timeout_s=t)
        log.debug("%s: run of %d descriptors in %.3f s", s.peer, prog_len, time.monotonic() - t0)
        return {"counters": {k: int(v) for k, v in counters.items()}}, b""

    def _op_reset(self, s: _Session, req: dict[str, Any], payload: bytearray):
        self.device.reset()
        return {}, b""


def _device_error(e: DeviceError) -> dict[str, Any]:
    return {
        "ok": False,
        "error": "device",
        "message": str(e),
        "code": None if e.code is None else int(e.code),
        "status": int(e.status or 0),
        "err_desc": e.err_desc,
        "err_addr": e.err_addr,
        "counters": {k: int(v) for k, v in (e.counters or {}).items()},
        "timeout": bool(e.timeout),
    }


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


# =========================================================================== command line


def _engine(engine: str) -> E.EngineConfig:
    """A preset name, an EngineConfig .json, or an engine.json from `codenet gen` (its "config")."""
    if engine in E.PRESETS:
        return E.PRESETS[engine]
    d = json.loads(Path(engine).read_text())
    if isinstance(d, dict) and d.get("format") == "codenet-engine":
        d = d["config"]
    return E.EngineConfig.from_dict(d)


def open_backend(backend: str, *, engine: str | None = None, bitfile: str | None = None, dram: str | None = None) -> Device:
    """The device a server offers: fsim (engine default ultra96), rtl (default tiny) or pynq (a bitfile)."""
    if backend == "fsim":
        return open_device("fsim", config=_engine(engine or "ultra96"))
    if backend == "rtl":
        kw: dict[str, Any] = {"config": _engine(engine or "tiny")}
        if dram:
            kw["dram"] = dram
        return open_device("rtl", **kw)
    if backend == "pynq":
        if not bitfile:
            raise ValueError("--backend pynq needs --bitfile (the overlay's .bit; its .hwh beside it)")
        return open_device("pynq", bitfile=bitfile)
    raise ValueError(f"unknown backend {backend!r}; a server offers one of {', '.join(BACKENDS)}")


def resolve_token(token_file: str | os.PathLike | None, host: str, port: int) -> tuple[str, Path, bool]:
    """(token, file, generated): the token in `token_file`, or a new one written there (0600); without a
    file, a new token in the default place for this host and port (where the client looks)."""
    path = Path(token_file) if token_file else default_token_path(host, port)
    if token_file and path.is_file():
        token = read_token(path)
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning("token file %s is readable by others (mode %o): chmod 600 it", path, mode)
        return token, path, False
    token = secrets.token_urlsafe(32)
    write_token(path, token)
    return token, path, True


def serve(
    backend: str,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    token_file: str | os.PathLike | None = None,
    engine: str | None = None,
    bitfile: str | None = None,
    dram: str | None = None,
    limits: Limits | None = None,
    announce=None,
) -> int:
    """Open the backend, bind, write / read the token, serve until SIGINT or SIGTERM; returns an exit status."""
    announce = announce or (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = time.monotonic()
    device = open_backend(backend, engine=engine, bitfile=bitfile, dram=dram)
    try:
        cfg = device.config
        what = f"engine {cfg.name} ({cfg.lanes} lanes)"
    except Exception:
        what = "engine (configuration unreadable)"
    # bind before the token is written, so that port 0 is resolved and a busy port fails first
    placeholder = secrets.token_urlsafe(32)
    try:
        server = DeviceServer(device, placeholder, host=host, port=port, limits=limits, backend=backend, zero_fill=backend == "pynq")
        token, path, generated = resolve_token(token_file, host, server.port)
    except BaseException:
        device.close()
        raise
    server.set_token(token)
    announce(f"codenet serve: {backend} backend, {what}, ready in {time.monotonic() - t0:.1f} s (runtime {Path(__file__).parent})")
    announce(f"codenet serve: token {'generated and written to' if generated else 'read from'} {path} (mode 600)")
    if generated and sys.stderr.isatty():
        announce(f"codenet serve: token {token}")
    announce(f"codenet serve: listening on {server.url}  (clients: --backend {server.url} --token-file {path})")

    def _stop(signum, frame):
        log.info("signal %d: stopping", signum)
        server.stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("interrupted: stopping")
    finally:
        server.close()
    return 0


def setup_logging(level: str = "INFO") -> None:
    """Log lines on stderr (a board's nohup log, or the terminal)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(stream=sys.stderr, level=level, format="%(asctime)s codenet-serve %(levelname)s %(message)s")
    log.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    """``python3 -m codenet.sw.serve``: the same server as ``codenet serve``, with argparse (no click on a board)."""
    d = Limits()
    p = argparse.ArgumentParser(prog="python3 -m codenet.sw.serve", description="Serve one codenet device over TCP (docs/deploy.md).")
    p.add_argument("--backend", required=True, choices=BACKENDS)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (0: any free one; default {DEFAULT_PORT})")
    p.add_argument("--token-file", default=None, help="token file: read if it exists, else a new token is written there (0600)")
    p.add_argument("--engine", default=None, help="fsim/rtl: engine preset or config .json (default ultra96 / tiny)")
    p.add_argument("--bitfile", default=None, help="pynq: the overlay's .bit (its .hwh beside it)")
    p.add_argument("--dram", default=None, help="rtl: DRAM model (ideal, ultra96, ulx3s)")
    p.add_argument("--max-request-mb", type=float, default=d.max_payload / 2**20, help="largest frame payload, MiB")
    p.add_argument("--max-alloc-mb", type=float, default=d.max_alloc_bytes / 2**20, help="device memory per session, MiB")
    p.add_argument("--idle-timeout", type=float, default=d.idle_timeout_s, help="seconds without a request before a session ends")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    a = p.parse_args(argv)
    setup_logging(a.log_level)
    limits = Limits(**{**asdict(d), "max_payload": int(a.max_request_mb * 2**20), "max_alloc_bytes": int(a.max_alloc_mb * 2**20)})
    limits.idle_timeout_s = a.idle_timeout
    try:
        return serve(
            a.backend, host=a.host, port=a.port, token_file=a.token_file, engine=a.engine, bitfile=a.bitfile, dram=a.dram, limits=limits
        )
    except ImportError as e:  # the pynq backend imports pynq in its constructor
        print(f"codenet serve: backend {a.backend} cannot load: {e} (a PYNQ image has it; try --python with PYNQ's venv)", file=sys.stderr)
        return 1
    except (DeviceError, ValueError, OSError) as e:
        print(f"codenet serve: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
