"""Load many job folders on every core, for full scans (start-up, `flwd jobs`, `validate`).

Loading is CPU-bound Python (YAML construction, schema checks), so threads do not help.
A forked child inherits the list of folders to load, so only results travel back, as
msgpack (pickling 10,000 `JobSpec`s costs more than loading half of them). Fork is only
safe in a process with a single thread, so anywhere else (a running server's rescans,
which are incremental and small) loading stays serial.
"""

from __future__ import annotations

import concurrent.futures.process
import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import msgspec

from flwd.models import InvalidJob, JobSpec

#: Below this many folders, starting a child costs more than it saves.
PARALLEL_THRESHOLD = 1500
#: More than 4 workers buys little: the parent still decodes every result.
MAX_WORKERS = 4

Loaded = JobSpec | InvalidJob
Loader = Callable[[str, Any], Loaded]
_Wire = tuple[list[tuple[int, JobSpec]], list[tuple[int, InvalidJob]]]

# Set in the parent just before forking; children read their share from it.
_shared: tuple[str, Sequence[Any], Loader] | None = None


def _load_share(start: int, stop: int) -> bytes:
    assert _shared is not None
    source_name, items, load = _shared
    jobs: list[tuple[int, JobSpec]] = []
    invalid: list[tuple[int, InvalidJob]] = []
    for index in range(start, stop):
        result = load(source_name, items[index])
        if isinstance(result, JobSpec):
            jobs.append((index, result))
        else:
            invalid.append((index, result))
    return msgspec.msgpack.encode((jobs, invalid))


def load_in_parallel(source_name: str, items: Sequence[Any], load: Loader) -> list[Loaded] | None:
    """`[load(source_name, item) for item in items]` split over the cores, the parent
    taking the first share itself; None when parallel loading is not worth it or not safe."""
    global _shared
    workers = min(os.cpu_count() or 1, MAX_WORKERS)
    if (
        workers < 2
        or len(items) < PARALLEL_THRESHOLD
        or threading.active_count() != 1
        or "fork" not in multiprocessing.get_all_start_methods()
    ):
        return None
    bounds = [len(items) * i // workers for i in range(workers + 1)]
    results: list[Loaded | None] = [None] * len(items)
    _shared = (source_name, items, load)
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers - 1, mp_context=context) as pool:
            futures = [
                pool.submit(_load_share, bounds[i], bounds[i + 1]) for i in range(1, workers)
            ]
            for index in range(bounds[0], bounds[1]):
                results[index] = load(source_name, items[index])
            for future in futures:
                jobs, invalid = msgspec.msgpack.decode(future.result(), type=_Wire)
                for index, job in jobs:
                    results[index] = job
                for index, bad in invalid:
                    results[index] = bad
    except (OSError, msgspec.DecodeError, concurrent.futures.process.BrokenProcessPool):
        return None  # could not fork, or a child died: the caller loads serially
    finally:
        _shared = None
    return [result for result in results if result is not None]
