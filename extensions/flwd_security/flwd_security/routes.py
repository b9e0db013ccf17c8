"""The extension's admin routes under `/api/v1`: `/tokens` (create, list, revoke) and
`/audit` (read, filtered and paged). All need the `admin` scope (action `administer`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from flwd.access import ADMINISTER
from flwd.errors import InvalidInput, NotFound, StorageError
from flwd_security.runtime import IDENTITY_KEY, Identity, Security, actor_name, current
from flwd_security.tokens import parse_scopes
from flwd_security.views import AuditPage, CreatedToken, TokenInfo, TokenList

#: The route option the core reads for a route's action (`flwd.api.access`).
ADMIN_OPT: Final = {"action": ADMINISTER}
MAX_AUDIT_PAGE: Final = 1000


class CreateToken(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`scopes`: a list, or one comma-separated string; `expires`: a duration (`30d`)."""

    name: str
    scopes: list[str] | str
    tenant: str | None = None
    job_patterns: list[str] | None = None
    expires: str | None = None


def _security() -> Security:
    security = current()
    if security is None:
        raise StorageError("The security extension is not set up in this process")
    return security


def caller(request: Request[Any, Any, Any]) -> Identity | None:
    identity = request.scope.get("state", {}).get(IDENTITY_KEY)
    return identity if isinstance(identity, Identity) else None


def _who(request: Request[Any, Any, Any]) -> tuple[str, str | None]:
    identity = caller(request)
    if identity is None:
        return "anonymous", None
    return actor_name(identity.actor), identity.address


class TokenController(Controller):
    path = "/tokens"
    tags = ["security"]
    opt = ADMIN_OPT

    @post(operation_id="createToken", status_code=201)
    async def create_token(
        self, request: Request[Any, Any, Any], data: JSONBody[CreateToken]
    ) -> CreatedToken:
        """Create a bearer token (needs `admin`). The token is in this answer only; the
        server keeps its SHA-256."""
        security = _security()
        who, address = _who(request)
        token, record = security.open().create(
            name=data.name,
            scopes=parse_scopes(data.scopes),
            tenant=data.tenant,
            job_patterns=tuple(data.job_patterns) if data.job_patterns else None,
            expires=data.expires,
            created_by=who,
        )
        security.audit(who, "token.create", record.name, " ".join(record.scopes), address)
        return CreatedToken(token=token, details=TokenInfo.of(record))

    @get(operation_id="listTokens")
    async def list_tokens(self) -> TokenList:
        """Every token (active, expired, revoked), by name; never a token itself."""
        book = _security().open()
        return TokenList(tokens=[TokenInfo.of(r) for r in book.store.list_tokens()])

    @delete("/{name:str}", operation_id="revokeToken", status_code=200)
    async def revoke_token(self, request: Request[Any, Any, Any], name: FromPath[str]) -> TokenInfo:
        """Revoke a token: refused from now on (kept in the list as `revoked`)."""
        security = _security()
        record = security.open().revoke(name)
        if record is None:
            raise NotFound(f"There is no token named '{name}'")
        who, address = _who(request)
        security.audit(who, "token.revoke", name, "", address)
        return TokenInfo.of(record)


class AuditController(Controller):
    path = "/audit"
    tags = ["security"]
    opt = ADMIN_OPT

    @get(operation_id="readAudit")
    async def read_audit(
        self,
        actor: FromQuery[str | None] = None,
        action: FromQuery[str | None] = None,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_AUDIT_PAGE)] = 100,
        cursor: Annotated[int | None, QueryParameter(ge=1)] = None,
    ) -> AuditPage:
        """The audit log, newest first: who created, cancelled or restarted which run,
        who created or revoked which token, refused authentications. Filters: `actor`
        (a token name, `anonymous`), `action`, `since`/`until` (RFC 3339); pages of
        `limit` entries, the next one from `cursor`."""
        security = _security()
        book = security.open()
        if since and until and since >= until:
            raise InvalidInput("since must be before until")
        await security.audit_written()
        entries = book.store.read_audit(
            actor=actor,
            action=action,
            since=since.timestamp() if since else None,
            until=until.timestamp() if until else None,
            before=cursor,
            limit=limit + 1,
        )
        more = len(entries) > limit
        entries = entries[:limit]
        return AuditPage(entries=entries, next_cursor=entries[-1].id if more else None)


ROUTES: Final = [TokenController, AuditController]
__all__ = ["ROUTES", "AuditPage", "CreateToken", "CreatedToken", "TokenInfo", "TokenList"]
