"""Secret arguments, adversarially: a job does its best to leak them, then every byte of the
data dir, every event and every API-visible structure is searched for them."""

from __future__ import annotations

import json

import msgspec
import pytest

from flwd.engine.service import RunService
from flwd.errors import ArgumentsInvalid
from flwd.states import FailureReason, RunStatus
from tests.unit.engine_support import EngineWorld, run_job

pytest_plugins = ["tests.unit.conftest_engine"]

TOKEN = "S3cr3t-Zq9-VALUE"
PASSWORD = 'Qu"ote\\Back-777'  # changes when JSON-escaped: both forms must stay out

ARGS_SCHEMA = {
    "type": "object",
    "properties": {
        "token": {"type": "string", "format": "secret"},
        "password": {"type": "string", "writeOnly": True},
        "label": {"type": "string"},
    },
    "required": ["token"],
}

LEAKER = """\
#!/bin/bash
T="$FLWD_ARG_TOKEN"
echo "stdout: token is $T"
echo "stderr: token is $T" >&2
# one secret split across two writes, on each stream
printf '%s' "${T:0:3}"; sleep 0.1; printf '%s\\n' "${T:3}"
printf '%s' "${T:0:7}" >&2; sleep 0.1; printf '%s\\n' "${T:7}" >&2
# a line long enough to be cut right in the middle of the secret
printf 'x%.0s' $(seq 92); printf '%s\\n' "$T"
echo "password=$FLWD_ARG_PASSWORD"
cat "$FLWD_ARGS_FILE"; echo
# inside JSON, as a value, in a list and as a key
python3 - <<'EOF'
import json, os
t, p = os.environ["FLWD_ARG_TOKEN"], os.environ["FLWD_ARG_PASSWORD"]
json.dump({"token": t, "nested": {"list": [t, p]}, t: p, "note": "token=" + t},
          open(os.environ["FLWD_RESULT_FILE"], "w"))
EOF
# in artifact names (a file and a directory)
echo "harmless" > "$FLWD_ARTIFACTS_DIR/report-$T.txt"
mkdir -p "$FLWD_ARTIFACTS_DIR/dir-$T"
echo "harmless too" > "$FLWD_ARTIFACTS_DIR/dir-$T/inner.txt"
"""

#: A failing step (a failed step's result file is not collected, so this is separate).
FAILER = """\
#!/bin/bash
echo "fatal: the token $FLWD_ARG_TOKEN was rejected" >&2
exit 3
"""

BAD_RESULT = """\
#!/bin/bash
printf '{"count": "%s"}' "$FLWD_ARG_TOKEN" > "$FLWD_RESULT_FILE"
"""


def forms(secret: str) -> list[bytes]:
    """The secret as bytes, raw and JSON-escaped."""
    return sorted({secret.encode(), json.dumps(secret)[1:-1].encode()})


SECRET_FORMS = forms(TOKEN) + forms(PASSWORD)


def leaks(blob: bytes) -> list[bytes]:
    return [form for form in SECRET_FORMS if form in blob]


async def _visible(service: RunService, run_ids: list[str]) -> bytes:
    """Everything a client of the engine can see about these runs, encoded as JSON."""
    parts: list[object] = [(await service.list_runs())[0], (await service.list_artifacts())[0]]
    for run_id in run_ids:
        parts.append(await service.get_run(run_id))
        parts.append(await service.list_steps(run_id))
        parts.append(await service.read_logs(run_id))
        parts.append([e async for e in service.follow(since=0, run_id=run_id, until_terminal=True)])
    parts.append(await service.journal.read(since=0, limit=1_000_000))
    return msgspec.json.encode(parts)


def _grep_data_dir(world: EngineWorld) -> dict[str, list[bytes]]:
    found = {}
    for path in world.data_files():
        hits = leaks(path.read_bytes())
        # a file name is data too
        hits += leaks(str(path.relative_to(world.data_dir)).encode())
        if hits:
            found[str(path)] = hits
    return found


async def test_secrets_never_reach_storage_events_or_responses(
    engine_world: EngineWorld,
) -> None:
    engine_world.job(
        "leaker",
        {
            "args": ARGS_SCHEMA,
            "steps": [
                {"id": "leak", "script": "leak.sh"},
                {"id": "fail", "script": "fail.sh", "needs": "leak"},
            ],
        },
        {"leak.sh": LEAKER, "fail.sh": FAILER},
    )
    engine_world.job(
        "bad-result",
        {
            "args": ARGS_SCHEMA,
            "result_schema": {
                "type": "object",
                "properties": {"count": {"type": "integer"}},
            },
            "steps": [{"id": "main", "script": "bad.sh"}],
        },
        {"bad.sh": BAD_RESULT},
    )
    args = {"token": TOKEN, "password": PASSWORD, "label": "visible"}
    async with engine_world.open(line_limit=100) as service:
        leaked = await run_job(service, "leaker", args)
        schema = await run_job(service, "bad-result", args)
        restarted = await run_job(service, "leaker", {**args, "label": "again"})

        # the job really did try: every attempt shows up masked
        assert leaked.status is RunStatus.FAILED and leaked.exit_code == 3
        assert leaked.args == {"token": "***", "password": "***", "label": "visible"}
        messages = [x.message for x in await service.read_logs(leaked.run_id)]
        assert "stdout: token is ***" in messages
        assert "stderr: token is ***" in messages
        assert messages.count("***") == 2  # the two split writes
        assert any(m.startswith("x" * 92) and "***" in m for m in messages)
        assert "password=***" in messages
        assert "fatal: the token *** was rejected" in messages
        assert leaked.result is not None
        assert leaked.result.value == {
            "token": "***",
            "nested": {"list": ["***", "***"]},
            "***": "***",
            "note": "token=***",
        }
        artifacts, _ = await service.list_artifacts(run_id=leaked.run_id)
        assert {a.path for a in artifacts} == {"report-***.txt", "dir-***/inner.txt"}

        assert schema.status is RunStatus.FAILED and schema.reason is FailureReason.ERROR
        assert "result does not match result_schema" in (schema.error or "")

        run_ids = [leaked.run_id, schema.run_id, restarted.run_id]
        assert leaks(await _visible(service, run_ids)) == []
        # while the engine is open (WAL and shared memory present)
        assert _grep_data_dir(engine_world) == {}

    assert _grep_data_dir(engine_world) == {}
    # positive control: the grep does read what was stored (masked lines, plain args)
    stored = b"".join(path.read_bytes() for path in engine_world.data_files())
    assert b"stdout: token is ***" in stored and b"visible" in stored
    # and nothing was left behind in a work directory either
    assert not any((engine_world.data_dir / "work").iterdir())


async def test_an_invalid_secret_is_not_echoed_in_the_validation_error(
    engine_world: EngineWorld,
) -> None:
    schema = {
        "type": "object",
        "properties": {"token": {"type": "string", "format": "secret", "pattern": "^tok_"}},
    }
    engine_world.job("strict", {"args": schema, "command": "true"})
    async with engine_world.open() as service:
        with pytest.raises(ArgumentsInvalid) as caught:
            await service.create_run("strict", {"token": TOKEN})
    text = str(caught.value) + json.dumps([(e.path, e.message) for e in caught.value.errors])
    assert [e.path for e in caught.value.errors] == ["/token"]
    assert leaks(text.encode()) == []
    assert _grep_data_dir(engine_world) == {}


async def test_restart_needs_the_secret_again(engine_world: EngineWorld) -> None:
    engine_world.job(
        "needs-token",
        {"args": ARGS_SCHEMA, "command": 'test -n "$FLWD_ARG_TOKEN"'},
    )
    async with engine_world.open() as service:
        first = await run_job(service, "needs-token", {"token": TOKEN})
        assert first.status is RunStatus.SUCCESS
        # the stored run only knows "***": restarting without the secret must not run
        # the job with "***" as the token
        with pytest.raises(ArgumentsInvalid):
            await service.restart_run(first.run_id)
        again = await run_job(service, "needs-token", {"token": TOKEN})
        second = await service.restart_run(again.run_id, args={"token": TOKEN})
        assert second.args["token"] == "***"


def test_the_needles_include_the_json_escaped_form() -> None:
    # guards the test itself: PASSWORD changes when JSON-escaped, so both are searched
    assert len(forms(PASSWORD)) == 2


async def test_a_schema_level_error_does_not_quote_the_secret(engine_world: EngineWorld) -> None:
    schema = {
        "type": "object",
        "properties": {"token": {"type": "string", "format": "secret"}, "a": {}, "b": {}},
        "anyOf": [{"required": ["a"]}, {"required": ["b"]}],
    }
    engine_world.job("either", {"args": schema, "command": "true"})
    async with engine_world.open() as service:
        with pytest.raises(ArgumentsInvalid) as caught:
            await service.create_run("either", {"token": TOKEN})
    text = str(caught.value) + json.dumps([(e.path, e.message) for e in caught.value.errors])
    assert leaks(text.encode()) == []
