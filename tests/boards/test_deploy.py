"""`codenet deploy` (boards/deploy.py) without a board: a real paramiko SSH server on loopback.

The stub server (a thread) authenticates one public key, serves SFTP onto the local file system
(refusing any path outside the test's folder) and runs exec requests with bash, with the
``SSH_CONNECTION`` a real sshd sets. So the deployment's every step really happens: preflight,
the SFTP copy (files and modes checked), the nohup start of ``python -m codenet.sw.serve`` from
the copied files (the fsim backend stands in for PYNQ), the wait for its log, and then a
compiled program runs through ``remote://`` bit-exactly. Also: the commands it ran, a server that
dies at start (pynq missing here: the log's tail is in the error), unknown and non-PYNQ boards,
a missing overlay (named), a wrong key, an unknown host key.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

paramiko = pytest.importorskip("paramiko")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sw"))
from test_compiler import U96, assert_same, random_inputs  # noqa: E402

from codenet.boards.deploy import DeployError, deploy, find_overlay, runtime_files  # noqa: E402
from codenet.sw import golden, zoo  # noqa: E402
from codenet.sw.compiler import compile_graph  # noqa: E402
from codenet.sw.remote import RemoteDevice, read_token  # noqa: E402
from codenet.sw.runtime import Runtime  # noqa: E402

# --------------------------------------------------------------------------- the stub SSH server


class _Handle(paramiko.SFTPHandle):
    def stat(self):
        return paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))

    def chattr(self, attr):
        paramiko.SFTPServer.set_file_attr(self.filename, attr)
        return paramiko.SFTP_OK


def _make_sftp(root: Path):
    class _SFTP(paramiko.SFTPServerInterface):
        def _ok(self, path: str) -> bool:
            return Path(os.path.abspath(path)).is_relative_to(root)

        def stat(self, path):
            try:
                return paramiko.SFTPAttributes.from_stat(os.stat(path))
            except OSError as e:
                return paramiko.SFTPServer.convert_errno(e.errno)

        lstat = stat

        def open(self, path, flags, attr):
            if not self._ok(path):
                return paramiko.SFTP_PERMISSION_DENIED
            try:
                fd = os.open(path, flags, 0o644)
            except OSError as e:
                return paramiko.SFTPServer.convert_errno(e.errno)
            if flags & os.O_WRONLY:
                mode = "ab" if flags & os.O_APPEND else "wb"
            elif flags & os.O_RDWR:
                mode = "a+b" if flags & os.O_APPEND else "r+b"
            else:
                mode = "rb"
            h = _Handle(flags)
            h.filename = path
            h.readfile = h.writefile = os.fdopen(fd, mode)
            return h

        def mkdir(self, path, attr):
            if not self._ok(path):
                return paramiko.SFTP_PERMISSION_DENIED
            try:
                os.mkdir(path, getattr(attr, "st_mode", None) or 0o755)
            except OSError as e:
                return paramiko.SFTPServer.convert_errno(e.errno)
            return paramiko.SFTP_OK

        def chattr(self, path, attr):
            if not self._ok(path):
                return paramiko.SFTP_PERMISSION_DENIED
            paramiko.SFTPServer.set_file_attr(path, attr)
            return paramiko.SFTP_OK

    return _SFTP


class StubSSH:
    """A paramiko SSH server on 127.0.0.1: one user, one public key, SFTP and exec (bash)."""

    def __init__(self, root: Path, host_key, client_key, user: str = "xilinx"):
        self.root, self.host_key, self.client_key, self.user = root, host_key, client_key, user
        self.commands: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._transports: list = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = paramiko.Transport(conn)
            t.add_server_key(self.host_key)
            t.set_subsystem_handler("sftp", paramiko.SFTPServer, _make_sftp(self.root))
            self._transports.append(t)
            try:
                t.start_server(server=self._Iface(self, conn.getpeername(), self.port))
            except (paramiko.SSHException, EOFError):
                continue

    class _Iface(paramiko.ServerInterface):
        def __init__(self, stub, peer, port):
            self.stub, self.peer, self.port = stub, peer, port

        def check_channel_request(self, kind, chanid):
            return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

        def get_allowed_auths(self, username):
            return "publickey"

        def check_auth_publickey(self, username, key):
            ok = username == self.stub.user and key.asbytes() == self.stub.client_key.asbytes()
            return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

        def check_channel_exec_request(self, channel, command):
            cmd = command.decode()
            self.stub.commands.append(cmd)
            env = {**os.environ, "SSH_CONNECTION": f"{self.peer[0]} {self.peer[1]} 127.0.0.1 {self.port}"}

            def run():
                # This thread can overtake the transport's reply to the exec request. Output, exit
                # status and EOF first are fine for the client; a CLOSE first is not (exec_command
                # raises "Channel closed"), so the client closes the channel, and the stub answers.
                p = subprocess.run(["bash", "-c", cmd], capture_output=True, env=env, cwd=self.stub.root, timeout=120)
                channel.sendall(p.stdout)
                channel.sendall_stderr(p.stderr)
                channel.send_exit_status(p.returncode)
                channel.shutdown_write()

            threading.Thread(target=run, daemon=True).start()
            return True

    def close(self):
        self._stop.set()
        self.sock.close()
        for t in self._transports:
            t.close()


@pytest.fixture(scope="module")
def keys():
    return paramiko.RSAKey.generate(2048), paramiko.RSAKey.generate(2048)


@pytest.fixture
def ssh(tmp_path, keys, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # the local token goes there, not to ~
    host_key, client_key = keys
    key_file = tmp_path / "id_rsa"
    client_key.write_private_key_file(str(key_file))
    board = tmp_path / "board"
    board.mkdir()
    stub = StubSSH(board, host_key, client_key)
    yield stub, key_file
    stub.close()


@pytest.fixture
def overlay(tmp_path):
    d = tmp_path / "overlay"
    d.mkdir()
    (d / "codenet.bit").write_bytes(b"\x00\x09\x0f\xf0" * 64)
    (d / "codenet.hwh").write_text("<hwh/>\n")
    return d


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


def _kw(stub, key_file, tmp_path, **kw):
    return dict(
        user="xilinx",
        key=str(key_file),
        ssh_port=stub.port,
        dest=str(stub.root / "home" / "xilinx" / "codenet"),
        known_hosts=str(tmp_path / "known_hosts"),
        accept_new_host_key=True,
        python=sys.executable,
        ready_timeout_s=60,
        **kw,
    )


def _stop(pid: int | None) -> None:
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]:
            return
        time.sleep(0.05)


# --------------------------------------------------------------------------- tests


def test_the_stub_serves_a_command_that_ends_before_the_request_is_answered(ssh, monkeypatch):
    """The race that once failed CI here, made certain: the reply to an exec request is held back."""
    from paramiko.common import cMSG_CHANNEL_SUCCESS

    send = paramiko.Transport._send_user_message

    def late_reply(transport, m):
        if transport.server_mode and m.asbytes()[:1] == cMSG_CHANNEL_SUCCESS:
            time.sleep(0.05)
        return send(transport, m)

    monkeypatch.setattr(paramiko.Transport, "_send_user_message", late_reply)
    stub, key_file = ssh
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", port=stub.port, username=stub.user, key_filename=str(key_file), allow_agent=False, look_for_keys=False)
    try:
        for i in range(3):
            _, out, err = client.exec_command(f"echo out{i}; echo err{i} >&2; exit {i}")
            assert (out.read(), err.read(), out.channel.recv_exit_status()) == (f"out{i}\n".encode(), f"err{i}\n".encode(), i)
    finally:
        client.close()


def test_deploy_copies_starts_and_serves(ssh, overlay, tmp_path):
    stub, key_file = ssh
    port = _free_port()
    dep = None
    try:
        dep = deploy("ultra96v2", "127.0.0.1", port=port, overlay=overlay, backend="fsim", **_kw(stub, key_file, tmp_path))
        dest = Path(dep.dest)
        # the files: overlay, engine.json (the board's preset), runtime, token (0600 in a 0700 folder)
        assert (dest / "overlay" / "codenet.bit").read_bytes() == (overlay / "codenet.bit").read_bytes()
        assert (dest / "overlay" / "codenet.hwh").read_text() == "<hwh/>\n"
        assert '"name": "ultra96"' in (dest / "engine.json").read_text()
        for local, rel in runtime_files():
            assert (dest / rel).read_bytes() == local.read_bytes()
        assert not (dest / "codenet" / "sw" / "cli.py").exists() and (dest / "codenet" / "__init__.py").is_file()
        assert {"driver.py", "engine.py", "fsim.py", "pynq_backend.py", "remote.py", "serve.py"} <= {
            p.name for p in (dest / "codenet/sw").iterdir()
        }
        tok = dest / "secrets" / "serve.token"
        assert stat.S_IMODE(tok.stat().st_mode) == 0o600 and stat.S_IMODE(tok.parent.stat().st_mode) == 0o700
        assert read_token(tok) == read_token(dep.local_token) and stat.S_IMODE(Path(dep.local_token).stat().st_mode) == 0o600
        assert all(str(Path(f)).startswith(str(stub.root)) for f in dep.files)
        # the commands: preflight, start (nohup, from the copied package), readiness polls
        assert "import sys, numpy" in stub.commands[0]
        start = next(c for c in stub.commands if "nohup" in c)
        assert f"env PYTHONPATH={dest}" in start and "-m codenet.sw.serve --backend fsim --host 127.0.0.1" in start
        assert f"--port {port} --token-file {tok}" in start and "--engine ultra96" in start
        assert any("grep -q 'listening on'" in c for c in stub.commands)
        # bound where the SSH connection arrived (loopback here): the URL and the tunnel say so
        assert (
            dep.bind == "127.0.0.1"
            and dep.url == f"remote://127.0.0.1:{port}"
            and dep.tunnel.startswith(f"ssh -N -L {port}:127.0.0.1:{port}")
        )
        assert int((dest / "serve.pid").read_text()) == dep.pid
        # and it serves: a compiled program through remote://, bit-exact with golden
        g = zoo.build("codenet-tiny", seed=1)
        prog = compile_graph(g, U96)
        ins = random_inputs(g, 1, 3)
        with RemoteDevice(dep.url, token_file=dep.local_token) as dev:
            assert dev.backend == "fsim"
            with Runtime(dev, prog) as rt:
                assert_same(rt.run(ins), golden.run(g, ins))
        log = (dest / "serve.log").read_text()
        assert f"(runtime {dest / 'codenet' / 'sw'})" in log, "the server runs the copied files"
        assert "session 1 closed" in log
    finally:
        _stop(dep.pid if dep else None)


def test_deploy_reports_a_server_that_dies(ssh, overlay, tmp_path):
    stub, key_file = ssh
    if any(Path(p, "pynq").exists() for p in sys.path if p):
        pytest.skip("pynq is installed here")
    with pytest.raises(DeployError, match=r"(?s)the server exited.*serve\.log.*cannot load: No module named 'pynq'"):
        deploy("ultra96v2", "127.0.0.1", port=_free_port(), overlay=overlay, **_kw(stub, key_file, tmp_path))
    start = next(c for c in stub.commands if "nohup" in c)
    assert "--backend pynq" in start and "--bitfile" in start and "/overlay/codenet.bit" in start


def test_deploy_refuses_unknown_and_non_pynq_boards(tmp_path, overlay):
    with pytest.raises(DeployError, match="unknown board 'nope'.*ultra96v2"):
        deploy("nope", "127.0.0.1", overlay=overlay)
    with pytest.raises(DeployError, match="ulx3s.*not a PYNQ board"):
        deploy("ulx3s", "127.0.0.1", overlay=overlay)


def test_missing_overlay_names_the_path(tmp_path, overlay):
    missing = tmp_path / "no-such-build"
    with pytest.raises(DeployError, match=f"overlay folder {missing} does not exist"):
        deploy("ultra96v2", "127.0.0.1", overlay=missing)
    (overlay / "codenet.hwh").unlink()
    with pytest.raises(DeployError, match=f"{overlay / 'codenet.hwh'} is missing"):
        find_overlay(overlay)
    (overlay / "codenet.bit").unlink()
    with pytest.raises(DeployError, match=f"no .bit file in {overlay}"):
        find_overlay(overlay)
    (overlay / "engine.json").write_text("{}")
    (overlay / "a.bit").write_bytes(b"1")
    (overlay / "a.hwh").write_text("x")
    assert find_overlay(overlay) == (overlay / "a.bit", overlay / "a.hwh", overlay / "engine.json")
    with pytest.raises(DeployError, match="engine.json: not an engine.json from codenet gen"):
        deploy("ultra96v2", "127.0.0.1", overlay=overlay)  # refused before connecting anywhere


def test_ssh_errors_are_clear(ssh, overlay, tmp_path, keys):
    stub, key_file = ssh
    other = tmp_path / "other_key"
    paramiko.RSAKey.generate(2048).write_private_key_file(str(other))
    kw = _kw(stub, key_file, tmp_path)
    with pytest.raises(DeployError, match="authentication failed"):
        deploy("ultra96v2", "127.0.0.1", overlay=overlay, **{**kw, "key": str(other)})
    with pytest.raises(DeployError, match="not found in known_hosts.*accept-new-host-key"):
        deploy("ultra96v2", "127.0.0.1", overlay=overlay, **{**kw, "accept_new_host_key": False, "known_hosts": str(tmp_path / "kh2")})
    assert not stub.commands  # nothing ran
    np.testing.assert_equal(len(list(stub.root.iterdir())), 0)  # nothing copied


def test_cli_deploy(ssh, overlay, tmp_path):
    from click.testing import CliRunner

    from codenet.sw import cli

    stub, key_file = ssh
    port = _free_port()
    dest = stub.root / "opt" / "codenet"
    args = ["deploy", "--board", "pynq-z2", "--host", "127.0.0.1", "--key", str(key_file), "--ssh-port", str(stub.port)]
    args += ["--port", str(port), "--dest", str(dest), "--overlay", str(overlay), "--python", sys.executable]
    r = CliRunner().invoke(cli.main, [*args, "--accept-new-host-key", "--serve-backend", "fsim", "--json"])
    rep = json.loads(r.stdout) if r.exit_code == 0 else {}
    try:
        assert r.exit_code == 0, r.output
        assert rep["url"] == f"remote://127.0.0.1:{port}" and rep["board"] == "pynq-z2" and rep["dest"] == str(dest)
        assert Path(rep["local_token"]).is_relative_to(tmp_path / "config")  # ~/.config/codenet/tokens, here under tmp
        assert (tmp_path / "config" / "codenet" / "known_hosts").read_text().startswith(f"[127.0.0.1]:{stub.port}")
        with RemoteDevice(rep["url"]) as dev:  # the token is found where deploy left it
            assert dev.backend == "fsim" and dev.config.name == rep["engine"]
    finally:
        _stop(rep.get("pid"))
    r = CliRunner().invoke(cli.main, ["deploy", "--board", "ulx3s", "--host", "x", "--overlay", str(overlay)])
    assert r.exit_code == 1 and "not a PYNQ board" in r.output
