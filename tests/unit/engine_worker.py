"""A flwd engine in a process of its own, for the crash-recovery tests to SIGKILL.

`python -m tests.unit.engine_worker ROOT` opens a `RunService` on `ROOT/data` over the jobs
in `ROOT/jobs` with one slot, starts a run of `long` and waits until its step is running,
then queues a run of `short` and one of `secret` (both stay `pending` behind `long`),
prints their ids as one JSON line, then `ready`, and waits to be killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from tests.unit.engine_support import EngineWorld


async def main(root: Path) -> None:
    world = EngineWorld(root)
    async with world.open(max_concurrency=1) as service:
        long = await service.create_run("long", {})
        deadline = time.monotonic() + 10
        while not any(x.message == "ready" for x in await service.read_logs(long.run_id)):
            if time.monotonic() > deadline:
                raise SystemExit("the long run never became ready")
            await asyncio.sleep(0.02)
        short = await service.create_run("short", {})
        secret = await service.create_run("secret", {"token": "worker-secret-1"})
        ids = {"running": long.run_id, "pending": short.run_id, "secret": secret.run_id}
        print(json.dumps(ids), flush=True)
        print("ready", flush=True)
        await asyncio.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
