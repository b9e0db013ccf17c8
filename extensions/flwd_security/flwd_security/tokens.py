"""Bearer tokens: making them, checking them (cached for at most a second), the scopes
they carry and the actor they stand for.

Scopes and the actions they allow are one table, `ACTION_SCOPES` (docs/security.md):
`admin` allows everything.
"""

from __future__ import annotations

import secrets
import time
from typing import Final

from flwd import access
from flwd.access import Actor
from flwd.errors import InvalidInput
from flwd.settings import SettingsError, parse_duration
from flwd_security.store import SecurityStore, TokenExists, TokenRecord, token_hash

#: Every token starts with this, so a leaked one is recognisable (secret scanners).
TOKEN_PREFIX: Final = "flwd_"
ADMIN_SCOPE: Final = "admin"
SCOPES: Final = ("jobs:read", "runs:read", "runs:write", "artifacts:read", "events:read", "admin")
DEFAULT_TENANT: Final = "default"
#: The action of `flwd.access` each scope allows; `admin` allows every action.
ACTION_SCOPES: Final[dict[str, str]] = {
    access.VIEW_JOBS: "jobs:read",
    access.VIEW_SYSTEM: "jobs:read",
    access.RUN_JOB: "runs:write",
    access.CANCEL_RUN: "runs:write",
    access.RESTART_RUN: "runs:write",
    access.VIEW_RUNS: "runs:read",
    access.VIEW_ARTIFACTS: "artifacts:read",
    access.VIEW_EVENTS: "events:read",
    access.ADMINISTER: ADMIN_SCOPE,
}
#: How long a looked-up token is trusted before the store is asked again: a token
#: revoked by another process is refused within this time (in-process revocations at once).
CACHE_SECONDS: Final = 1.0
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@")


class TokenRefused(Exception):
    """A presented token is not valid; `reason` says why (for the 401 and the audit)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def scope_allows(scopes: frozenset[str], action: str) -> bool:
    """Whether a token with `scopes` may perform `action` (unknown actions: admin only)."""
    return ADMIN_SCOPE in scopes or ACTION_SCOPES.get(action, ADMIN_SCOPE) in scopes


def new_token() -> str:
    """A fresh token: the prefix and 256 random bits, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def parse_scopes(values: list[str] | tuple[str, ...] | str) -> tuple[str, ...]:
    """`runs:read,runs:write` (or a list of such) as a tuple of known scopes, sorted."""
    items = [values] if isinstance(values, str) else list(values)
    scopes = {part.strip() for item in items for part in item.split(",") if part.strip()}
    unknown = sorted(scopes - set(SCOPES))
    if unknown:
        raise InvalidInput(f"unknown scope {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    if not scopes:
        raise InvalidInput(f"a token needs at least one scope of {', '.join(SCOPES)}")
    return tuple(sorted(scopes))


def check_name(name: str) -> str:
    if not name or len(name) > 64 or not set(name) <= _NAME_CHARS:
        raise InvalidInput(
            f"token name '{name}' must be 1-64 letters, digits or - _ . @ (no spaces)"
        )
    return name


def expiry(text: str | None, now: float | None = None) -> float | None:
    """The expiry time (epoch seconds) of a token valid for `text` (`30d`, `12h`, `90m`)."""
    if text is None or text == "":
        return None
    try:
        seconds = parse_duration(_days(text))
    except SettingsError as exc:
        raise InvalidInput(f"expires: {exc}") from None
    if seconds <= 0:
        raise InvalidInput("expires must be a positive duration such as 30d or 12h")
    return (time.time() if now is None else now) + seconds


def _days(text: str) -> str:
    """`30d` / `1d12h` as Go duration text (which has no days)."""
    text = text.strip()
    if "d" in text:
        days, _, rest = text.partition("d")
        try:
            hours = float(days) * 24
        except ValueError:
            return text
        return f"{hours:g}h{rest}"
    return text


def actor_of_token(record: TokenRecord) -> Actor:
    """The actor a token stands for: `admin` tokens see every tenant."""
    scopes = frozenset(record.scopes)
    return Actor(
        id=f"token:{record.name}",
        name=record.name,
        tenant=None if ADMIN_SCOPE in scopes else record.tenant,
        job_patterns=record.job_patterns,
        scopes=scopes,
        attributes={"via": "flwd-security"},
    )


class TokenBook:
    """Creates, checks and revokes tokens over a `SecurityStore`, with lookups cached
    for `CACHE_SECONDS` (per request a hash and a dictionary lookup)."""

    def __init__(self, store: SecurityStore) -> None:
        self.store = store
        self._cache: dict[str, tuple[float, TokenRecord | None, Actor | None]] = {}

    def create(
        self,
        *,
        name: str,
        scopes: tuple[str, ...],
        tenant: str | None = None,
        job_patterns: tuple[str, ...] | None = None,
        expires: str | None = None,
        created_by: str = "local",
    ) -> tuple[str, TokenRecord]:
        """A new token (returned once, never stored) and its record."""
        check_name(name)
        for pattern in job_patterns or ():
            if not pattern or pattern.startswith("/"):
                raise InvalidInput(f"job pattern '{pattern}' must be a job id pattern")
        token = new_token()
        try:
            record = self.store.add_token(
                name=name,
                token=token,
                scopes=scopes,
                tenant=tenant or DEFAULT_TENANT,
                job_patterns=job_patterns or None,
                expires_at=expiry(expires),
                created_by=created_by,
            )
        except TokenExists:
            raise InvalidInput(
                f"a token named '{name}' exists; revoke it first or pick another name"
            ) from None
        return token, record

    def revoke(self, name: str) -> TokenRecord | None:
        record = self.store.revoke_token(name)
        self._cache.clear()  # refused at once in this process
        return record

    def check(self, token: str) -> Actor:
        """The actor of a presented token, or `TokenRefused` (unknown, expired, revoked)."""
        digest = token_hash(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is None or now - cached[0] > CACHE_SECONDS:
            record = self.store.find_token(digest)
            actor = None if record is None else actor_of_token(record)
            if len(self._cache) > 10_000:  # unknown tokens must not grow it for ever
                self._cache.clear()
            cached = (now, record, actor)
            self._cache[digest] = cached
        _, record, actor = cached
        if record is None or actor is None:
            raise TokenRefused("unknown token")
        state = record.state()
        if state != "active":
            raise TokenRefused(f"token '{record.name}' is {state}")
        return actor
