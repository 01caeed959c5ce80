"""Prometheus metrics, and a pure-ASGI middleware that counts requests and their latency."""
from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("omniforge_requests_total", "HTTP requests", ["route", "model", "status"],
                                registry=self.registry)
        self.latency = Histogram("omniforge_request_latency_seconds", "HTTP request latency",
                                 ["route", "model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.tokens = Counter("omniforge_tokens_generated_total", "tokens generated", ["model"],
                              registry=self.registry)
        self.ttft = Histogram("omniforge_time_to_first_token_seconds", "time to the first streamed text",
                              ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
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

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            model = scope.get("state", {}).get("model", "")
            self.metrics.requests.labels(path, model, str(status[0])).inc()
            self.metrics.latency.labels(path, model).observe(time.perf_counter() - start)
