"""The order of a run's steps: which may start (every step it `needs` succeeded), which
are skipped (a step they need, directly or not, failed), which never started.

Readiness comes from the standard library's `graphlib.TopologicalSorter`: a step is
marked done only when it succeeded, so the dependants of a step that failed, was stopped
or crashed never become ready. The job loader has already refused unknown `needs` and
cycles. Steps that become ready together are returned in the job's order, so they start
together and in that order.
"""

from __future__ import annotations

import graphlib
from collections.abc import Sequence

from flwd.models import StepSpec
from flwd.states import StepStatus


class StepOrder:
    """The state of each step of one run, as far as ordering goes."""

    def __init__(self, steps: Sequence[StepSpec]) -> None:
        self.steps = {step.id: step for step in steps}
        self.state = dict.fromkeys(self.steps, StepStatus.PENDING)
        self._position = {step.id: i for i, step in enumerate(steps)}
        self._sorter = graphlib.TopologicalSorter({step.id: step.needs for step in steps})
        self._sorter.prepare()

    def ready(self) -> list[StepSpec]:
        """The steps that may start now (each returned once), marked running, in the
        job's order."""
        ids = sorted(self._sorter.get_ready(), key=self._position.__getitem__)
        for step_id in ids:
            self.state[step_id] = StepStatus.RUNNING
        return [self.steps[step_id] for step_id in ids]

    def ended(self, step_id: str, status: StepStatus) -> None:
        """A step ended with `status`: its dependants may start only if it succeeded."""
        self.state[step_id] = status
        if status is StepStatus.SUCCESS:
            self._sorter.done(step_id)

    def skip_dependants(self, failed: str) -> list[str]:
        """Mark skipped every step not started yet that needs `failed`, directly or
        through another; their ids, in the order they are found (the job's order, pass
        after pass)."""
        skipped: list[str] = []
        blocked = {failed}
        changed = True
        while changed:
            changed = False
            for step in self.steps.values():
                if self.state[step.id] is StepStatus.PENDING and blocked.intersection(step.needs):
                    self.state[step.id] = StepStatus.SKIPPED
                    blocked.add(step.id)
                    changed = True
                    skipped.append(step.id)
        return skipped

    def never_started(self) -> list[str]:
        """The steps still pending: the run was stopped before they could start."""
        return [step_id for step_id, status in self.state.items() if status is StepStatus.PENDING]
