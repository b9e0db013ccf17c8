"""Resource limits (rlimits) set by `/bin/sh`'s `ulimit` builtin instead of an exec of
util-linux's `prlimit`.

A step written as a `command` string runs as `/bin/sh -c SCRIPT`: its limits are set by
`ulimit` commands put in front of the script, on the same line, so the shell limits
itself before it runs anything of the job's, and the script's line numbers do not move
(`limit_in_shell`):

    ulimit -S -t 60 && ulimit -H -t 61 && ulimit -n 64 || exit 126; SCRIPT

A program run directly (a `command` list, a script file) is started by such a shell,
which sets the limits and then execs it (`shell_wrapper`):

    /bin/sh -c 'ulimit ... || exit 126; exec "$0" "$@"' PROGRAM ARGS...

Soft and hard limits are both set (the hard one cannot be raised again by a user who is
not root, as with `prlimit`); if one cannot be set, the shell says why and the step ends
with 126 before running anything. An exec of `prlimit` cost about 1.5 ms per step on
this machine, one of `/bin/sh` about 0.2 ms, and the builtin in a shell step nothing
measurable (bench/sandbox.py).

Shells differ in `ulimit`'s options and units (the process limit is `-p` in dash and
`-u` in bash; file sizes are counted in blocks of 512 or 1024 bytes). So on first use
`/bin/sh` is asked to set each limit to a known value and to print `/proc/self/limits`
with its own builtins; when one does not come out exactly as asked, `prlimit` sets them
all instead.
"""

from __future__ import annotations

import functools
import re
import subprocess

from flwd.jobs.steps import SHELL

#: rlimit (by its `prlimit` name) -> (its line in /proc/self/limits, the `ulimit`
#: options to try, the option's unit in bytes, seconds or counts)
_RESOURCES: dict[str, tuple[str, tuple[str, ...], int]] = {
    "cpu": ("Max cpu time", ("-t",), 1),
    "nofile": ("Max open files", ("-n",), 1),
    "fsize": ("Max file size", ("-f",), 512),
    "as": ("Max address space", ("-v",), 1024),
    "nproc": ("Max processes", ("-p", "-u"), 1),
}
#: the values the probe sets (soft, hard)
_PROBE = {
    "cpu": (3000, 3001),
    "nofile": (77, 77),
    "fsize": (1 << 30, 1 << 30),
    "as": (1 << 34, 1 << 34),
    "nproc": (4099, 4099),
}
_LINE = re.compile(r"^(Max [a-z ]+?)\s{2,}(\S+)\s+(\S+)")
_SHOW_LIMITS = 'while IFS= read -r l; do printf "%s\\n" "$l"; done < /proc/self/limits'


@functools.cache
def supported() -> dict[str, str]:
    """The `ulimit` option of each rlimit `/bin/sh` sets exactly as asked (asked once)."""
    found: dict[str, str] = {}
    for name, (line, options, unit) in _RESOURCES.items():
        for option in options:
            if _probe(name, line, option, unit):
                found[name] = option
                break
    return found


def _probe(name: str, line: str, option: str, unit: int) -> bool:
    soft, hard = _PROBE[name]
    script = f"{_commands(option, soft // unit, hard // unit)} || exit 126; {_SHOW_LIMITS}"
    try:
        done = subprocess.run(
            [*SHELL, script], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return False
    if done.returncode != 0:
        return False
    for row in done.stdout.splitlines():
        match = _LINE.match(row)
        if match and match.group(1) == line:
            return (match.group(2), match.group(3)) == (str(soft), str(hard))
    return False


def _commands(option: str, soft: int, hard: int) -> str:
    if soft == hard:
        return f"ulimit {option} {soft}"
    # the soft one first: a hard limit below the soft one in force is refused
    return f"ulimit -S {option} {soft} && ulimit -H {option} {hard}"


def _shell_commands(limits: dict[str, tuple[int, int]]) -> str | None:
    options = supported()
    if not limits or any(name not in options for name in limits):
        return None
    parts = []
    for name, (soft, hard) in limits.items():
        unit = _RESOURCES[name][2]
        # rounded down to the shell's unit: never more than asked
        parts.append(_commands(options[name], soft // unit, hard // unit))
    return " && ".join(parts)


def limit_in_shell(argv: list[str], limits: dict[str, tuple[int, int]]) -> bool:
    """Put `ulimit` commands setting `limits` (rlimit -> (soft, hard)) in front of the
    script of a shell step `argv`, in place; False (nothing changed) if `argv` is not one,
    or if `/bin/sh` cannot set one of them exactly."""
    if list(argv[:2]) != list(SHELL) or len(argv) != 3:
        return False
    commands = _shell_commands(limits)
    if commands is None:
        return False
    argv[2] = f"{commands} || exit 126; {argv[2]}"
    return True


def shell_wrapper(limits: dict[str, tuple[int, int]]) -> list[str] | None:
    """The shell to put in front of a program's path and arguments, which sets `limits`
    and execs it; None if `/bin/sh` cannot set one of them exactly."""
    commands = _shell_commands(limits)
    if commands is None:
        return None
    return [*SHELL, f'{commands} || exit 126; exec "$0" "$@"']


def prlimit_options(limits: dict[str, tuple[int, int]]) -> list[str]:
    """The same limits as `prlimit` options."""
    return [f"--{name}={soft}:{hard}" for name, (soft, hard) in limits.items()]
