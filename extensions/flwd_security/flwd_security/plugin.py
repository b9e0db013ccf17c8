"""The extension's hook implementations (the `security` entry point of the `flwd` group).

- `configure_app`: reads the profiles (an unknown or broken one stops start-up with one
  line, exit 1; `disabled` refuses a non-loopback bind), adds the middleware that
  identifies callers and applies rate limits, and declares the bearer scheme in OpenAPI;
- `startup` / `shutdown`: open the token store, make the admin token on first start;
- `actor_from_request` / `permission_allowed`: tokens and their scopes (docs/security.md);
- `validate_job` / `resolve_profile`: a job's `security_profile` may only tighten;
- `prepare_step` / `run_event`: the profile's `steps` policy applied to every step by the
  sandbox (`flwd_security.sandbox`), and what a run held given back when it finishes;
- `register_routes` / `register_commands`: `/tokens`, `/audit`, `flwd token`, `flwd audit`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import TYPE_CHECKING, Any

import click

from flwd.access import Actor, Resource
from flwd.cli import CliError
from flwd.errors import Unauthorized
from flwd.hookspecs import hookimpl
from flwd_security import sandbox, shell_limits
from flwd_security.profiles import Profile, ProfileError, job_profile_problems, profiles_for
from flwd_security.runtime import IDENTITY_KEY, Identity, current, install
from flwd_security.tokens import scope_allows

if TYPE_CHECKING:
    from litestar.config.app import AppConfig
    from litestar.connection import ASGIConnection

    from flwd.engine.step_process import StepContext
    from flwd.models import Event, JobSpec
    from flwd.settings import Settings

#: The name the bearer scheme has in the OpenAPI document.
SCHEME = "bearerAuth"
_MADE_HERE = "flwd-security"


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@hookimpl
def configure_app(config: AppConfig, settings: Settings) -> None:
    try:
        security = install(settings)
    except ProfileError as exc:
        raise CliError(exc.detail, exit_code=1) from None
    profile = security.profile
    if not profile.auth.required and not is_loopback(settings.host):
        raise CliError(
            f"security profile '{profile.name}' requires no token, so flwd listens only on "
            f"loopback (127.0.0.1, ::1), not {settings.host}; choose the secure or "
            "permissive profile to serve other hosts",
            exit_code=1,
        )
    from flwd_security.middleware import SecurityMiddleware

    # outermost: the rate limit counts (and its headers mark) every answer, refusals too
    config.middleware.insert(0, SecurityMiddleware(security))
    if config.openapi_config is not None:
        from litestar.openapi.spec import Components, SecurityScheme

        components = config.openapi_config.components
        base = components if isinstance(components, Components) else Components()
        schemes = dict(base.security_schemes or {})
        schemes[SCHEME] = SecurityScheme(
            type="http",
            scheme="bearer",
            description="A token from `flwd token create` (or the admin token file in the "
            "data dir); health, readiness and these docs need none",
        )
        # set in place: `dataclasses.replace` would pass its deprecated fields again
        config.openapi_config.components = dataclasses.replace(base, security_schemes=schemes)
        if profile.auth.required:
            config.openapi_config.security = [{SCHEME: []}]


@hookimpl
def startup(settings: Settings) -> None:
    security = current()
    if security is None or security.settings is not settings:
        security = install(settings)
    written = security.ensure_admin_token()
    profile = security.profile
    shell_limits.supported()  # asked of /bin/sh now, not in a step's way
    line = f"flwd security: profile '{profile.name}'"
    if written:
        line += f"; admin token written to {written} (first start)"
    click.echo(line)


@hookimpl
def shutdown(settings: Settings) -> None:
    security = current()
    if security is not None:
        security.close()
    sandbox.close()


@hookimpl
def register_routes(settings: Settings) -> list[Any]:
    from flwd_security.routes import ROUTES

    return list(ROUTES)


@hookimpl(trylast=True)
def register_commands(cli: click.Group) -> None:
    # trylast: after the built-in commands, so `validate` is there to extend
    from flwd_security.commands import add_profile_options, audit_command, token_group

    cli.add_command(token_group)
    cli.add_command(audit_command)
    validate = cli.commands.get("validate")
    if validate is not None:
        add_profile_options(validate)


@hookimpl
def actor_from_request(connection: ASGIConnection[Any, Any, Any, Any]) -> Actor | None:
    security = current()
    if security is None:
        return None
    identity = connection.scope.get("state", {}).get(IDENTITY_KEY)
    if not isinstance(identity, Identity):
        identity = security.identify(connection.scope)
    if identity.actor is not None:
        return identity.actor
    path = connection.scope.get("path", "")
    if identity.refused is not None:
        security.audit("anonymous", "auth.refused", path, identity.refused, identity.address)
        raise Unauthorized(f"The bearer token was refused: {identity.refused}")
    if security.profile.auth.required:
        security.audit("anonymous", "auth.refused", path, "no token", identity.address)
        raise Unauthorized("A bearer token is required (Authorization: Bearer TOKEN)")
    return None


@hookimpl
def permission_allowed(actor: Actor | None, action: str, resource: Resource) -> bool | None:
    if actor is None:
        security = current()
        if security is None or not security.profile.auth.required:
            return None  # no server here, or a profile without tokens: the default
        return False
    if actor.attributes.get("via") != _MADE_HERE:
        return None  # another plugin's actor: its business
    if not scope_allows(actor.scopes, action):
        return False
    if resource.job_id is not None and not actor.sees_job(resource.job_id):
        return False
    return resource.tenant is None or actor.sees_tenant(resource.tenant)


@hookimpl
def validate_job(job: JobSpec, settings: Settings) -> list[str]:
    if not job.security_profile:
        return []
    try:
        loaded = profiles_for(settings)
    except ProfileError as exc:
        return [exc.detail]
    return job_profile_problems(job.security_profile, loaded)


@hookimpl
def resolve_profile(job: JobSpec, settings: Settings) -> Profile | None:
    """The job's own profile when it names one (validated to be tighter), else the
    server's. `context.profile.steps` is the `StepPolicy` the sandbox applies."""
    security = current()
    loaded = security.profiles if security is not None else profiles_for(settings)
    if job.security_profile and job.security_profile in loaded.profiles:
        return loaded.profiles[job.security_profile]
    return loaded.server


@hookimpl
def prepare_step(context: StepContext) -> None:
    """The run's profile (`resolve_profile`) says how its steps execute."""
    profile = context.profile
    if isinstance(profile, Profile):
        sandbox.apply(context, profile.steps)


@hookimpl
def run_event(event: Event) -> None:
    if event.type == "run.finished":
        sandbox.release(event.run_id)
