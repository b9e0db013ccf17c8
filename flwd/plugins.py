"""Build the plugin manager: hook specs, built-in plugins, then installed extensions.

One manager per process: `flwd.cli.main` builds it once (honouring
`--disable-extension` / `FLWD_DISABLE_EXTENSIONS` and the `FLWD_PLUGINS` testing aid)
and every command, the server and the engine use that one (`plugin_manager()`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from collections.abc import Iterable

import click
import pluggy

from flwd import hookspecs

log = logging.getLogger(__name__)

#: Built-in behaviour, registered exactly like an extension so one can replace it.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "flwd.commands.jobs",
    "flwd.commands.plugins",
    "flwd.commands.prune",
    "flwd.commands.runs",
    "flwd.commands.serve",
    "flwd.jobs.fs_source",
    "flwd.defaults",
)

ENTRY_POINT_GROUP = "flwd"
#: Extensions (entry-point names) not to load, comma-separated.
DISABLE_ENV = "FLWD_DISABLE_EXTENSIONS"
#: Extra plugin modules to register by import path, comma-separated (for tests and for
#: trying a plugin without packaging it; see docs/plugins.md).
PLUGINS_ENV = "FLWD_PLUGINS"


def installed_extensions() -> list[str]:
    """Names of the installed extensions (entry points of the `flwd` group), sorted."""
    return sorted({ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)})


def make_plugin_manager(
    *,
    load_entrypoints: bool = True,
    extra: Iterable[object] = (),
    disabled: Iterable[str] = (),
    modules: Iterable[str] = (),
) -> pluggy.PluginManager:
    """A fresh manager with every built-in plugin, every installed extension of the `flwd`
    entry-point group except the `disabled` ones (blocked, so they are listed as such),
    the plugin `modules` named by import path and the `extra` plugin objects. Unknown
    hook names fail here, at start-up."""
    pm = pluggy.PluginManager("flwd")
    pm.add_hookspecs(hookspecs)
    for name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    for name in disabled:
        pm.set_blocked(name)
    if load_entrypoints:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for module in modules:
        pm.register(importlib.import_module(module), name=module)
    for plugin in extra:
        pm.register(plugin)
    pm.check_pending()
    return pm


def names_from(value: str | None) -> list[str]:
    """A comma-separated list (an environment variable) as names, blanks dropped."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def process_plugin_manager(disabled: Iterable[str] = ()) -> pluggy.PluginManager:
    """The manager of a `flwd` process: `disabled` extensions plus those named in
    `FLWD_DISABLE_EXTENSIONS` left out, `FLWD_PLUGINS` modules added. A name that is no
    installed extension gets a warning line on stderr, not an error."""
    names = [*names_from(os.environ.get(DISABLE_ENV)), *disabled]
    known = set(installed_extensions())
    for name in names:
        if name not in known:
            click.echo(f"warning: no installed extension is named '{name}'", err=True)
    return make_plugin_manager(disabled=names, modules=names_from(os.environ.get(PLUGINS_ENV)))


_CURRENT: pluggy.PluginManager | None = None


def set_plugin_manager(pm: pluggy.PluginManager) -> None:
    """Make `pm` the manager of this process (done once by `flwd.cli.main`)."""
    global _CURRENT
    _CURRENT = pm


def plugin_manager() -> pluggy.PluginManager:
    """The manager of this process: the click context's object (set by `flwd.cli.main`),
    else the one set with `set_plugin_manager`, else (code run without the CLI, such as
    tests) a default one built on first use."""
    global _CURRENT
    context = click.get_current_context(silent=True)
    if context is not None:
        found = context.find_object(pluggy.PluginManager)
        if found is not None:
            return found
    if _CURRENT is None:
        _CURRENT = process_plugin_manager()
    return _CURRENT


def extension_names(pm: pluggy.PluginManager) -> list[str]:
    """Names of loaded extensions (plugins that are not built in), sorted."""
    names = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None or name in BUILTIN_PLUGINS:
            continue
        names.append(name)
    return sorted(names)


def disabled_names(pm: pluggy.PluginManager) -> list[str]:
    """Names of the extensions blocked in this manager, sorted."""
    return sorted(name for name, plugin in pm.list_name_plugin() if plugin is None)
