"""API keys: created, listed, verified and revoked in the registry database.

A key reads `of-<id>-<secret>`; the id is public (it names the key in lists and logs), the
whole key is stored only as sha256(salt + key) with a random salt per key, and compared in
constant time. Scopes: `inference` (the model routes), `training` (jobs and datasets) and
`admin` (keys; it implies the other two).
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select

from omniforge_shared.registry import Registry
from omniforge_shared.registry.db import ApiKey

SCOPES = ("inference", "training", "admin")
_KEY = re.compile(r"^of-([0-9a-f]{12})-([A-Za-z0-9_-]{20,128})$")


class InvalidKeyRequest(ValueError):
    """A key request that cannot be done; the message says what to send instead."""


@dataclass(frozen=True)
class KeyView:
    id: str
    name: str
    scopes: tuple[str, ...]
    rate_limit_per_minute: int | None
    quota_per_day: int | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, row: ApiKey) -> "KeyView":
        return cls(row.id, row.name, tuple(row.scopes), row.rate_limit_per_minute, row.quota_per_day,
                   row.created_at, row.revoked_at, row.last_used_at)

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def _digest(salt: str, key: str) -> str:
    return hashlib.sha256((salt + key).encode()).hexdigest()


class KeyStore:
    def __init__(self, registry: Registry) -> None:
        self.sessions = registry.sessions

    def create(self, *, name: str, scopes: list[str], rate_limit_per_minute: int | None = None,
               quota_per_day: int | None = None) -> tuple[KeyView, str]:
        """A new key and its secret, which is not stored and cannot be shown again."""
        unknown = [s for s in scopes if s not in SCOPES]
        if not scopes or unknown:
            raise InvalidKeyRequest(f"scopes {unknown or scopes!r}: send one or more of {', '.join(SCOPES)}")
        if not name.strip() or len(name) > 128:
            raise InvalidKeyRequest("name must be 1 to 128 characters")
        for what, value in (("rate_limit_per_minute", rate_limit_per_minute), ("quota_per_day", quota_per_day)):
            if value is not None and value < 1:
                raise InvalidKeyRequest(f"{what}={value}: send a positive number, or leave it unset for the default")
        key_id = secrets.token_hex(6)
        key = f"of-{key_id}-{secrets.token_urlsafe(32)}"
        salt = secrets.token_hex(16)
        row = ApiKey(id=key_id, name=name.strip(), salt=salt, secret_sha256=_digest(salt, key),
                     scopes=sorted(set(scopes), key=SCOPES.index), rate_limit_per_minute=rate_limit_per_minute,
                     quota_per_day=quota_per_day)
        with self.sessions.begin() as s:
            s.add(row)
        return KeyView.of(row), key

    def list(self, *, include_revoked: bool = False) -> list[KeyView]:
        with self.sessions() as s:
            q = select(ApiKey).order_by(ApiKey.created_at)
            if not include_revoked:
                q = q.where(ApiKey.revoked_at.is_(None))
            return [KeyView.of(r) for r in s.scalars(q)]

    def revoke(self, key_id: str) -> KeyView:
        with self.sessions.begin() as s:
            row = s.get(ApiKey, key_id)
            if row is None:
                raise InvalidKeyRequest(f"no key {key_id!r}; `omniforge keys list` shows the ids")
            row.revoked_at = row.revoked_at or datetime.now(timezone.utc)
            return KeyView.of(row)

    def verify(self, key: str) -> KeyView | None:
        """The key's record when the key is genuine and not revoked, else None."""
        m = _KEY.match(key)
        if not m:
            return None
        with self.sessions() as s:
            row = s.get(ApiKey, m.group(1))
            if row is None or row.revoked_at is not None:
                return None
            if not hmac.compare_digest(row.secret_sha256, _digest(row.salt, key)):
                return None
            return KeyView.of(row)

    def touch(self, key_id: str) -> None:
        with self.sessions.begin() as s:
            row = s.get(ApiKey, key_id)
            if row is not None:
                row.last_used_at = datetime.now(timezone.utc)
