"""Resolve what a job runs into `StepSpec`s: argv, interpreters, numbered scripts, the DAG.

Everything is decided here, at discovery time, so the engine only executes: a `run` or
`command` string becomes `["/bin/sh", "-c", text]`, a script becomes its interpreter's argv
plus the script's absolute path, and the `needs` graph is known to be acyclic.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from collections.abc import Collection, Sequence
from pathlib import PurePosixPath

from flwd.jobs.ids import normalise_segment

#: Scripts named like `000_fetch.sh`, run in name order when no `command`/`steps` is given.
NUMBERED_SCRIPT = re.compile(r"^[0-9]+_")
STEP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SHELL = ("/bin/sh", "-c")


class StepProblem(Exception):
    """A step cannot be resolved; the loader turns it into a diagnostic."""


def is_within(path: str, root: str) -> bool:
    """True when the real path `path` is `root` or below it (both already resolved)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def resolve_script(folder: str, relative: str, plain_files: frozenset[str] = frozenset()) -> str:
    """The absolute path of `relative` inside the job folder, refusing anything that could
    reach outside it: absolute paths, `..` and symlinks whose target is elsewhere.
    `plain_files` (files the scanner saw that are not symlinks) skips the costly checks."""
    if not relative.strip():
        raise StepProblem("script path is empty")
    pure = PurePosixPath(relative)
    if pure.is_absolute():
        raise StepProblem(f"script '{relative}' must be relative to the job folder")
    if ".." in pure.parts:
        raise StepProblem(f"script '{relative}' uses '..'; scripts must live inside the job folder")
    path = os.path.join(folder, *pure.parts)
    if str(pure) in plain_files:
        return path
    if not is_within(os.path.realpath(path), os.path.realpath(folder)):
        raise StepProblem(f"script '{relative}' is a symlink that points outside the job folder")
    if not os.path.isfile(path):
        raise StepProblem(f"script '{relative}' does not exist in {folder}")
    return path


def interpreter_argv(script: str, interpreter: str | Sequence[str] | None) -> list[str]:
    """The argv that runs `script`: an explicit `interpreter`, else the `#!` line, else the
    extension (`.sh` bash, `.py` the server's Python, `.ps1` pwsh), else the file itself if
    it is executable."""
    path = script
    name = os.path.basename(script)
    if interpreter is not None:
        parts = shlex.split(interpreter) if isinstance(interpreter, str) else list(interpreter)
        if not parts:
            raise StepProblem("interpreter is empty")
        return [*parts, path]
    try:
        with open(script, "rb") as handle:
            head = handle.read(512)
    except OSError as exc:
        raise StepProblem(f"script '{name}' cannot be read: {exc.strerror}") from exc
    if head.startswith(b"#!"):
        # Split on whitespace rather than the kernel's "one argument" rule so that
        # `#!/usr/bin/env python3 -u` behaves the way people expect.
        shebang = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()
        if shebang:
            return [*shebang, path]
    suffix = os.path.splitext(name)[1].lower()
    if suffix == ".sh":
        return ["bash", path]
    if suffix == ".py":
        return [sys.executable, path]
    if suffix == ".ps1":
        pwsh = shutil.which("pwsh")
        if pwsh is None:
            raise StepProblem(f"script '{name}' needs PowerShell (pwsh), which is not installed")
        return [pwsh, "-NoProfile", "-File", path]
    if os.access(script, os.X_OK):
        return [path]
    raise StepProblem(
        f"cannot tell how to run '{name}': add a '#!' line, use a .sh, .py or .ps1 "
        "extension, or set 'interpreter'"
    )


def command_argv(command: str | Sequence[str]) -> list[str]:
    """A string runs through `/bin/sh -c`; a list is the argv itself."""
    if isinstance(command, str):
        if not command.strip():
            raise StepProblem("command is empty")
        return [*SHELL, command]
    if not command:
        raise StepProblem("command is an empty list")
    return list(command)


def numbered_scripts(file_names: Sequence[str]) -> list[str]:
    """Numbered scripts among the job folder's top-level files, in the order they run."""
    return sorted(n for n in file_names if NUMBERED_SCRIPT.match(n) and not n.startswith("."))


def step_id_from_file(file_name: str) -> str:
    """`000_Fetch data.sh` -> `000-fetch-data`: the stem, normalised like a job id."""
    return normalise_segment(PurePosixPath(file_name).stem) or "step"


def find_cycle(needs: dict[str, tuple[str, ...]]) -> list[str] | None:
    """A dependency cycle as a closed path (`["a", "b", "a"]`), or None when acyclic."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for start in needs:
        if state.get(start):
            continue
        path: list[str] = [start]
        iterators = [iter(needs.get(start, ()))]
        state[start] = 1
        while iterators:
            nxt = next(iterators[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iterators.pop()
                continue
            if nxt not in needs:
                continue  # unknown names are reported separately
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                iterators.append(iter(needs[nxt]))
    return None


def job_files_named(
    argv: Sequence[str], folder: str, known: Collection[str] | None = None
) -> list[str]:
    """Words of a step's command that name a file of the job folder by a relative path
    (`./run.sh`, `main.py`, `data/input.csv`), normalised (`run.sh`). Steps run in
    `$FLWD_RUN_DIR`, not the job folder, so such a word finds nothing there. A
    `/bin/sh -c` text is split into shell words; words with `$`, `~`, globs or options
    are not paths of the job as written and are skipped, and a text that changes
    directory (`cd`) is left alone. `known` (the folder's files, relative paths, as the
    scanner saw them) spares looking at the disk and most of the splitting."""
    if known is not None and not any(name in arg for arg in argv for name in known):
        return []
    if list(argv[:2]) == list(SHELL) and len(argv) == 3:
        words = _shell_words(argv[2])
        if "cd" in words or "pushd" in words:  # `cd "$FLWD_JOB_DIR" && ./run.sh` is fine
            return []
    else:
        words = list(argv)
    found: list[str] = []
    for word in words:
        if not word or word[0] in "-/~" or any(c in word for c in "$*?[`=<>|;&(){}"):
            continue
        relative = os.path.normpath(word)
        if relative.startswith("..") or relative in found or relative == ".":
            continue
        if (
            relative in known
            if known is not None
            else os.path.isfile(os.path.join(folder, relative))
        ):
            found.append(relative)
    return found


def _shell_words(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:  # unbalanced quotes: the shell will say so itself
        return []


def job_dir_hint(names: Sequence[str], *, shell: bool) -> str:
    """What to write instead of naming files of the job folder by relative paths."""
    quoted = ", ".join(f"'{name}'" for name in names)
    files = "is a file" if len(names) == 1 else "are files"
    example = f'"$FLWD_JOB_DIR/{names[0]}"'
    how = (
        f"write {example}"
        if shell
        else f"a list command has no shell to expand {example}: use a command string, or a "
        f"step with script: {names[0]}"
    )
    return (
        f"{quoted} {files} of the job folder, but steps run in $FLWD_RUN_DIR, where a "
        f"relative path finds nothing; {how}"
    )
