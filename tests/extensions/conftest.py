"""Fixtures of the extensions' tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from flwd_security import sandbox


@pytest.fixture(autouse=True, scope="session")
def memory_groups_removed() -> Iterator[None]:
    yield
    sandbox.close()


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A fresh directory other users may search (0711), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="flwd-sandbox-test-", dir="/tmp"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
