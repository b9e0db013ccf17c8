"""The extension's state in a server process: its profile, token book, audit and rate
limiter, and how a request's caller is identified (once per request)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from flwd.access import Actor
from flwd.local_server import LOCAL_TOKEN_FILE
from flwd.settings import Settings
from flwd_security.profiles import Profile, ProfileSet, profiles_for
from flwd_security.store import AuditRow, SecurityStore
from flwd_security.tokens import ADMIN_SCOPE, TokenBook, TokenRefused

if TYPE_CHECKING:
    from limits.aio.strategies import FixedWindowRateLimiter

log = logging.getLogger("flwd.security")

#: The key of the request scope's `state` holding this request's `Identity`.
IDENTITY_KEY: Final = "flwd_security.identity"
ADMIN_TOKEN_NAME: Final = "admin"


@dataclass(frozen=True)
class Identity:
    """Who a request says it is: a valid token's actor, or anonymous (`actor` None) with
    `refused` saying why a presented token was not accepted; `key` counts its rate."""

    actor: Actor | None
    refused: str | None
    key: str
    address: str | None


@dataclass(frozen=True)
class RateInfo:
    limit: int
    remaining: int
    reset: int
    retry_after: int
    allowed: bool


def client_address(scope: Any) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of an `Authorization: Bearer ...` header ('' for another scheme or an
    empty token: a credential that is not accepted), None when there is no header."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


@dataclass
class Security:
    """One server's security: built by `configure_app`, its store opened by `startup`."""

    settings: Settings
    profiles: ProfileSet
    store: SecurityStore | None = None
    book: TokenBook | None = None
    limiter: FixedWindowRateLimiter | None = None
    writer: AuditWriter | None = None

    def __post_init__(self) -> None:
        import limits  # here: only a server needs it

        self._keys: dict[tuple[Any, str], str] = {}
        rate = self.profile.rate_limit
        self.per_token = limits.parse(rate.per_token) if rate.per_token else None
        self.anonymous = limits.parse(rate.anonymous) if rate.anonymous else None

    @property
    def profile(self) -> Profile:
        return self.profiles.server

    def open(self) -> TokenBook:
        """The token book, opening the store on first use."""
        if self.book is None:
            self.store = SecurityStore(self.settings.data_path)
            self.book = TokenBook(self.store)
        return self.book

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.store is not None:
            self.store.close()
        self.store = self.book = None

    def ensure_admin_token(self) -> str | None:
        """On first start (no admin token yet), make one and write it to the 0600 file
        local clients read; return the file's path when one was written."""
        book = self.open()
        path = self.settings.data_path / LOCAL_TOKEN_FILE
        if book.store.get_token(ADMIN_TOKEN_NAME) is not None and path.is_file():
            return None
        if book.store.get_token(ADMIN_TOKEN_NAME) is not None:
            book.revoke(ADMIN_TOKEN_NAME)  # its file is gone: a new one replaces it
        token, _ = book.create(name=ADMIN_TOKEN_NAME, scopes=(ADMIN_SCOPE,), created_by="server")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        os.chmod(path, 0o600)
        assert book.store is not None
        book.store.audit("server", "token.create", ADMIN_TOKEN_NAME, "first start")
        return str(path)

    def identify(self, scope: Any) -> Identity:
        """The request's identity; its token checked through the cached book."""
        address = client_address(scope)
        token = bearer_token(scope.get("headers", []))
        if token is None:
            return Identity(None, None, f"addr:{address}", address)
        if not token:
            return Identity(None, "not a bearer token", f"addr:{address}", address)
        try:
            actor = self.open().check(token)
        except TokenRefused as exc:
            return Identity(None, exc.reason, f"addr:{address}", address)
        return Identity(actor, None, actor.id, address)

    async def rate(self, identity: Identity) -> RateInfo | None:
        """Count one request of `identity` against its limit (None: no limit applies)."""
        item = self.per_token if identity.actor is not None else self.anonymous
        if item is None:
            return None
        limiter = self.limiter
        if limiter is None:
            # the asyncio flavour of `limits`: its in-memory storage expires counters in
            # a task of the event loop (the threaded one starts a timer thread every
            # 10 ms of traffic); made here, where that loop runs.
            from limits.aio.storage import MemoryStorage
            from limits.aio.strategies import FixedWindowRateLimiter

            # fixed windows: one counter per key (a moving window keeps every hit's time)
            limiter = self.limiter = FixedWindowRateLimiter(MemoryStorage())
        # the storage's own counter and expiry (what `hit` and `get_window_stats` read),
        # asked once each instead of three times, under a key made once per caller
        key = self._keys.get((item, identity.key))
        if key is None:
            if len(self._keys) > 100_000:
                self._keys.clear()
            key = self._keys[(item, identity.key)] = item.key_for(identity.key)
        count = await limiter.storage.incr(key, item.get_expiry())
        reset_time = await limiter.storage.get_expiry(key)
        allowed = count <= item.amount
        wait = max(1, math.ceil(reset_time - time.time()))
        return RateInfo(
            limit=item.amount,
            remaining=max(0, item.amount - count),
            reset=math.ceil(reset_time),
            retry_after=wait,
            allowed=allowed,
        )

    def audit(
        self, actor: str, action: str, target: str, detail: str = "", address: str | None = None
    ) -> None:
        """Append to the audit log, stamped now and written by the audit's own thread
        (`AuditWriter`); a failure to write it is logged, never raised into the request
        that caused it."""
        if self.writer is None:
            self.writer = AuditWriter(self.settings.data_path)
        self.writer.add((time.time(), actor, action, target, detail, address))

    async def audit_written(self) -> None:
        """Return once every entry appended so far is in the store (before reading it)."""
        if self.writer is not None:
            await self.writer.flush()


#: how long an audit entry appended on the event loop may wait for company
_BATCH_DELAY = 0.05


class AuditWriter:
    """Writes audit entries on a thread of its own, with a connection of its own, each
    batch (what was appended while the previous one was written) in one commit.

    Appending costs the event loop a list append; the SQLite commit (0.2-0.3 ms each,
    one per run created) happens beside it, at most `_BATCH_DELAY` later. Entries are
    stamped when they are appended and written in that order; `flush` waits for them,
    `close` writes what is left."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._pending: list[AuditRow] = []
        self._lock = threading.Lock()
        self._draining = False
        self._store: SecurityStore | None = None  # opened on the writer's thread
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="flwd-audit")

    def add(self, entry: AuditRow) -> None:
        with self._lock:
            self._pending.append(entry)
            if self._draining:
                return  # the drain queued already takes it
            self._draining = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not in a server's event loop: at once
            self._thread.submit(self._drain)
            return
        # on a server's loop, one hand-over to the thread per `_BATCH_DELAY` rather than one
        # per entry (each wakes the thread, which then wants the GIL back from the loop)
        loop.call_later(_BATCH_DELAY, self._hand_over)

    def _hand_over(self) -> None:
        with contextlib.suppress(RuntimeError):  # closed meanwhile: `close` wrote them
            self._thread.submit(self._drain)

    def _drain(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            self._draining = False
        if not batch:
            return
        try:
            if self._store is None:
                self._store = SecurityStore(self.data_dir)
            self._store.append_audit(batch)
        except Exception as exc:
            log.error("%d audit entries not written: %s", len(batch), exc)

    async def flush(self) -> None:
        # the thread runs its work in order: once this is done, so are the drains before
        await asyncio.get_running_loop().run_in_executor(self._thread, self._drain)

    def close(self) -> None:
        self._thread.submit(self._drain)
        self._thread.shutdown(wait=True)
        if self._store is not None:
            self._store.close()
            self._store = None


_CURRENT: Security | None = None


def current() -> Security | None:
    """The security of this process's server (None before `configure_app`)."""
    return _CURRENT


def install(settings: Settings) -> Security:
    """Read the profiles afresh for a server about to start and make it current."""
    global _CURRENT
    if _CURRENT is not None:
        _CURRENT.close()
    _CURRENT = Security(settings=settings, profiles=profiles_for(settings, fresh=True))
    return _CURRENT


def actor_name(actor: Actor | None) -> str:
    return actor.name if actor is not None else "anonymous"
