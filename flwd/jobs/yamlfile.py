"""Read `config.yaml` safely and find the line of a value, only when a diagnostic needs it.

Loading uses PyYAML's C loader (about 10x faster than the pure-Python one) into plain
data. Line numbers are not kept on the fast path: when a problem is found, the file is
composed again into a node tree and the problem's key path is walked to its line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: Larger configs are refused: a job definition is a few kilobytes, and the limit keeps a
#: stray data file named config.yaml from stalling the scanner.
MAX_CONFIG_BYTES = 1024 * 1024
#: Bound on values reachable from the document, so YAML aliases cannot expand into a
#: "billion laughs" when the data is later serialised.
MAX_NODES = 100_000

KeyPath = Sequence[str | int]


class ConfigUnreadable(Exception):
    """config.yaml cannot be turned into data; `line` is 1-based when known."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


def decode_config(data: bytes) -> str:
    """UTF-8 text of the file (a BOM is allowed), or `ConfigUnreadable` with the line."""
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigUnreadable(f"config.yaml is larger than {MAX_CONFIG_BYTES} bytes")
    if b"\0" in data:
        line = data[: data.index(b"\0")].count(b"\n") + 1
        raise ConfigUnreadable("config.yaml is a binary file, not YAML text", line)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigUnreadable("config.yaml is not UTF-8 text", line) from exc


def parse_config(text: str) -> Any:
    """The YAML document as plain data; `ConfigUnreadable` with the line on a syntax error."""
    try:
        data = yaml.load(text, Loader=_Loader)  # a safe loader: plain data only
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigUnreadable(f"invalid YAML: {problem}", mark.line + 1 if mark else None) from exc
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise ConfigUnreadable(f"invalid YAML: {exc}") from exc
    _check_size(data)
    return data


def _check_size(data: Any) -> None:
    """Refuse documents with too many values or an alias cycle (`&a [*a]`)."""
    budget = MAX_NODES
    stack: list[tuple[Any, frozenset[int]]] = [(data, frozenset())]
    while stack:
        node, ancestors = stack.pop()
        budget -= 1
        if budget < 0:
            raise ConfigUnreadable(f"config.yaml holds more than {MAX_NODES} values")
        if isinstance(node, dict | list):
            if id(node) in ancestors:
                raise ConfigUnreadable("config.yaml contains a YAML alias that refers to itself")
            inner = ancestors | {id(node)}
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, inner) for child in children)


def line_of(text: str, path: KeyPath) -> int | None:
    """1-based line of the value at `path` (dict keys and list indexes) in `text`; the line
    of the deepest part of the path that exists, None when the text does not compose."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except (yaml.YAMLError, ValueError, RecursionError):
        return None
    if node is None:
        return None
    line: int = node.start_mark.line + 1
    for part in path:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if getattr(key_node, "value", None) == str(part):
                    child = value_node
                    # A missing or wrong value is best shown on its key's line.
                    line = key_node.start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line
