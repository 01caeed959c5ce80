"""POST /generate: JSON in, JSON out, or Server-Sent Events with "stream": true."""
from __future__ import annotations

import asyncio
import json
import logging
import time

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from omniforge_proto.v1 import common_pb2, text_pb2

from ..deps import MetricsDep, SettingsDep, TextDep
from ..errors import ApiError
from ..schemas import GenerateRequest, GenerateResponse

logger = logging.getLogger(__name__)
router = APIRouter(tags=["text"])


def to_proto(body: GenerateRequest) -> text_pb2.GenerateRequest:
    sampling = text_pb2.SamplingParams(
        max_tokens=body.max_tokens, temperature=body.temperature, top_k=body.top_k, top_p=body.top_p,
        repetition_penalty=body.repetition_penalty, stop=body.stop)
    if body.seed is not None:
        sampling.seed = body.seed
    return text_pb2.GenerateRequest(model=common_pb2.ModelRef(name=body.model or ""), prompt=body.prompt,
                                    sampling=sampling)


def _check(body: GenerateRequest, settings) -> None:
    if body.max_tokens > settings.max_tokens_limit:
        raise ApiError(422, "invalid_request",
                       f"max_tokens={body.max_tokens} is over the limit; send 1..{settings.max_tokens_limit}")
    if len(body.prompt) > settings.max_prompt_chars:
        raise ApiError(422, "invalid_request",
                       f"prompt is {len(body.prompt)} characters; send at most {settings.max_prompt_chars}")


async def _cancel_on_disconnect(call, request: Request, gone: list[bool]) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(0.1)
    gone[0] = True
    call.cancel()


@router.post("/generate", response_model=GenerateResponse,
             responses={200: {"content": {"text/event-stream": {}}}})
async def generate(body: GenerateRequest, request: Request, text: TextDep, settings: SettingsDep,
                   metrics: MetricsDep):
    _check(body, settings)
    model = body.model or ""
    request.scope.setdefault("state", {})["model"] = model
    req = to_proto(body)
    if body.stream:
        return await _stream(req, text, settings, metrics, model)
    call = text.stub.Generate(req, timeout=settings.request_timeout_s, metadata=text.metadata())
    try:
        reply = await _unless_disconnected(call, request)
    except grpc.aio.AioRpcError as e:
        raise text.error(e) from None
    metrics.tokens.labels(model).inc(reply.usage.completion_tokens)
    # built by hand: the reply is already well-formed, so no second validation pass
    return JSONResponse({"text": reply.text, "finish_reason": reply.finish_reason, "model": reply.model,
                         "model_version": reply.model_version,
                         "usage": {"prompt_tokens": reply.usage.prompt_tokens,
                                   "completion_tokens": reply.usage.completion_tokens}})


async def _unless_disconnected(call, request: Request, *, grace_s: float = 0.05):
    """The call's reply; a client that disconnects cancels the call. The reply is awaited
    directly, and only a call still running after `grace_s` gets a disconnect watcher: short
    calls pay for one timer, not for extra tasks and event-loop turns."""
    gone, watcher = [False], None

    def watch() -> None:
        nonlocal watcher
        watcher = asyncio.ensure_future(_cancel_on_disconnect(call, request, gone))

    timer = asyncio.get_running_loop().call_later(grace_s, watch)
    try:
        return await call
    except asyncio.CancelledError:
        # the client went away and the watcher cancelled the call, not this task (shutdown)
        if gone[0] and asyncio.current_task().cancelling() == 0:
            raise ApiError(499, "cancelled", "client closed the request") from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()
            if watcher.done() and not watcher.cancelled() and watcher.exception() is not None:
                logger.warning("disconnect watcher failed: %r", watcher.exception())


async def _stream(req, text, settings, metrics, model: str) -> StreamingResponse:
    start = time.perf_counter()
    call = text.stub.GenerateStream(req, timeout=settings.request_timeout_s, metadata=text.metadata())
    stream = call.__aiter__()
    # the first chunk decides the HTTP status: bad input is a 4xx, not an event
    try:
        first = await stream.__anext__()
    except grpc.aio.AioRpcError as e:
        raise text.error(e) from None
    except StopAsyncIteration:
        raise ApiError(502, "upstream_error", "text service ended the stream without a reply") from None
    first_at = time.perf_counter()
    metrics.ttft.labels(model).observe(first_at - start)

    def event(chunk) -> str:
        data = {"text": chunk.text, "finish_reason": chunk.finish_reason or None,
                "model": chunk.model, "model_version": chunk.model_version}
        if chunk.finish_reason:
            tokens = chunk.usage.completion_tokens
            data["usage"] = {"prompt_tokens": chunk.usage.prompt_tokens, "completion_tokens": tokens}
            metrics.tokens.labels(model).inc(tokens)
            if tokens > 1:
                metrics.itl.labels(model).observe((time.perf_counter() - first_at) / (tokens - 1))
        return f"data: {json.dumps(data)}\n\n"

    async def events():
        try:
            yield event(first)
            async for chunk in stream:
                yield event(chunk)
            yield "data: [DONE]\n\n"
        except grpc.aio.AioRpcError as e:
            err = text.error(e)
            yield f"event: error\ndata: {json.dumps(err.body())}\n\n"
        finally:
            call.cancel()   # no-op when finished; stops generation when the client left

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
