"""Build the plugin manager: hook specs, built-in plugins, then installed extensions."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

import pluggy

from flwd import hookspecs

#: Built-in behaviour, registered exactly like an extension so one can replace it.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "flwd.commands.jobs",
    "flwd.commands.plugins",
    "flwd.commands.prune",
    "flwd.commands.runs",
    "flwd.commands.serve",
    "flwd.jobs.fs_source",
)

ENTRY_POINT_GROUP = "flwd"


def make_plugin_manager(
    *, load_entrypoints: bool = True, extra: Iterable[object] = ()
) -> pluggy.PluginManager:
    """A fresh manager with every built-in plugin and, unless disabled, every installed
    extension of the `flwd` entry-point group. Unknown hook names fail here, at start-up."""
    pm = pluggy.PluginManager("flwd")
    pm.add_hookspecs(hookspecs)
    for name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    if load_entrypoints:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in extra:
        pm.register(plugin)
    pm.check_pending()
    return pm


def extension_names(pm: pluggy.PluginManager) -> list[str]:
    """Names of installed extensions (plugins that are not built in), sorted."""
    names = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None or name in BUILTIN_PLUGINS:
            continue
        names.append(name)
    return sorted(names)
