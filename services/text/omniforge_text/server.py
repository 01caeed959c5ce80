"""Runs the text service: `python -m omniforge_text.server` (or `omniforge up`)."""
from __future__ import annotations

import asyncio

from omniforge_proto.v1 import text_pb2, text_pb2_grpc
from omniforge_shared import serving
from omniforge_shared.backends import load_decoder
from omniforge_shared.bundle import Bundle
from omniforge_shared.logs import setup_logging
from omniforge_shared.metrics import Metrics
from omniforge_shared.settings import load_settings
from omniforge_shared.tokenizer import load_tokenizer

from .engine import TextEngine
from .servicer import TextServicer
from .settings import TextServiceSettings

TASK = "text-generation"
SERVICE_NAME = text_pb2.DESCRIPTOR.services_by_name["TextService"].full_name


def load_engine(bundle: Bundle, pool: serving.ModelPool) -> TextEngine:
    """The pool's engine factory: a decoder backend and the continuous-batching engine over it."""
    s: TextServiceSettings = pool.settings
    base = None
    if s.adapters == "adapter" and "base_model" in bundle.manifest:
        if s.backend != "torch" or pool.registry is None:
            raise ValueError("serving an adapter unmerged needs OMNIFORGE_TEXT_BACKEND=torch and the registry")
        ref = bundle.manifest["base_model"]
        base = pool.registry.bundle(ref["name"], ref["version"])
    backend = load_decoder(bundle, backend=s.backend, threads=s.threads, int8=s.int8, triton_url=s.triton_url,
                           base_bundle=base, spin_wait=s.spin_wait)
    return TextEngine(backend, load_tokenizer(bundle.file("tokenizer")), max_batch_size=s.max_batch_size,
                      max_tokens_limit=s.max_tokens_limit, stream_interval_s=s.stream_interval_ms / 1000,
                      feed_prompt_tokens=s.feed_prompt_tokens)


def make_pool(settings: TextServiceSettings) -> serving.ModelPool:
    return serving.ModelPool(settings, task=TASK, engine_factory=load_engine, metrics=Metrics("text"))


async def serve(settings: TextServiceSettings, *, ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None, pool: serving.ModelPool | None = None) -> None:
    """Serves until SIGTERM/SIGINT (or `stop` is set). A `pool` given is served as it is."""
    if pool is None:
        pool = make_pool(settings)
        await asyncio.to_thread(pool.load_configured)
    servicer = TextServicer(pool)
    await serving.serve(settings, pool, service_name=SERVICE_NAME, ready=ready, stop=stop,
                        add_servicer=lambda server: text_pb2_grpc.add_TextServiceServicer_to_server(servicer, server))


def main() -> None:
    setup_logging("text")
    asyncio.run(serve(load_settings(TextServiceSettings)))


if __name__ == "__main__":
    main()
