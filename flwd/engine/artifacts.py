"""Turn the files a run left under `$FLWD_ARTIFACTS_DIR` into stored artifacts.

Bytes are content-addressed under `<data dir>/artifacts/<sha256[:2]>/<sha256>` (the same
file from two runs is stored once); metadata goes to SQLite. Files are hashed while they
are moved or copied, in a worker thread, a block at a time: a 1 GB artifact never sits in
memory. Symbolic links are not followed (a job could otherwise publish any server file).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import mimetypes
import os
import tempfile
from pathlib import Path

from ulid import ULID

from flwd.engine.output import Redactor
from flwd.models import Artifact, utcnow

_BLOCK = 1024 * 1024


def blob_path(blob_root: Path, sha256: str) -> Path:
    return blob_root / sha256[:2] / sha256


def media_type(name: str) -> str:
    guessed, encoding = mimetypes.guess_type(name, strict=False)
    if encoding == "gzip":
        return "application/gzip"
    if encoding is not None:
        return "application/octet-stream"
    return guessed or "application/octet-stream"


def _store_file(source: Path, blob_root: Path) -> tuple[str, int]:
    blob_root.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(dir=blob_root, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            while block := src.read(_BLOCK):
                digest.update(block)
                out.write(block)
                size += len(block)
        target = blob_path(blob_root, digest.hexdigest())
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return digest.hexdigest(), size


def _collect(source_dir: Path, blob_root: Path, run_id: str, redactor: Redactor) -> list[Artifact]:
    artifacts: list[Artifact] = []
    # os.walk follows a symbolic link given as its top: refuse a replaced directory too
    if source_dir.is_symlink() or not source_dir.is_dir():
        return artifacts
    for root, dirs, files in os.walk(source_dir, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            if path.is_symlink() or not path.is_file():
                continue
            sha256, size = _store_file(path, blob_root)
            relative = redactor.mask_text(path.relative_to(source_dir).as_posix())
            artifacts.append(
                Artifact(
                    id=f"artifact_{ULID()}",
                    run_id=run_id,
                    name=relative.rsplit("/", 1)[-1],
                    path=relative,
                    media_type=media_type(name),
                    size_bytes=size,
                    sha256=sha256,
                    created_at=utcnow(),
                )
            )
    return artifacts


async def collect_artifacts(
    source_dir: Path, blob_root: Path, run_id: str, redactor: Redactor
) -> list[Artifact]:
    return await asyncio.to_thread(_collect, source_dir, blob_root, run_id, redactor)
