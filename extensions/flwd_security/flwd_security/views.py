"""The shapes the admin routes answer with and the CLI reads (no web framework here, so
`flwd token` and `flwd audit` start quickly)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from flwd_security.store import AuditEntry, TokenRecord


class TokenInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A token as listed: never the token itself, only what it may do and its state."""

    name: str
    scopes: tuple[str, ...]
    tenant: str
    job_patterns: tuple[str, ...] | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    state: str

    @classmethod
    def of(cls, record: TokenRecord) -> TokenInfo:
        return cls(state=record.state(), **msgspec.structs.asdict(record))


class CreatedToken(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to creating a token: the token, shown this once, and its details."""

    token: str
    details: TokenInfo


class TokenList(msgspec.Struct, frozen=True, kw_only=True):
    tokens: list[TokenInfo]


class AuditPage(msgspec.Struct, frozen=True, kw_only=True):
    """Audit entries newest first; `next_cursor` (when more match) is the `cursor` of the
    next page."""

    entries: list[AuditEntry]
    next_cursor: int | None = None
