"""The built-in answers of the `firstresult` hooks, registered `trylast` like any plugin
so that an extension's answer comes first (datasette's pattern): with no extension
deciding, anyone may do anything, and steps run as local processes."""

from __future__ import annotations

from typing import Any

from flwd.access import Actor, Resource
from flwd.hookspecs import hookimpl

#: The name this module is registered under (the engine skips a hook call per step when
#: no other plugin implements `resolve_executor`).
PLUGIN_NAME = "flwd.defaults"


@hookimpl(trylast=True)
def permission_allowed(actor: Actor | None, action: str, resource: Resource) -> bool | None:
    """Allow everything: with no access plugin installed, `flwd serve` binds only to a
    loopback address (see docs/plugins.md)."""
    return True


@hookimpl(trylast=True)
def resolve_executor(context: Any) -> Any:
    """The local process executor (`flwd.engine.step_process.LOCAL`)."""
    from flwd.engine.step_process import LOCAL

    return LOCAL
