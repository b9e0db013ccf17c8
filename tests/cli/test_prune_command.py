"""`flwd prune` on a local data dir, through the real executable: the dry run's report,
the real pass, and the refusal while another flwd process holds the data dir."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from flwd.engine.datadir_lock import lock_data_dir
from flwd.settings import Settings


def flwd(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flwd", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def prune_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Jobs and a data dir holding three runs of `hello` and two of `kept` (whose
    `retention:` keeps everything), made once for the module."""
    root = tmp_path_factory.mktemp("prune")
    jobs = root / "jobs"
    (jobs / "hello").mkdir(parents=True)
    (jobs / "hello" / "config.yaml").write_text(
        'command: echo "$FLWD_RUN_ID" > "$FLWD_ARTIFACTS_DIR/id.txt"\n'
    )
    (jobs / "kept").mkdir(parents=True)
    (jobs / "kept" / "config.yaml").write_text(
        "command: 'true'\nretention: {max_runs: 0, max_age: 0}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLWD_")}
    env.update(FLWD_DATA_DIR=str(root / "data"), FLWD_JOBS=f"local-fs={jobs}")
    for job_id in ("hello", "hello", "hello", "kept", "kept"):
        done = flwd(env, "run", job_id)
        assert done.returncode == 0, done.stderr
    return root / "data", env


@pytest.fixture
def prune_env(prune_template: tuple[Path, dict[str, str]], tmp_path: Path) -> dict[str, str]:
    """A copy of the template's data dir for one test."""
    data, env = prune_template
    shutil.copytree(data, tmp_path / "data")
    return {**env, "FLWD_DATA_DIR": str(tmp_path / "data")}


def _runs(env: dict[str, str]) -> dict[str, int]:
    with sqlite3.connect(Path(env["FLWD_DATA_DIR"]) / "flwd.db") as db:
        rows = db.execute("SELECT job_id, COUNT(*) FROM runs GROUP BY job_id").fetchall()
    return {str(job): int(count) for job, count in rows}


def test_a_dry_run_reports_and_deletes_nothing_then_a_pass_deletes(
    prune_env: dict[str, str],
) -> None:
    dry = flwd(prune_env, "prune", "--dry-run", "--keep", "1")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0].startswith("policy: finished more than 30d ago; the newest 1 per job kept")
    assert lines[1].startswith("would prune 2 runs (")
    assert "2 artifacts; 2 blobs" in lines[1]
    assert lines[2:] == ["  hello: 2 runs"]  # `kept` keeps everything by its own block
    assert _runs(prune_env) == {"hello": 3, "kept": 2}

    done = flwd(prune_env, "prune", "--keep", "1", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["dry_run"] is False
    assert (report["runs"], report["artifacts"], report["jobs"]) == (2, 2, {"hello": 2})
    assert _runs(prune_env) == {"hello": 1, "kept": 2}


def test_pruning_is_refused_while_another_process_holds_the_data_dir(
    prune_env: dict[str, str],
) -> None:
    held = lock_data_dir(Settings(data_dir=prune_env["FLWD_DATA_DIR"]))
    try:
        refused = flwd(prune_env, "prune", "--keep", "1")
        assert refused.returncode == 1
        assert refused.stderr.startswith("error: a flwd server")
        assert "prunes by itself in the background" in refused.stderr
        assert _runs(prune_env) == {"hello": 3, "kept": 2}
        # a dry run only reads: it works next to a server
        dry = flwd(prune_env, "prune", "--dry-run", "--keep", "1")
        assert dry.returncode == 0 and "would prune 2 runs" in dry.stdout
    finally:
        os.close(held)


def test_bad_input_is_one_error_line(prune_env: dict[str, str], tmp_path: Path) -> None:
    bad = flwd(prune_env, "prune", "--older-than", "soon")
    assert bad.returncode == 2 and bad.stderr.startswith("error: 'soon' is not a duration")
    # without the job folders, jobs' own retention: blocks would be ignored: refused
    nowhere = flwd(prune_env, "prune", "--jobs", str(tmp_path / "nowhere"))
    assert nowhere.returncode == 2 and "is not a directory" in nowhere.stderr
    assert _runs(prune_env) == {"hello": 3, "kept": 2}
    env = {**prune_env, "FLWD_DATA_DIR": str(tmp_path / "empty")}
    empty = flwd(env, "prune")
    assert empty.returncode == 2 and "no flwd database" in empty.stderr
