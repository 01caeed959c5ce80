"""Runs the text service: `python -m omniforge_text.server` (or `omniforge up`)."""
from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from omniforge_proto.v1 import text_pb2, text_pb2_grpc
from omniforge_shared.settings import load_settings

from .pool import ModelPool
from .servicer import TextServicer
from .settings import TextServiceSettings
from .watcher import watch_registry

logger = logging.getLogger("omniforge.text")
SERVICE_NAME = text_pb2.DESCRIPTOR.services_by_name["TextService"].full_name


async def serve(settings: TextServiceSettings, *, ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None, pool: ModelPool | None = None) -> None:
    """Serves until SIGTERM/SIGINT (or `stop` is set). A `pool` given is served as it is."""
    if pool is None:
        pool = ModelPool(settings)
        await asyncio.to_thread(pool.load_configured)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    text_pb2_grpc.add_TextServiceServicer_to_server(TextServicer(pool), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    address = f"{settings.host}:{settings.port}"
    port = server.add_insecure_port(address)
    await server.start()
    status = health_pb2.HealthCheckResponse.SERVING if pool.models else health_pb2.HealthCheckResponse.NOT_SERVING
    await health_servicer.set(SERVICE_NAME, status)
    await health_servicer.set("", status)
    logger.info("text service listening on %s:%d (%d models)", settings.host, port, len(pool.models))
    settings.port = port
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            pass
    async def became_serving():
        await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)

    watcher = asyncio.create_task(watch_registry(pool, poll_seconds=settings.poll_seconds,
                                                 redis_url=settings.redis_url, on_change=became_serving))
    if ready is not None:
        ready.set()
    await stop.wait()
    watcher.cancel()
    # graceful stop: refuse new calls, let running ones finish for grace_seconds
    logger.info("stopping: %.1fs grace for running calls", settings.grace_seconds)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(settings.grace_seconds)
    pool.stop()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(load_settings(TextServiceSettings)))


if __name__ == "__main__":
    main()
