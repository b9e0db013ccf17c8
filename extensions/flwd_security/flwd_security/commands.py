"""`flwd token create|list|revoke` and `flwd audit`.

While a server runs on the data dir (or `--server` names one) these go through its admin
routes (`/api/v1/tokens`, `/api/v1/audit`) with the admin token (found through
`server.json`, or `--token` / FLWD_TOKEN); with no server they read and write the data
dir's `security.sqlite3` directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
import msgspec

from flwd.cli import CliError
from flwd.commands.sources import open_client, server_url
from flwd.errors import FlwdError
from flwd.settings import Settings, SettingsError, load_settings
from flwd_security.store import AuditEntry, SecurityStore
from flwd_security.tokens import SCOPES, TokenBook, parse_scopes
from flwd_security.views import AuditPage, CreatedToken, TokenInfo, TokenList

T = TypeVar("T")

server_option = click.option(
    "--server",
    metavar="URL",
    help="Talk to this flwd server [FLWD_SERVER; default: the server running on the data "
    "dir, else the data dir itself].",
)
data_dir_option = click.option(
    "--data-dir", metavar="DIR", help="Local data dir [FLWD_DATA_DIR; default .flwd]."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _settings(server: str | None, data_dir: str | None) -> Settings:
    try:
        return load_settings(watch=False, server=server, data_dir=data_dir)
    except SettingsError as exc:
        raise CliError(str(exc)) from exc


def _through(
    settings: Settings,
    remote: Callable[[Any], Awaitable[T]],
    local: Callable[[TokenBook], T],
) -> T:
    """`remote(client)` against the server when one runs, else `local(book)` on the
    data dir's store."""
    server = server_url(settings)
    try:
        if server is not None:

            async def ask() -> T:
                async with open_client(server) as client:
                    return await remote(client)

            return asyncio.run(ask())
        store = SecurityStore(settings.data_path)
        try:
            return local(TokenBook(store))
        finally:
            store.close()
    except FlwdError as exc:
        raise CliError(exc.detail) from exc


def _dump(value: Any) -> None:
    click.echo(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


@click.group("token")
def token_group() -> None:
    """Create, list and revoke bearer tokens (security extension)."""


@token_group.command("create")
@click.option("--name", required=True, help="A unique name (letters, digits, - _ . @).")
@click.option(
    "--scopes",
    required=True,
    metavar="S[,S...]",
    help=f"What the token may do: {', '.join(SCOPES)} (admin: everything).",
)
@click.option("--tenant", default=None, help="The tenant its runs belong to [default].")
@click.option(
    "--job-pattern",
    "job_patterns",
    multiple=True,
    metavar="PATTERN",
    help="Only jobs matching this id pattern (repeatable; * within a segment, ** across).",
)
@click.option("--expires", default=None, metavar="DURATION", help="Valid for e.g. 30d, 12h.")
@server_option
@data_dir_option
@json_option
def token_create(
    name: str,
    scopes: str,
    tenant: str | None,
    job_patterns: tuple[str, ...],
    expires: str | None,
    server: str | None,
    data_dir: str | None,
    as_json: bool,
) -> None:
    """Create a token and print it once (stdout); only its hash is kept."""
    settings = _settings(server, data_dir)
    try:
        chosen = parse_scopes(scopes)
    except FlwdError as exc:
        raise CliError(exc.detail) from exc
    body: dict[str, Any] = {"name": name, "scopes": list(chosen)}
    if tenant:
        body["tenant"] = tenant
    if job_patterns:
        body["job_patterns"] = list(job_patterns)
    if expires:
        body["expires"] = expires

    async def remote(client: Any) -> CreatedToken:
        created = await client.request_json("POST", "/tokens", CreatedToken, json=body)
        assert isinstance(created, CreatedToken)
        return created

    def local(book: TokenBook) -> CreatedToken:
        token, record = book.create(
            name=name,
            scopes=chosen,
            tenant=tenant,
            job_patterns=job_patterns or None,
            expires=expires,
            created_by="local",
        )
        book.store.audit("local", "token.create", name, " ".join(chosen))
        return CreatedToken(token=token, details=TokenInfo.of(record))

    created = _through(settings, remote, local)
    if as_json:
        _dump(created)
        return
    click.echo(created.token)
    d = created.details
    until = f", expires {_when(d.expires_at)} UTC" if d.expires_at else ""
    click.echo(
        f"token '{d.name}' created (scopes {' '.join(d.scopes)}, tenant {d.tenant}{until}); "
        "it is shown only this once",
        err=True,
    )


@token_group.command("list")
@server_option
@data_dir_option
@json_option
def token_list(server: str | None, data_dir: str | None, as_json: bool) -> None:
    """List tokens (never the tokens themselves)."""
    settings = _settings(server, data_dir)

    async def remote(client: Any) -> TokenList:
        listing = await client.request_json("GET", "/tokens", TokenList)
        assert isinstance(listing, TokenList)
        return listing

    def local(book: TokenBook) -> TokenList:
        return TokenList(tokens=[TokenInfo.of(r) for r in book.store.list_tokens()])

    listing = _through(settings, remote, local)
    if as_json:
        _dump(listing)
        return
    click.echo(f"{'NAME':<20} {'STATE':<8} {'TENANT':<12} {'EXPIRES':<20} SCOPES / JOBS")
    for t in listing.tokens:
        jobs = f" / {' '.join(t.job_patterns)}" if t.job_patterns else ""
        click.echo(
            f"{t.name:<20} {t.state:<8} {t.tenant:<12} {_when(t.expires_at):<20} "
            f"{' '.join(t.scopes)}{jobs}"
        )


@token_group.command("revoke")
@click.argument("name")
@server_option
@data_dir_option
def token_revoke(name: str, server: str | None, data_dir: str | None) -> None:
    """Revoke token NAME: refused from now on (a running server notices within 1 s)."""
    settings = _settings(server, data_dir)

    async def remote(client: Any) -> TokenInfo | None:
        return await client.request_json("DELETE", f"/tokens/{name}", TokenInfo)  # type: ignore[no-any-return]

    def local(book: TokenBook) -> TokenInfo | None:
        record = book.revoke(name)
        if record is None:
            return None
        book.store.audit("local", "token.revoke", name)
        return TokenInfo.of(record)

    if _through(settings, remote, local) is None:
        raise CliError(f"there is no token named '{name}'")
    click.echo(f"revoked token '{name}'")


def _moment(flag: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"{flag}: '{text}' is not a date-time such as 2026-11-29T21:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@click.command("audit")
@click.option("--actor", default=None, help="Only this actor (a token name, anonymous, local).")
@click.option("--action", default=None, help="Only this action (run.create, token.revoke ...).")
@click.option("--since", default=None, metavar="TIME", help="Only entries at or after (RFC 3339).")
@click.option("--until", default=None, metavar="TIME", help="Only entries before (RFC 3339).")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--cursor", type=click.IntRange(1), default=None, help="Page from this cursor.")
@server_option
@data_dir_option
@json_option
def audit_command(
    actor: str | None,
    action: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    cursor: int | None,
    server: str | None,
    data_dir: str | None,
    as_json: bool,
) -> None:
    """Print the audit log, newest first: run and token actions, refused authentications."""
    settings = _settings(server, data_dir)
    after, before = _moment("--since", since), _moment("--until", until)
    params = {
        "actor": actor,
        "action": action,
        "since": after.isoformat() if after else None,
        "until": before.isoformat() if before else None,
        "limit": limit,
        "cursor": cursor,
    }

    async def remote(client: Any) -> AuditPage:
        page = await client.request_json("GET", "/audit", AuditPage, params=params)
        assert isinstance(page, AuditPage)
        return page

    def local(book: TokenBook) -> AuditPage:
        entries = book.store.read_audit(
            actor=actor,
            action=action,
            since=after.timestamp() if after else None,
            until=before.timestamp() if before else None,
            before=cursor,
            limit=limit + 1,
        )
        more = len(entries) > limit
        return AuditPage(
            entries=entries[:limit], next_cursor=entries[limit - 1].id if more else None
        )

    page = _through(settings, remote, local)
    if as_json:
        _dump(page)
        return
    for entry in page.entries:
        click.echo(_line(entry))
    if page.next_cursor is not None:
        click.echo(f"(more: --cursor {page.next_cursor})", err=True)


def _line(entry: AuditEntry) -> str:
    extra = f" ({entry.detail})" if entry.detail else ""
    address = f" from {entry.address}" if entry.address else ""
    return f"{_when(entry.at)} {entry.actor} {entry.action} {entry.target}{extra}{address}"


def add_profile_options(validate: click.Command) -> None:
    """`flwd validate --profile NAME [--profiles-dir DIR]`: check jobs' security_profile
    against that server profile (the command reads its settings from FLWD_PROFILE and
    FLWD_PROFILES_DIR, which these options set for this process only)."""
    import os

    if any(param.name == "profile" for param in validate.params):
        return  # the command object is shared: a second CLI in one process (tests)

    def setter(var: str) -> Callable[[click.Context, click.Parameter, str | None], None]:
        def remember(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
            if value:
                os.environ[var] = value

        return remember

    validate.params.append(
        click.Option(
            ["--profile"],
            metavar="NAME",
            expose_value=False,
            callback=setter("FLWD_PROFILE"),
            help="Check each job's security_profile against this server profile "
            "[secure; FLWD_PROFILE].",
        )
    )
    validate.params.append(
        click.Option(
            ["--profiles-dir"],
            metavar="DIR",
            expose_value=False,
            callback=setter("FLWD_PROFILES_DIR"),
            help="Where profiles are added or overridden [./profiles; FLWD_PROFILES_DIR].",
        )
    )
