"""Runs the fusion service: `python -m omniforge_fusion.server` (or `omniforge up`)."""
from __future__ import annotations

import asyncio
import os

from omniforge_proto.v1 import fusion_pb2, fusion_pb2_grpc
from omniforge_shared import serving
from omniforge_shared.bundle import Bundle
from omniforge_shared.images import ImageLimits
from omniforge_shared.logs import setup_logging
from omniforge_shared.metrics import Metrics
from omniforge_shared.settings import load_settings

from .engine import EmbeddingEngine
from .index import SearchIndex
from .servicer import FusionServicer
from .settings import FusionServiceSettings

TASK = "embedding"
SERVICE_NAME = fusion_pb2.DESCRIPTOR.services_by_name["FusionService"].full_name


def load_engine(bundle: Bundle, pool: serving.ModelPool) -> EmbeddingEngine:
    s: FusionServiceSettings = pool.settings
    return EmbeddingEngine(bundle, threads=s.threads,
                           limits=ImageLimits(max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels))


def make_pool(settings: FusionServiceSettings) -> serving.ModelPool:
    return serving.ModelPool(settings, task=TASK, engine_factory=load_engine, metrics=Metrics("fusion"))


def open_index(settings: FusionServiceSettings) -> SearchIndex:
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    return SearchIndex(path=settings.chroma_path, url=settings.chroma_url)


async def serve(settings: FusionServiceSettings, *, ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None, pool: serving.ModelPool | None = None,
                index: SearchIndex | None = None) -> None:
    if pool is None:
        pool = make_pool(settings)
        await asyncio.to_thread(pool.load_configured)
    index = index or await asyncio.to_thread(open_index, settings)
    servicer = FusionServicer(pool, index, max_inputs=settings.max_inputs)
    await serving.serve(settings, pool, service_name=SERVICE_NAME, ready=ready, stop=stop,
                        add_servicer=lambda server: fusion_pb2_grpc.add_FusionServiceServicer_to_server(servicer, server))


def main() -> None:
    setup_logging("fusion")
    asyncio.run(serve(load_settings(FusionServiceSettings)))


if __name__ == "__main__":
    main()
