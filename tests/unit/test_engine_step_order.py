"""`StepOrder`, the run driver's ordering of steps (the DAG runs themselves are in
test_engine_dag.py): readiness, skipping after a failure, steps never started."""

from __future__ import annotations

from flwd.engine.dag import StepOrder
from flwd.models import StepSpec
from flwd.states import StepStatus


def _steps(**needs: tuple[str, ...]) -> list[StepSpec]:
    return [StepSpec(id=name, argv=("true",), needs=deps) for name, deps in needs.items()]


def _ids(steps: list[StepSpec]) -> list[str]:
    return [step.id for step in steps]


def test_ready_steps_come_together_in_the_jobs_order_and_once() -> None:
    # declared out of dependency order: "c" needs steps declared after it
    order = StepOrder(_steps(c=("b", "a"), b=(), a=(), d=("b",)))
    assert _ids(order.ready()) == ["b", "a"]
    assert order.ready() == []  # returned once, now running
    assert order.state["a"] is StepStatus.RUNNING
    order.ended("b", StepStatus.SUCCESS)
    assert _ids(order.ready()) == ["d"]  # "c" still waits for "a"
    order.ended("a", StepStatus.SUCCESS)
    assert _ids(order.ready()) == ["c"]


def test_a_failure_skips_every_dependant_and_only_those() -> None:
    order = StepOrder(_steps(e=("d",), a=(), b=(), c=("a",), d=("c", "b")))
    assert _ids(order.ready()) == ["a", "b"]
    order.ended("a", StepStatus.FAILED)
    # in the job's order, pass after pass: "e" is found only once "d" is blocked
    assert order.skip_dependants("a") == ["c", "d", "e"]
    assert order.state["d"] is StepStatus.SKIPPED
    order.ended("b", StepStatus.SUCCESS)
    assert order.ready() == []  # "d" needs "b" too, but it is skipped
    assert order.never_started() == []


def test_steps_after_a_stopped_or_crashed_step_never_start() -> None:
    order = StepOrder(_steps(a=(), b=("a",), c=("b",)))
    assert _ids(order.ready()) == ["a"]
    order.ended("a", StepStatus.CANCELLED)
    assert order.ready() == []
    assert order.never_started() == ["b", "c"]
