"""Put the engine on a PYNQ board over SSH and start the device server there (``codenet deploy``).

One SSH connection (paramiko) does it all: a preflight on the board (which Python, numpy, the
board's own address), an SFTP copy of the overlay (.bit + .hwh), the engine's ``engine.json``,
the runtime (the ``codenet.sw`` package files: numpy alone on the board, no click, no rich) and a
fresh token (0600 in a 0700 folder), then ``nohup python3 -m codenet.sw.serve --backend pynq ...``
and a wait until its log says it listens. The token is also written on this machine where the
``remote`` backend looks for it (``~/.config/codenet/tokens/HOST-PORT.token``), so
``--backend remote://HOST:PORT`` works right away.

Board facts (family, overlay kind) come from :mod:`codenet.boards.catalogue`. Nothing here needs
a board to be tested: `client_factory` takes anything with paramiko's ``SSHClient`` interface
(tests use a real paramiko SSH server on loopback).
"""

from __future__ import annotations

import json
import os
import posixpath
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DeployError",
    "Deployment",
    "deploy",
    "find_overlay",
    "default_overlay",
    "default_known_hosts",
    "runtime_files",
    "DEFAULT_DEST",
    "PYNQ_VENV_PYTHON",
]

DEFAULT_DEST = "/home/xilinx/codenet"
#: PYNQ >= 3.0 installs pynq in this virtual environment; `--python auto` prefers it
PYNQ_VENV_PYTHON = "/usr/local/share/pynq-venv/bin/python3"
#: the board's Python must be at least this (the runtime's syntax and socket.timeout == TimeoutError)
MIN_PYTHON = (3, 10)
SW_DIR = Path(__file__).resolve().parents[1] / "sw"
#: sw files the board does not need (the CLI imports click and rich)
_NOT_ON_BOARD = {"cli.py"}


class DeployError(RuntimeError):
    """A deployment that cannot go on; the message says what to fix."""


@dataclass
class Deployment:
    """What deploy did and how to reach the server."""

    board: str
    engine: str
    host: str
    port: int
    url: str
    dest: str
    bind: str
    python: str
    bitfile: str
    remote_token: str
    local_token: str
    log: str
    pid: int | None
    command: str
    files: list[str] = field(default_factory=list)
    tunnel: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_overlay(board: str) -> Path:
    """Where ``codenet build`` leaves a board's overlay once Vivado has run: build/vivado/BOARD/overlay."""
    return Path("build") / "vivado" / board / "overlay"


def default_known_hosts() -> Path:
    """Host keys deploy has accepted (kept apart from ~/.ssh/known_hosts, which is only read)."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "codenet" / "known_hosts"


def find_overlay(overlay_dir: str | Path) -> tuple[Path, Path, Path | None]:
    """(.bit, .hwh, engine.json or None) in an overlay folder; a missing piece is an error naming the path."""
    d = Path(overlay_dir)
    if not d.is_dir():
        raise DeployError(f"overlay folder {d} does not exist: build the board's overlay (the .bit and .hwh) first, or pass --overlay DIR")
    bits = sorted(d.glob("*.bit"))
    if not bits:
        raise DeployError(f"no .bit file in {d}: the overlay is the bitstream (.bit) and its hardware handoff (.hwh)")
    if len(bits) > 1:
        raise DeployError(f"{len(bits)} .bit files in {d} ({', '.join(b.name for b in bits)}): keep the one to deploy")
    hwh = bits[0].with_suffix(".hwh")
    if not hwh.is_file():
        raise DeployError(f"{hwh} is missing: PYNQ needs the .hwh beside the .bit, with the same name")
    ej = d / "engine.json"
    return bits[0], hwh, ej if ej.is_file() else None


def runtime_files() -> list[tuple[Path, str]]:
    """(local file, path under the destination) of the runtime: the codenet.sw modules, numpy-only."""
    return [(p, f"codenet/sw/{p.name}") for p in sorted(SW_DIR.glob("*.py")) if p.name not in _NOT_ON_BOARD]


def _exec(client: Any, command: str, timeout_s: float = 60.0) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(command, timeout=timeout_s)
    out = stdout.read().decode(errors="replace")
    err = stderr.read().decode(errors="replace")
    return stdout.channel.recv_exit_status(), out, err


def _connect(host: str, user: str, key: str | None, password: str | None, ssh_port: int, known_hosts: str | None, accept_new: bool):
    import paramiko  # the boards extra; only deploy needs it

    client = paramiko.SSHClient()
    try:
        client.load_system_host_keys()
    except OSError:
        pass
    known_hosts = known_hosts or str(default_known_hosts())
    Path(known_hosts).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    Path(known_hosts).touch(mode=0o600, exist_ok=True)
    client.load_host_keys(known_hosts)
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy() if accept_new else paramiko.RejectPolicy())
    try:
        client.connect(
            host,
            port=ssh_port,
            username=user,
            key_filename=key,
            password=password,
            timeout=15,
            allow_agent=key is None,
            look_for_keys=key is None,
        )
    except paramiko.AuthenticationException as e:
        raise DeployError(
            f"ssh {user}@{host}:{ssh_port}: authentication failed ({e}); pass --key FILE or set $CODENET_SSH_PASSWORD"
        ) from None
    except paramiko.SSHException as e:
        if "known_hosts" in str(e):
            raise DeployError(f"ssh {user}@{host}:{ssh_port}: {e} (connect once with ssh, or pass --accept-new-host-key)") from None
        t = client.get_transport()
        if t is not None and t.is_active() and not t.is_authenticated():  # paramiko reports the last key it tried
            why = f"authentication failed ({e}); pass --key FILE or set $CODENET_SSH_PASSWORD"
            raise DeployError(f"ssh {user}@{host}:{ssh_port}: {why}") from None
        raise DeployError(f"ssh {user}@{host}:{ssh_port}: {e}") from None
    except OSError as e:
        raise DeployError(f"ssh {user}@{host}:{ssh_port}: cannot connect ({e})") from None
    if accept_new:
        client.save_host_keys(known_hosts)
    return client


def _sftp_mkdirs(sftp: Any, path: str, mode: int = 0o755) -> None:
    parts = [p for p in path.split("/") if p]
    cur = "/" if path.startswith("/") else ""
    for p in parts:
        cur = posixpath.join(cur, p) if cur else p
        try:
            sftp.stat(cur)
        except OSError:
            sftp.mkdir(cur, mode)


def deploy(
    board: str,
    host: str,
    *,
    user: str = "xilinx",
    key: str | None = None,
    password: str | None = None,
    ssh_port: int = 22,
    port: int = 7000,
    dest: str = DEFAULT_DEST,
    overlay: str | Path | None = None,
    bind: str | None = None,
    python: str = "auto",
    sudo: bool = False,
    backend: str = "pynq",
    engine: str | None = None,
    known_hosts: str | None = None,
    accept_new_host_key: bool = False,
    token_file: str | Path | None = None,
    ready_timeout_s: float = 90.0,
    client_factory: Callable[[], Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Deployment:
    """Copy overlay, engine.json, runtime and token to `dest` on the board, start the server, wait for it.

    `bind`: the address the server listens on (default: the board's address of this SSH connection,
    from ``$SSH_CONNECTION``; 127.0.0.1 for an SSH tunnel only). `python`: the board's interpreter
    ("auto": PYNQ's venv if present, else python3). `sudo`: start it with ``sudo -n`` (PYNQ needs
    root for /dev/mem; NOPASSWD or --user root). `backend`/`engine`: "pynq" on a board; "fsim" serves
    the functional model instead (tests without a board). `client_factory`: returns a connected
    paramiko-like SSHClient (tests).
    """
    from codenet.sw import engine as E
    from codenet.sw.remote import default_token_path, write_token

    from .catalogue import BoardError, get_board

    say = progress or (lambda msg: None)
    try:
        b = get_board(board)
    except BoardError as e:
        raise DeployError(str(e)) from None
    if not (b.is_zynq and b.overlay == "pynq"):
        raise DeployError(f"board {b.name} ({b.title}, {b.family}) is not a PYNQ board: deploy drives Zynq boards with a PYNQ overlay")
    if not 1 <= port <= 65535:
        raise DeployError(f"--port {port}: a TCP port is 1..65535")
    overlay_dir = Path(overlay) if overlay is not None else default_overlay(b.name)
    bit, hwh, engine_json = find_overlay(overlay_dir)
    engine_name = b.engine_preset
    if engine_json is not None:
        try:
            engine_name = json.loads(engine_json.read_text())["config"]["name"]
        except (ValueError, KeyError, TypeError) as e:
            raise DeployError(f"{engine_json}: not an engine.json from codenet gen ({type(e).__name__}: {e})") from None
    dest = dest.rstrip("/") or "/"
    q = shlex.quote

    token = secrets.token_urlsafe(32)
    say(f"connecting to {user}@{host}:{ssh_port}")
    client = client_factory() if client_factory else _connect(host, user, key, password, ssh_port, known_hosts, accept_new_host_key)
    try:
        # ---------------------------------------------------------------- preflight
        pick = f"PY={q(python)}" if python != "auto" else f"if [ -x {PYNQ_VENV_PYTHON} ]; then PY={PYNQ_VENV_PYTHON}; else PY=python3; fi"
        probe = "import sys, numpy; print(sys.executable); print('%d.%d' % sys.version_info[:2]); print(numpy.__version__)"
        rc, out, err = _exec(client, f'{pick}; "$PY" -c {q(probe)} && echo "ssh=$SSH_CONNECTION"')
        lines = out.strip().splitlines()
        if rc != 0 or len(lines) < 4:
            raise DeployError(f"{host}: the board's Python cannot import numpy (exit {rc}): {(err or out).strip()[-400:]}")
        py, ver, npver, sshc = lines[0], lines[1], lines[2], lines[3].removeprefix("ssh=").split()
        if tuple(int(x) for x in ver.split(".")) < MIN_PYTHON:
            raise DeployError(f"{host}: {py} is Python {ver}; the runtime needs {'.'.join(map(str, MIN_PYTHON))} or newer (PYNQ >= 3.0)")
        if bind is None:
            bind = sshc[2] if len(sshc) >= 3 else "0.0.0.0"
        say(f"board: {py} (Python {ver}, numpy {npver}); the server will listen on {bind}:{port}")

        # ---------------------------------------------------------------- files
        sftp = client.open_sftp()
        copied: list[str] = []
        try:
            for d in (dest, f"{dest}/codenet/sw", f"{dest}/overlay"):
                _sftp_mkdirs(sftp, d)
            _sftp_mkdirs(sftp, f"{dest}/secrets", 0o700)
            sftp.chmod(f"{dest}/secrets", 0o700)
            remote_bit = f"{dest}/overlay/{bit.name}"
            plan = [(bit, remote_bit), (hwh, f"{dest}/overlay/{hwh.name}")]
            plan += [(p, f"{dest}/{rel}") for p, rel in runtime_files()]
            for local, remote in plan:
                sftp.put(str(local), remote)
                copied.append(remote)
            with sftp.open(f"{dest}/codenet/__init__.py", "w") as fh:
                fh.write('"""codenet: the runtime subset that codenet deploy puts on a board (codenet.sw, numpy only)."""\n')
            copied.append(f"{dest}/codenet/__init__.py")
            if engine_json is not None:
                sftp.put(str(engine_json), f"{dest}/engine.json")
            else:
                with sftp.open(f"{dest}/engine.json", "w") as fh:
                    fh.write(json.dumps(E.engine_json(b.engine_config()), indent=2) + "\n")
                say(f"no engine.json in {overlay_dir}: wrote the board's preset ({b.engine_preset})")
            copied.append(f"{dest}/engine.json")
            remote_token = f"{dest}/secrets/serve.token"
            with sftp.open(remote_token, "w") as fh:
                fh.chmod(0o600)  # before the token is in it
                fh.write(token + "\n")
            copied.append(remote_token)
        finally:
            sftp.close()
        say(f"copied {len(copied)} files to {host}:{dest}")

        # ---------------------------------------------------------------- start
        su = "sudo -n " if sudo else ""
        args = f"--backend {q(backend)} --host {q(bind)} --port {port} --token-file {q(remote_token)}"
        args += f" --bitfile {q(remote_bit)}" if backend == "pynq" else f" --engine {q(engine or b.engine_preset)}"
        log = f"{dest}/serve.log"
        pidf = f"{dest}/serve.pid"
        serve_cmd = f'{su}env PYTHONPATH={q(dest)} "$PY" -m codenet.sw.serve {args}'
        script = (
            f"PY={q(py)}; cd {q(dest)} || exit 1; "
            f'if [ -f {q(pidf)} ] && [ -d "/proc/$(cat {q(pidf)})" ]; then {su}kill "$(cat {q(pidf)})"; sleep 1; fi; '
            f"nohup {serve_cmd} > {q(log)} 2>&1 < /dev/null & echo $! > {q(pidf)}; echo $!"
        )
        rc, out, err = _exec(client, script)
        try:
            pid = int(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise DeployError(f"{host}: starting the server failed (exit {rc}): {(err or out).strip()[-400:]}") from None
        say(f"started the server (pid {pid}), waiting for it to listen")
        deadline = time.monotonic() + ready_timeout_s
        while True:
            rc, out, _ = _exec(
                client, f"grep -q 'listening on' {q(log)} && echo ready || ([ -d /proc/{pid} ] && echo starting || echo dead)"
            )
            state = out.strip()
            if state == "ready":
                break
            if state == "dead" or time.monotonic() > deadline:
                _, tail, _ = _exec(client, f"tail -n 30 {q(log)}")
                what = "exited" if state == "dead" else f"did not listen within {ready_timeout_s:.0f} s"
                raise DeployError(f"{host}: the server {what}; {log}:\n{tail.rstrip()}")
            time.sleep(0.5)
    finally:
        client.close()

    local = write_token(token_file or default_token_path(host, port), token)
    loopback = bind in ("127.0.0.1", "localhost", "::1")
    url = f"remote://127.0.0.1:{port}" if loopback else f"remote://{host}:{port}"
    tunnel = f"ssh -N -L {port}:127.0.0.1:{port} -p {ssh_port} {user}@{host}" if loopback else None
    if loopback:
        local = write_token(default_token_path("127.0.0.1", port), token) if token_file is None else local
    return Deployment(
        board=b.name,
        engine=engine_name if backend == "pynq" else (engine or b.engine_preset),
        host=host,
        port=port,
        url=url,
        dest=dest,
        bind=bind,
        python=py,
        bitfile=remote_bit,
        remote_token=remote_token,
        local_token=str(local),
        log=log,
        pid=pid,
        command=serve_cmd.replace('"$PY"', py),
        files=copied,
        tunnel=tunnel,
    )
