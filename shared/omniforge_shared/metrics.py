"""Prometheus metrics under one naming scheme: `omniforge_<component>_<what>_<unit>`, with
the labels `route`, `model`, `version`, `status` where they apply.

Each process owns one `Metrics` (a registry of its own, so tests can run several in one
process); services and workers expose it on their metrics port, the gateway on /metrics.
"""
from __future__ import annotations

import logging

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TOKEN_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1)


class Metrics:
    def __init__(self, component: str) -> None:
        self.component = component
        self.registry = CollectorRegistry()

    def name(self, what: str) -> str:
        return f"omniforge_{self.component}_{what}"

    def counter(self, what: str, doc: str, labels=()) -> Counter:
        return Counter(self.name(what), doc, list(labels), registry=self.registry)

    def gauge(self, what: str, doc: str, labels=()) -> Gauge:
        return Gauge(self.name(what), doc, list(labels), registry=self.registry)

    def histogram(self, what: str, doc: str, labels=(), buckets=LATENCY_BUCKETS) -> Histogram:
        return Histogram(self.name(what), doc, list(labels), buckets=buckets, registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def serve(self, host: str, port: int):
        """Exposes the registry on http://host:port/metrics; a port that is taken is logged,
        never fatal (the process serves its requests without a metrics endpoint)."""
        from prometheus_client import start_http_server

        try:
            server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            logger.error("metrics endpoint not started: %s:%d: %s (set the component's METRICS_PORT)", host, port, e)
            return None
        logger.info("metrics on http://%s:%d/metrics", host, server.server_port)
        return server
