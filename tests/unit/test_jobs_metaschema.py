"""The fast meta-schema check agrees with jsonschema's, and parallel loading with serial."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from flwd.jobs import metaschema
from flwd.jobs.metaschema import check_schema

OFFICIAL = Draft202012Validator(
    Draft202012Validator.META_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER
)

CASES: list[Any] = [
    {},
    True,
    {"type": "object", "properties": {"a": {"type": "string", "default": "x"}}},
    {"type": ["string", "null"]},
    {"type": ["string", "string"]},
    {"type": "strin"},
    {"type": 1},
    {"required": ["a", "a"]},
    {"required": "a"},
    {"minimum": True},
    {"minimum": "1"},
    {"minLength": -1},
    {"minLength": 1.0},
    {"minLength": 1.5},
    {"pattern": "("},
    {"patternProperties": {"(": {}}},
    {"items": [{"type": "string"}]},
    {"prefixItems": []},
    {"enum": []},
    {"allOf": []},
    {"$ref": 5},
    {"$defs": {"a": 1}},
    {"properties": {"a": 1}},
    {"dependencies": {"a": ["b", "b"]}},
    {"$anchor": "1bad"},
    {"format": 5},
    {"unevaluatedProperties": {"type": "nope"}},
    {"if": {"const": 1}, "then": False, "else": {"not": {}}},
    {"contentSchema": {"type": "wrong"}},
]


def official_valid(schema: Any) -> bool:
    return not any(True for _ in OFFICIAL.iter_errors(schema))


@pytest.mark.parametrize("schema", CASES, ids=[repr(c)[:40] for c in CASES])
def test_verdict_matches_jsonschema(schema: Any) -> None:
    metaschema._cache.clear()
    assert (check_schema(schema) == ()) == official_valid(schema)


KEYWORDS = [
    "type",
    "properties",
    "required",
    "items",
    "minimum",
    "enum",
    "pattern",
    "minLength",
    "allOf",
    "additionalProperties",
    "default",
    "$ref",
    "format",
    "uniqueItems",
    "const",
    "not",
    "prefixItems",
    "dependentRequired",
]
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(-2, 2)
    | st.sampled_from(["string", "object", "a", "(", "integer", "#", "email"])
)
schemas = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from([*KEYWORDS, "a", "b"]), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(schemas)
def test_fast_path_never_accepts_what_jsonschema_rejects(schema: Any) -> None:
    metaschema._cache.clear()
    assert (check_schema(schema) == ()) == official_valid(schema)


def test_results_are_cached() -> None:
    metaschema._cache.clear()
    schema = {"type": "strin"}
    first = check_schema(schema)
    assert first and check_schema({"type": "strin"}) is first


def test_parallel_loading_matches_serial(tmp_path: Path) -> None:
    # In a fresh interpreter: parallel loading only forks from a single-threaded process.
    script = textwrap.dedent(
        f"""
        import threading
        from pathlib import Path
        from flwd.jobs import parallel, scanner
        root = Path({str(tmp_path)!r})
        for i in range(60):
            folder = root / f"ns{{i % 3}}" / f"job{{i}}"
            folder.mkdir(parents=True)
            good = f"description: d{{i}}\\ncommand: echo {{i}}\\n"
            body = "command: [\\n" if i % 7 == 0 else good
            (folder / "config.yaml").write_text(body)
        parallel.PARALLEL_THRESHOLD = 10
        calls = []
        original = parallel.load_in_parallel
        def spy(*args):
            result = original(*args)
            calls.append(result is not None)
            return result
        scanner.load_in_parallel = spy
        fast = scanner.FolderScanner("s", root).scan()
        parallel.PARALLEL_THRESHOLD = 10**9
        slow = scanner.FolderScanner("s", root).scan()
        assert calls == [True, False], calls
        assert fast == slow, "parallel and serial scans differ"
        assert len(fast.jobs) == 51 and len(fast.invalid) == 9
        print("ok", threading.active_count())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")
