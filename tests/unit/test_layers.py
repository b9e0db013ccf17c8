"""Dependencies point one way: the storage knows nothing of events or the API, the engine
and the events know nothing of the API. Read from the source with `ast`, so an import
hidden inside a function (or under `TYPE_CHECKING`) counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import flwd

PACKAGE = Path(flwd.__file__).parent

#: layer -> the layers it must not import
FORBIDDEN = {
    "flwd.storage": ("flwd.events", "flwd.api", "flwd.engine"),
    "flwd.events": ("flwd.api", "flwd.engine"),
    "flwd.engine": ("flwd.api",),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _within(name: str, layer: str) -> bool:
    return name == layer or name.startswith(layer + ".")


def _violations() -> list[str]:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        for layer, forbidden in FORBIDDEN.items():
            if not _within(module, layer):
                continue
            for name in sorted(_imports(path)):
                wrong += [f"{module} imports {name}" for f in forbidden if _within(name, f)]
    return wrong


def test_layers_import_only_downwards() -> None:
    assert _violations() == []


def test_the_walk_finds_imports() -> None:
    # the check is only worth something if it sees imports: flwd.engine imports events
    imports = _imports(PACKAGE / "engine" / "service.py")
    assert "flwd.events.journal" in imports
    assert any(_within(name, "flwd.storage") for name in imports)


def test_the_events_layer_leaves_sql_to_the_storage() -> None:
    """The journal reads and writes the store through `flwd.storage.events`: no SQL text
    and no query call of the store in `flwd.events`."""
    sql = ("SELECT ", "INSERT ", "UPDATE ", "DELETE ")
    found = []
    for path in sorted((PACKAGE / "events").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if node.value.lstrip().startswith(sql):  # SQL is written in capitals here
                    found.append(f"{path.name}: SQL {node.value[:40]!r}")
            elif isinstance(node, ast.Attribute) and node.attr in (
                "fetchall",
                "fetchone",
                "reader",
            ):
                found.append(f"{path.name}: .{node.attr}")
    assert found == []
