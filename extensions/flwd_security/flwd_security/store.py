"""The extension's own SQLite database, `security.sqlite3` in the data dir (mode 0600):
bearer tokens (only the SHA-256 of each token, never the token) and the audit log.

It is a file of its own rather than tables in flwd's database: the extension needs no
access to the core's store, and removing the extension leaves nothing behind in it.
Queries are single indexed statements, run synchronously (microseconds; token lookups
are cached by `flwd_security.tokens`, so a request rarely reaches the file at all).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec

DB_FILE = "security.sqlite3"

#: an audit entry as written: (at, actor, action, target, detail, address)
AuditRow = tuple[float, str, str, str, str, str | None]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    name TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    tenant TEXT NOT NULL,
    job_patterns TEXT,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    expires_at REAL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    address TEXT
);
CREATE INDEX IF NOT EXISTS audit_actor ON audit (actor, id);
CREATE INDEX IF NOT EXISTS audit_action ON audit (action, id);
"""


def token_hash(token: str) -> str:
    """The stored form of a token: its SHA-256, hex. Tokens are 256 random bits, so a
    fast unsalted hash is enough (docs/decisions.md): there is no dictionary to try."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _stamp(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


class TokenRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A token as stored and listed (never the token itself)."""

    name: str
    scopes: tuple[str, ...]
    tenant: str
    job_patterns: tuple[str, ...] | None = None
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def state(self, now: float | None = None) -> str:
        """`active`, `expired` or `revoked`."""
        if self.revoked_at is not None:
            return "revoked"
        moment = time.time() if now is None else now
        if self.expires_at is not None and self.expires_at.timestamp() <= moment:
            return "expired"
        return "active"


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the audit log: `actor` (a token name, `anonymous` or `local`) did
    `action` (`run.create`, `run.cancel`, `run.restart`, `token.create`, `token.revoke`,
    `auth.refused`) to `target` (a run id, a token name, a path)."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: str = ""
    address: str | None = None


class TokenExists(ValueError):
    """A token of that name exists (and is not revoked)."""


class SecurityStore:
    """Tokens and the audit log in `DATA_DIR/security.sqlite3`."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / DB_FILE
        # created 0600 before SQLite opens it: tokens' hashes and the audit are private
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        self.db = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(str(self.path) + suffix, 0o600)

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self.db:
            yield self.db

    # -- tokens -------------------------------------------------------------------------

    def add_token(
        self,
        *,
        name: str,
        token: str,
        scopes: tuple[str, ...],
        tenant: str,
        job_patterns: tuple[str, ...] | None,
        expires_at: float | None,
        created_by: str,
    ) -> TokenRecord:
        """Store a new token's hash; a revoked token of the same name is replaced,
        a live one is `TokenExists`."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT revoked_at FROM tokens WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] is None:
                raise TokenExists(name)
            db.execute("DELETE FROM tokens WHERE name = ?", (name,))
            db.execute(
                "INSERT INTO tokens (name, hash, scopes, tenant, job_patterns, created_at, "
                "created_by, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    token_hash(token),
                    " ".join(scopes),
                    tenant,
                    None if job_patterns is None else json.dumps(list(job_patterns)),
                    now,
                    created_by,
                    expires_at,
                ),
            )
        record = self.get_token(name)
        assert record is not None
        return record

    @staticmethod
    def _record(row: tuple[object, ...]) -> TokenRecord:
        name, scopes, tenant, patterns, created, by, expires, revoked = row
        return TokenRecord(
            name=str(name),
            scopes=tuple(str(scopes).split()),
            tenant=str(tenant),
            job_patterns=None if patterns is None else tuple(json.loads(str(patterns))),
            created_at=datetime.fromtimestamp(float(str(created)), UTC),
            created_by=str(by),
            expires_at=_stamp(None if expires is None else float(str(expires))),
            revoked_at=_stamp(None if revoked is None else float(str(revoked))),
        )

    _COLUMNS = "name, scopes, tenant, job_patterns, created_at, created_by, expires_at, revoked_at"

    def get_token(self, name: str) -> TokenRecord | None:
        row = self.db.execute(
            f"SELECT {self._COLUMNS} FROM tokens WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else self._record(row)

    def find_token(self, digest: str) -> TokenRecord | None:
        """The token whose hash is `digest` (revoked and expired ones included)."""
        row = self.db.execute(
            f"SELECT {self._COLUMNS} FROM tokens WHERE hash = ?", (digest,)
        ).fetchone()
        return None if row is None else self._record(row)

    def list_tokens(self) -> list[TokenRecord]:
        rows = self.db.execute(f"SELECT {self._COLUMNS} FROM tokens ORDER BY name").fetchall()
        return [self._record(row) for row in rows]

    def revoke_token(self, name: str) -> TokenRecord | None:
        """Mark a token revoked (kept, for the listing and the audit); None if unknown."""
        with self._tx() as db:
            db.execute(
                "UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (time.time(), name),
            )
        return self.get_token(name)

    # -- audit --------------------------------------------------------------------------

    def audit(
        self, actor: str, action: str, target: str, detail: str = "", address: str | None = None
    ) -> None:
        self.append_audit([(time.time(), actor, action, target, detail, address)])

    def append_audit(self, entries: list[AuditRow]) -> None:
        """Append entries `(at, actor, action, target, detail, address)` in one commit."""
        with self._tx() as db:
            db.executemany(
                "INSERT INTO audit (at, actor, action, target, detail, address) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                entries,
            )

    def read_audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        since: float | None = None,
        until: float | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Entries newest first matching the filters; `before` an entry id (the cursor of
        the next page)."""
        where, params = [], []
        for clause, value in (
            ("actor = ?", actor),
            ("action = ?", action),
            ("at >= ?", since),
            ("at < ?", until),
            ("id < ?", before),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = "SELECT id, at, actor, action, target, detail, address FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = self.db.execute(sql, (*params, limit)).fetchall()
        return [
            AuditEntry(
                id=row[0],
                at=datetime.fromtimestamp(row[1], UTC),
                actor=row[2],
                action=row[3],
                target=row[4],
                detail=row[5],
                address=row[6],
            )
            for row in rows
        ]
