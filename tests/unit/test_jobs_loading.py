"""Loading valid job folders: ids, steps, interpreters, settings, schemas, digests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from flwd.jobs.ids import env_var_for_arg, job_id_from_parts, normalise_segment
from flwd.jobs.scanner import FolderScanner
from flwd.models import ConcurrencySpec, ToolAnnotations
from tests.unit.conftest import JobsTree

REPO_JOBS = Path(__file__).resolve().parents[2] / "jobs"


def test_ids_are_normalised_paths() -> None:
    assert normalise_segment("Daily_Backup v2") == "daily-backup-v2"
    assert normalise_segment("--x--") == "x"
    assert normalise_segment("__") == ""
    assert job_id_from_parts(["My Jobs", "Daily.Backup"]) == "my-jobs/daily-backup"
    assert job_id_from_parts(["ok", "!!"]) == ""
    assert env_var_for_arg("dry-run") == "FLWD_ARG_DRY_RUN"


def test_job_id_namespace_and_name(jobs_tree: JobsTree) -> None:
    jobs_tree.add("Backup/Daily_Full")
    jobs_tree.add("hello")
    daily = jobs_tree.job("backup/daily-full")
    assert (daily.namespace, daily.name, daily.source) == ("backup", "daily-full", "test")
    assert daily.path == str(jobs_tree.root / "Backup" / "Daily_Full")
    hello = jobs_tree.job("hello")
    assert (hello.namespace, hello.name) == ("", "hello")


def test_command_string_runs_through_sh(jobs_tree: JobsTree) -> None:
    jobs_tree.add("a", 'command: echo "$FLWD_ARG_NAME"\n')
    (step,) = jobs_tree.job("a").steps
    assert step.id == "main"
    assert step.argv == ("/bin/sh", "-c", 'echo "$FLWD_ARG_NAME"')


def test_command_list_is_argv(jobs_tree: JobsTree) -> None:
    jobs_tree.add("a", "command: [python3, -c, 'print(1)']\n")
    assert jobs_tree.job("a").steps[0].argv == ("python3", "-c", "print(1)")


def test_all_fields(jobs_tree: JobsTree) -> None:
    jobs_tree.add(
        "full",
        """
        name: Full example
        description: every field
        version: 3
        tags: [a, b]
        env: {A: 1, B: true, C: text}
        timeout: 1h30m
        retries: 2
        security_profile: secure
        concurrency: {limit: 2, key: "{target}"}
        args:
          type: object
          properties:
            target: {type: string}
        result_schema: {type: object}
        command: echo hi
        """,
    )
    job = jobs_tree.job("full")
    assert job.title == "Full example"
    assert job.description == "every field"
    assert job.version == "3"
    assert job.tags == ("a", "b")
    assert job.env == {"A": "1", "B": "true", "C": "text"}
    assert job.timeout == 5400.0
    assert job.retries == 2 and job.steps[0].retries == 2
    assert job.security_profile == "secure"
    assert job.concurrency == ConcurrencySpec(limit=2, key="{target}")
    assert job.result_schema == {"type": "object"}
    assert job.steps[0].env == job.env


def test_concurrency_shorthand(jobs_tree: JobsTree) -> None:
    jobs_tree.add("a", "command: x\nconcurrency: 3\n")
    assert jobs_tree.job("a").concurrency == ConcurrencySpec(limit=3)


def test_annotations_are_hints_for_agents(jobs_tree: JobsTree) -> None:
    jobs_tree.add("a", "command: x\nannotations: {read_only: true, idempotent: false}\n")
    assert jobs_tree.job("a").annotations == ToolAnnotations(read_only=True, idempotent=False)
    jobs_tree.add("b", "command: x\n")
    assert jobs_tree.job("b").annotations is None
    jobs_tree.add("c", "command: x\nannotations: {readonly: true}\n")
    assert any("readonly" in reason for reason in jobs_tree.reasons("c"))
    jobs_tree.add("d", "command: x\nannotations: {destructive: maybe}\n")
    assert any("annotations.destructive" in reason for reason in jobs_tree.reasons("d"))


def test_steps_dag_and_precedence(jobs_tree: JobsTree) -> None:
    jobs_tree.add(
        "dag",
        """
        env: {X: job, Y: job}
        retries: 1
        timeout: 10m
        steps:
          - {id: prep, run: echo prep}
          - {id: left, run: echo l, needs: prep, env: {X: step}}
          - {id: right, command: [echo, r], needs: [prep], retries: 0, timeout: 90s}
          - {id: join, run: echo j, needs: [left, right]}
        """,
    )
    job = jobs_tree.job("dag")
    steps = {s.id: s for s in job.steps}
    assert [s.id for s in job.steps] == ["prep", "left", "right", "join"]
    assert steps["left"].needs == ("prep",)
    assert steps["join"].needs == ("left", "right")
    assert steps["left"].env == {"X": "step", "Y": "job"}
    assert steps["prep"].retries == 1 and steps["right"].retries == 0
    assert steps["right"].timeout == 90.0 and steps["prep"].timeout is None
    assert job.timeout == 600.0
    assert steps["right"].argv == ("echo", "r")


def test_script_interpreters(jobs_tree: JobsTree) -> None:
    folder = jobs_tree.add(
        "s",
        """
        steps:
          - {id: env, script: env.py}
          - {id: sh, script: plain.sh}
          - {id: py, script: plain.py}
          - {id: exe, script: tool}
          - {id: explicit, script: plain.sh, interpreter: "sh -eu"}
          - script: lib/Sub Step.sh
        """,
        files={
            "env.py": "#!/usr/bin/env python3 -u\nprint(1)\n",
            "plain.sh": "echo hi\n",
            "plain.py": "print(1)\n",
            "tool": "\x7fELF-not-really\n",
            "lib/Sub Step.sh": "#!/bin/bash\necho\n",
        },
        executable=("tool",),
    )
    steps = {s.id: s for s in jobs_tree.job("s").steps}
    assert steps["env"].argv == ("/usr/bin/env", "python3", "-u", str(folder / "env.py"))
    assert steps["sh"].argv == ("bash", str(folder / "plain.sh"))
    assert steps["py"].argv == (sys.executable, str(folder / "plain.py"))
    assert steps["exe"].argv == (str(folder / "tool"),)
    assert steps["explicit"].argv == ("sh", "-eu", str(folder / "plain.sh"))
    assert steps["sub-step"].argv == ("/bin/bash", str(folder / "lib" / "Sub Step.sh"))
    assert steps["sub-step"].script == "lib/Sub Step.sh"


def test_numbered_scripts_run_in_name_order(jobs_tree: JobsTree) -> None:
    folder = jobs_tree.add(
        "n",
        "",  # an empty config is fine when numbered scripts say what runs
        files={
            "100_Second.py": "print(2)\n",
            "000_first.sh": "echo 1\n",
            "20_middle.sh": "#!/bin/sh\necho\n",
            "notes.txt": "not a step",
        },
    )
    steps = jobs_tree.job("n").steps
    assert [s.id for s in steps] == ["000-first", "100-second", "20-middle"]
    assert [s.needs for s in steps] == [(), ("000-first",), ("100-second",)]
    assert steps[0].argv == ("bash", str(folder / "000_first.sh"))
    assert steps[1].argv == (sys.executable, str(folder / "100_Second.py"))
    assert steps[2].script == "20_middle.sh"


def test_args_schema_defaults_and_closing(jobs_tree: JobsTree) -> None:
    jobs_tree.add("none")
    jobs_tree.add(
        "open",
        "command: x\nargs: {type: object, additionalProperties: true}\n",
    )
    jobs_tree.add(
        "nested",
        """
        command: x
        args:
          properties:
            opts:
              type: object
              properties: {depth: {type: integer}}
            tags: {type: object}
        """,
    )
    jobs_tree.add("composed", "command: x\nargs: {allOf: [{properties: {a: {}}}]}\n")
    result = {j.id: j for j in jobs_tree.scan().jobs}
    assert result["none"].args == {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }
    assert result["open"].args == {"type": "object", "additionalProperties": True}
    nested = result["nested"].args
    assert nested["additionalProperties"] is False
    assert nested["properties"]["opts"]["additionalProperties"] is False
    assert "additionalProperties" not in nested["properties"]["tags"]
    assert result["composed"].args["unevaluatedProperties"] is False


def test_secret_args_are_flagged(jobs_tree: JobsTree) -> None:
    jobs_tree.add(
        "s",
        """
        command: x
        args:
          properties:
            password: {type: string, format: secret}
            token: {type: string, writeOnly: true}
            user: {type: string}
        """,
    )
    assert jobs_tree.job("s").secret_args == ("/password", "/token")


def test_digest_is_stable_and_covers_every_file(jobs_tree: JobsTree) -> None:
    folder = jobs_tree.add("d", "steps: [{script: run.sh}]\n", files={"run.sh": "echo 1\n"})
    first = jobs_tree.job("d").digest
    assert len(first) == 64
    assert jobs_tree.job("d").digest == first
    (folder / "run.sh").write_text("echo 2\n")
    second = jobs_tree.job("d").digest
    assert second != first
    (folder / "data").mkdir()
    (folder / "data" / "x.txt").write_text("x")
    assert jobs_tree.job("d").digest != second
    (folder / ".swap").write_text("editor noise")  # hidden files do not count
    third = jobs_tree.job("d").digest
    (folder / ".swap").write_text("more noise")
    assert jobs_tree.job("d").digest == third


def test_nested_job_folders_are_separate_jobs(jobs_tree: JobsTree) -> None:
    outer = jobs_tree.add("team", "command: outer\n")
    jobs_tree.add("team/inner", "command: inner\n", files={"big.bin": b"\0" * 10})
    digest = jobs_tree.job("team").digest
    (outer / "inner" / "big.bin").write_bytes(b"\1" * 10)
    result = {j.id: j for j in jobs_tree.scan().jobs}
    assert set(result) == {"team", "team/inner"}
    assert result["team"].digest == digest  # the inner job's files are not the outer's


def test_hidden_and_cache_directories_are_ignored(jobs_tree: JobsTree) -> None:
    jobs_tree.add(".git/hooks")
    jobs_tree.add("x/__pycache__")
    jobs_tree.add("real")
    result = jobs_tree.scan()
    assert [j.id for j in result.jobs] == ["real"]
    assert result.invalid == ()


def test_symlinked_directory_inside_root_is_followed(jobs_tree: JobsTree) -> None:
    jobs_tree.add("real/job")
    os.symlink(jobs_tree.root / "real", jobs_tree.root / "alias")
    os.symlink(jobs_tree.root, jobs_tree.root / "real" / "loop")  # must not loop forever
    assert [j.id for j in jobs_tree.scan().jobs] == ["alias/job", "real/job"]


def test_single_job_folder_scan(jobs_tree: JobsTree) -> None:
    folder = jobs_tree.add("Some Job")
    result = FolderScanner("v", folder, single_job=True).scan()
    assert [j.id for j in result.jobs] == ["some-job"]


def test_incremental_scan_sees_edits_and_removals(jobs_tree: JobsTree) -> None:
    scanner = FolderScanner("test", jobs_tree.root)
    folder = jobs_tree.add("a", "command: one\n")
    assert scanner.scan().jobs[0].steps[0].argv[-1] == "one"
    (folder / "config.yaml").write_text("command: two\n")
    assert scanner.scan({str(folder / "config.yaml")}).jobs[0].steps[0].argv[-1] == "two"
    new = jobs_tree.add("b")
    assert [j.id for j in scanner.scan({str(new)}).jobs] == ["a", "b"]
    (folder / "config.yaml").unlink()
    assert [j.id for j in scanner.scan({str(folder / "config.yaml")}).jobs] == ["b"]


def test_example_jobs_load_without_diagnostics() -> None:
    result = FolderScanner("local-fs", REPO_JOBS).scan()
    assert result.invalid == ()
    ids = {job.id for job in result.jobs}
    assert {"backup/daily", "hello", "examples/dag", "examples/secret"} <= ids
    daily = next(job for job in result.jobs if job.id == "backup/daily")
    assert daily.args["required"] == ["target"]
    assert "/password" in next(j for j in result.jobs if j.id == "examples/secret").secret_args
    dag = next(job for job in result.jobs if job.id == "examples/dag")
    parallel = [s.id for s in dag.steps if s.needs == ("prepare",)]
    assert parallel == ["left", "right"]
    for job in result.jobs:
        for step in job.steps:
            if step.script:
                assert os.access(os.path.join(job.path, step.script), os.X_OK), step.script
