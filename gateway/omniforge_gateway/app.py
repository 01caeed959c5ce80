"""The omniforge HTTP gateway: routes translate HTTP <-> gRPC and nothing more."""
from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from omniforge_shared.jobs.queue import TrainingSettings, enqueue, make_celery
from omniforge_shared.jobs.store import JobStore
from omniforge_shared.keys import KeyStore
from omniforge_shared.logs import setup_logging
from omniforge_shared.registry_settings import RegistrySettings
from omniforge_shared.settings import load_settings

from . import errors
from .clients import CLIENTS
from .auth import AuthMiddleware, MemoryCounter, RedisCounter
from .metrics import GatewayMetrics, RequestMiddleware
from .routes import (admin, audio, caption, datasets, generate, health, images, models, openai_media, openai_text, search,
                     training)
from .settings import GatewaySettings

logger = logging.getLogger("omniforge.gateway")


class TrainingJobs:
    """The job store and the Celery app jobs are sent through (by task name: no torch here)."""

    def __init__(self, registry) -> None:
        self.store = JobStore(registry)
        self.settings = load_settings(TrainingSettings)
        self.celery = make_celery(self.settings)

    def enqueue(self, job_id: str, queue: str) -> None:
        enqueue(self.celery, job_id, queue)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or load_settings(GatewaySettings)
    metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        credentials = settings.channel_credentials()
        app.state.services = {label: CLIENTS[label](address, retry_after_s=settings.retry_after_s, credentials=credentials)
                              for label, address in settings.addresses().items() if address}
        for label, client in app.state.services.items():
            logger.info("gateway: %s service at %s", label, client.address)
        registry_settings = load_settings(RegistrySettings)
        app.state.registry = registry_settings.open()
        app.state.data_root = registry_settings.data_root     # the worker reads the same setting
        app.state.jobs = TrainingJobs(app.state.registry)
        app.state.keys = KeyStore(app.state.registry)
        try:
            yield
        finally:
            for client in app.state.services.values():
                await client.close()
            app.state.registry.close()

    app = FastAPI(title="omniforge", version="0.1.0", lifespan=lifespan,
                  description="Generate text, images and speech, transcribe speech, embed text and images into one space, and search, with your own models.")
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.started_at = time.time()        # the `created` of /v1/models
    errors.install(app)
    if not settings.auth:
        logger.warning("API keys are OFF: anyone who reaches %s:%d may use every route. This is for local runs "
                       "only; set OMNIFORGE_GATEWAY_AUTH=on and create keys with `omniforge keys create`",
                       settings.host, settings.port)
    for router in (generate.router, caption.router, images.router, search.router, audio.router, models.router,
                   health.router, training.router, datasets.router, openai_text.router, openai_media.router,
                   admin.router):
        app.include_router(router)
    # the last added runs first: CORS, then the request id and metrics, then the keys
    if settings.auth:
        counter = RedisCounter(settings.redis_url) if settings.redis_url else MemoryCounter()
        app.add_middleware(AuthMiddleware, keys=lambda: app.state.keys, counter=counter,
                           default_rate_limit=settings.rate_limit_per_minute, default_quota=settings.quota_per_day)
    app.add_middleware(RequestMiddleware, metrics=metrics)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"], expose_headers=["x-request-id", "retry-after"])
    return app


def main() -> None:
    import uvicorn

    setup_logging("gateway")
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    settings = load_settings(GatewaySettings)
    # log_config=None: uvicorn's records go through our handler (JSON when asked for)
    tls = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)} if settings.tls_cert else {}
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None, access_log=False,
                loop="asyncio", http="h11", **tls)   # measured: uvloop/httptools did not help here (bench served)


if __name__ == "__main__":
    main()
