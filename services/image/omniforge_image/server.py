"""Runs the image service: `python -m omniforge_image.server` (or `omniforge up`)."""
from __future__ import annotations

import asyncio

from omniforge_proto.v1 import image_pb2, image_pb2_grpc
from omniforge_shared import serving
from omniforge_shared.bundle import Bundle
from omniforge_shared.encoders import ImageEmbedder
from omniforge_shared.images import ImageLimits
from omniforge_shared.logs import setup_logging
from omniforge_shared.metrics import Metrics
from omniforge_shared.settings import load_settings

from .engine import DiffusionEngine
from .servicer import ImageServicer
from .settings import ImageServiceSettings

TASKS = ("text-to-image", "embedding")
SERVICE_NAME = image_pb2.DESCRIPTOR.services_by_name["ImageService"].full_name


class ImageEncoderEngine(ImageEmbedder):
    """The image tower of an embedding bundle, as a pool engine (Encode)."""
    backend_name = "onnxruntime"

    def gauges(self) -> dict[str, float]:
        return {}

    def retire(self) -> None:
        pass

    def stop(self) -> None:
        pass


def load_diffusion(bundle: Bundle, pool: serving.ModelPool) -> DiffusionEngine:
    s: ImageServiceSettings = pool.settings
    return DiffusionEngine(bundle, threads=s.threads, max_images=s.max_images, max_steps=s.max_steps,
                           max_size=s.max_size)


def load_encoder(bundle: Bundle, pool: serving.ModelPool) -> ImageEncoderEngine:
    return ImageEncoderEngine(bundle, threads=pool.settings.threads)


def make_pool(settings: ImageServiceSettings) -> serving.ModelPool:
    return serving.ModelPool(settings, task=TASKS, metrics=Metrics("image"),
                             engine_factory={"text-to-image": load_diffusion, "embedding": load_encoder})


def load_models(pool: serving.ModelPool, settings: ImageServiceSettings) -> None:
    from omniforge_shared.bundle import load_bundle

    pool.load_configured()
    if settings.encoder_bundle is not None:
        pool.load(load_bundle(settings.encoder_bundle))


async def serve(settings: ImageServiceSettings, *, ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None, pool: serving.ModelPool | None = None) -> None:
    if pool is None:
        pool = make_pool(settings)
        await asyncio.to_thread(load_models, pool, settings)
    servicer = ImageServicer(pool, limits=ImageLimits(max_bytes=settings.max_image_bytes,
                                                      max_pixels=settings.max_image_pixels))
    await serving.serve(settings, pool, service_name=SERVICE_NAME, ready=ready, stop=stop,
                        add_servicer=lambda server: image_pb2_grpc.add_ImageServiceServicer_to_server(servicer, server))


def main() -> None:
    setup_logging("image")
    asyncio.run(serve(load_settings(ImageServiceSettings)))


if __name__ == "__main__":
    main()
