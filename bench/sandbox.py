"""Sandbox benchmark: what a strict step policy costs a step, against no policy.

    .venv/bin/python bench/sandbox.py [--pairs 200] [--variants] [--shell]

The shipped `secure` profile's step policy against `permissive`'s (the target of issue 11,
point 8), then a stricter policy (below) against none.

A no-op one-step job (the program `/bin/true`, or with `--shell` the command string
`true`, which `/bin/sh -c` runs: its own `ulimit` then sets the rlimits) run through the
real engine (`RunService` over a SQLite data dir, real job folders), one run at a time.
A plugin applies a `StepPolicy` to every step with `flwd_security.sandbox.apply`, as the
security extension does; the policy alternates run by run between none (`StepPolicy()`)
and the strict one below, the order flipped every pair, so both see the same machine.
Reported: the median latency (create_run -> terminal) of each, the median of the per-
pair differences, and the same for the CPU time each run cost (this process's and its
reaped children's, user and system: steadier than latency on a busy machine; kernel
threads' work, such as tearing down a network namespace, is not in it).

With `--variants`, the same against each part of the strict policy alone, to say where
the cost is. Needs root for the user per run and the network namespace (otherwise the
policy is applied with `on_unavailable: warn` and those parts are left out).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "extensions" / "flwd_security"))

from flwd_security import sandbox  # noqa: E402
from flwd_security.policy import Limits, StepPolicy  # noqa: E402
from flwd_security.profiles import read_profile  # noqa: E402

from flwd.engine.service import RunService  # noqa: E402
from flwd.engine.step_process import StepContext  # noqa: E402
from flwd.hookspecs import hookimpl  # noqa: E402
from flwd.jobs.registry import JobRegistry  # noqa: E402
from flwd.models import Event  # noqa: E402
from flwd.plugins import make_plugin_manager  # noqa: E402
from flwd.settings import JobSource, Settings  # noqa: E402
from flwd.states import RunStatus  # noqa: E402

NONE = StepPolicy()
STRICT = StepPolicy(
    env_allow=("PATH", "LANG"),
    umask=0o077,
    no_new_privileges=True,
    network="none",
    run_as="run-user",
    limits=Limits(
        cpu_seconds=60,
        memory=256 << 20,
        open_files=1024,
        processes=256,
        file_size=100 << 20,
    ),
    on_unavailable="warn",
)
#: the step policies of the profiles that ship with the extension
_SHIPPED = Path(sandbox.__file__).parent / "profiles"
SECURE = read_profile(_SHIPPED / "secure.yaml").steps
PERMISSIVE = read_profile(_SHIPPED / "permissive.yaml").steps
VARIANTS = {
    "env + umask + no-new-privs": StepPolicy(
        env_allow=("PATH",), umask=0o077, no_new_privileges=True
    ),
    "run-user": StepPolicy(run_as="run-user"),
    "network none": StepPolicy(network="none"),
    "rlimits": StepPolicy(limits=Limits(cpu_seconds=60, open_files=1024)),
    "memory cgroup": StepPolicy(limits=Limits(memory=256 << 20)),
}


class Switch:
    """Applies `policy` (changed between runs) to every step."""

    def __init__(self) -> None:
        self.policy = NONE

    @hookimpl
    def prepare_step(self, context: StepContext) -> None:
        if self.policy is not NONE:
            sandbox.apply(context, self.policy)

    @hookimpl
    def run_event(self, event: Event) -> None:
        if event.type == "run.finished":
            sandbox.release(event.run_id)


@contextlib.asynccontextmanager
async def service(root: Path, switch: Switch, shell: bool) -> AsyncIterator[RunService]:
    folder = root / "jobs" / "noop"
    folder.mkdir(parents=True)
    command: str | list[str] = "true" if shell else ["/bin/true"]
    (folder / "config.yaml").write_text(json.dumps({"command": command}))
    settings = Settings(
        sources=(JobSource(name="local-fs", path=str(root / "jobs")),),
        data_dir=str(root / "data"),
        watch=False,
    )
    pm = make_plugin_manager(load_entrypoints=False, extra=[switch])
    async with RunService(settings, JobRegistry(settings, pm), pm) as running:
        yield running


def cpu_ms() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime) * 1000


async def once(running: RunService) -> tuple[float, float]:
    """Latency and CPU time of one run, in ms."""
    cpu = cpu_ms()
    start = time.perf_counter()
    run = await running.create_run("noop", {})
    done = await running.wait_run(run.run_id, timeout=60)
    elapsed = (time.perf_counter() - start) * 1000
    if done.status is not RunStatus.SUCCESS:
        raise RuntimeError(f"run failed: {done.error}")
    return elapsed, cpu_ms() - cpu


async def compare(
    running: RunService,
    switch: Switch,
    policy: StepPolicy,
    pairs: int,
    base: StepPolicy = NONE,
) -> dict[str, float]:
    plain: list[tuple[float, float]] = []
    strict: list[tuple[float, float]] = []
    for n in range(pairs):
        order = [(base, plain), (policy, strict)]
        if n % 2:
            order.reverse()
        for chosen, into in order:
            switch.policy = chosen
            into.append(await once(running))
    row = {}
    for i, kind in enumerate(("latency", "cpu")):
        row[f"none_{kind}"] = statistics.median(x[i] for x in plain)
        row[f"policy_{kind}"] = statistics.median(x[i] for x in strict)
        row[f"diff_{kind}"] = statistics.median(
            s[i] - p[i] for s, p in zip(strict, plain, strict=True)
        )
    return row


async def main(opts: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="flwd-bench-sandbox-", dir="/tmp"))
    root.chmod(0o711)  # run users reach their rooms below it
    switch = Switch()
    try:
        async with service(root, switch, opts.shell) as running:
            for _ in range(20):  # warm up: rooms made ahead, threads started, caches
                switch.policy = STRICT
                await once(running)
                switch.policy = NONE
                await once(running)
            rows = [
                # the shipped profiles' own step policies: what the issue's target is about
                (
                    "`secure` over `permissive`",
                    await compare(running, switch, SECURE, opts.pairs, base=PERMISSIVE),
                ),
                ("strict policy", await compare(running, switch, STRICT, opts.pairs)),
            ]
            if opts.variants:
                for name, policy in VARIANTS.items():
                    rows.append((name, await compare(running, switch, policy, opts.pairs)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load = os.getloadavg()[0]
    print(
        f"python {platform.python_version()}, uid {os.geteuid()}, {opts.pairs} pairs, "
        f"{'shell command `true`' if opts.shell else 'program /bin/true'}, "
        f"load average {load:.1f} at the end"
    )
    print(
        "| policy | latency none / policy p50 | latency difference p50 "
        "| CPU none / policy p50 | CPU difference p50 |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name, row in rows:
        print(
            f"| {name} | {row['none_latency']:.2f} / {row['policy_latency']:.2f} ms "
            f"| {row['diff_latency']:+.2f} ms "
            f"| {row['none_cpu']:.2f} / {row['policy_cpu']:.2f} ms | {row['diff_cpu']:+.2f} ms |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=200, help="runs of each policy")
    parser.add_argument("--variants", action="store_true", help="each part alone too")
    parser.add_argument(
        "--shell",
        action="store_true",
        help="the job as a command string (`true`, run by /bin/sh -c, whose own `ulimit` "
        "then sets the rlimits) instead of the program `/bin/true`",
    )
    asyncio.run(main(parser.parse_args()))
