"""Turn the files a run left under `$FLWD_ARTIFACTS_DIR` into stored artifacts.

Bytes are content-addressed under `<data dir>/artifacts/<sha256[:2]>/<sha256>` (the same
file from two runs is stored once); metadata goes to SQLite. Files are hashed while they
are copied, in a worker thread, a block at a time: a 1 GB artifact never sits in memory.

The directory is walked through descriptors, from the run's room (see workdirs.py), never
following a link: a symbolic link, a special file (FIFO, socket, device) and a file with
other hard links are skipped, and each skip is reported for the run's log. A job could
otherwise publish a file it was never meant to read. The walk goes at most `MAX_DEPTH`
directories down (one descriptor is open per level).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import mimetypes
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ulid import ULID

from flwd.engine.output import Redactor
from flwd.engine.rooms import DIR_MODE, Room, UnsafeEntry, open_dir, open_file
from flwd.models import Artifact, utcnow

_BLOCK = 1024 * 1024
MAX_DEPTH = 32


#: at most this many skipped files are named in the run's log, one line each
MAX_SKIP_NOTES = 20


@dataclass
class Collected:
    artifacts: list[Artifact] = field(default_factory=list)
    #: why each file that was not collected was skipped (masked)
    skipped: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        """The lines for the run's log about what was skipped (the first
        `MAX_SKIP_NOTES` by name, then how many more)."""
        lines = [f"[flwd: artifact {why}]" for why in self.skipped[:MAX_SKIP_NOTES]]
        if len(self.skipped) > MAX_SKIP_NOTES:
            more = len(self.skipped) - MAX_SKIP_NOTES
            lines.append(f"[flwd: {more} more files under $FLWD_ARTIFACTS_DIR not collected]")
        return lines


def blob_path(blob_root: Path, sha256: str) -> Path:
    return blob_root / sha256[:2] / sha256


def media_type(name: str) -> str:
    guessed, encoding = mimetypes.guess_type(name, strict=False)
    if encoding == "gzip":
        return "application/gzip"
    if encoding is not None:
        return "application/octet-stream"
    return guessed or "application/octet-stream"


def _store_file(source: int, blob_root: Path) -> tuple[str, int]:
    """Copy the open file `source` (closed afterwards) into the blob store."""
    blob_root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(dir=blob_root, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as out, os.fdopen(source, "rb") as src:
            while block := src.read(_BLOCK):
                digest.update(block)
                out.write(block)
                size += len(block)
        target = blob_path(blob_root, digest.hexdigest())
        target.parent.mkdir(mode=DIR_MODE, exist_ok=True)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return digest.hexdigest(), size


class _Walk:
    def __init__(self, blob_root: Path, run_id: str, redactor: Redactor) -> None:
        self.blob_root = blob_root
        self.run_id = run_id
        self.redactor = redactor
        self.found = Collected()

    def skip(self, relative: str, why: str) -> None:
        self.found.skipped.append(self.redactor.mask_text(f"'{relative}' not collected: {why}"))

    def directory(self, fd: int, prefix: str, depth: int) -> None:
        """Collect the files of the directory `fd` (named `prefix` under the artifacts
        directory), then its subdirectories, each in name order."""
        with os.scandir(fd) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
        subdirs = []
        for entry in entries:
            relative = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.name)
            elif entry.is_symlink():
                self.skip(relative, "it is a symbolic link; copy the file instead")
            elif not entry.is_file(follow_symlinks=False):
                self.skip(relative, "it is not a regular file")
            else:
                self.file(fd, entry.name, relative)
        for name in subdirs:
            relative = prefix + name
            if depth >= MAX_DEPTH:
                self.skip(relative + "/", f"more than {MAX_DEPTH} directories deep")
                continue
            try:
                sub = open_dir(fd, name)
            except (UnsafeEntry, OSError) as exc:
                self.skip(relative + "/", str(exc))
                continue
            try:
                self.directory(sub, relative + "/", depth + 1)
            finally:
                os.close(sub)

    def file(self, dir_fd: int, name: str, relative: str) -> None:
        try:
            source = open_file(dir_fd, name)
        except UnsafeEntry as exc:
            self.skip(relative, str(exc))
            return
        except OSError as exc:
            self.skip(relative, exc.strerror or str(exc))
            return
        sha256, size = _store_file(source, self.blob_root)
        masked = self.redactor.mask_text(relative)
        self.found.artifacts.append(
            Artifact(
                id=f"artifact_{ULID()}",
                run_id=self.run_id,
                name=masked.rsplit("/", 1)[-1],
                path=masked,
                media_type=media_type(name),
                size_bytes=size,
                sha256=sha256,
                created_at=utcnow(),
            )
        )


def _collect(room: Room, blob_root: Path, run_id: str, redactor: Redactor) -> Collected:
    walk = _Walk(blob_root, run_id, redactor)
    try:
        top = open_dir(room.fd, "artifacts")
    except FileNotFoundError:
        return walk.found
    except (UnsafeEntry, OSError) as exc:
        walk.skip("$FLWD_ARTIFACTS_DIR", str(exc))
        return walk.found
    try:
        walk.directory(top, "", 1)
    finally:
        os.close(top)
    return walk.found


async def collect_artifacts(
    room: Room, blob_root: Path, run_id: str, redactor: Redactor
) -> Collected:
    """Store the artifacts the run left in its room, and say what was skipped."""
    return await asyncio.to_thread(_collect, room, blob_root, run_id, redactor)
