"""Arguments too large for the environment still reach the step, through FLWD_ARGS_FILE."""

from __future__ import annotations

import os

from flwd.engine.environment import MAX_ENV_STRING, fit_environment
from flwd.states import RunStatus
from tests.unit.engine_support import EngineWorld, events_of, run_job

pytest_plugins = ["tests.unit.conftest_engine"]

READER = """\
import json, os
args = json.load(open(os.environ["FLWD_ARGS_FILE"]))
result = {
    "blob_length": len(args["blob"]),
    "blob_in_env": "FLWD_ARG_BLOB" in os.environ,
    "small": os.environ.get("FLWD_ARG_SMALL"),
}
with open(os.environ["FLWD_RESULT_FILE"], "w") as out:
    json.dump(result, out)
"""


async def test_a_200_kb_argument_runs_and_is_read_from_the_args_file(
    engine_world: EngineWorld,
) -> None:
    engine_world.job(
        "big",
        {
            "args": {
                "type": "object",
                "properties": {"blob": {"type": "string"}, "small": {"type": "string"}},
            },
            "steps": [{"id": "read", "script": "read.py"}],
        },
        {"read.py": READER},
    )
    blob = "y" * 200_000
    async with engine_world.open() as service:
        run = await run_job(service, "big", {"blob": blob, "small": "kept"})
        assert run.status is RunStatus.SUCCESS, run.error
        assert run.result is not None
        assert run.result.value == {"blob_length": 200_000, "blob_in_env": False, "small": "kept"}
        events = await events_of(service, run.run_id)
    warnings = [
        e.data["message"]
        for e in events
        if e.type == "run.output" and e.data.get("level") == "warning"
    ]
    assert len(warnings) == 1, warnings
    assert "FLWD_ARG_BLOB left out of the environment" in warnings[0]
    assert "$FLWD_ARGS_FILE" in warnings[0] and "FLWD_ARG_SMALL" not in warnings[0]
    assert all(len(e.data.get("message", "")) < 1000 for e in events)


def test_only_argument_variables_over_the_limit_are_left_out() -> None:
    name = "FLWD_ARG_EDGE"
    fits = "z" * (MAX_ENV_STRING - len(name) - 2)  # NAME=value and its NUL: exactly the limit
    env = {"PATH": "/bin", name: fits, "FLWD_ARG_OVER": fits + "z", "OWN": "x" * 200_000}
    assert fit_environment(["/bin/true"], env) == ["FLWD_ARG_OVER"]
    assert set(env) == {"PATH", name, "OWN"}  # a job's own huge variable is its business


def test_arguments_are_left_out_largest_first_until_the_whole_fits() -> None:
    space = os.sysconf("SC_ARG_MAX")
    count = space // 100_000 + 2  # together over ARG_MAX, each under the per-string limit
    env = {f"FLWD_ARG_A{i}": "a" * (100_000 + i) for i in range(count)}
    env["FLWD_ARG_SMALL"] = "s"
    left = fit_environment(["/bin/true"], env)
    assert left and "FLWD_ARG_SMALL" in env
    assert left == sorted(left, key=lambda k: -(100_000 + int(k[len("FLWD_ARG_A") :])))
    assert sum(len(k) + len(v) + 10 for k, v in env.items()) < space
