"""gRPC servicer: translates omniforge.v1.TextService messages to engine calls and back."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time

import grpc

from omniforge_proto.v1 import common_pb2, text_pb2, text_pb2_grpc
from omniforge_shared.chat import InvalidChat, chat_spec, render_chat
from omniforge_shared.metrics import TOKEN_BUCKETS
from omniforge_shared.serving import ModelNotFound, ModelPool, label_call, list_models_reply

from .engine import EngineStopped, InvalidRequest
from .sampling import SamplingParams

logger = logging.getLogger(__name__)


def to_params(msg: text_pb2.SamplingParams) -> SamplingParams:
    return SamplingParams(
        max_tokens=msg.max_tokens or 64,
        temperature=msg.temperature,
        top_k=msg.top_k,
        top_p=msg.top_p or 1.0,               # proto3 default 0 = unset
        repetition_penalty=msg.repetition_penalty or 1.0,
        stop=tuple(msg.stop),
        seed=msg.seed if msg.HasField("seed") else None,
    )


def _prompt(request: text_pb2.GenerateRequest, manifest: dict) -> tuple[str, SamplingParams]:
    """The prompt and sampling parameters of a request: its prompt as sent, or its messages
    rendered with the model's chat template, whose end-of-turn strings then also stop the reply."""
    params = to_params(request.sampling)
    if not request.messages:
        return request.prompt, params
    if request.prompt:
        raise InvalidChat("send either a prompt or messages, not both")
    template, stop = chat_spec(manifest)
    prompt = render_chat(template, [{"role": m.role, "content": m.content} for m in request.messages])
    return prompt, dataclasses.replace(params, stop=params.stop + tuple(s for s in stop if s not in params.stop))


class TextServicer(text_pb2_grpc.TextServiceServicer):
    def __init__(self, pool: ModelPool) -> None:
        self.pool = pool
        m, labels = pool.metrics, ["model", "version"]
        self.ttft = m.histogram("time_to_first_token_seconds", "from the request to its first text", labels)
        self.itl = m.histogram("inter_token_latency_seconds", "mean time between tokens of a generation", labels,
                               buckets=TOKEN_BUCKETS)
        self.tokens = m.counter("tokens_generated_total", "tokens generated", labels)

    async def Generate(self, request, context):
        text, last, loaded = [], None, None
        async for piece, loaded in self._pieces(request, context, stream=False):
            text.append(piece.text)
            last = piece
        return text_pb2.GenerateResponse(
            text="".join(text), finish_reason=last.finish_reason, model=loaded.name,
            model_version=loaded.version,
            usage=common_pb2.Usage(prompt_tokens=last.prompt_tokens, completion_tokens=last.completion_tokens))

    async def GenerateStream(self, request, context):
        async for piece, loaded in self._pieces(request, context):
            chunk = text_pb2.GenerateChunk(text=piece.text, finish_reason=piece.finish_reason,
                                           model=loaded.name, model_version=loaded.version)
            if piece.finish_reason:
                chunk.usage.prompt_tokens = piece.prompt_tokens
                chunk.usage.completion_tokens = piece.completion_tokens
            yield chunk

    async def _pieces(self, request, context, *, stream: bool = True):
        start = time.perf_counter()
        loaded = await self._model(request.model, context)
        labels = (loaded.name, loaded.version)
        try:
            prompt, params = _prompt(request, loaded.bundle.manifest)
            pieces = loaded.engine.generate(prompt, params, stream=stream)
            try:
                async for piece in pieces:
                    if piece.finish_reason:
                        self._finished(labels, piece, start)
                    yield piece, loaded
            finally:
                await pieces.aclose()   # a cancelled RPC cancels the sequence in the engine
        except (InvalidRequest, InvalidChat) as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except EngineStopped as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))

    def _finished(self, labels, piece, start: float) -> None:
        """Time to first token and inter-token latency, from when the engine sampled them."""
        tokens = piece.completion_tokens
        self.tokens.labels(*labels).inc(tokens)
        if piece.first_token_at:
            self.ttft.labels(*labels).observe(piece.first_token_at - start)
            if tokens > 1:
                self.itl.labels(*labels).observe((time.perf_counter() - piece.first_token_at) / (tokens - 1))

    async def Score(self, request, context):
        loaded = await self._model(request.model, context)
        try:
            ll, n = await asyncio.to_thread(loaded.engine.score, request.text)
        except InvalidRequest as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return text_pb2.ScoreResponse(log_likelihood=ll, num_tokens=n, perplexity=math.exp(-ll / n),
                                      model_version=loaded.version)

    async def ListModels(self, request, context):
        return list_models_reply(self.pool, extra=lambda m: {"context_length": m["graph"]["context_length"],
                                                             "vocab_size": m["tokenizer"]["vocab_size"]})

    async def _model(self, ref, context):
        try:
            loaded = self.pool.get(ref.name, ref.version)
        except ModelNotFound as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        label_call(model=loaded.name, version=loaded.version)
        return loaded
