"""A flwd engine in a process of its own, for the recovery tests of `test_containment.py`
to SIGKILL.

`python -m tests.unit.containment_worker ROOT MODE COUNT` opens a `RunService` on
`ROOT/data` over the jobs in `ROOT/jobs` with containment MODE and COUNT slots, starts
COUNT runs of `stubborn`, waits until `ROOT/pids` holds `ROOT/expected` lines (written by
the runs' processes), prints the run ids as one JSON line, then `ready`, and waits to be
killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from tests.unit.engine_support import EngineWorld


async def main(root: Path, mode: str, count: int) -> None:
    world = EngineWorld(root)
    expected = int((root / "expected").read_text())
    async with world.open(max_concurrency=count, containment=mode) as service:
        runs = [await service.create_run("stubborn", {}) for _ in range(count)]
        deadline = time.monotonic() + 20
        while len((root / "pids").read_text().split()) < expected:
            if time.monotonic() > deadline:
                raise SystemExit("the runs never wrote their pids")
            await asyncio.sleep(0.02)
        print(json.dumps([run.run_id for run in runs]), flush=True)
        print("ready", flush=True)
        await asyncio.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
