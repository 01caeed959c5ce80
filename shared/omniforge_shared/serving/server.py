"""Runs a model service: a grpc.aio server with the standard health service and reflection,
the request interceptor, a Prometheus endpoint, the registry watcher, and a graceful stop on
SIGTERM/SIGINT (running calls get `grace_seconds` to finish)."""
from __future__ import annotations

import asyncio
import logging
import signal
from typing import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .interceptor import RequestInterceptor
from .pool import ModelPool
from .settings import ServiceSettings
from .watcher import watch_registry

logger = logging.getLogger("omniforge.serving")
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


async def serve(settings: ServiceSettings, pool: ModelPool, *, service_name: str,
                add_servicer: Callable[[grpc.aio.Server], None], ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Serves `service_name` until SIGTERM/SIGINT (or `stop` is set). The pool is served as it
    is: load it first (`pool.load_configured()`). `add_servicer(server)` adds the servicer."""
    metrics_server = pool.metrics.serve(settings.metrics_host, settings.metrics_port)
    limit = settings.max_message_mb * 1024 * 1024   # images and audio travel in one message
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", limit)],
                             interceptors=[RequestInterceptor(pool.metrics)])
    add_servicer(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([service_name, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    credentials = settings.server_credentials()
    address = f"{settings.host}:{settings.port}"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    await server.start()

    async def set_health(status) -> None:
        await health_servicer.set(service_name, status)
        await health_servicer.set("", status)

    await set_health(SERVING if pool.models else NOT_SERVING)
    logger.info("%s listening on %s:%d%s (%d models)", service_name, settings.host, port,
                " with mutual TLS" if settings.tls_client_ca else " with TLS" if credentials else "", len(pool.models))
    settings.port = port
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            pass
    watcher = asyncio.create_task(watch_registry(pool, poll_seconds=settings.poll_seconds,
                                                 redis_url=settings.redis_url,
                                                 on_change=lambda: set_health(SERVING)))
    if ready is not None:
        ready.set()
    await stop.wait()
    watcher.cancel()
    # graceful stop: refuse new calls, let running ones finish for grace_seconds
    logger.info("stopping: %.1fs grace for running calls", settings.grace_seconds)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(settings.grace_seconds)
    pool.stop()
    if metrics_server is not None:
        metrics_server.shutdown()


def list_models_reply(pool: ModelPool, *, extra=lambda manifest: {}):
    """The ListModels reply every service gives: each served model, its task, backend and numeric
    metrics; `extra(manifest) -> dict` adds task-specific ModelInfo fields (context_length, ...)."""
    from omniforge_proto.v1 import common_pb2

    out = []
    for loaded in pool.models.values():
        m = loaded.bundle.manifest
        metrics = {k: float(v) for k, v in m.get("metrics", {}).items() if isinstance(v, (int, float))}
        out.append(common_pb2.ModelInfo(name=loaded.name, version=loaded.version, task=m["task"],
                                        backend=loaded.backend, metrics=metrics, **extra(m)))
    return common_pb2.ListModelsResponse(models=out)
