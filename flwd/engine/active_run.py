"""`ActiveRun`: what the engine holds in memory of a run it is executing or about to
execute, shared by the scheduler (its slot), the service (cancel, wait) and the run driver.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flwd.engine.containment import RunCgroup
from flwd.engine.output import Redactor
from flwd.engine.step_process import StopSignal
from flwd.models import JobSpec, Run


@dataclass
class ActiveRun:
    """A run this process is executing or about to execute (held only in memory)."""

    run: Run
    job: JobSpec
    args: dict[str, Any]
    redactor: Redactor
    concurrency_key: str | None = None
    stop: StopSignal = field(default_factory=StopSignal)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_requested: bool = False
    shutting_down: bool = False
    timed_out: bool = False
    pgids: list[int] = field(default_factory=list)
    #: the commit of `run.created`, for a run queued before it was durable
    created: asyncio.Future[None] | None = None
    started_at: datetime | None = None
    #: commits of `step.started` (attempt 0) posted when the run started, by step id
    step_started: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    #: the run as stored by its `run.finished`, once committed
    final: Run | None = None
    #: steps whose terminal `step.finished` was posted
    ended_steps: set[str] = field(default_factory=set)
    #: set when flwd itself failed: the steps still running are stopped and end `internal`
    failing: bool = False
    #: where the run's processes are kept (cgroup mode), from its start to its end
    cgroup: RunCgroup | None = None
