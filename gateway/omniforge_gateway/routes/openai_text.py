"""OpenAI-compatible text routes: GET /v1/models, POST /v1/completions, POST /v1/chat/completions.

They translate to the same gRPC calls as /generate: a completion is Generate with a prompt, a
chat completion Generate with messages (the text service renders them with the model's chat
template). An image in the last user message is answered by the captioner of the fusion
service; images earlier in a conversation reach the text model as their captions.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from omniforge_proto.v1 import common_pb2, fusion_pb2, text_pb2

from ..clients import not_configured
from ..deps import SettingsDep, TextDep
from ..errors import ApiError
from ..openai_protocol import ChatCompletionRequest, ChatMessageIn, CompletionRequest
from ..uploads import decode_base64, limit_bytes

router = APIRouter(prefix="/v1", tags=["openai"])
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _model_card(model_id: str, created: int) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "omniforge"}


async def _all_models(request: Request, settings) -> list[tuple[str, object]]:
    clients = list(request.app.state.services.values())
    replies = await asyncio.gather(*(c.list_models(timeout=settings.health_timeout_s * 5) for c in clients))
    return [(c.label, m) for c, infos in zip(clients, replies) for m in infos]


@router.get("/models")
async def list_models(request: Request, settings: SettingsDep) -> dict:
    """Every model the configured services serve, by name (a model id is a model name)."""
    created = int(request.app.state.started_at)
    seen, data = set(), []
    for _label, m in await _all_models(request, settings):
        if m.name not in seen:
            seen.add(m.name)
            data.append(_model_card(m.name, created))
    return {"object": "list", "data": data}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, request: Request, settings: SettingsDep) -> dict:
    names = {m.name for _label, m in await _all_models(request, settings)}
    if model_id not in names:
        raise ApiError(404, "model_not_found", f"no model {model_id!r} is served here; GET /v1/models lists them",
                       param="model")
    return _model_card(model_id, int(request.app.state.started_at))


def _sampling(body, max_tokens: int, seed: int | None) -> text_pb2.SamplingParams:
    params = text_pb2.SamplingParams(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                                     top_k=body.top_k, repetition_penalty=body.repetition_penalty, stop=body.stop)
    if seed is not None:
        params.seed = seed
    return params


def _seed(body, i: int) -> int | None:
    """Choice i of n: the request's seed + i, so each choice differs and the whole reply repeats."""
    return None if body.seed is None else (body.seed + i) % 2**63


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _generate_all(text, settings, requests: list[text_pb2.GenerateRequest]) -> list:
    """Runs the requests concurrently (the engine batches them); the first failure is the reply."""
    calls = [text.stub.Generate(r, timeout=settings.request_timeout_s, metadata=text.metadata()) for r in requests]
    try:
        return await asyncio.gather(*calls)
    except grpc.aio.AioRpcError as e:
        for call in calls:
            call.cancel()
        raise text.error(e) from None


async def _merged_streams(text, settings, requests: list[text_pb2.GenerateRequest]):
    """Yields (index, chunk) from every request's stream as they come; the first error is raised.
    The first chunk of each stream is awaited before anything is yielded, so that bad input
    answers with an HTTP error rather than a 200 with an error event."""
    calls = [text.stub.GenerateStream(r, timeout=settings.request_timeout_s, metadata=text.metadata())
             for r in requests]
    iters = [c.__aiter__() for c in calls]
    try:
        firsts = await asyncio.gather(*(it.__anext__() for it in iters))
    except grpc.aio.AioRpcError as e:
        for call in calls:
            call.cancel()
        raise text.error(e) from None

    async def gen():
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(i: int) -> None:
            try:
                async for chunk in iters[i]:
                    await queue.put((i, chunk))
            except grpc.aio.AioRpcError as e:
                await queue.put((i, e))
            finally:
                await queue.put((i, None))

        for i, first in enumerate(firsts):
            yield i, first
        pending = [i for i, first in enumerate(firsts) if not first.finish_reason]
        tasks = [asyncio.ensure_future(pump(i)) for i in pending]
        try:
            open_streams = len(pending)
            while open_streams:
                i, item = await queue.get()
                if item is None:
                    open_streams -= 1
                elif isinstance(item, grpc.aio.AioRpcError):
                    raise text.error(item)
                else:
                    yield i, item
        finally:
            for task in tasks:
                task.cancel()
            for call in calls:
                call.cancel()      # no-op when finished; stops generation when the client left

    return gen()


def _sse(data: dict) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def _usage_chunk(kind: str, cid: str, created: int, model: str, usage) -> str:
    """The stream's last chunk before [DONE] when stream_options.include_usage: no choices, the usage."""
    return _sse({"id": cid, "object": kind, "created": created, "model": model, "choices": [], "usage": _usage(*usage)})


def _sse_error(err: ApiError) -> str:
    return _sse(err.body())


# ---- /v1/completions ------------------------------------------------------------------------------

@router.post("/completions")
async def completions(body: CompletionRequest, text: TextDep, settings: SettingsDep):
    prompts = body.prompt if isinstance(body.prompt, list) else [body.prompt]
    max_tokens = body.max_tokens or 16          # OpenAI's default
    if max_tokens > settings.max_tokens_limit:
        raise ApiError(400, "invalid_request", f"max_tokens={max_tokens} is over the limit; "
                       f"send 1..{settings.max_tokens_limit}", param="max_tokens")
    # choice index = prompt index * n + i, as OpenAI numbers them
    requests = [text_pb2.GenerateRequest(model=common_pb2.ModelRef(name=body.model), prompt=p,
                                         sampling=_sampling(body, max_tokens, _seed(body, i)))
                for p in prompts for i in range(body.n)]
    cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    if not body.stream:
        replies = await _generate_all(text, settings, requests)
        choices = [{"index": k, "text": (requests[k].prompt if body.echo else "") + r.text, "logprobs": None,
                    "finish_reason": r.finish_reason} for k, r in enumerate(replies)]
        return JSONResponse({"id": cid, "object": "text_completion", "created": created,
                             "model": replies[0].model, "choices": choices,
                             "usage": _usage(sum(r.usage.prompt_tokens for r in replies),
                                             sum(r.usage.completion_tokens for r in replies))})
    chunks = await _merged_streams(text, settings, requests)

    async def events():
        usage, model = [0, 0], body.model
        try:
            if body.echo:
                for k, r in enumerate(requests):
                    yield _sse(_completion_chunk(cid, created, model, k, r.prompt, None))
            async for k, chunk in chunks:
                model = chunk.model or model
                yield _sse(_completion_chunk(cid, created, model, k, chunk.text, chunk.finish_reason or None))
                if chunk.finish_reason:
                    usage[0] += chunk.usage.prompt_tokens
                    usage[1] += chunk.usage.completion_tokens
            if body.include_usage:
                yield _usage_chunk("text_completion", cid, created, model, usage)
            yield "data: [DONE]\n\n"
        except ApiError as err:
            yield _sse_error(err)

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


def _completion_chunk(cid: str, created: int, model: str, index: int, text: str, finish: str | None) -> dict:
    return {"id": cid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish}]}


# ---- /v1/chat/completions -------------------------------------------------------------------------

def _parts(message: ChatMessageIn) -> tuple[str, list[str]]:
    """A message's text and its images' data URLs."""
    if message.content is None or isinstance(message.content, str):
        return message.content or "", []
    texts = [p.text for p in message.content if p.type == "text"]
    images = [p.image_url.url for p in message.content if p.type == "image_url"]
    return "\n".join(texts), images


def _image_bytes(url: str, limit: int, where: str) -> bytes:
    if not url.startswith("data:"):
        raise ApiError(400, "invalid_request", f"{where}: send the image inline as a data URL "
                       "(data:image/png;base64,...); this server does not fetch image URLs", param=where)
    return decode_base64(url, field=where, limit=limit)


async def _caption(request: Request, settings, image: bytes) -> fusion_pb2.CaptionResponse:
    fusion = request.app.state.services.get("fusion")
    if fusion is None:
        raise not_configured("fusion")
    try:
        return await fusion.stub.Caption(fusion_pb2.CaptionRequest(image=image, params=fusion_pb2.CaptionParams(
            max_tokens=32)), timeout=settings.request_timeout_s, metadata=fusion.metadata())
    except grpc.aio.AioRpcError as e:
        raise fusion.error(e) from None


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, settings: SettingsDep):
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    limit = limit_bytes(request)
    turns = [(m.role, *_parts(m)) for m in body.messages]
    images = [(i, j, _image_bytes(url, limit, f"messages[{i}].content[{j}]"))
              for i, (_, _, urls) in enumerate(turns) for j, url in enumerate(urls)]
    captions = await asyncio.gather(*(_caption(request, settings, img) for _, _, img in images))
    last_role, _, last_images = turns[-1]
    if last_role == "user" and last_images:
        # the captioner answers an image it is shown
        answers = captions[-len(last_images):]
        content = " ".join(c.caption for c in answers)
        return _chat_reply(body, cid, created, answers[0].model, [content] * body.n, ["stop"] * body.n, (0, 0))
    said = {}
    for (i, _, _), cap in zip(images, captions):
        said.setdefault(i, []).append(f"[image: {cap.caption}]")
    messages = [text_pb2.ChatMessage(role="system" if role == "developer" else role,
                                     content="\n".join(filter(None, [content, *said.get(i, [])])))
                for i, (role, content, _) in enumerate(turns)]
    text = request.app.state.services.get("text")
    if text is None:
        raise not_configured("text")
    if body.token_limit > settings.max_tokens_limit:
        raise ApiError(400, "invalid_request", f"max_completion_tokens={body.token_limit} is over the limit; "
                       f"send 1..{settings.max_tokens_limit}", param="max_completion_tokens")
    requests = [text_pb2.GenerateRequest(model=common_pb2.ModelRef(name=body.model), messages=messages,
                                         sampling=_sampling(body, body.token_limit, _seed(body, i)))
                for i in range(body.n)]
    if not body.stream:
        replies = await _generate_all(text, settings, requests)
        return _chat_reply(body, cid, created, replies[0].model, [r.text for r in replies],
                           [r.finish_reason for r in replies],
                           (replies[0].usage.prompt_tokens * body.n, sum(r.usage.completion_tokens for r in replies)))
    chunks = await _merged_streams(text, settings, requests)

    async def events():
        usage, model = [0, 0], body.model
        try:
            # every choice opens with the assistant role and empty content, as OpenAI's first chunk does
            for i in range(body.n):
                yield _sse(_chat_chunk(cid, created, model, i, {"role": "assistant", "content": ""}, None))
            async for i, chunk in chunks:
                model = chunk.model or model
                if chunk.text:
                    yield _sse(_chat_chunk(cid, created, model, i, {"content": chunk.text}, None))
                if chunk.finish_reason:
                    yield _sse(_chat_chunk(cid, created, model, i, {}, chunk.finish_reason))
                    usage[0] += chunk.usage.prompt_tokens
                    usage[1] += chunk.usage.completion_tokens
            if body.include_usage:
                yield _usage_chunk("chat.completion.chunk", cid, created, model, usage)
            yield "data: [DONE]\n\n"
        except ApiError as err:
            yield _sse_error(err)

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


def _chat_chunk(cid: str, created: int, model: str, index: int, delta: dict, finish: str | None) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None, "usage": None,
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def _chat_reply(body, cid: str, created: int, model: str, contents: list[str], finishes: list[str],
                usage: tuple[int, int]):
    if body.stream:       # an answer that is already whole, sent as a stream since one was asked for
        async def events():
            for i, (content, finish) in enumerate(zip(contents, finishes)):
                yield _sse(_chat_chunk(cid, created, model, i, {"role": "assistant", "content": ""}, None))
                yield _sse(_chat_chunk(cid, created, model, i, {"content": content}, None))
                yield _sse(_chat_chunk(cid, created, model, i, {}, finish))
            if body.include_usage:
                yield _usage_chunk("chat.completion.chunk", cid, created, model, usage)
            yield "data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)
    return JSONResponse({
        "id": cid, "object": "chat.completion", "created": created, "model": model, "system_fingerprint": None,
        "choices": [{"index": i, "message": {"role": "assistant", "content": content, "refusal": None},
                     "logprobs": None, "finish_reason": finish}
                    for i, (content, finish) in enumerate(zip(contents, finishes))],
        "usage": _usage(*usage)})
