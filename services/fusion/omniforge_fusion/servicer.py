"""gRPC servicer: translates omniforge.v1.FusionService messages to engine and index calls."""
from __future__ import annotations

import asyncio
import json

import grpc

from omniforge_proto.v1 import common_pb2, fusion_pb2, fusion_pb2_grpc
from omniforge_shared.audio import AudioError
from omniforge_shared.serving import ModelNotFound, ModelPool, label_call, list_models_reply

from .captioner import CaptionParams
from .engine import AudioUnavailable, EmbeddingEngine, InvalidInput
from .index import (STARTER_COLLECTION, InvalidIndexRequest, NotFound, SearchIndex, StaleCollection,
                    parse_metadata)

STATUS = {InvalidInput: grpc.StatusCode.INVALID_ARGUMENT, InvalidIndexRequest: grpc.StatusCode.INVALID_ARGUMENT,
          NotFound: grpc.StatusCode.NOT_FOUND, StaleCollection: grpc.StatusCode.FAILED_PRECONDITION,
          AudioUnavailable: grpc.StatusCode.FAILED_PRECONDITION}
AUDIO_TASK = "audio-embedding"


def _input(msg: fusion_pb2.EmbedInput, index: int) -> tuple[str, object]:
    kind = msg.WhichOneof("kind")
    if kind is None:
        raise InvalidInput(f"input {index} is empty; send a text, an image or audio")
    return kind, getattr(msg, kind)


class FusionServicer(fusion_pb2_grpc.FusionServiceServicer):
    def __init__(self, pool: ModelPool, index: SearchIndex, *, max_inputs: int) -> None:
        self.pool, self.index, self.max_inputs = pool, index, max_inputs

    async def _call(self, context, fn, *args):
        """Runs blocking work off the event loop; maps our errors to gRPC statuses."""
        try:
            return await asyncio.to_thread(fn, *args)
        except AudioError as e:             # the audio decoder says which HTTP status fits (413, 415, 400)
            context.set_trailing_metadata((("http-status", str(e.status)),))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"audio: {e}")
        except tuple(STATUS) as e:
            await context.abort(STATUS[type(e)], str(e))

    async def _model(self, ref, context, task: str = "embedding"):
        try:
            loaded = self.pool.get(ref.name, ref.version, task=task)
        except ModelNotFound as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        label_call(model=loaded.name, version=loaded.version)
        return loaded

    def audio_tower(self, loaded):
        """The served audio tower aligned to this embedding model and version, if any: -> embed fn."""
        for m in self.pool.models.values():
            if m.bundle.task == AUDIO_TASK and m.engine.space == loaded.bundle.space:
                return m.engine.embed
        return None

    def _embed(self, loaded, inputs: list[tuple[str, object]]):
        audio = self.audio_tower(loaded) if any(k == "audio" for k, _ in inputs) else None
        return loaded.engine.embed(inputs, audio=audio)

    def _count(self, n: int, what: str) -> None:
        if n == 0:
            raise InvalidInput(f"no {what} given; send at least one")
        if n > self.max_inputs:
            raise InvalidInput(f"{n} {what} in one call; the limit is {self.max_inputs}")

    async def Caption(self, request, context):
        loaded = await self._model(request.model, context, task="image-caption")
        p = request.params
        params = CaptionParams(max_tokens=p.max_tokens or 24, temperature=p.temperature, top_k=p.top_k,
                               top_p=p.top_p or 1.0, num_beams=p.num_beams or 1,
                               seed=p.seed if p.HasField("seed") else None, prompt=request.prompt)
        future = await self._call(context, loaded.engine.submit, request.image, params)
        try:
            caption = await asyncio.wrap_future(future)
        except RuntimeError as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        return fusion_pb2.CaptionResponse(caption=caption.text, finish_reason=caption.finish_reason,
                                          tokens=caption.tokens, model=loaded.name, model_version=loaded.version)

    async def Embed(self, request, context):
        loaded = await self._model(request.model, context)
        engine: EmbeddingEngine = loaded.engine

        def run():
            self._count(len(request.inputs), "inputs")
            return self._embed(loaded, [_input(m, i) for i, m in enumerate(request.inputs)])

        vectors = await self._call(context, run)
        return fusion_pb2.EmbedResponse(embeddings=[common_pb2.Embedding(values=v.tolist()) for v in vectors],
                                        dimensions=engine.dimensions, model=loaded.name, model_version=loaded.version)

    async def Similarity(self, request, context):
        loaded = await self._model(request.model, context)

        def run():
            self._count(len(request.candidates), "candidates")
            inputs = [_input(request.query, 0)] + [_input(m, i + 1) for i, m in enumerate(request.candidates)]
            v = self._embed(loaded, inputs)
            return v[1:] @ v[0]

        scores = await self._call(context, run)
        return fusion_pb2.SimilarityResponse(scores=scores.tolist(), model=loaded.name, model_version=loaded.version)

    async def Search(self, request, context):
        loaded = await self._model(request.model, context)
        collection = request.collection or STARTER_COLLECTION

        def run():
            query = self._embed(loaded, [_input(request.query, 0)])[0]
            return self.index.search(collection, query, k=request.k or 5, model=(loaded.name, loaded.version))

        hits = await self._call(context, run)
        return fusion_pb2.SearchResponse(
            results=[fusion_pb2.SearchResult(id=h.id, caption=h.caption, score=h.score,
                                             metadata_json=json.dumps(h.metadata, ensure_ascii=False)) for h in hits],
            collection=collection, model=loaded.name, model_version=loaded.version)

    async def AddItems(self, request, context):
        loaded = await self._model(request.model, context)
        engine: EmbeddingEngine = loaded.engine

        def run():
            self._count(len(request.items), "items")
            inputs, metas = [], []
            for i, item in enumerate(request.items):
                if item.image:
                    inputs.append(("image", item.image))
                elif item.caption.strip():
                    inputs.append(("text", item.caption))
                else:
                    raise InvalidInput(f"item {i} has neither an image nor a caption; send one of them")
                metas.append(parse_metadata(item.metadata_json, i))
            vectors = engine.embed(inputs)
            count = self.index.add(request.collection, ids=[it.id for it in request.items], embeddings=vectors,
                                   captions=[it.caption for it in request.items], metadatas=metas,
                                   model=(loaded.name, loaded.version))
            return count

        count = await self._call(context, run)
        return fusion_pb2.AddItemsResponse(added=len(request.items), count=count, collection=request.collection)

    async def DeleteItems(self, request, context):
        def run():
            if not request.ids:
                raise InvalidInput("no ids given; send the ids of the items to delete")
            return self.index.delete(request.collection, list(request.ids))

        deleted, count = await self._call(context, run)
        return fusion_pb2.DeleteItemsResponse(deleted=deleted, count=count, collection=request.collection)

    async def ListCollections(self, request, context):
        rows = await self._call(context, self.index.collections)
        return fusion_pb2.ListCollectionsResponse(collections=[
            fusion_pb2.CollectionInfo(name=n, count=c, model=m, model_version=v) for n, c, m, v in rows])

    async def ListModels(self, request, context):
        return list_models_reply(self.pool)
