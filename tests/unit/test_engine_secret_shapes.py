"""Secrets of generated shapes (hypothesis): strings of varied characters, numbers, arrays
and nested objects, declared directly, through `$ref`, `allOf` and array `items`. A real
job prints each of them in every form it can (the environment variable, the arguments
file, JSON spaced and compact, with and without `\\u` escapes, each element) and returns
them as its result; then the whole data dir (database, WAL and all), every event, every
structure the engine answers with and every log record are searched for each secret
form of 4 characters or more."""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from flwd.engine.service import RunService
from flwd.states import RunStatus
from tests.unit.engine_support import EngineWorld, run_job

ARGS = {
    "type": "object",
    "$defs": {"secret": {"format": "secret"}},
    "properties": {
        "s": {"$ref": "#/$defs/secret"},
        "creds": {
            "type": "object",
            "properties": {
                "user": {"type": "string"},
                "token": {"allOf": [{"writeOnly": True}]},
            },
        },
        "tokens": {"type": "array", "items": {"format": "secret"}},
        "label": {"type": "string"},
    },
}

#: prints every secret in every form, on both streams, and returns them all as its result
LEAK_PY = r"""
import json, os, sys
args = json.load(open(os.environ["FLWD_ARGS_FILE"]))
secrets = [args.get("s"), args.get("creds", {}).get("token"), args.get("tokens")]

def scalars(v):
    if isinstance(v, dict):
        for x in v.values():
            yield from scalars(x)
    elif isinstance(v, list):
        for x in v:
            yield from scalars(x)
    else:
        yield v

for out in (sys.stdout, sys.stderr):
    for name, value in sorted(os.environ.items()):
        if name.startswith("FLWD_ARG_"):
            print(f"{name}={value}", file=out)
    for v in secrets:
        print("spaced", json.dumps(v), file=out)
        print("compact", json.dumps(v, separators=(",", ":")), file=out)
        print("utf8", json.dumps(v, ensure_ascii=False), file=out)
        for x in scalars(v):
            print("each", x, json.dumps(x), json.dumps(x, ensure_ascii=False), file=out)
json.dump({"args": args, "secrets": secrets, "each": [list(scalars(v)) for v in secrets],
           "text": "value=" + json.dumps(secrets)},
          open(os.environ["FLWD_RESULT_FILE"], "w"))
"""

LEAK_SH = """\
#!/bin/bash
echo "s=$FLWD_ARG_S"
echo "tokens=$FLWD_ARG_TOKENS" >&2
echo "creds=$FLWD_ARG_CREDS"
cat "$FLWD_ARGS_FILE"; echo
"""

#: varied characters (quotes, backslashes, `$`, spaces, non-ASCII) but no control
#: characters or surrogates, and no `*`: a secret made of the mask's own stars could
#: reappear next to a mask
_CHARS = st.characters(
    blacklist_categories=("Cc", "Cs"), blacklist_characters="*"
) | st.sampled_from("\"\\$`' é中🙂")
#: a long secret string: a distinctive tail makes an accidental match in flwd's own
#: data (timestamps, ids, words) impossible, while the head varies freely
LONG_TEXT = st.builds(
    lambda head, n: f"{head}Zq{n}", st.text(_CHARS, max_size=12), st.integers(1000, 9999)
)
SHORT_TEXT = st.text(_CHARS, min_size=1, max_size=3)
NUMBER = (
    st.integers(10**9, 10**15)
    | st.integers(-(10**15), -(10**9))
    | st.integers(10**9, 10**12).map(lambda n: n + 0.25)
)
SCALAR = LONG_TEXT | NUMBER | SHORT_TEXT
SHAPE = st.recursive(
    SCALAR,
    lambda inner: (
        st.lists(inner, min_size=1, max_size=3)
        | st.dictionaries(st.text(_CHARS, min_size=1, max_size=6), inner, min_size=1, max_size=3)
    ),
    max_leaves=6,
)


def _scalars(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _scalars(v)]
    if isinstance(value, list):
        return [x for v in value for x in _scalars(v)]
    return [value]


def needles(value: Any) -> set[bytes]:
    """Every form of 4 characters or more in which this secret value must never appear."""
    forms: set[str] = set()
    for scalar in _scalars(value):
        text = scalar if isinstance(scalar, str) else json.dumps(scalar)
        forms |= {text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]}
    if isinstance(value, list | dict):
        for ascii_only in (True, False):
            for separators in ((", ", ": "), (",", ":")):
                forms.add(json.dumps(value, ensure_ascii=ascii_only, separators=separators))
        forms.add(msgspec.json.encode(value).decode())
    return {form.encode() for form in forms if len(form) >= 4}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(logging.Formatter().format(record))


async def _everything(service: RunService, run_id: str) -> bytes:
    parts: list[object] = [
        await service.get_run(run_id),
        await service.list_steps(run_id),
        await service.read_logs(run_id),
        (await service.list_runs())[0],
        (await service.list_artifacts())[0],
        [e async for e in service.follow(since=0, run_id=run_id, until_terminal=True)],
        await service.journal.read(since=0, limit=1_000_000),
    ]
    return msgspec.json.encode(parts)


async def _scenario(root: Path, args: dict[str, Any]) -> None:
    world = EngineWorld(root)
    world.job(
        "leaky",
        {
            "args": ARGS,
            "steps": [
                {"id": "sh", "script": "leak.sh"},
                {"id": "py", "script": "leak.py", "needs": "sh"},
            ],
        },
        {"leak.sh": LEAK_SH, "leak.py": LEAK_PY},
    )
    secrets = [args["s"], args["creds"]["token"], args["tokens"]]
    wanted = set().union(*(needles(s) for s in secrets))
    records = _Records()
    logging.getLogger().addHandler(records)
    try:
        async with world.open() as service:
            run = await run_job(service, "leaky", args)
            assert run.status is RunStatus.SUCCESS, run.error
            assert run.args == {
                "s": "***",
                "creds": {"user": "visible-user", "token": "***"},
                "tokens": "***",
                "label": "visible-label",
            }
            # the job did print and return them: masked, not dropped
            assert run.result is not None
            assert run.result.value["args"]["creds"] == {"user": "visible-user", "token": "***"}
            logs = "\n".join(line.message for line in await service.read_logs(run.run_id))
            assert "visible-user" in logs and "***" in logs
            seen = await _everything(service, run.run_id)
            assert [n for n in wanted if n in seen] == []
            stored = b"".join(p.read_bytes() for p in world.data_files())
            assert [n for n in wanted if n in stored] == []  # WAL included, engine open
        stored = b"".join(p.read_bytes() + str(p).encode() for p in world.data_files())
        assert [n for n in wanted if n in stored] == []
        logged = "\n".join(records.lines).encode()
        assert [n for n in wanted if n in logged] == []
    finally:
        logging.getLogger().removeHandler(records)
        left = world.kill_leftovers()
        assert not left, f"job processes survived: {left}"


@settings(
    max_examples=15,
    deadline=None,
    # each example runs a real engine and real processes: shrinking a failure would take
    # many minutes, so the failing example is reported as generated
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(s=SHAPE, token=SCALAR, tokens=st.lists(SCALAR, min_size=1, max_size=4))
def test_no_secret_of_any_shape_is_ever_found_again(s: Any, token: Any, tokens: list[Any]) -> None:
    args = {
        "s": s,
        "creds": {"user": "visible-user", "token": token},
        "tokens": tokens,
        "label": "visible-label",
    }
    with tempfile.TemporaryDirectory(prefix="flwd-shapes-") as root:
        asyncio.run(_scenario(Path(root), args))


def test_the_needles_cover_the_forms_a_job_prints() -> None:
    # guards the test itself: escaped, compact, spaced and environment forms are searched
    found = needles(["tokA-111", {"k": "é-secret"}])
    assert b"tokA-111" in found and "é-secret".encode() in found
    assert b"\\u00e9-secret" in found
    assert b'["tokA-111", {"k": "\\u00e9-secret"}]' in found
    assert '["tokA-111",{"k":"é-secret"}]'.encode() in found
