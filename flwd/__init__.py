"""flwd: turn a directory of scripts into typed, API-callable jobs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("flwd")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

#: Where the HTTP API lives on a server; every route is below it.
API_PREFIX = "/api/v1"

__all__ = ["API_PREFIX", "__version__"]
