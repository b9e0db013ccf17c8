"""`flwd jobs`, `flwd jobs show` and `flwd validate` through the real command group."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from flwd.cli import build_cli
from tests.unit.conftest import JobsTree

BACKUP = """
description: Daily backup job
version: "1.0.0"
args:
  type: object
  properties:
    target: {type: string, description: Backup target directory}
    password: {type: string, format: secret}
  required: [target]
command: echo backup
"""


def run(*args: str) -> Result:
    return CliRunner().invoke(build_cli(), list(args), catch_exceptions=False)


@pytest.fixture
def jobs_cli_tree(jobs_tree: JobsTree, monkeypatch: pytest.MonkeyPatch) -> JobsTree:
    monkeypatch.delenv("FLWD_JOBS", raising=False)
    jobs_tree.add("backup/daily", BACKUP)
    jobs_tree.add("hello", "description: Say hello\ncommand: echo hi\n")
    jobs_tree.add("broken", "command: x\ntimout: 1m\n")
    return jobs_tree


def test_jobs_json_is_the_api_body(jobs_cli_tree: JobsTree) -> None:
    result = run("jobs", "--json", "--jobs", f"local-fs={jobs_cli_tree.root}")
    assert result.exit_code == 0
    body = json.loads(result.stdout)
    (invalid,) = body.pop("invalid")
    assert invalid["id"] == "broken" and invalid["diagnostics"][0]["line"] == 2
    assert body == {
        "jobs": [
            {
                "id": "backup/daily",
                "name": "daily",
                "namespace": "backup",
                "version": "1.0.0",
                "description": "Daily backup job",
                "source": "local-fs",
                "tags": [],
            },
            {
                "id": "hello",
                "name": "hello",
                "namespace": "",
                "version": None,
                "description": "Say hello",
                "source": "local-fs",
                "tags": [],
            },
        ]
    }
    assert "1 invalid job folder" in result.stderr


def test_jobs_filters(jobs_cli_tree: JobsTree) -> None:
    source = f"mine={jobs_cli_tree.root}"
    by_namespace = run("jobs", "--json", "--namespace", "backup", "--jobs", source)
    assert [j["id"] for j in json.loads(by_namespace.stdout)["jobs"]] == ["backup/daily"]
    by_source = run("jobs", "--json", "--source", "mine", "--jobs", source)
    assert len(json.loads(by_source.stdout)["jobs"]) == 2
    unknown = run("jobs", "--source", "nope", "--jobs", source)
    assert unknown.exit_code == 2
    assert unknown.stderr.startswith("error: there is no job source named 'nope'")


def test_jobs_table_for_people(jobs_cli_tree: JobsTree) -> None:
    result = run("jobs", "--jobs", str(jobs_cli_tree.root))
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "VERSION", "SOURCE", "DESCRIPTION"]
    assert lines[1].split()[:3] == ["backup/daily", "1.0.0", "local-fs"]
    assert len(lines) == 3


def test_jobs_uses_flwd_jobs_variable(
    jobs_cli_tree: JobsTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLWD_JOBS", f"envsrc={jobs_cli_tree.root}")
    result = run("jobs", "--json")
    assert {j["source"] for j in json.loads(result.stdout)["jobs"]} == {"envsrc"}


def test_show_json_has_contract_fields_and_extras(jobs_cli_tree: JobsTree) -> None:
    result = run("jobs", "show", "backup/daily", "--json", "--jobs", str(jobs_cli_tree.root))
    assert result.exit_code == 0
    detail = json.loads(result.stdout)
    contract = {"id", "name", "namespace", "version", "description", "args", "source"}
    assert contract <= set(detail)
    assert detail["args"]["required"] == ["target"]
    assert detail["args"]["properties"]["target"]["type"] == "string"
    assert detail["secret_args"] == ["/password"]
    assert detail["steps"] == [
        {"id": "main", "needs": [], "script": None, "timeout": None, "retries": 0}
    ]


def test_show_for_people(jobs_cli_tree: JobsTree) -> None:
    result = run("--help")
    assert "jobs" in result.stdout and "validate" in result.stdout
    result = run("jobs", "--jobs", str(jobs_cli_tree.root), "show", "backup/daily")
    assert result.exit_code == 0
    assert "target  (string, required)  Backup target directory" in result.stdout
    assert "password  (string, secret)" in result.stdout


def test_show_errors_go_to_stderr(jobs_cli_tree: JobsTree) -> None:
    missing = run("jobs", "show", "nope", "--jobs", str(jobs_cli_tree.root))
    assert missing.exit_code == 1
    assert missing.stderr == "error: The job 'nope' does not exist\n"
    assert missing.stdout == ""
    broken = run("jobs", "show", "broken", "--jobs", str(jobs_cli_tree.root))
    assert broken.exit_code == 1
    assert "unknown key 'timout'" in broken.stderr
    assert "Traceback" not in broken.output


def test_bad_source_spec_is_an_error(tmp_path: Path) -> None:
    result = run("jobs", "--jobs", "a=x", "--jobs", "a=y")
    assert result.exit_code == 2
    assert result.stderr == "error: job source 'a' is named twice\n"


def test_validate_reports_every_problem(jobs_cli_tree: JobsTree) -> None:
    jobs_cli_tree.add("cycle", "steps: [{id: a, run: x, needs: a}]\n")
    result = run("validate", str(jobs_cli_tree.root))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        f"{jobs_cli_tree.root}/broken/config.yaml:2: unknown key 'timout' at the top level; "
        "did you mean 'timeout'?",
        f"{jobs_cli_tree.root}/cycle/config.yaml:1: steps form a cycle: a -> a; "
        "remove one of these 'needs'",
    ]
    # a secret with no minLength may be too short to be masked in log lines
    (warning,) = lines[2:]
    assert warning.startswith(f"{jobs_cli_tree.root}/backup/daily/config.yaml:")
    assert ": warning: secret argument /password may be shorter than 4 characters" in warning
    assert "4 job folders checked: 2 valid, 2 invalid; 1 warning" in result.stderr


def test_validate_json(jobs_cli_tree: JobsTree) -> None:
    result = run("validate", "--json", str(jobs_cli_tree.root))
    body = json.loads(result.stdout)
    assert body["valid"] == ["backup/daily", "hello"]
    (warned,) = body["warnings"]
    assert warned["id"] == "backup/daily"
    (warning,) = warned["diagnostics"]
    assert "secret argument /password" in warning["reason"]
    (bad,) = body["invalid"]
    assert bad["id"] == "broken"
    assert bad["diagnostics"][0]["line"] == 2


def test_validate_single_folder_and_relative_paths(
    jobs_cli_tree: JobsTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(jobs_cli_tree.root.parent)
    ok = run("validate", "jobs/hello")
    assert ok.exit_code == 0 and ok.stdout == ""
    bad = run("validate", "jobs/broken", "jobs/hello")
    assert bad.exit_code == 1
    assert bad.stdout.startswith("jobs/broken/config.yaml:2: ")
    default = run("validate")  # ./jobs
    assert default.exit_code == 1 and "jobs/broken/config.yaml:2" in default.stdout


def test_validate_missing_path(tmp_path: Path) -> None:
    result = run("validate", str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert "no such directory" in result.stderr


def test_validate_repository_examples() -> None:
    examples = Path(__file__).resolve().parents[2] / "jobs"
    result = run("validate", str(examples))
    assert result.exit_code == 0, result.stdout


def test_validate_warns_of_job_files_named_by_relative_paths(jobs_tree: JobsTree) -> None:
    script = {"myscript.sh": "echo hi\n", "main.py": "print(1)\n", "data.csv": "a\n"}
    jobs_tree.add("dot", "command: ./myscript.sh\n", script)
    jobs_tree.add("bare", "command: myscript.sh --fast\n", script)
    jobs_tree.add("python", "description: d\ncommand: python3 main.py\n", script)
    jobs_tree.add(
        "steps",
        "steps:\n  - id: a\n    run: bash myscript.sh && cat data.csv\n"
        "  - id: b\n    command: [python3, main.py]\n",
        script,
    )
    jobs_tree.add("right", 'command: python3 "$FLWD_JOB_DIR/main.py"\n', script)
    jobs_tree.add("scripted", "steps:\n  - script: main.py\n", script)
    jobs_tree.add("moved", 'command: cd "$FLWD_JOB_DIR" && ./myscript.sh\n', script)
    result = run("validate", str(jobs_tree.root))
    assert result.exit_code == 0, result.stdout  # warnings do not make a job invalid
    root = jobs_tree.root
    hint = "of the job folder, but steps run in $FLWD_RUN_DIR, where a relative path finds nothing"
    assert result.stdout.splitlines() == [
        f"{root}/bare/config.yaml:1: warning: 'myscript.sh' is a file {hint}; "
        'write "$FLWD_JOB_DIR/myscript.sh"',
        f"{root}/dot/config.yaml:1: warning: 'myscript.sh' is a file {hint}; "
        'write "$FLWD_JOB_DIR/myscript.sh"',
        f"{root}/python/config.yaml:2: warning: 'main.py' is a file {hint}; "
        'write "$FLWD_JOB_DIR/main.py"',
        f"{root}/steps/config.yaml:3: warning: 'myscript.sh', 'data.csv' are files {hint}; "
        'write "$FLWD_JOB_DIR/myscript.sh"',
        f"{root}/steps/config.yaml:5: warning: 'main.py' is a file {hint}; a list command "
        'has no shell to expand "$FLWD_JOB_DIR/main.py": use a command string, or a step '
        "with script: main.py",
    ]
    assert "7 job folders checked: 7 valid, 0 invalid; 5 warnings" in result.stderr
    body = json.loads(run("validate", "--json", str(jobs_tree.root)).stdout)
    assert [w["id"] for w in body["warnings"]] == ["bare", "dot", "python", "steps"]
    assert body["warnings"][0]["diagnostics"][0]["line"] == 1
