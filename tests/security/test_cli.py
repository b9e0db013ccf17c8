"""`flwd token` and `flwd audit` with no server running: straight to the data dir's
store. (Through a running server: test_e2e_security.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from flwd_security.store import SecurityStore
from flwd_security.tokens import TokenBook


def flwd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLWD_") or k == "FLWD_PROFILE"}
    return subprocess.run(
        [sys.executable, "-m", "flwd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
    )


def test_token_create_list_revoke_offline(tmp_path: Path) -> None:
    made = flwd(
        "token", "create", "--name", "ci", "--scopes", "runs:read,runs:write",
        "--tenant", "acme", "--job-pattern", "backup/*", "--expires", "30d",
        cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("flwd_") and "shown only this once" in made.stderr
    store = SecurityStore(tmp_path / ".flwd")
    try:
        actor = TokenBook(store).check(token)
        assert actor.tenant == "acme" and actor.job_patterns == ("backup/*",)
    finally:
        store.close()
    raw = b"".join(p.read_bytes() for p in (tmp_path / ".flwd").glob("security.sqlite3*"))
    assert token.encode() not in raw

    listing = flwd("token", "list", "--json", cwd=tmp_path)
    assert listing.returncode == 0 and token not in listing.stdout
    (entry,) = json.loads(listing.stdout)["tokens"]
    assert (
        entry["name"] == "ci"
        and entry["state"] == "active"
        and entry["scopes"]
        == [
            "runs:read",
            "runs:write",
        ]
    )
    again = flwd("token", "create", "--name", "ci", "--scopes", "admin", cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.startswith("error: ") and "exists" in again.stderr

    assert flwd("token", "revoke", "ci", cwd=tmp_path).returncode == 0
    assert "revoked" in flwd("token", "list", cwd=tmp_path).stdout
    missing = flwd("token", "revoke", "nobody", cwd=tmp_path)
    assert missing.returncode == 2 and "no token named 'nobody'" in missing.stderr

    audit = flwd("audit", "--json", cwd=tmp_path)
    assert audit.returncode == 0, audit.stderr
    actions = [(e["action"], e["target"]) for e in json.loads(audit.stdout)["entries"]]
    assert actions == [("token.revoke", "ci"), ("token.create", "ci")]
    only = flwd("audit", "--action", "token.create", cwd=tmp_path)
    assert "token.create ci" in only.stdout and "token.revoke" not in only.stdout


def test_bad_scope_and_duration_are_one_line(tmp_path: Path) -> None:
    bad = flwd("token", "create", "--name", "x", "--scopes", "root", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown scope" in bad.stderr
    worse = flwd(
        "token", "create", "--name", "x", "--scopes", "admin", "--expires", "soon", cwd=tmp_path
    )
    assert worse.returncode == 2 and "expires" in worse.stderr
    since = flwd("audit", "--since", "yesterday", cwd=tmp_path)
    assert since.returncode == 2 and "--since" in since.stderr
