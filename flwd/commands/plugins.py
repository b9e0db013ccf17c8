"""`flwd plugins`: what is loaded, and which hooks each plugin implements."""

from __future__ import annotations

import click
import msgspec

from flwd.hookspecs import hookimpl
from flwd.plugins import BUILTIN_PLUGINS, plugin_manager


class PluginInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    name: str
    builtin: bool
    hooks: list[str]
    #: blocked by `--disable-extension` / `FLWD_DISABLE_EXTENSIONS`: not loaded, no hooks
    disabled: bool = False


def loaded_plugins() -> list[PluginInfo]:
    pm = plugin_manager()
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            infos.append(PluginInfo(name=name, builtin=False, hooks=[], disabled=True))
            continue
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        infos.append(PluginInfo(name=name, builtin=name in BUILTIN_PLUGINS, hooks=hooks))
    return sorted(infos, key=lambda p: (p.builtin, p.name))


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins_command(as_json: bool) -> None:
    """List plugins (extensions first, then built-ins) and the hooks they implement;
    extensions left out with --disable-extension are listed as disabled."""
    infos = loaded_plugins()
    if as_json:
        click.echo(msgspec.json.encode({"plugins": infos}).decode())
        return
    for info in infos:
        kind = "built-in" if info.builtin else "extension"
        if info.disabled:
            click.echo(f"{info.name}  (extension, disabled)")
            continue
        click.echo(f"{info.name}  ({kind})  {', '.join(info.hooks)}")


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(plugins_command)
