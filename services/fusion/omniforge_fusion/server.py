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

from .audio_tower import AudioTowerEngine
from .captioner import CaptionEngine
from .engine import EmbeddingEngine
from .index import SearchIndex
from .servicer import FusionServicer
from .settings import FusionServiceSettings

TASKS = ("embedding", "image-caption", "audio-embedding")
SERVICE_NAME = fusion_pb2.DESCRIPTOR.services_by_name["FusionService"].full_name


def load_engine(bundle: Bundle, pool: serving.ModelPool) -> EmbeddingEngine:
    s: FusionServiceSettings = pool.settings
    return EmbeddingEngine(bundle, threads=s.threads,
                           limits=ImageLimits(max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels))


def load_captioner(bundle: Bundle, pool: serving.ModelPool) -> CaptionEngine:
    s: FusionServiceSettings = pool.settings
    return CaptionEngine(bundle, threads=s.threads, max_batch=s.caption_max_batch,
                         limits=ImageLimits(max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels))


def load_audio_tower(bundle: Bundle, pool: serving.ModelPool) -> AudioTowerEngine:
    s: FusionServiceSettings = pool.settings
    return AudioTowerEngine(bundle, threads=s.threads, max_bytes=s.max_audio_bytes, max_seconds=s.max_audio_seconds)


def make_pool(settings: FusionServiceSettings) -> serving.ModelPool:
    return serving.ModelPool(settings, task=TASKS, metrics=Metrics("fusion"),
                             engine_factory={"embedding": load_engine, "image-caption": load_captioner,
                                             "audio-embedding": load_audio_tower})


def load_models(pool: serving.ModelPool, settings: FusionServiceSettings) -> None:
    """The registry's production models (or the bundle folders the settings name)."""
    from omniforge_shared.bundle import load_bundle

    pool.load_configured()
    if settings.caption_bundle is not None:
        pool.load(load_bundle(settings.caption_bundle))
    if settings.audio_bundle is not None:
        pool.load(load_bundle(settings.audio_bundle))


def open_index(settings: FusionServiceSettings) -> SearchIndex:
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    return SearchIndex(path=settings.chroma_path, url=settings.chroma_url)


async def serve(settings: FusionServiceSettings, *, ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None, pool: serving.ModelPool | None = None,
                index: SearchIndex | None = None) -> None:
    if pool is None:
        pool = make_pool(settings)
        await asyncio.to_thread(load_models, pool, settings)
    index = index or await asyncio.to_thread(open_index, settings)
    servicer = FusionServicer(pool, index, max_inputs=settings.max_inputs)
    await serving.serve(settings, pool, service_name=SERVICE_NAME, ready=ready, stop=stop,
                        add_servicer=lambda server: fusion_pb2_grpc.add_FusionServiceServicer_to_server(servicer, server))


def main() -> None:
    setup_logging("fusion")
    asyncio.run(serve(load_settings(FusionServiceSettings)))


if __name__ == "__main__":
    main()
