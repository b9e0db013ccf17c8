"""Sandboxed steps (`flwd_security.sandbox`): each field of a `StepPolicy` holds for real
steps run by the real engine."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from flwd_security import shell_limits
from flwd_security.policy import Limits, StepPolicy

from flwd.states import FailureReason, RunStatus

from .sandbox_support import ROOT, run_job, service_with


async def test_environment_is_narrowed_to_the_allow_list(
    open_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = {
        "env": {
            "env": {"OWN": "mine"},
            "command": 'echo "lang=${LANG-unset} tz=${TZ-unset} own=$OWN run=$FLWD_RUN_ID"',
        }
    }
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("TZ", "UTC")
    policy = StepPolicy(env_allow=("PATH", "LANG"))
    async with service_with(open_dir, jobs, policy) as service:
        run, log = await run_job(service, "env")
    assert run.status is RunStatus.SUCCESS, run.error
    assert "lang=C.UTF-8 tz=unset own=mine run=run_" in log


async def test_umask_gives_files_their_mode(open_dir: Path) -> None:
    jobs = {"umask": {"command": "touch made; mkdir dir; stat -c '%a %n' made dir"}}
    async with service_with(open_dir, jobs, StepPolicy(umask=0o027)) as service:
        run, log = await run_job(service, "umask")
    assert run.status is RunStatus.SUCCESS, run.error
    assert log.splitlines() == ["640 made", "750 dir"]


async def test_no_new_privileges(open_dir: Path) -> None:
    jobs = {"nnp": {"command": "grep NoNewPrivs /proc/self/status"}}
    async with service_with(open_dir, jobs, StepPolicy(no_new_privileges=True)) as service:
        run, log = await run_job(service, "nnp")
    assert run.status is RunStatus.SUCCESS, run.error
    assert log.split() == ["NoNewPrivs:", "1"]


_CONNECT = (
    "import os, socket\n"
    "try:\n"
    "    socket.create_connection(('127.0.0.1', int(os.environ['FLWD_ARG_PORT'])), 5)\n"
    "    print('connected')\n"
    "except OSError as exc:\n"
    "    print('refused:', exc.strerror)\n"
)


@pytest.mark.parametrize("network", ["none", "host"])
async def test_network_none_cannot_reach_a_loopback_server(open_dir: Path, network: str) -> None:
    accepted: list[bool] = []

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(True)
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    jobs = {
        "connect": {
            "args": {"type": "object", "properties": {"port": {"type": "integer"}}},
            "command": [sys.executable, "-c", _CONNECT],
        }
    }
    policy = StepPolicy(network=network)  # type: ignore[arg-type]
    try:
        async with service_with(open_dir, jobs, policy) as service:
            run = await service.create_run("connect", {"port": port})
            run = await service.wait_run(run.run_id, timeout=60)
            log = "\n".join(line.message for line in await service.read_logs(run.run_id))
    finally:
        server.close()
    assert run.status is RunStatus.SUCCESS, run.error
    if network == "none":
        assert log.startswith("refused:") and not accepted
    else:
        assert log == "connected"


_LIMITS_SHOWN = 'while IFS= read -r l; do printf "%s\\n" "$l"; done < /proc/self/limits'


async def _limits_of_a_step(
    open_dir: Path, command: object, limits: Limits
) -> dict[str, list[str]]:
    """The soft and hard values of each limit a step under `limits` printed from
    /proc/self/limits, by the limit's name."""
    jobs = {"limits": {"command": command}}
    async with service_with(open_dir, jobs, StepPolicy(limits=limits)) as service:
        run, log = await run_job(service, "limits")
    assert run.status is RunStatus.SUCCESS, run.error
    return {" ".join(line.split()[:3]): line.split()[3:5] for line in log.splitlines()}


@pytest.mark.parametrize(
    "command",
    [
        # a shell step: its shell sets them (`ulimit`), and reads them itself
        _LIMITS_SHOWN,
        # a program run directly: a shell put in front sets them and execs it
        ["cat", "/proc/self/limits"],
    ],
    ids=["shell", "program"],
)
async def test_rlimits_are_set_for_the_step(open_dir: Path, command: object) -> None:
    limits = Limits(cpu_seconds=30, open_files=64, file_size=1 << 20)
    rows = await _limits_of_a_step(open_dir, command, limits)
    assert rows["Max cpu time"] == ["30", "31"]
    assert rows["Max open files"] == ["64", "64"]
    assert rows["Max file size"] == [str(1 << 20), str(1 << 20)]


async def test_rlimits_fall_back_to_prlimit_where_the_shell_cannot_set_them(
    open_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as on a machine whose /bin/sh sets none of them exactly (the start-up probe)
    monkeypatch.setattr(shell_limits, "supported", dict)
    limits = Limits(cpu_seconds=30, open_files=64)
    rows = await _limits_of_a_step(open_dir, "cat /proc/self/limits", limits)
    assert rows["Max cpu time"] == ["30", "31"]
    assert rows["Max open files"] == ["64", "64"]


def test_rlimits_are_set_by_the_steps_shell_or_one_put_in_front() -> None:
    # what the step runs: no exec of prlimit
    assert {"cpu", "nofile", "fsize", "as"} <= set(shell_limits.supported())
    wanted = {"cpu": (30, 31), "nofile": (64, 64), "fsize": (1 << 20, 1 << 20)}
    shell = ["/bin/sh", "-c", "echo ran\nno-such-command-here; exit 3"]
    assert shell_limits.limit_in_shell(shell, wanted)
    assert shell[:2] == ["/bin/sh", "-c"]
    assert shell[2].endswith("|| exit 126; echo ran\nno-such-command-here; exit 3")
    done = subprocess.run(shell, capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (3, "ran\n")
    assert " 2: no-such-command-here" in done.stderr  # the script's lines did not move
    program = ["cat", "/proc/self/limits"]
    assert not shell_limits.limit_in_shell(program, wanted)
    assert program == ["cat", "/proc/self/limits"]
    wrapper = shell_limits.shell_wrapper(wanted)
    assert wrapper is not None and wrapper[:2] == ["/bin/sh", "-c"]
    done = subprocess.run(
        [*wrapper, "/bin/sh", "-c", 'printf "%s|" "$0" "$@"', "zero", "a b", ""],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout == "zero|a b||"  # the program gets its arguments as they were
    # the same limits for util-linux's prlimit, where /bin/sh cannot set them all
    assert shell_limits.prlimit_options(wanted) == [
        "--cpu=30:31",
        "--nofile=64:64",
        f"--fsize={1 << 20}:{1 << 20}",
    ]


async def test_a_cpu_limit_hit_fails_the_run_with_resource_limit(open_dir: Path) -> None:
    jobs = {"spin": {"command": "while :; do :; done"}}
    policy = StepPolicy(limits=Limits(cpu_seconds=1))
    async with service_with(open_dir, jobs, policy) as service:
        run, _ = await run_job(service, "spin")
    assert run.status is RunStatus.FAILED
    assert run.reason is FailureReason.RESOURCE_LIMIT
    assert run.error is not None and "CPU time limit of 1 s exceeded" in run.error


async def test_a_file_size_limit_hit_fails_the_run_with_resource_limit(open_dir: Path) -> None:
    jobs = {"write": {"command": "exec head -c 3000000 /dev/zero > big"}}
    policy = StepPolicy(limits=Limits(file_size=1 << 20))
    async with service_with(open_dir, jobs, policy) as service:
        run, _ = await run_job(service, "write")
    assert run.reason is FailureReason.RESOURCE_LIMIT
    assert run.error is not None and "file size limit of 1 MiB exceeded" in run.error


_ALLOCATE = "x = b'x' * (400 << 20)\nprint('allocated', len(x))\n"


async def test_a_memory_limit_hit_fails_the_run_with_resource_limit(open_dir: Path) -> None:
    jobs = {"grow": {"command": ["/usr/bin/python3", "-c", _ALLOCATE]}}
    policy = StepPolicy(limits=Limits(memory=64 << 20))
    async with service_with(open_dir, jobs, policy) as service:
        run, log = await run_job(service, "grow")
    assert run.status is RunStatus.FAILED, log
    if ROOT:  # a memory cgroup per run: the kill is counted and named
        assert run.reason is FailureReason.RESOURCE_LIMIT
        assert run.error is not None and "memory limit of 64 MiB exceeded" in run.error
    else:  # an address-space limit: the allocation fails (MemoryError)
        assert "MemoryError" in log


@pytest.mark.skipif(not ROOT, reason="as root, processes are not limited by RLIMIT_NPROC")
@pytest.mark.parametrize("on_unavailable", ["error", "warn"])
async def test_a_limit_that_cannot_be_applied(open_dir: Path, on_unavailable: str) -> None:
    jobs = {"noop": {"command": "echo ran"}}
    policy = StepPolicy(limits=Limits(processes=10), on_unavailable=on_unavailable)  # type: ignore[arg-type]
    async with service_with(open_dir, jobs, policy) as service:
        run, log = await run_job(service, "noop")
    if on_unavailable == "error":
        assert run.status is RunStatus.FAILED and run.reason is FailureReason.ERROR
        assert run.error is not None and "limits.processes" in run.error
        assert "ran" not in log.splitlines()
    else:
        assert run.status is RunStatus.SUCCESS
        assert "not applied to this step" in log and "limits.processes" in log
        assert log.splitlines()[-1] == "ran"


_as_root = pytest.mark.skipif(not ROOT, reason="a user per run needs a server running as root")

_OWN_USER = (
    'id -u; echo "home=$HOME"; cat /etc/shadow 2>&1 | head -c 200; echo; '
    'printf \'{"uid": %s}\' "$(id -u)" > "$FLWD_RESULT_FILE"; '
    'echo data > "$FLWD_ARTIFACTS_DIR/out.txt"; stat -c %U "$FLWD_ARGS_FILE"'
)


@_as_root
async def test_run_user_cannot_read_shadow_and_its_files_are_collected(open_dir: Path) -> None:
    jobs = {"who": {"command": _OWN_USER}}
    async with service_with(open_dir, jobs, StepPolicy(run_as="run-user")) as service:
        run, log = await run_job(service, "who")
        artifacts, _ = await service.list_artifacts(run_id=run.run_id)
    assert run.status is RunStatus.SUCCESS, (run.error, log)
    lines = log.splitlines()
    uid = int(lines[0])
    assert 200000 <= uid <= 265535
    assert lines[1].startswith("home=") and lines[1].endswith("/run")
    assert "Permission denied" in lines[2]
    assert run.result is not None and run.result.value == {"uid": uid}
    assert [a.name for a in artifacts] == ["out.txt"]


_HOLDER = (
    'echo "secret of A" > mine.txt; echo "$$ $FLWD_RUN_DIR"; '
    'echo "$$ $FLWD_RUN_DIR" > "$FLWD_JOB_DIR/../../a.pid"; exec sleep 60'
)
_PROBER = (
    'set -- $(cat "$FLWD_JOB_DIR/../../a.pid"); '
    'cat "/proc/$1/environ" >/dev/null 2>&1 && echo "environ: read" || echo "environ: denied"; '
    'cat "$2/mine.txt" >/dev/null 2>&1 && echo "file: read" || echo "file: denied"; '
    'ls "$(dirname "$2")/.." >/dev/null 2>&1 && echo "work: listed" || echo "work: denied"; '
    "id -u"
)


@_as_root
async def test_runs_cannot_read_each_others_environment_or_files(open_dir: Path) -> None:
    jobs = {
        "holder": {"env": {"SECRET_A": "a-secret"}, "command": _HOLDER},
        "prober": {"command": _PROBER},
    }
    shared = open_dir / "a.pid"
    async with service_with(open_dir, jobs, StepPolicy(run_as="run-user")) as service:
        # the step writes the pid file in the test's directory: let any user do so
        open_dir.chmod(0o777)
        holder = await service.create_run("holder", {})
        deadline = asyncio.get_running_loop().time() + 30
        while not shared.exists() or not shared.read_text().strip():
            assert asyncio.get_running_loop().time() < deadline, "the holder never started"
            await asyncio.sleep(0.05)
        pid, run_dir = shared.read_text().split()
        # what the prober looks for is there (the server, root, reads it)
        assert b"SECRET_A=a-secret" in Path(f"/proc/{pid}/environ").read_bytes()
        assert (Path(run_dir) / "mine.txt").read_text() == "secret of A\n"
        holder_uid = os.stat(f"/proc/{pid}").st_uid
        prober, log = await run_job(service, "prober")
        await service.cancel_run(holder.run_id)
        held = await service.wait_run(holder.run_id, timeout=30)
    assert prober.status is RunStatus.SUCCESS, (prober.error, log)
    lines = log.splitlines()
    assert lines[:3] == ["environ: denied", "file: denied", "work: denied"]
    assert held.status is RunStatus.CANCELLED
    assert 200000 <= holder_uid <= 265535 and 200000 <= int(lines[3]) <= 265535
    assert holder_uid != int(lines[3])


@_as_root
async def test_run_users_come_from_the_configured_range_and_come_back(open_dir: Path) -> None:
    jobs = {"who": {"command": "id -u; id -g"}}
    policy = StepPolicy(run_as="run-user")
    async with service_with(open_dir, jobs, policy, run_user_ids=(310000, 310001)) as service:
        seen = []
        for _ in range(3):
            run, log = await run_job(service, "who")
            assert run.status is RunStatus.SUCCESS, run.error
            uid, gid = log.split()
            assert uid == gid
            seen.append(int(uid))
    assert seen == [310000, 310001, 310000]


@_as_root
async def test_processes_are_limited_for_the_run_user(open_dir: Path) -> None:
    jobs = {"forks": {"command": "for i in 1 2 3 4 5 6 7 8; do sleep 5 & done; wait; echo done"}}
    policy = StepPolicy(run_as="run-user", limits=Limits(processes=4))
    async with service_with(open_dir, jobs, policy) as service:
        run, log = await run_job(service, "forks")
    assert "Cannot fork" in log or "fork" in (run.error or ""), (run.status, log)


_NOT_ROOT = """\
import asyncio, json, sys
from pathlib import Path
sys.path.insert(0, {support!r})
from flwd_security.policy import Limits, StepPolicy
from sandbox_support import run_job, service_with

PROBE = (
    "id -u; umask; grep NoNewPrivs /proc/self/status; "
    "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; "
    "grep -E 'Max (cpu time|open files|file size|address space)' /proc/self/limits"
)

async def main():
    policy = StepPolicy(
        env_allow=("PATH",), umask=0o077, no_new_privileges=True, network="none",
        run_as="run-user", on_unavailable="error",
        limits=Limits(cpu_seconds=5, memory=64 << 20, open_files=128, file_size=1 << 20),
    )
    async with service_with(Path({root!r}), {{"probe": {{"command": PROBE}}}}, policy) as service:
        run, log = await run_job(service, "probe")
    print(json.dumps({{"status": run.status.value, "error": run.error, "log": log}}))

asyncio.run(main())
"""


@_as_root
def test_a_server_that_is_not_root_applies_what_it_can(open_dir: Path) -> None:
    """The same engine as `nobody`: the step runs as the server's user, with the umask,
    no-new-privileges, rlimits (memory as an address-space limit) and a network
    namespace of its own through a user namespace."""
    python = "/usr/bin/python3"
    found = subprocess.run(
        [python, "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0 or found.stdout.strip() != str(sys.version_info[:2]):
        pytest.skip("no system Python of this version to run the engine as another user")
    open_dir.chmod(0o777)
    script = open_dir / "not_root.py"
    support = str(Path(__file__).parent)
    script.write_text(_NOT_ROOT.format(support=support, root=str(open_dir / "server")))
    (open_dir / "server").mkdir(mode=0o777)
    (open_dir / "server").chmod(0o777)
    site = [p for p in sys.path if p.endswith("site-packages")]
    repo = str(Path(__file__).parents[2])
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(open_dir),
        "PYTHONPATH": os.pathsep.join([*site, repo, f"{repo}/extensions/flwd_security"]),
    }
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, str(script)],
        env=env,
        cwd=open_dir,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["status"] == "success", result
    lines = result["log"].splitlines()
    assert lines[:4] == ["65534", "0077", "NoNewPrivs:\t1", "lo"]
    limits = {" ".join(line.split()[:3]): line.split()[3] for line in lines[4:]}
    assert limits == {
        "Max cpu time": "5",
        "Max file size": str(1 << 20),
        "Max open files": "128",
        "Max address space": str(64 << 20),
    }
