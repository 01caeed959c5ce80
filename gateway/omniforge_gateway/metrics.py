"""The gateway's Prometheus metrics, and a pure-ASGI middleware that gives every request its
id (X-Request-ID, taken or made), counts it and its latency, and logs one line for it."""
from __future__ import annotations

import logging
import re
import time
import uuid

from omniforge_shared.logs import request_id
from omniforge_shared.metrics import TOKEN_BUCKETS, Metrics

logger = logging.getLogger("omniforge.access")
# a request id we take from a client: short, printable, no spaces (it goes into logs and metadata)
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class GatewayMetrics(Metrics):
    def __init__(self) -> None:
        super().__init__("gateway")
        self.requests = self.counter("requests_total", "HTTP requests", ["route", "model", "status"])
        self.latency = self.histogram("request_duration_seconds", "HTTP request latency", ["route", "model"])
        self.tokens = self.counter("tokens_generated_total", "tokens generated", ["model"])
        self.ttft = self.histogram("time_to_first_token_seconds", "time to the first streamed text", ["model"])
        self.itl = self.histogram("inter_token_latency_seconds", "mean time between streamed tokens", ["model"],
                                  buckets=TOKEN_BUCKETS)


class RequestMiddleware:
    """Records every HTTP request under its route template and the model the handler named
    (handlers put it in scope["state"]["model"])."""

    def __init__(self, app, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = [500]
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        rid = given if _ID.match(given) else uuid.uuid4().hex
        request_id.set(rid)
        header = (b"x-request-id", rid.encode())

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            model = scope.get("state", {}).get("model", "")
            elapsed = time.perf_counter() - start
            self.metrics.requests.labels(path, model, str(status[0])).inc()
            self.metrics.latency.labels(path, model).observe(elapsed)
            logger.info("%s %s %d %.1f ms", scope["method"], scope["path"], status[0], elapsed * 1e3)
