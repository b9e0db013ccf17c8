"""Build a job's `StepSpec`s from its written config: one `command`, a `steps` list (a DAG
ordered by `needs`), or numbered scripts run one after the other.

Precedence between job and step settings: a step's `env` is the job's `env` with the
step's entries on top; a step's `retries` replaces the job's; a step's `timeout` bounds
one attempt of that step while the job's `timeout` bounds the whole run; a step's
`interpreter` replaces the job's.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from flwd.jobs.folder import env_strings, parse_timeout
from flwd.jobs.steps import (
    SHELL,
    STEP_ID,
    StepProblem,
    command_argv,
    find_cycle,
    interpreter_argv,
    job_dir_hint,
    job_files_named,
    numbered_scripts,
    resolve_script,
    step_id_from_file,
)
from flwd.models import StepSpec

if TYPE_CHECKING:
    from flwd.jobs.config import RawConfig, RawStep
    from flwd.jobs.folder import JobFolder, Problems

MAIN_STEP = "main"


def build_steps(
    folder: JobFolder, raw: RawConfig, env: dict[str, str], problems: Problems
) -> tuple[StepSpec, ...] | None:
    """The job's steps, or None after reporting why they cannot be built."""
    if raw.command is not None and raw.steps is not None:
        problems.config(("steps",), "use either 'command' or 'steps', not both")
        return None
    if raw.command is not None:
        try:
            argv = command_argv(raw.command)
        except StepProblem as exc:
            problems.config(("command",), str(exc))
            return None
        _warn_of_job_files(folder, argv, ("command",), problems)
        return (StepSpec(id=MAIN_STEP, argv=tuple(argv), env=env, retries=raw.retries),)
    if raw.steps is not None:
        return _declared_steps(folder, raw, env, problems)
    return _numbered_steps(folder, raw, env, problems)


def _declared_steps(
    folder: JobFolder, raw: RawConfig, env: dict[str, str], problems: Problems
) -> tuple[StepSpec, ...] | None:
    if not raw.steps:
        problems.config(("steps",), "steps is empty; list at least one step")
        return None
    built: list[StepSpec] = []
    seen: dict[str, int] = {}
    for index, step in enumerate(raw.steps):
        spec = _declared_step(folder, raw, step, index, env, problems)
        if spec is None:
            continue
        if spec.id in seen:
            problems.config(
                ("steps", index, "id"),
                f"steps[{index}]: step id '{spec.id}' is already used by steps[{seen[spec.id]}]",
            )
            continue
        seen[spec.id] = index
        built.append(spec)
    graph = {spec.id: spec.needs for spec in built}
    for spec in built:
        for need in spec.needs:
            if need not in graph and need not in _failed_ids(raw):
                problems.config(
                    ("steps", seen[spec.id], "needs"),
                    f"step '{spec.id}' needs '{need}', which is not a step of this job "
                    f"(steps: {', '.join(graph)})",
                )
    cycle = find_cycle(graph)
    if cycle:
        problems.config(
            ("steps", seen[cycle[0]], "needs"),
            f"steps form a cycle: {' -> '.join(cycle)}; remove one of these 'needs'",
        )
    return tuple(built)


def _warn_of_job_files(
    folder: JobFolder, argv: list[str], at: tuple[str | int, ...], problems: Problems
) -> None:
    """A command naming files of the job folder by relative paths fails where it runs
    (`$FLWD_RUN_DIR`): a warning, since the step may create such a file itself first."""
    names = job_files_named(argv, folder.path, folder.plain_files)
    if names:
        problems.warn(at, job_dir_hint(names, shell=argv[:2] == list(SHELL)))


def _failed_ids(raw: RawConfig) -> set[str]:
    """Ids written on steps that failed to build: already reported, not 'unknown'."""
    return {step.id for step in raw.steps or () if step.id}


def _declared_step(
    folder: JobFolder,
    raw: RawConfig,
    step: RawStep,
    index: int,
    env: dict[str, str],
    problems: Problems,
) -> StepSpec | None:
    at = ("steps", index)
    ways = [key for key in ("run", "command", "script") if getattr(step, key) is not None]
    if len(ways) != 1:
        reason = "says nothing to run" if not ways else f"has both {' and '.join(ways)}"
        problems.config(at, f"steps[{index}] {reason}; give exactly one of run, command, script")
        return None
    step_id = step.id or (step_id_from_file(step.script) if step.script else f"step-{index + 1}")
    if not STEP_ID.match(step_id):
        problems.config(
            (*at, "id"),
            f"steps[{index}]: id '{step_id}' must start with a letter or digit and use only "
            "letters, digits, '_', '.' and '-'",
        )
        return None
    try:
        if step.script is not None:
            script = resolve_script(folder.path, step.script, folder.plain_files)
            argv = interpreter_argv(script, step.interpreter or raw.interpreter)
        else:
            argv = command_argv(step.run if step.run is not None else step.command or "")
            _warn_of_job_files(folder, argv, (*at, ways[0]), problems)
    except StepProblem as exc:
        problems.config((*at, ways[0]), f"steps[{index}] ('{step_id}'): {exc}")
        return None
    timeout = parse_timeout(step.timeout, (*at, "timeout"), problems)
    needs = (step.needs,) if isinstance(step.needs, str) else tuple(step.needs)
    return StepSpec(
        id=step_id,
        argv=tuple(argv),
        needs=needs,
        timeout=timeout,
        env={**env, **env_strings(step.env)},
        retries=raw.retries if step.retries is None else step.retries,
        script=step.script,
    )


def _numbered_steps(
    folder: JobFolder, raw: RawConfig, env: dict[str, str], problems: Problems
) -> tuple[StepSpec, ...] | None:
    names = numbered_scripts(folder.file_names)
    if not names:
        problems.config(
            (),
            "nothing to run: add 'command', a 'steps' list, or numbered scripts such as "
            "000_main.sh next to config.yaml",
        )
        return None
    built: list[StepSpec] = []
    previous: dict[str, str] = {}
    for name in names:
        step_id = step_id_from_file(name)
        if step_id in previous:
            problems.file(
                os.path.join(folder.path, name),
                f"numbered script '{name}' gives step id '{step_id}', like '{previous[step_id]}'",
            )
            continue
        previous[step_id] = name
        try:
            argv = interpreter_argv(os.path.join(folder.path, name), raw.interpreter)
        except StepProblem as exc:
            problems.file(os.path.join(folder.path, name), str(exc))
            continue
        needs = (built[-1].id,) if built else ()
        built.append(
            StepSpec(
                id=step_id,
                argv=tuple(argv),
                needs=needs,
                env=env,
                retries=raw.retries,
                script=name,
            )
        )
    return tuple(built)
