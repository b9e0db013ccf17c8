"""Sandboxed steps: apply a profile's `StepPolicy` to a step about to start.

`apply(context, policy)` is called by the extension's `prepare_step` for every step. It
changes the `StepContext`: the environment is narrowed to the allow-list; the engine's
spawn gets `SpawnOptions` (another user, umask, no-new-privileges, a network namespace of
its own, a memory cgroup), which it applies before the process runs any code of its own;
resource limits that are rlimits are set by the step's own shell (`ulimit`, see
`shell_limits.py`) for a `command` string, and otherwise by a `/bin/sh` put in front of
the program, which sets them and execs it (util-linux's `prlimit` where that shell
cannot); `limit_exceeded` tells the engine which failures were a limit being hit (reason
`resource_limit`).

What this server cannot apply is listed: with `on_unavailable: error` the step is refused
(`SandboxUnavailable`, the step fails with the list as its error), with `warn` each is a
note in the run's log and the step runs without it. docs/sandbox.md has the table of what
applies as root and as another user, and how.

`release(run_id)` (from the extension's `run_event`, on `run.finished`) gives the run's
user id, memory group and network namespace back (`run_resources.py`); `close()` (from
`shutdown`) removes what is kept for later runs.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

from flwd.engine.spawn import SpawnOptions, options_supported
from flwd.engine.step_process import StepContext, StepRefused
from flwd_security.policy import Limits, StepPolicy
from flwd_security.run_resources import MemoryGroups, NetworkNamespaces, RunUsers, oom_kills
from flwd_security.shell_limits import limit_in_shell, prlimit_options, shell_wrapper

log = logging.getLogger(__name__)

#: the user and group ids runs are given when the server runs as root (one per active
#: run, the next free one after the last given, so an id comes back only after the range)
DEFAULT_RUN_USER_IDS = (200000, 265535)
#: flwd's own variables a step always keeps besides `FLWD_*` and the job's `env`
_FLWD_OWN = frozenset({"PYTHONUNBUFFERED"})
#: fields of `Limits` that are one rlimit each, by its `prlimit` name
_RLIMITS = {
    "open_files": "nofile",
    "processes": "nproc",
    "file_size": "fsize",
}


class SandboxUnavailable(StepRefused):
    """A field of the policy this server cannot apply, under `on_unavailable: error`."""


class Sandbox:
    """The state `apply` keeps across steps: run users and memory groups."""

    def __init__(self, run_user_ids: tuple[int, int] = DEFAULT_RUN_USER_IDS) -> None:
        self.users = RunUsers(*run_user_ids)
        self.memory = MemoryGroups()
        self.networks = NetworkNamespaces()
        #: runs whose room was given to their user
        self.rooms: set[str] = set()

    def apply(self, context: StepContext, policy: StepPolicy) -> list[str]:
        """Apply `policy` to the step; the notes of what could not be (also appended to
        `context.notes`); SandboxUnavailable instead under `on_unavailable: error`."""
        missing: list[str] = []
        supported = options_supported()
        if policy.env_allow is not None:
            _narrow_environment(context, policy.env_allow)
        uid: int | None = None
        if policy.run_as == "run-user" and os.geteuid() == 0:
            uid, why = self._run_user(context, supported["user"])
            if why is not None:
                missing.append(f"run_as: run-user ({why})")
        if policy.umask is not None and not supported["umask"]:
            missing.append("umask (needs glibc's posix_spawn)")
        nnp = policy.no_new_privileges
        if nnp and not supported["no_new_privileges"]:
            missing.append("no_new_privileges (needs glibc's posix_spawn)")
            nnp = False
        new_network = False
        network: int | None = None
        wrappers: list[str] = []
        if policy.network == "none":
            if supported["network"]:
                network = self.networks.take(context.run.run_id)
                new_network = network is None
            elif _user_namespace_command() is not None:
                wrappers += _user_namespace_command() or []
            else:
                missing.append("network: none (no network namespace for this server)")
        cgroups: tuple[tuple[str, str], ...] = ()
        limits = policy.limits
        rlimits, memory_group = self._limits(context, limits, uid, missing)
        if memory_group is not None and self.memory.home is not None:
            cgroups = ((str(memory_group), str(self.memory.home)),)
        if rlimits:
            wrappers += rlimits
        if wrappers:
            _wrap(context, wrappers)
        options = SpawnOptions(
            uid=uid,
            gid=uid,
            umask=policy.umask if supported["umask"] else None,
            no_new_privileges=nnp,
            new_network=new_network,
            network=network,
            cgroups=cgroups,
        )
        context.spawn_options = options
        context.limit_exceeded = _judge(limits, memory_group)
        if missing and policy.on_unavailable == "error":
            raise SandboxUnavailable(
                "the step was not started: its profile requires what this server cannot "
                "apply: " + "; ".join(missing)
            )
        notes = [f"not applied to this step (the OS does not allow it): {m}" for m in missing]
        context.notes.extend(notes)
        return notes

    def _run_user(self, context: StepContext, supported: bool) -> tuple[int | None, str | None]:
        if not supported:
            return None, "this machine's credential calls are unknown to flwd"
        run_id = context.run.run_id
        uid = self.users.assign(run_id)
        if uid is None:
            return None, "every user id of the range is taken by an active run"
        if run_id not in self.rooms:
            try:
                _give_room(context, uid)
            except (OSError, RoomUnreachable) as exc:
                self.users.release(run_id)
                return None, str(exc)
            self.rooms.add(run_id)
        context.env["HOME"] = context.cwd  # the server's is not the run user's to use
        return uid, None

    def _limits(
        self, context: StepContext, limits: Limits, uid: int | None, missing: list[str]
    ) -> tuple[list[str], Path | None]:
        """The command put in front of the step's program to set its rlimits (a shell,
        or `prlimit`; none when the step's own shell sets them: `shell_limits`), and the
        run's memory group."""
        wanted: dict[str, tuple[int, int]] = {}
        group: Path | None = None
        if limits.memory is not None:
            if self.memory.usable:
                try:
                    group = self.memory.group(context.run.run_id, limits.memory)
                except OSError as exc:
                    log.warning("no memory cgroup for run %s: %s", context.run.run_id, exc)
            if group is None:  # each process's address space, instead
                wanted["as"] = (limits.memory, limits.memory)
        if limits.cpu_seconds is not None:
            # SIGXCPU at the limit, SIGKILL a second later for a process that ignores it
            wanted["cpu"] = (limits.cpu_seconds, limits.cpu_seconds + 1)
        for name, rlimit in _RLIMITS.items():
            value = getattr(limits, name)
            if value is None:
                continue
            if name == "processes" and os.geteuid() == 0 and uid is None:
                missing.append("limits.processes (the kernel does not limit root's processes)")
                continue
            wanted[rlimit] = (value, value)
        if not wanted or limit_in_shell(context.argv, wanted):
            return [], group
        shell = shell_wrapper(wanted)
        if shell is not None:
            return shell, group
        prlimit = _prlimit()
        if prlimit is None:
            missing.append("limits (util-linux's prlimit is not installed)")
            return [], group
        return [prlimit, *prlimit_options(wanted), "--"], group

    def release(self, run_id: str) -> None:
        """The run has ended: its user id may be given again, its memory group goes."""
        self.users.release(run_id)
        self.rooms.discard(run_id)
        self.memory.remove(run_id)
        self.networks.release(run_id)

    def close(self) -> None:
        """The server stops: remove the memory groups and namespaces kept for later runs."""
        self.memory.close()
        self.networks.close()


class RoomUnreachable(Exception):
    """The run's user could not reach the run's room (a directory above it)."""


def _narrow_environment(context: StepContext, allow: tuple[str, ...]) -> None:
    own = set(context.job.env) | set(context.step.env) | _FLWD_OWN
    keep = set(allow)
    for key in list(context.env):
        if key not in keep and key not in own and not key.startswith("FLWD_"):
            del context.env[key]


def _give_room(context: StepContext, uid: int) -> None:
    """Let the run's user reach its room and no other: the data dir and `work/` become
    searchable (not listable) by others, the room too, and the step's own entries are
    given to the user (`args.json` read-only). Done before the run's first step starts,
    when no step has had the room yet."""
    run_dir = Path(context.cwd)
    room = run_dir.parent
    work = room.parent
    data = work.parent
    for above in data.parents:
        if not os.stat(above).st_mode & stat.S_IXOTH:
            raise RoomUnreachable(
                f"other users cannot search {above}, above the data dir: "
                "put the data dir where they can (or chmod o+x it)"
            )
    for directory in (data, work):
        mode = stat.S_IMODE(os.stat(directory).st_mode)
        if mode & 0o011 != 0o011:
            os.chmod(directory, mode | 0o011)
    os.chmod(room, 0o711)
    for name in ("run", "results", "artifacts", "args.json"):
        os.lchown(room / name, uid, uid)
    os.chmod(room / "args.json", 0o400)


def _wrap(context: StepContext, wrappers: list[str]) -> None:
    """Put `wrappers` in front of the command, whose program is named by its path (so
    that a program that does not exist still fails to start, as without a sandbox)."""
    path = context.env.get("PATH", os.defpath)
    program = context.argv[0]
    found = program if "/" in program else shutil.which(program, path=path)
    if found is None:
        return  # it will not start at all: nothing to limit
    context.argv[:] = [*wrappers, found, *context.argv[1:]]


def _judge(limits: Limits, group: Path | None) -> Callable[[int], str | None]:
    """How a failed step is told to have hit a limit: killed by the signal the kernel
    sends at the limit (SIGXCPU, SIGXFSZ), or exiting with 128 plus that signal as a
    shell reports a command it ran that was; for memory, the kernel's count of processes
    of the run it killed having grown while the step ran (whichever process it was)."""
    before = oom_kills(group) if group is not None else 0

    def hit(returncode: int, sig: int) -> bool:
        return returncode in (-sig, 128 + sig)

    def limit_exceeded(returncode: int) -> str | None:
        if limits.memory is not None and group is not None and oom_kills(group) > before:
            return f"memory limit of {_size(limits.memory)} exceeded"
        if limits.cpu_seconds is not None and hit(returncode, signal.SIGXCPU):
            return f"CPU time limit of {limits.cpu_seconds} s exceeded"
        if limits.file_size is not None and hit(returncode, signal.SIGXFSZ):
            return f"file size limit of {_size(limits.file_size)} exceeded"
        return None

    return limit_exceeded


def _size(value: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size and value % size == 0:
            return f"{value // size} {unit}"
    return f"{value} bytes"


@functools.cache
def _prlimit() -> str | None:
    return shutil.which("prlimit", path="/usr/bin:/bin:/usr/sbin:/sbin")


@functools.cache
def _user_namespace_command() -> list[str] | None:
    """`unshare` into a user and a network namespace of the step's own, keeping its user
    id: how a server that is not root gives a step no network; None where the kernel or
    util-linux does not allow it."""
    unshare = shutil.which("unshare", path="/usr/bin:/bin")
    if unshare is None or os.geteuid() == 0:
        return None
    command = [unshare, "--user", "--map-current-user", "--net", "--"]
    try:
        subprocess.run([*command, "true"], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return command


_default: Sandbox | None = None


def sandbox(run_user_ids: tuple[int, int] = DEFAULT_RUN_USER_IDS) -> Sandbox:
    """The process's sandbox, made at first use; made again for another range of run
    user ids (the server's `run_user_ids` setting) once no run holds one."""
    global _default
    if _default is None:
        _default = Sandbox(run_user_ids)
    elif _default.users.range != run_user_ids and not _default.users.by_run:
        _default.close()
        _default = Sandbox(run_user_ids)
    return _default


def apply(context: StepContext, policy: StepPolicy) -> list[str]:
    """Apply `policy` to the step about to start (see `Sandbox.apply`); the notes of what
    could not be applied under `on_unavailable: warn` (also in `context.notes`).
    Raises `SandboxUnavailable` (a `StepRefused`: the step fails) under `error`."""
    return sandbox(context.settings.run_user_ids).apply(context, policy)


def release(run_id: str) -> None:
    """Forget the run (call on its `run.finished`): see `Sandbox.release`."""
    if _default is not None:
        _default.release(run_id)


def close() -> None:
    """Release what the sandbox keeps between runs (call at `shutdown`)."""
    if _default is not None:
        _default.close()
