"""What ordering a run's steps costs: `flwd.engine.dag.StepOrder` (graphlib) against the
loop it replaced ("start every pending step whose needs all succeeded"), for a one-step
run and the realistic mix's three-step DAG, each step succeeding.

    .venv/bin/python bench/step_order.py

Prints microseconds per run (the best of five repeats); CPU only, no I/O.
"""

from __future__ import annotations

import functools
import os
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flwd.engine.dag import StepOrder  # noqa: E402
from flwd.models import StepSpec  # noqa: E402
from flwd.states import StepStatus  # noqa: E402

ONE = [StepSpec(id="main", argv=("true",))]
DAG = [
    StepSpec(id="fetch", argv=("true",)),
    StepSpec(id="transform", argv=("true",), needs=("fetch",)),
    StepSpec(id="count", argv=("true",), needs=("fetch",)),
]


def with_step_order(steps: list[StepSpec]) -> None:
    order = StepOrder(steps)
    while started := order.ready():
        for step in started:
            order.ended(step.id, StepStatus.SUCCESS)
    order.never_started()


def with_the_old_loop(steps: list[StepSpec]) -> None:
    by_id = {step.id: step for step in steps}
    state = dict.fromkeys(by_id, StepStatus.PENDING)
    while True:
        started = []
        for step in by_id.values():
            ready = all(state[n] is StepStatus.SUCCESS for n in step.needs)
            if state[step.id] is StepStatus.PENDING and ready:
                state[step.id] = StepStatus.RUNNING
                started.append(step)
        if not started:
            break
        for step in started:
            state[step.id] = StepStatus.SUCCESS
    [step_id for step_id, status in state.items() if status is StepStatus.PENDING]


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.1f}, Python {sys.version.split()[0]}")
    for name, steps in (("one step", ONE), ("three-step DAG", DAG)):
        for way in (with_the_old_loop, with_step_order):
            number = 20_000
            run = functools.partial(way, steps)
            best = min(timeit.repeat(run, number=number, repeat=5)) / number
            print(f"{name:15} {way.__name__:18} {best * 1e6:6.1f} µs per run")


if __name__ == "__main__":
    main()
