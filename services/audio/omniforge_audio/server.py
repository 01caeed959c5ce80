"""Runs the audio service: `python -m omniforge_audio.server` (or `omniforge up`)."""
from __future__ import annotations

import asyncio

from omniforge_proto.v1 import audio_pb2, audio_pb2_grpc
from omniforge_shared import serving
from omniforge_shared.audio import AudioLimits
from omniforge_shared.bundle import Bundle
from omniforge_shared.logs import setup_logging
from omniforge_shared.metrics import Metrics
from omniforge_shared.settings import load_settings

from .asr import ASREngine
from .servicer import AudioServicer
from .settings import AudioServiceSettings
from .tts import TTSEngine

TASKS = ("speech-recognition", "text-to-speech")
SERVICE_NAME = audio_pb2.DESCRIPTOR.services_by_name["AudioService"].full_name


def load_asr(bundle: Bundle, pool: serving.ModelPool) -> ASREngine:
    s: AudioServiceSettings = pool.settings
    return ASREngine(bundle, threads=s.threads, window_seconds=s.window_seconds, max_batch=s.max_batch,
                     warps=s.warps)


def load_tts(bundle: Bundle, pool: serving.ModelPool) -> TTSEngine:
    return TTSEngine(bundle, threads=pool.settings.threads)


def make_pool(settings: AudioServiceSettings) -> serving.ModelPool:
    return serving.ModelPool(settings, task=TASKS, metrics=Metrics("audio"),
                             engine_factory={"speech-recognition": load_asr, "text-to-speech": load_tts})


def load_models(pool: serving.ModelPool, settings: AudioServiceSettings) -> None:
    from omniforge_shared.bundle import load_bundle

    pool.load_configured()
    if settings.tts_bundle is not None:
        pool.load(load_bundle(settings.tts_bundle))


async def serve(settings: AudioServiceSettings, *, ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None, pool: serving.ModelPool | None = None) -> None:
    if pool is None:
        pool = make_pool(settings)
        await asyncio.to_thread(load_models, pool, settings)
    limits = AudioLimits(max_bytes=int(settings.max_audio_mb * 2**20), max_seconds=settings.max_audio_seconds)
    servicer = AudioServicer(pool, limits=limits, partial_every_s=settings.partial_every_s)
    await serving.serve(settings, pool, service_name=SERVICE_NAME, ready=ready, stop=stop,
                        add_servicer=lambda server: audio_pb2_grpc.add_AudioServiceServicer_to_server(servicer, server))


def main() -> None:
    setup_logging("audio")
    asyncio.run(serve(load_settings(AudioServiceSettings)))


if __name__ == "__main__":
    main()
