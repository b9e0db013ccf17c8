"""Work directories are recycled, but only when a run left one exactly as it was made, and
secret arguments never outlive their run."""

from __future__ import annotations

import json
import os
from pathlib import Path

from flwd.engine.workdirs import WorkDirs


def _args(workdir: Path) -> object:
    return json.loads((workdir / ".flwd" / "args.json").read_bytes())


async def test_work_dirs_are_recycled_as_made_and_secrets_blanked(tmp_path: Path) -> None:
    root = tmp_path / "work"
    root.mkdir()
    dirs = WorkDirs(root, spares=4)

    first = root / "run_a"
    dirs.open(str(first), {"token": "s3cret", "padding": "x" * 100})
    assert _args(first) == {"token": "s3cret", "padding": "x" * 100}
    inode = os.stat(first).st_ino
    (first / ".flwd" / "results" / "main.json").write_text("{}")  # result files are fine
    dirs.discard(str(first), secret=True)
    assert not first.exists()
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files and not [p for p in files if b"s3cret" in p.read_bytes()]

    # the next run gets the same directory, emptied of results, its shorter arguments
    # written over the old ones (the rest is whitespace, which JSON allows)
    second = root / "run_b"
    dirs.open(str(second), {"n": 1})
    assert os.stat(second).st_ino == inode
    assert _args(second) == {"n": 1}
    assert not any((second / ".flwd" / "results").iterdir())

    # a directory the job changed is not recycled: the next run gets a new one
    (second / "left-behind").write_text("x")
    os.symlink("/etc", second / ".flwd" / "artifacts" / "link")
    dirs.discard(str(second), secret=False)
    third = root / "run_c"
    dirs.open(str(third), {})
    assert os.stat(third).st_ino != inode
    assert sorted(os.listdir(third)) == [".flwd"]
    assert not any((third / ".flwd" / "artifacts").iterdir())
    assert _args(third) == {}

    dirs.discard(str(third), secret=False)
    await dirs.aclose()
    assert not any(root.iterdir())
