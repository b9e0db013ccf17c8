"""flwd: turn a directory of scripts into typed, API-callable jobs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("flwd")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
