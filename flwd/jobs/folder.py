"""A job folder as the scanner hands it over, and the problems found while loading it."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from flwd.jobs.yamlfile import KeyPath, line_of
from flwd.models import Diagnostic
from flwd.settings import SettingsError, parse_duration

CONFIG_NAME = "config.yaml"


@dataclass(frozen=True)
class JobFolder:
    """What the scanner knows about a job folder when it asks for it to be loaded."""

    path: str  # absolute
    job_id: str  # normalised; "" when a path segment normalises to nothing
    source: str
    file_names: tuple[str, ...]  # regular files directly in the folder
    plain_files: frozenset[str]  # relative paths of files that are not symlinks
    config: bytes | OSError  # the bytes of config.yaml, or why they could not be read
    digest: str


@dataclass
class Problems:
    """Diagnostics collected while loading one folder; lines are resolved on demand."""

    config_path: str
    text: str = ""
    found: list[Diagnostic] = field(default_factory=list)
    #: things that look wrong but need not be: the job still runs
    warnings: list[Diagnostic] = field(default_factory=list)

    def config(self, path: KeyPath, reason: str) -> None:
        """A problem in config.yaml at key `path` (line looked up only now)."""
        line = line_of(self.text, path) if self.text else None
        self.found.append(Diagnostic(file=self.config_path, line=line, reason=reason))

    def warn(self, path: KeyPath, reason: str) -> None:
        """A warning about config.yaml at key `path`: reported, not an error."""
        line = line_of(self.text, path) if self.text else None
        self.warnings.append(Diagnostic(file=self.config_path, line=line, reason=reason))

    def file(self, file: str, reason: str, line: int | None = None) -> None:
        self.found.append(Diagnostic(file=file, line=line, reason=reason))


def pointer(path: KeyPath) -> str:
    return "".join(f"/{part}" for part in path)


def parse_timeout(value: str | float | None, path: KeyPath, problems: Problems) -> float | None:
    """Seconds from a duration (`90s`, `15m`, `1h30m` or a number); must be above zero."""
    if value is None:
        return None
    try:
        seconds = _cached_duration(value)
    except SettingsError as exc:
        problems.config(path, f"{dotted(path)}: {exc}")
        return None
    if seconds <= 0:
        problems.config(path, f"{dotted(path)}: must be longer than zero")
        return None
    return seconds


@lru_cache(maxsize=256)
def _cached_duration(value: str | float) -> float:
    # Thousands of jobs say "5m"; durationpy's parser is the slow part of loading them.
    return parse_duration(value)


def dotted(path: KeyPath) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def env_strings(values: dict[str, Any]) -> dict[str, str]:
    """YAML gives numbers and booleans; the environment only has strings."""
    return {
        key: ("true" if value else "false") if isinstance(value, bool) else str(value)
        for key, value in values.items()
    }
