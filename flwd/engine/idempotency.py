"""Idempotency keys: a `POST /runs` repeated with the same key answers the run the first
one created, provided it asked for the same thing (the same fingerprint); the same key
with other arguments is refused (`IdempotencyKeyReused`).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec


def fingerprint(job_id: str, masked_args: dict[str, Any], tenant: str) -> str:
    """What a request with an idempotency key asked for: its job, its arguments as stored
    (secrets masked) and its tenant, hashed in a canonical (key-sorted) form."""
    canonical = msgspec.json.encode(
        {"job_id": job_id, "args": masked_args, "tenant": tenant}, order="sorted"
    )
    return hashlib.sha256(canonical).hexdigest()
