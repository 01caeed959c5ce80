"""POST /images/generations: OpenAI's request and response shape; `"stream": true` answers with
Server-Sent Events: `image_generation.progress` per step, `image_generation.partial_image`
previews when asked for, `image_generation.completed` per image, then `[DONE]`."""
from __future__ import annotations

import base64
import json
import time

import grpc
from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from omniforge_proto.v1 import common_pb2, image_pb2

from ..deps import ImageDep, SettingsDep
from ..errors import ApiError
from ..schemas import ImageData, ImageGenerationRequest, ImageGenerationResponse

router = APIRouter(tags=["vision"])


def to_proto(body: ImageGenerationRequest) -> image_pb2.GenerateImagesRequest:
    req = image_pb2.GenerateImagesRequest(model=common_pb2.ModelRef(name=body.model or ""), prompt=body.prompt,
                                          n=body.n, steps=body.steps, guidance=body.guidance,
                                          preview_every=body.preview_every if body.stream else 0,
                                          size=int(body.size.partition("x")[0]) if body.size else 0)
    if body.seed is not None:
        req.seed = body.seed
    return req


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@router.post("/images/generations", response_model=ImageGenerationResponse,
             responses={200: {"content": {"text/event-stream": {}}}})
async def generate_images(body: ImageGenerationRequest, image: ImageDep, settings: SettingsDep):
    if body.response_format == "url":
        raise ApiError(400, "invalid_request", "response_format 'url' is not supported: this server keeps no "
                       "image store; send response_format 'b64_json' and the PNGs come in the response")
    call = image.stub.Generate(to_proto(body), timeout=settings.request_timeout_s, metadata=image.metadata())
    stream = call.__aiter__()
    try:
        first = await stream.__anext__()      # bad input fails here, before any 200 is sent
    except grpc.aio.AioRpcError as e:
        raise image.error(e) from None
    except StopAsyncIteration:
        raise ApiError(502, "upstream_error", "the image service ended the stream without images") from None
    if body.stream:
        return StreamingResponse(_events(first, stream, call, image), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    images, model, version = [], first.model, first.model_version
    try:
        async for event in _chain(first, stream):
            if event.WhichOneof("event") == "image":
                images.append(event.image)
    except grpc.aio.AioRpcError as e:
        raise image.error(e) from None
    return ImageGenerationResponse(created=int(time.time()), model=model, model_version=version,
                                   data=[ImageData(b64_json=b64(i.png), seed=i.seed) for i in images])


async def _chain(first, stream):
    yield first
    async for event in stream:
        yield event


async def _events(first, stream, call, image):
    def sse(data: dict) -> str:
        return f"data: {json.dumps(data)}\n\n"

    try:
        async for event in _chain(first, stream):
            kind = event.WhichOneof("event")
            if kind == "progress":
                p = event.progress
                yield sse({"type": "image_generation.progress", "step": p.step, "steps": p.steps})
                for i, png in enumerate(p.previews):
                    yield sse({"type": "image_generation.partial_image", "index": i, "step": p.step,
                               "partial_image_index": p.step, "b64_json": b64(png)})
            elif kind == "image":
                yield sse({"type": "image_generation.completed", "index": event.image.index,
                           "b64_json": b64(event.image.png), "seed": event.image.seed, "model": event.model,
                           "model_version": event.model_version, "created_at": int(time.time())})
        yield "data: [DONE]\n\n"
    except grpc.aio.AioRpcError as e:
        yield f"event: error\ndata: {json.dumps(image.error(e).body())}\n\n"
    finally:
        call.cancel()          # a client that left stops the sampling loop at its next step
