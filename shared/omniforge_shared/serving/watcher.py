"""Keeps the served models in step with the registry: a promotion swaps the new version in.

Redis pub/sub (OMNIFORGE_REDIS_URL) brings the news at once; polling every poll_seconds is
the fallback and the only source without Redis.
"""
from __future__ import annotations

import asyncio
import logging
import time

from .pool import ModelPool

logger = logging.getLogger(__name__)


async def watch_registry(pool: ModelPool, *, poll_seconds: float, redis_url: str | None,
                         on_change=None) -> None:
    if pool.registry is None or (not poll_seconds and not redis_url):
        return
    pubsub = None
    if redis_url:
        from omniforge_shared.events import RedisEvents

        try:
            pubsub = RedisEvents(redis_url).subscribe()
        except Exception as e:
            logger.warning("no Redis pub/sub (%s); polling the registry instead", e)
    last_poll = time.monotonic()
    while True:
        if pubsub is not None:
            # wait for a stage-change message, at most until the next poll is due
            timeout = poll_seconds or 1.0
            message = await asyncio.to_thread(pubsub.get_message, timeout=timeout)
            due = message is not None or (poll_seconds and time.monotonic() - last_poll >= poll_seconds)
        else:
            await asyncio.sleep(poll_seconds)
            due = True
        if not due:
            continue
        last_poll = time.monotonic()
        try:
            changed = await asyncio.to_thread(pool.refresh)
        except Exception:
            logger.exception("registry refresh failed; serving what is loaded")
            continue
        if changed:
            logger.info("now serving %s", ", ".join(changed))
            if on_change is not None:
                await on_change()
