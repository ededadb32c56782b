"""codenet.sw: the integer graph, golden executor, compiler, driver and runtime (numpy only)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("codenet")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
