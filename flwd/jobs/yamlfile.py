"""Read `config.yaml` safely and find the line of a value, only when a diagnostic needs it.

Loading uses PyYAML's C loader (about 10x faster than the pure-Python one) into plain
data. Line numbers are not kept on the fast path: when a problem is found, the file is
composed again into a node tree and the problem's key path is walked to its line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import yaml

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"

_BaseLoader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc]
    """The C safe loader with a leaner tag resolver.

    The C parser calls back into Python for every node to resolve its tag; PyYAML's
    generic resolver also handles path resolvers, which the safe loader never has. This
    one gives the same tags (same regular expressions) in about two thirds of the time.
    """

    _implicit = _BaseLoader.yaml_implicit_resolvers

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode:
            if implicit[0]:
                for tag, regexp in self._implicit.get(value[:1], ()):
                    if regexp.match(value):
                        return str(tag)
            return _STR
        return _SEQ if kind is yaml.SequenceNode else _MAP

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None


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
    """The YAML document as plain JSON-like data; `ConfigUnreadable` (with the line where
    known) for a syntax error, a tag that has no JSON equivalent, or an alias bomb."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        return None if node is None else _Builder(loader).build(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigUnreadable(f"invalid YAML: {problem}", mark.line + 1 if mark else None) from exc
    except (yaml.YAMLError, ValueError, TypeError, RecursionError) as exc:
        raise ConfigUnreadable(f"invalid YAML: {exc}") from exc
    finally:
        loader.dispose()


_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_SCALARS = frozenset(f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float"))


class _Builder:
    """Builds plain data from the composed node tree.

    PyYAML's C loader parses in C but constructs objects in generic Python; this builder
    handles the only tags a job config needs directly (about twice as fast), keeps dates
    as the text written (a config has no use for `datetime`), refuses tags JSON cannot
    represent, and bounds the *expanded* size so aliases cannot blow up later."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.constructors = loader.yaml_constructors
        self.built: dict[int, tuple[Any, int]] = {}  # node id -> (value, expanded size)
        self.active: set[int] = set()

    def build(self, node: Any) -> Any:
        value, size = self._build(node)
        if size > MAX_NODES:
            raise ConfigUnreadable(f"config.yaml expands to more than {MAX_NODES} values")
        return value

    def _build(self, node: Any) -> tuple[Any, int]:
        tag = node.tag
        if node.__class__ is yaml.ScalarNode:
            if tag in (_STR, _TIMESTAMP):
                return node.value, 1
            if tag in _SCALARS:
                value = self.constructors[tag](self.loader, node)
                if isinstance(value, float) and not math.isfinite(value):
                    raise self._error(node, "is not a finite number (JSON has no NaN or infinity)")
                return value, 1
            raise self._error(node, f"uses the tag {tag}, which has no JSON equivalent")
        key = id(node)
        done = self.built.get(key)
        if done is not None:  # an alias: shared value, but it counts every time it is used
            return done
        if key in self.active:
            raise self._error(node, "is a YAML alias that contains itself")
        self.active.add(key)
        try:
            if tag == _SEQ:
                items = [self._build(child) for child in node.value]
                result: tuple[Any, int] = ([v for v, _ in items], 1 + sum(n for _, n in items))
            elif tag == _MAP:
                result = self._mapping(node)
            else:
                raise self._error(node, f"uses the tag {tag}, which has no JSON equivalent")
        finally:
            self.active.discard(key)
        if result[1] > MAX_NODES:
            raise ConfigUnreadable(f"config.yaml expands to more than {MAX_NODES} values")
        self.built[key] = result
        return result

    def _mapping(self, node: Any) -> tuple[dict[Any, Any], int]:
        mapping: dict[Any, Any] = {}
        size = 1
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise self._error(key_node, "uses a '<<' merge key; write the keys out instead")
            key, key_size = self._build(key_node)
            if isinstance(key, list | dict):
                raise self._error(key_node, "uses a list or mapping as a key")
            value, value_size = self._build(value_node)
            mapping[key] = value
            size += key_size + value_size
        return mapping, size

    @staticmethod
    def _error(node: Any, reason: str) -> ConfigUnreadable:
        return ConfigUnreadable(f"the value here {reason}", node.start_mark.line + 1)


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
