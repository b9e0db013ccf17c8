"""Every way a job folder can be wrong becomes a diagnostic; the scanner never crashes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from flwd.jobs.scanner import ROOT_ID, FolderScanner
from tests.unit.conftest import JobsTree


def only(jobs_tree: JobsTree, job_id: str) -> tuple[str, int | None, str]:
    """The single diagnostic of `job_id` as (file name, line, reason)."""
    (diagnostic,) = jobs_tree.invalid(job_id).diagnostics
    return os.path.basename(diagnostic.file), diagnostic.line, diagnostic.reason


def test_broken_yaml_reports_its_line(jobs_tree: JobsTree) -> None:
    jobs_tree.add("a", "description: ok\ncommand: [unclosed\nretries: 1\n")
    name, line, reason = only(jobs_tree, "a")
    assert name == "config.yaml"
    assert line in (3, 4)
    assert reason.startswith("invalid YAML")


def test_invalid_args_schema_is_checked_against_the_meta_schema(jobs_tree: JobsTree) -> None:
    jobs_tree.add(
        "a",
        """
        command: x
        args:
          type: object
          properties:
            target:
              type: strnig
            count:
              minimum: "zero"
        """,
    )
    diagnostics = jobs_tree.invalid("a").diagnostics
    by_line = {d.line: d.reason for d in diagnostics}
    assert "args/properties/target/type" in by_line[7]
    assert "'strnig' is not a JSON Schema type" in by_line[7]
    assert "args/properties/count/minimum" in by_line[9]


def test_args_must_describe_an_object(jobs_tree: JobsTree) -> None:
    jobs_tree.add("a", "command: x\nargs: {type: string}\n")
    _, line, reason = only(jobs_tree, "a")
    assert line == 2 and "must describe an object" in reason


def test_invalid_result_schema(jobs_tree: JobsTree) -> None:
    jobs_tree.add("a", "command: x\nresult_schema: {required: yes}\n")
    _, line, reason = only(jobs_tree, "a")
    assert line == 2 and reason.startswith("result_schema/required")


def test_missing_script(jobs_tree: JobsTree) -> None:
    jobs_tree.add("a", "steps:\n  - id: go\n    script: nope.sh\n")
    _, line, reason = only(jobs_tree, "a")
    assert line == 3 and "script 'nope.sh' does not exist" in reason


def test_step_cycle_is_named(jobs_tree: JobsTree) -> None:
    jobs_tree.add(
        "a",
        """
        steps:
          - {id: one, run: x, needs: three}
          - {id: two, run: x, needs: one}
          - {id: three, run: x, needs: two}
          - {id: free, run: x}
        """,
    )
    _, line, reason = only(jobs_tree, "a")
    assert "cycle: one -> three -> two -> one" in reason
    assert line == 3


def test_self_dependency_is_a_cycle(jobs_tree: JobsTree) -> None:
    jobs_tree.add("a", "steps: [{id: s, run: x, needs: s}]\n")
    assert "cycle: s -> s" in only(jobs_tree, "a")[2]


def test_unknown_needs(jobs_tree: JobsTree) -> None:
    jobs_tree.add("a", "steps:\n  - {id: a, run: x}\n  - {id: b, run: x, needs: [a, c]}\n")
    _, line, reason = only(jobs_tree, "a")
    assert line == 3 and "needs 'c', which is not a step" in reason


def test_duplicate_step_ids(jobs_tree: JobsTree) -> None:
    jobs_tree.add("a", "steps:\n  - {id: s, run: x}\n  - {id: s, run: y}\n")
    _, line, reason = only(jobs_tree, "a")
    assert line == 3 and "'s' is already used by steps[0]" in reason


def test_unknown_keys_suggest_the_right_one(jobs_tree: JobsTree) -> None:
    jobs_tree.add("a", "command: x\ntimout: 5m\nsteps_: []\n")
    jobs_tree.add("b", "steps:\n  - {id: s, run: x, need: t}\n")
    reasons = {d.line: d.reason for d in jobs_tree.invalid("a").diagnostics}
    assert reasons[2] == "unknown key 'timout' at the top level; did you mean 'timeout'?"
    assert "'steps_'" in reasons[3]
    _, line, reason = only(jobs_tree, "b")
    assert line == 2 and "did you mean 'needs'?" in reason


@pytest.mark.parametrize("value", ["'5 minutes'", "'-3s'", "0", "[1]"])
def test_bad_durations(jobs_tree: JobsTree, value: str) -> None:
    jobs_tree.add("a", f"command: x\ntimeout: {value}\n")
    _, line, reason = only(jobs_tree, "a")
    assert line == 2 and reason.startswith("timeout")


def test_bad_step_duration(jobs_tree: JobsTree) -> None:
    jobs_tree.add("a", "steps:\n  - id: s\n    run: x\n    timeout: soon\n")
    _, line, reason = only(jobs_tree, "a")
    assert line == 4 and "steps[0].timeout" in reason and "'soon' is not a duration" in reason


def test_wrong_types_point_at_the_value(jobs_tree: JobsTree) -> None:
    jobs_tree.add("a", "command: x\nretries: -1\n")
    jobs_tree.add("b", "command: x\ntags: {a: 1}\n")
    jobs_tree.add("c", "command: x\nversion: 1.10\n")
    assert only(jobs_tree, "a")[1:] == (2, "retries: expected `int` >= 0")
    assert only(jobs_tree, "b")[1] == 2
    assert "version" in only(jobs_tree, "c")[2]


def test_command_and_steps_conflict(jobs_tree: JobsTree) -> None:
    jobs_tree.add("a", "command: x\nsteps: [{run: y}]\n")
    jobs_tree.add("b", "steps: []\n")
    jobs_tree.add("c", "steps: [{id: s, run: x, script: y.sh}]\n")
    jobs_tree.add("d", "description: nothing\n")
    assert "either 'command' or 'steps'" in only(jobs_tree, "a")[2]
    assert "steps is empty" in only(jobs_tree, "b")[2]
    assert "has both run and script" in only(jobs_tree, "c")[2]
    assert only(jobs_tree, "d")[2].startswith("nothing to run")


def test_concurrency_key_must_name_arguments(jobs_tree: JobsTree) -> None:
    jobs_tree.add("a", "command: x\nconcurrency: {limit: 1, key: '{nope}'}\n")
    assert "'{nope}' does not name an argument" in only(jobs_tree, "a")[2]


def test_script_paths_cannot_leave_the_job_folder(jobs_tree: JobsTree, tmp_path: Path) -> None:
    (jobs_tree.root / "x.sh").write_text("echo\n")
    outside = tmp_path / "outside.sh"
    outside.write_text("echo\n")
    jobs_tree.add("up", "steps: [{script: ../x.sh}]\n")
    jobs_tree.add("abs", f"steps: [{{script: {outside}}}]\n")
    linked = jobs_tree.add("link", "steps: [{script: run.sh}]\n")
    os.symlink(jobs_tree.root / "x.sh", linked / "run.sh")  # inside the root, not the job
    assert "uses '..'" in only(jobs_tree, "up")[2]
    assert "must be relative" in only(jobs_tree, "abs")[2]
    assert "points outside the job folder" in only(jobs_tree, "link")[2]


def test_symlinks_out_of_the_root_are_refused(jobs_tree: JobsTree, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "config.yaml").write_text("command: x\n")
    (elsewhere / "secret.txt").write_text("s")
    os.symlink(elsewhere, jobs_tree.root / "smuggled")
    job = jobs_tree.add("ok-then-not")
    os.symlink(elsewhere / "secret.txt", job / "data.txt")
    jobs_tree.add("fine")
    result = jobs_tree.scan()
    assert [j.id for j in result.jobs] == ["fine"]
    reasons = {bad.id: bad.diagnostics[0].reason for bad in result.invalid}
    assert "symlink points outside the source root" in reasons["smuggled"]
    assert "symlink points outside the source root" in reasons["ok-then-not"]


def test_id_collisions_report_both_folders(jobs_tree: JobsTree) -> None:
    first = jobs_tree.add("Daily_Backup")
    second = jobs_tree.add("daily-backup")
    jobs_tree.add("other")
    result = jobs_tree.scan()
    assert [j.id for j in result.jobs] == ["other"]
    clashing = [bad for bad in result.invalid if bad.id == "daily-backup"]
    assert {bad.path for bad in clashing} == {str(first), str(second)}
    for bad in clashing:
        assert "is also the id of" in bad.diagnostics[-1].reason


def test_folder_without_letters(jobs_tree: JobsTree) -> None:
    jobs_tree.add("__")
    assert "cannot become a job id" in jobs_tree.reasons("__")[0]


GARBAGE: dict[str, bytes] = {
    "binary": bytes(range(256)) * 4,
    "latin1": "description: caf\xe9\ncommand: x\n".encode("latin-1"),
    "list": b"- command: x\n- command: y\n",
    "scalar": b"just a string\n",
    "tabs": b"command:\n\t- x\n",
    "alias-bomb": b"a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + b"".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n".encode()
        for i in range(6)
    ),
    "self-alias": b"command: &c [*c]\n",
    "python-tag": b"command: !!python/object:os.system echo\n",
    "custom-tag": b"command: !shell echo\n",
    "merge-key": b"base: &b {command: x}\n<<: *b\n",
    "two-docs": b"command: x\n---\ncommand: y\n",
    "nan": b"command: x\ntimeout: .nan\n",
    "huge-int-key": b"{[1, 2]: x}\n",
    "deep": b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n",
}


def test_garbage_never_crashes_the_scanner(jobs_tree: JobsTree) -> None:
    for name, data in GARBAGE.items():
        jobs_tree.add(name, data)
    jobs_tree.add("empty", b"")
    jobs_tree.add("dangling")
    (jobs_tree.root / "dangling" / "config.yaml").unlink()
    os.symlink(
        jobs_tree.root / "dangling" / "gone.yaml", jobs_tree.root / "dangling" / "config.yaml"
    )
    jobs_tree.add("dir-config", None)
    (jobs_tree.root / "dir-config" / "config.yaml").mkdir()
    jobs_tree.add("survivor")
    result = jobs_tree.scan()
    assert [j.id for j in result.jobs] == ["survivor"]
    invalid = {bad.id: bad for bad in result.invalid}
    expected = {*GARBAGE, "empty", "dangling", "dir-config"}
    assert set(invalid) == expected
    for bad in invalid.values():
        assert bad.diagnostics, bad.id
        assert all(d.reason and "internal error" not in d.reason for d in bad.diagnostics), bad
    assert invalid["binary"].diagnostics[0].reason == "config.yaml is a binary file, not YAML text"
    assert "not UTF-8" in invalid["latin1"].diagnostics[0].reason
    assert invalid["latin1"].diagnostics[0].line == 1
    assert "not a list" in invalid["list"].diagnostics[0].reason
    assert "expands to more than" in invalid["alias-bomb"].diagnostics[0].reason
    assert "contains itself" in invalid["self-alias"].diagnostics[0].reason
    assert "no JSON equivalent" in invalid["python-tag"].diagnostics[0].reason
    assert "merge key" in invalid["merge-key"].diagnostics[0].reason
    assert "finite number" in invalid["nan"].diagnostics[0].reason
    assert invalid["nan"].diagnostics[0].line == 2
    assert invalid["empty"].diagnostics[0].reason.startswith("nothing to run")


def test_missing_pwsh_is_a_diagnostic(jobs_tree: JobsTree, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    jobs_tree.add("a", "", files={"000_go.ps1": "Write-Output hi\n"})
    assert "needs PowerShell (pwsh)" in jobs_tree.reasons("a")[0]


def test_script_without_interpreter(jobs_tree: JobsTree) -> None:
    jobs_tree.add("a", "", files={"000_go.txt": "?\n"})
    assert "cannot tell how to run '000_go.txt'" in jobs_tree.reasons("a")[0]


def test_source_root_problems(tmp_path: Path) -> None:
    missing = FolderScanner("gone", tmp_path / "nope").scan()
    (bad,) = missing.invalid
    assert bad.id == ROOT_ID and "does not exist" in bad.diagnostics[0].reason
    (tmp_path / "config.yaml").write_text("command: x\n")
    (bad,) = FolderScanner("root", tmp_path).scan().invalid
    assert "directly in the source root" in bad.diagnostics[0].reason


def test_every_problem_of_a_folder_is_reported(jobs_tree: JobsTree) -> None:
    jobs_tree.add(
        "many",
        """
        timout: 1m
        tags: [a]
        args: {properties: {x: {type: nope}}}
        steps:
          - {id: a, run: x, needs: b}
          - {id: b, run: x, needs: a}
          - {id: c, script: missing.sh}
        """,
    )
    reasons = jobs_tree.reasons("many")
    assert len(reasons) == 4, reasons


def test_a_default_its_property_refuses_makes_the_job_invalid(jobs_tree: JobsTree) -> None:
    jobs_tree.add(
        "a",
        """
        command: x
        args:
          $defs:
            port: {type: integer, maximum: 65535}
          type: object
          properties:
            count: {type: integer, default: "three"}
            mode: {enum: [fast, slow], default: medium}
            port: {$ref: "#/$defs/port", default: 70000}
            opts:
              type: object
              properties:
                depth: {type: integer, minimum: 1, default: 0}
            fine: {type: string, default: ok}
        """,
    )
    by_line = {d.line: d.reason for d in jobs_tree.invalid("a").diagnostics}
    assert sorted(by_line) == [8, 9, 10, 14]
    assert by_line[8].startswith("args/properties/count/default is a default its own")
    assert "'three' is not of type 'integer'" in by_line[8]
    assert "args/properties/mode/default" in by_line[9] and "'medium'" in by_line[9]
    assert "args/properties/port/default" in by_line[10]  # checked through its $ref
    assert "args/properties/opts/properties/depth/default" in by_line[14]


def test_a_required_name_that_is_no_property_makes_the_job_invalid(jobs_tree: JobsTree) -> None:
    jobs_tree.add(
        "a",
        """
        command: x
        args:
          type: object
          properties:
            target: {type: string}
          required: [target, tagret]
        """,
    )
    _, line, reason = only(jobs_tree, "a")
    assert line == 7
    assert reason.startswith("args/required/1 names 'tagret', which is not a property here")
    assert "(properties: target)" in reason


def test_a_required_name_other_keywords_may_declare_is_accepted(jobs_tree: JobsTree) -> None:
    jobs_tree.add(
        "open",
        """
        command: x
        args: {type: object, properties: {}, additionalProperties: true, required: [any]}
        """,
    )
    jobs_tree.add(
        "patterned",
        """
        command: x
        args: {type: object, patternProperties: {"^x-": {}}, properties: {}, required: [x-a]}
        """,
    )
    jobs_tree.add(
        "composed",
        """
        command: x
        args:
          type: object
          properties: {a: {}}
          allOf: [{properties: {b: {type: string}}}]
          required: [a, b]
        """,
    )
    for job_id in ("open", "patterned", "composed"):
        assert jobs_tree.job(job_id).id == job_id
