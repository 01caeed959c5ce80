"""The omniforge HTTP gateway: routes translate HTTP <-> gRPC and nothing more."""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from omniforge_shared.registry_settings import RegistrySettings
from omniforge_shared.settings import load_settings

from . import errors
from .clients import TextClient
from .metrics import GatewayMetrics, MetricsMiddleware
from .routes import generate, health, models, training
from .settings import GatewaySettings

logger = logging.getLogger("omniforge.gateway")


class TrainingJobs:
    """The job store and the Celery app jobs are sent through (by task name: no torch here)."""

    def __init__(self, registry) -> None:
        from omniforge_training.jobs.celery_app import make_celery
        from omniforge_training.jobs.store import JobStore

        self.store = JobStore(registry)
        self.celery = make_celery()

    def enqueue(self, job_id: str, queue: str) -> None:
        from omniforge_training.jobs.celery_app import enqueue

        enqueue(self.celery, job_id, queue)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or load_settings(GatewaySettings)
    metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.text = TextClient(settings.text_address)
        app.state.services = [app.state.text]
        logger.info("gateway: text service at %s", settings.text_address)
        app.state.registry = load_settings(RegistrySettings).open()
        app.state.jobs = TrainingJobs(app.state.registry)
        try:
            yield
        finally:
            for client in app.state.services:
                await client.close()
            app.state.registry.close()

    app = FastAPI(title="omniforge", version="0.1.0", lifespan=lifespan,
                  description="Generate text (and soon images and speech) with your own models.")
    app.state.settings = settings
    app.state.metrics = metrics
    errors.install(app)
    app.include_router(generate.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(training.router)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def main() -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings(GatewaySettings)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
