"""The ``remote`` device backend: a Device served by ``codenet serve`` on another machine (or process).

``RemoteDevice("remote://HOST:PORT", token=...)`` is a :class:`~codenet.sw.driver.Device` whose
primitives are requests to a device server (:mod:`codenet.sw.serve`), so the same Runtime that
drives fsim, rtl or a board drives them from elsewhere: a PYNQ board on the lab network, or a
Verilator simulation on a build machine. A whole ``run`` (registers, START, waiting, errors) is
one request, so a frame costs a handful of round trips, not one per register.

This module also holds the wire protocol both ends speak (normative text: docs/deploy.md):
a 16-byte fixed header (magic ``CNRP``, version, flags, JSON length, payload length), a JSON
object, then raw payload bytes (bulk memory only). No pickle: nothing a peer sends is executed.

The token comes from the `token` argument, `token_file`, ``$CODENET_TOKEN``,
``$CODENET_TOKEN_FILE``, or the file ``codenet serve`` / ``codenet deploy`` wrote for that
host and port (:func:`default_token_path`), in that order. Timeouts and a lost connection raise
:class:`RemoteError` (a DeviceError); the session's buffers are gone with the connection, so the
device is not reconnected behind the caller's back.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import threading
import time
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from . import engine as E
from .driver import Device, DeviceBuffer, DeviceError

__all__ = [
    "RemoteDevice",
    "RemoteError",
    "ProtocolError",
    "parse_url",
    "default_token_path",
    "read_token",
    "write_token",
    "send_frame",
    "recv_frame",
    "MAGIC",
    "PROTO_VERSION",
    "HEADER",
    "MAX_JSON",
    "MAX_PAYLOAD",
    "DEFAULT_PORT",
]

# =========================================================================== wire protocol

MAGIC = b"CNRP"
PROTO_VERSION = 1
#: magic, version, flags (0), JSON length, payload length; little-endian
HEADER = struct.Struct("<4sHHII")
#: largest JSON part of a frame (either direction)
MAX_JSON = 64 << 10
#: largest payload a server accepts by default (bulk writes; the client splits larger ones)
MAX_PAYLOAD = 64 << 20
DEFAULT_PORT = 7000


class ProtocolError(DeviceError):
    """A frame that cannot be read: `fatal` when the byte stream is no longer in step (close it)."""

    def __init__(self, message: str, *, kind: str = "protocol", fatal: bool = True):
        super().__init__(message)
        self.kind, self.fatal = kind, fatal


def _recv_exact(sock: socket.socket, n: int, deadline: float | None = None) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        if deadline is not None:  # a total bound, not per recv: a peer trickling bytes cannot hold on
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"frame not complete in time ({got} of {n} bytes)")
            sock.settimeout(left)
        k = sock.recv_into(view[got:], min(n - got, 1 << 22))
        if k == 0:
            raise EOFError(f"connection closed after {got} of {n} bytes")
        got += k
    return buf


def send_frame(sock: socket.socket, obj: dict[str, Any], payload: bytes | bytearray | memoryview | np.ndarray = b"") -> None:
    """One frame: header + JSON + payload (sent without copying a large payload)."""
    body = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    if len(body) > MAX_JSON:
        raise ProtocolError(f"a frame's JSON is limited to {MAX_JSON} bytes, this one has {len(body)}")
    pay = memoryview(payload).cast("B") if len(payload) else memoryview(b"")
    head = HEADER.pack(MAGIC, PROTO_VERSION, 0, len(body), pay.nbytes) + body
    if pay.nbytes <= 1 << 16:
        sock.sendall(head + pay.tobytes())  # one segment for the small, latency-bound requests
    else:
        sock.sendall(head)
        sock.sendall(pay)


def recv_frame(
    sock: socket.socket, *, max_json: int = MAX_JSON, max_payload: int = MAX_PAYLOAD, deadline: float | None = None
) -> tuple[dict[str, Any], bytearray]:
    """Read one frame: (JSON object, payload). Raises ProtocolError (fatal: framing broken or over a
    limit; not fatal: a whole frame whose JSON is bad), EOFError or OSError (timeouts included).
    `deadline` (time.monotonic()) bounds the whole frame; without it the socket's timeout applies per read."""
    magic, version, flags, jlen, plen = HEADER.unpack(bytes(_recv_exact(sock, HEADER.size, deadline)))
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {magic!r} (expected {MAGIC!r}): not a codenet device stream")
    if version != PROTO_VERSION:
        raise ProtocolError(f"protocol version {version}; this end speaks {PROTO_VERSION}")
    if flags:
        raise ProtocolError(f"header flags 0x{flags:x}: reserved, must be 0")
    if jlen > max_json or plen > max_payload:
        raise ProtocolError(
            f"frame too large: {jlen} JSON bytes (limit {max_json}), {plen} payload bytes (limit {max_payload})", kind="too_large"
        )
    body = _recv_exact(sock, jlen, deadline)
    payload = _recv_exact(sock, plen, deadline) if plen else bytearray()
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError(f"the frame's JSON does not parse: {e}", kind="bad_request", fatal=False) from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"the frame's JSON must be an object, got {type(obj).__name__}", kind="bad_request", fatal=False)
    return obj, payload


# =========================================================================== URLs and tokens


def parse_url(url: str) -> tuple[str, int]:
    """(host, port) of ``remote://HOST:PORT`` (IPv6 as ``remote://[::1]:PORT``)."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as e:
        raise ValueError(f"bad remote URL {url!r}: {e}") from None
    if u.scheme != "remote" or not u.hostname or port is None or u.path not in ("", "/") or u.query or u.fragment or u.username:
        raise ValueError(f"bad remote URL {url!r}: expected remote://HOST:PORT")
    return u.hostname, port


def default_token_path(host: str, port: int) -> Path:
    """Where serve / deploy leave the token of a server by default: ~/.config/codenet/tokens/HOST-PORT.token."""
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    safe = "".join(c if c.isalnum() or c in ".-_" else "_" for c in host)
    return base / "codenet" / "tokens" / f"{safe}-{port}.token"


def read_token(path: str | os.PathLike) -> str:
    """A token file's token (its first line, stripped); an empty file is an error."""
    text = Path(path).read_text().strip()
    token = text.splitlines()[0].strip() if text else ""
    if not token:
        raise ValueError(f"token file {path} is empty")
    return token


def write_token(path: str | os.PathLike, token: str) -> Path:
    """Write a token readable by its owner only (0600, folder 0700 when created here)."""
    p = Path(path)
    if not p.parent.exists():
        p.parent.mkdir(parents=True, mode=0o700)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its old mode otherwise
        os.write(fd, (token + "\n").encode())
    finally:
        os.close(fd)
    return p


def _find_token(host: str, port: int, token: str | None, token_file: str | os.PathLike | None) -> str:
    if token:
        return token
    for src in (token_file, os.environ.get("CODENET_TOKEN_FILE")):
        if src:
            return read_token(src)
    if os.environ.get("CODENET_TOKEN"):
        return os.environ["CODENET_TOKEN"].strip()
    p = default_token_path(host, port)
    if p.is_file():
        return read_token(p)
    raise RemoteError(
        f"remote://{host}:{port}: no token: pass token= or token_file=, set $CODENET_TOKEN or $CODENET_TOKEN_FILE, "
        f"or put it in {p} (where codenet serve / deploy write it)",
        kind="auth",
    )


# =========================================================================== the client


class RemoteError(DeviceError):
    """A remote request that failed outside the engine: `kind` is auth, busy, bad_request, too_large,
    protocol, connection, timeout, internal (an engine error arrives as a plain DeviceError)."""

    def __init__(self, message: str, *, kind: str = "connection", **kw: Any):
        super().__init__(message, **kw)
        self.kind = kind


def _close_quietly(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


class RemoteDevice(Device):
    """A device behind ``codenet serve`` at `url` (``remote://HOST:PORT``).

    `timeout_s`: seconds any request but ``run`` may take; a run may take its own timeout
    (scaled as the server's backend scales it, an rtl simulation 10x) plus `run_margin_s`.
    `busy_wait_s`: sessions are exclusive; while another client holds the device, retry
    for this long before raising ``RemoteError(kind="busy")`` (0: fail at once).
    """

    poll_interval_s = 0.0

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        token_file: str | os.PathLike | None = None,
        connect_timeout_s: float = 10.0,
        timeout_s: float = 60.0,
        run_margin_s: float = 30.0,
        busy_wait_s: float = 0.0,
    ):
        super().__init__()
        self.url = url
        self.host, self.port = parse_url(url)
        self.timeout_s, self.run_margin_s = timeout_s, run_margin_s
        token = _find_token(self.host, self.port, token, token_file)
        self._lock = threading.Lock()
        self._dead: str | None = None
        self._buffers: dict[int, DeviceBuffer] = {}
        deadline = time.monotonic() + busy_wait_s
        while True:
            self._sock = self._connect(connect_timeout_s)
            self._finalizer = weakref.finalize(self, _close_quietly, self._sock)
            try:
                hello = self._call("hello", token=token, proto=PROTO_VERSION, client=f"codenet pid {os.getpid()}")
                break
            except RemoteError as e:
                self._finalizer()
                if e.kind != "busy" or time.monotonic() >= deadline:
                    raise
                self._dead = None
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        self.server_info: dict[str, Any] = hello
        self.backend: str = hello.get("backend", "?")
        self.limits: dict[str, int] = dict(hello.get("limits", {}))
        self.timeout_scale = float(hello.get("timeout_scale") or 1.0)
        self.wall_timeout_s: float | None = hello.get("wall_timeout_s")
        self._max_payload = int(self.limits.get("max_payload", MAX_PAYLOAD))
        if hello.get("config"):
            self._config = E.EngineConfig.from_dict(hello["config"])

    # ------------------------------------------------------------------ plumbing
    def _connect(self, timeout_s: float) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout_s)
        except OSError as e:
            raise RemoteError(f"{self.url}: cannot connect ({e}); is `codenet serve` running there?", kind="connection") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return sock

    def _call(self, op: str, payload: bytes | memoryview | np.ndarray = b"", *, wait_s: float | None = None, **args: Any):
        """One request, one reply: (reply JSON, reply payload) for read, else the reply JSON."""
        with self._lock:
            if self._dead:
                raise RemoteError(f"{self.url}: the connection is closed ({self._dead}); open a new device", kind="connection")
            t = self.timeout_s if wait_s is None else wait_s
            try:
                self._sock.settimeout(t)
                send_frame(self._sock, {"op": op, **args}, payload)
                reply, data = recv_frame(self._sock, max_payload=getattr(self, "_max_payload", MAX_PAYLOAD))
            except TimeoutError:
                self._kill(f"no answer to {op!r} within {t:.0f} s")
                raise RemoteError(f"{self.url}: no answer to {op!r} within {t:.0f} s; the connection was closed", kind="timeout") from None
            except (OSError, EOFError, ProtocolError) as e:
                self._kill(f"lost during {op!r}: {e}")
                raise RemoteError(f"{self.url}: connection lost during {op!r} ({e})", kind="connection") from None
        if reply.get("ok") is True:
            return (reply, data) if op == "read" else reply
        kind = str(reply.get("error", "internal"))
        msg = str(reply.get("message", "(no message)"))
        if kind in ("auth", "busy", "too_large", "protocol"):
            self._kill(f"refused: {kind}")
        if kind == "device":
            raise DeviceError(
                f"{self.url}: {msg}",
                code=reply.get("code"),
                status=int(reply.get("status") or 0),
                err_desc=reply.get("err_desc"),
                err_addr=reply.get("err_addr"),
                counters=reply.get("counters"),
                timeout=bool(reply.get("timeout")),
            )
        raise RemoteError(f"{self.url}: {op}: {msg}", kind=kind)

    def _kill(self, why: str) -> None:
        self._dead = why
        _close_quietly(self._sock)

    def close(self) -> None:
        """End the session (the server frees its buffers and gives the device to the next client)."""
        if self._dead is None:
            with contextlib.suppress(DeviceError):
                self._call("bye", wait_s=5.0)
            self._kill("closed")
        self._finalizer()

    def ping(self) -> float:
        """Seconds for one empty round trip."""
        t0 = time.perf_counter()
        self._call("ping")
        return time.perf_counter() - t0

    # ------------------------------------------------------------------ HAL primitives
    def _read32(self, offset: int) -> int:
        return int(self._call("read32", offset=int(offset))["value"]) & 0xFFFFFFFF

    def _write32(self, offset: int, value: int) -> None:
        self._call("write32", offset=int(offset), value=int(value) & 0xFFFFFFFF)

    def read_counters(self) -> dict[str, int]:
        """All performance counters in one request."""
        return {k: int(v) for k, v in self._call("counters")["counters"].items()}

    def alloc(self, nbytes: int) -> DeviceBuffer:
        r = self._call("alloc", nbytes=int(nbytes))
        buf = DeviceBuffer(int(r["phys_addr"]), int(nbytes), int(r["handle"]))
        self._buffers[buf.handle] = buf
        return buf

    def free(self, buf: DeviceBuffer) -> None:
        self._buffers.pop(buf.handle, None)
        self._call("free", handle=buf.handle)

    def _range(self, buf: DeviceBuffer, offset: int, n: int) -> None:
        if offset < 0 or n < 0 or offset + n > buf.size:
            raise ValueError(f"[{offset}, {offset + n}) is outside the {buf.size}-byte buffer at 0x{buf.phys_addr:x}")

    def write(self, buf: DeviceBuffer, offset: int, data: bytes | np.ndarray) -> None:
        if isinstance(data, (bytes, bytearray, memoryview)):
            view = memoryview(data).cast("B")
        else:
            view = memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
        self._range(buf, offset, view.nbytes)
        step = self._max_payload
        for k in range(0, view.nbytes, step):
            self._call("write", view[k : k + step], handle=buf.handle, offset=int(offset) + k)

    def read(self, buf: DeviceBuffer, offset: int, nbytes: int) -> np.ndarray:
        self._range(buf, offset, nbytes)
        out = np.empty(int(nbytes), np.uint8)
        step = self._max_payload
        for k in range(0, int(nbytes), step):
            n = min(step, int(nbytes) - k)
            _, data = self._call("read", handle=buf.handle, offset=int(offset) + k, nbytes=n)
            if len(data) != n:
                raise RemoteError(f"{self.url}: read of {n} bytes returned {len(data)}", kind="protocol")
            out[k : k + n] = np.frombuffer(data, np.uint8)
        return out

    # ------------------------------------------------------------------ runs
    def run(self, prog_addr: int, prog_len: int, windows: Iterable | None = None, *, timeout_s: float = 30.0) -> dict[str, int]:
        """The whole run on the server (one request); errors come back as DeviceError with the code."""
        ws = None
        if windows is not None:
            ws = []
            for w in windows:
                base, size, rd, wr = (w.base, w.size, w.read, w.write) if hasattr(w, "base") else w
                ws.append([int(base), int(size), bool(rd), bool(wr)])
        wait = (self.wall_timeout_s if self.wall_timeout_s is not None else timeout_s * self.timeout_scale) + self.run_margin_s
        r = self._call("run", wait_s=wait, prog_addr=int(prog_addr), prog_len=int(prog_len), windows=ws, timeout_s=float(timeout_s))
        return {k: int(v) for k, v in r["counters"].items()}

    def reset(self) -> None:
        """Soft reset on the server's device (and a system reset on a simulator)."""
        self._call("reset")
