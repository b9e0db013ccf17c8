"""Files of the job folder: reachable through FLWD_JOB_DIR; a step naming them by a
relative path (it runs in FLWD_RUN_DIR) fails with a hint saying what to write."""

from __future__ import annotations

from flwd.states import RunStatus
from tests.unit.engine_support import EngineWorld, run_job

pytest_plugins = ["tests.unit.conftest_engine"]

MAIN = """\
import json, os
rows = open(os.path.join(os.environ["FLWD_JOB_DIR"], "data.csv")).read().split()
with open(os.environ["FLWD_RESULT_FILE"], "w") as out:
    json.dump({"rows": rows, "cwd_is_run_dir": os.getcwd() == os.environ["FLWD_RUN_DIR"]}, out)
"""


async def test_a_job_reads_its_files_through_flwd_job_dir(engine_world: EngineWorld) -> None:
    engine_world.job(
        "reader",
        {"command": 'python3 "$FLWD_JOB_DIR/main.py"'},
        {"main.py": MAIN, "data.csv": "a,1\nb,2\n"},
    )
    async with engine_world.open() as service:
        run = await run_job(service, "reader")
    assert run.status is RunStatus.SUCCESS, run.error
    assert run.result is not None
    assert run.result.value == {"rows": ["a,1", "b,2"], "cwd_is_run_dir": True}


async def test_a_step_naming_job_files_by_relative_paths_fails_with_the_hint(
    engine_world: EngineWorld,
) -> None:
    engine_world.job("dot", {"command": "./myscript.sh"}, {"myscript.sh": "#!/bin/sh\necho hi\n"})
    engine_world.job("py", {"command": "python3 main.py"}, {"main.py": MAIN})
    engine_world.job(
        "listed", {"command": ["./myscript.sh"]}, {"myscript.sh": "#!/bin/sh\necho hi\n"}
    )
    engine_world.job("plain", {"command": "exit 3"})
    async with engine_world.open() as service:
        dot = await run_job(service, "dot")
        py = await run_job(service, "py")
        listed = await run_job(service, "listed")
        plain = await run_job(service, "plain")
    assert dot.status is RunStatus.FAILED and dot.exit_code == 127
    assert dot.error is not None
    assert dot.error.startswith("step 'main' failed: exited with code 127; 'myscript.sh' is")
    assert 'write "$FLWD_JOB_DIR/myscript.sh"' in dot.error
    assert py.error is not None and py.exit_code == 2  # python3: can't open file
    assert 'write "$FLWD_JOB_DIR/main.py"' in py.error
    assert listed.error is not None
    assert "cannot start './myscript.sh'" in listed.error  # ENOENT at spawn
    assert "use a command string, or a step with script: myscript.sh" in listed.error
    assert plain.error == "step 'main' failed: exited with code 3"


async def test_no_hint_when_the_step_made_the_file_in_its_run_dir(
    engine_world: EngineWorld,
) -> None:
    engine_world.job(
        "made",
        {"command": 'cp "$FLWD_JOB_DIR/data.csv" data.csv && cat data.csv && exit 1'},
        {"data.csv": "x\n"},
    )
    async with engine_world.open() as service:
        run = await run_job(service, "made")
    assert run.error == "step 'main' failed: exited with code 1"
