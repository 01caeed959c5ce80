"""Model stage changes over Redis pub/sub: the registry publishes, services subscribe."""
from __future__ import annotations

import json

CHANNEL = "omniforge:model-stages"


class RedisEvents:
    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_connect_timeout=2)

    def publish_stage_change(self, name: str, version: str, stage: str) -> None:
        self.client.publish(CHANNEL, json.dumps({"name": name, "version": version, "stage": stage}))

    def subscribe(self):
        """A pubsub object subscribed to the channel; read it with get_message(timeout=...)."""
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(CHANNEL)
        return pubsub
