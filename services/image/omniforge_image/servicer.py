"""gRPC servicer: translates omniforge.v1.ImageService messages to engine calls and back."""
from __future__ import annotations

import asyncio

import grpc

from omniforge_proto.v1 import common_pb2, image_pb2, image_pb2_grpc
from omniforge_shared.images import ImageError, ImageLimits, decode_image
from omniforge_shared.serving import ModelNotFound, ModelPool, label_call, list_models_reply

from .engine import GenerateParams, Image, InvalidRequest, Progress

_DONE = object()


class ImageServicer(image_pb2_grpc.ImageServiceServicer):
    def __init__(self, pool: ModelPool, *, limits: ImageLimits) -> None:
        self.pool, self.limits = pool, limits
        self.images = pool.metrics.counter("images_generated_total", "images generated", ["model", "version"])
        self.seconds = pool.metrics.histogram("generation_seconds", "time to generate a batch of images",
                                              ["model", "version"])

    async def _model(self, ref, context, task: str):
        try:
            loaded = self.pool.get(ref.name, ref.version, task=task)
        except ModelNotFound as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        label_call(model=loaded.name, version=loaded.version)
        return loaded

    async def Generate(self, request, context):
        loaded = await self._model(request.model, context, "text-to-image")
        engine = loaded.engine
        params = GenerateParams(prompt=request.prompt, n=request.n or 1, steps=request.steps or 25,
                                guidance=request.guidance or 3.0, seed=request.seed if request.HasField("seed") else None,
                                preview_every=request.preview_every, size=request.size)
        try:
            engine.check(params)
        except InvalidRequest as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        gone = [False]
        events = engine.generate(params, cancelled=lambda: gone[0])
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            while True:
                event = await asyncio.to_thread(next, events, _DONE)
                if event is _DONE:
                    break
                if isinstance(event, Progress):
                    yield image_pb2.GenerateImagesEvent(
                        progress=image_pb2.GenerationProgress(step=event.step, steps=event.steps, previews=event.previews),
                        model=loaded.name, model_version=loaded.version)
                elif isinstance(event, Image):
                    yield image_pb2.GenerateImagesEvent(image=image_pb2.GeneratedImage(index=event.index, png=event.png,
                                                                                       seed=event.seed),
                                                        model=loaded.name, model_version=loaded.version)
        finally:
            gone[0] = True                  # a cancelled call stops the loop at its next step
        self.images.labels(loaded.name, loaded.version).inc(params.n)
        self.seconds.labels(loaded.name, loaded.version).observe(loop.time() - start)

    async def Encode(self, request, context):
        loaded = await self._model(request.model, context, "embedding")
        if not request.images:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no images given; send at least one")

        def run():
            decoded = []
            for i, data in enumerate(request.images):
                try:
                    decoded.append(decode_image(data, limits=self.limits))
                except ImageError as e:
                    raise InvalidRequest(f"image {i}: {e}") from None
            return loaded.engine(decoded)

        try:
            vectors = await asyncio.to_thread(run)
        except InvalidRequest as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return image_pb2.EncodeImagesResponse(embeddings=[common_pb2.Embedding(values=v.tolist()) for v in vectors],
                                              dimensions=int(vectors.shape[1]), model=loaded.name,
                                              model_version=loaded.version)

    async def ListModels(self, request, context):
        return list_models_reply(self.pool)
