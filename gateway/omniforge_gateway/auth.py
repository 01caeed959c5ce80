"""API keys at the door: a pure-ASGI middleware that lets a request through only with a key
whose scope covers its route, and within that key's rate limit and daily quota.

Keys come as `Authorization: Bearer <key>` (what OpenAI's client sends) or `X-API-Key`. A
verified key is remembered for CACHE_SECONDS, so a revoked key stops working within that
time. Counting is per key in fixed windows: in Redis when OMNIFORGE_REDIS_URL is set (shared by
every gateway replica), else in this process.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from typing import Callable

from omniforge_shared.keys import KeyStore, KeyView

from .errors import error_body

logger = logging.getLogger("omniforge.gateway")
CACHE_SECONDS = 10.0
OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/redoc")


def scope_of(path: str) -> str | None:
    """The scope a route needs; None for the open ones (health, metrics, API docs)."""
    if path in OPEN_PATHS or path.startswith("/docs/"):
        return None
    if path.startswith("/admin"):
        return "admin"
    if path.startswith(("/training", "/datasets")):
        return "training"
    return "inference"


class MemoryCounter:
    """Fixed-window counts in this process."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    async def incr(self, key: str, ttl: int) -> int:
        if len(self.counts) > 100_000:          # old windows: forget them all rather than grow
            self.counts.clear()
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]


class RedisCounter:
    """Fixed-window counts in Redis: INCR, and the window's expiry set with its first count."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as redis

        self.redis = redis.from_url(url)

    async def incr(self, key: str, ttl: int) -> int:
        async with self.redis.pipeline(transaction=True) as pipe:
            count, _ = await pipe.incr(key).expire(key, ttl, nx=True).execute()
        return int(count)


class AuthMiddleware:
    def __init__(self, app, *, keys: Callable[[], KeyStore], counter, default_rate_limit: int,
                 default_quota: int | None) -> None:
        """`keys`: the key store, once the app has opened the registry."""
        self.app, self.keys, self.counter = app, keys, counter
        self.default_rate_limit, self.default_quota = default_rate_limit, default_quota
        self._cache: dict[str, tuple[float, KeyView | None]] = {}
        self._touched: dict[str, float] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        needed = scope_of(scope["path"])
        if needed is None:
            return await self.app(scope, receive, send)
        key = _presented_key(scope["headers"])
        if not key:
            return await _refuse(send, 401, "missing_api_key", "no API key: send `Authorization: Bearer <key>` "
                                 "(create one with `omniforge keys create`)")
        view = await self._verify(key)
        if view is None:
            return await _refuse(send, 401, "invalid_api_key", "the API key is not valid (unknown or revoked); "
                                 "send a current key (`omniforge keys list`)")
        if not view.allows(needed):
            return await _refuse(send, 403, "insufficient_scope", f"this key's scopes ({', '.join(view.scopes)}) "
                                 f"do not include {needed!r}, which {scope['path']} needs; use a key with it")
        headers, refusal = await self._count(view)
        if refusal:
            return await _refuse(send, 429, *refusal, headers=headers)
        scope.setdefault("state", {})["api_key_id"] = view.id

        async def send_with_limits(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await self.app(scope, receive, send_with_limits)

    async def _verify(self, key: str) -> KeyView | None:
        digest = hashlib.sha256(key.encode()).hexdigest()
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit and hit[0] > now:
            return hit[1]
        view = await asyncio.to_thread(self.keys().verify, key)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + CACHE_SECONDS, view)
        if view is not None and now - self._touched.get(view.id, -1e9) > 60:
            self._touched[view.id] = now
            await asyncio.to_thread(self.keys().touch, view.id)
        return view

    async def _count(self, view: KeyView) -> tuple[list, tuple[str, str] | None]:
        """The x-ratelimit-* headers, and (code, message) when the request is over a limit."""
        now = time.time()
        limit = view.rate_limit_per_minute or self.default_rate_limit
        minute = int(now // 60)
        used = await self.counter.incr(f"omniforge:ratelimit:{view.id}:{minute}", 120)
        reset = 60 - now % 60
        headers = [(b"x-ratelimit-limit-requests", str(limit).encode()),
                   (b"x-ratelimit-remaining-requests", str(max(0, limit - used)).encode()),
                   (b"x-ratelimit-reset-requests", f"{reset:.0f}s".encode())]
        if used > limit:
            headers += _retry_after(reset)
            return headers, ("rate_limit_exceeded", f"this key's rate limit is {limit} requests a minute; "
                             f"retry after {reset:.0f} s")
        quota = view.quota_per_day or self.default_quota
        if quota:
            day = int(now // 86400)
            used_today = await self.counter.incr(f"omniforge:quota:{view.id}:{day}", 2 * 86400)
            if used_today > quota:
                reset_day = 86400 - now % 86400
                return headers + _retry_after(reset_day), ("quota_exceeded", f"this key's quota of {quota} "
                                                           f"requests a day is used up; it renews in {reset_day / 3600:.1f} h")
        return headers, None


def _retry_after(seconds: float) -> list:
    return [(b"retry-after", str(max(1, round(seconds))).encode()),
            (b"retry-after-ms", str(max(1, round(seconds * 1000))).encode())]


def _presented_key(headers) -> str:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
        elif name == b"x-api-key":
            return value.decode("latin-1").strip()
    return ""


async def _refuse(send, status: int, code: str, message: str, *, headers: list | None = None) -> None:
    body = json.dumps(error_body(status, code, message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or []), *([(b"www-authenticate", b"Bearer")] if status == 401 else [])]})
    await send({"type": "http.response.body", "body": body})
