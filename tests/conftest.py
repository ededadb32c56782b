"""Suite-wide plumbing: slow tool runs started in the background when the suite starts.

A test marked ``@pytest.mark.background.with_args(make_command)`` (with_args: a lone function
argument would be taken for the decorated test) needs the result of one long,
single-threaded external command (a place-and-route run). ``make_command(out_dir)`` gives the
command line; it is started as soon as collection ends, niced, in a directory of its own, and
the test, moved to the end of the run, takes it with the ``background`` fixture. On a 2-core
machine the build then overlaps the rest of the suite instead of adding to it. Jobs still
running when the session ends are killed, and their directories removed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

_JOBS: dict[str, BackgroundJob] = {}


@dataclass
class BackgroundJob:
    """One external command running beside the suite; `wait()` gives its exit code and output."""

    command: list[str]
    out: Path
    proc: subprocess.Popen
    started: float

    @classmethod
    def start(cls, make_command: Callable[[Path], list[str]]) -> BackgroundJob:
        out = Path(tempfile.mkdtemp(prefix="codenet-background-"))
        cmd = [str(c) for c in make_command(out / "work")]
        with open(out / "stdout.txt", "wb") as so, open(out / "stderr.txt", "wb") as se:
            proc = subprocess.Popen(cmd, stdout=so, stderr=se, preexec_fn=lambda: os.nice(5))
        return cls(cmd, out / "work", proc, time.monotonic())

    def wait(self, timeout: float) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) once the command ends; kills it `timeout` s after its start."""
        try:
            code = self.proc.wait(timeout=max(1.0, timeout - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"background command ran over {timeout:.0f} s: {' '.join(self.command)}")
        return code, *((self.out.parent / f).read_text(errors="replace") for f in ("stdout.txt", "stderr.txt"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.out.parent, ignore_errors=True)


def _background_marker(item: pytest.Item):
    return item.get_closest_marker("background")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # the tests that wait for a background job go last, so the job has the whole suite to run beside
    items.sort(key=lambda it: _background_marker(it) is not None)


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    for item in session.items:
        mark = _background_marker(item)
        if mark is None or any(m.args and m.args[0] is True for m in item.iter_markers("skipif")):
            continue
        _JOBS[item.nodeid] = BackgroundJob.start(mark.args[0])


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    while _JOBS:
        _JOBS.popitem()[1].stop()


@pytest.fixture
def background(request: pytest.FixtureRequest) -> BackgroundJob:
    """The background job of the requesting test (started now if collection did not start it)."""
    mark = _background_marker(request.node)
    if mark is None:
        raise pytest.UsageError(f"{request.node.nodeid} uses the `background` fixture without @pytest.mark.background")
    job = _JOBS.get(request.node.nodeid)
    if job is None:
        job = _JOBS[request.node.nodeid] = BackgroundJob.start(mark.args[0])
    return job
