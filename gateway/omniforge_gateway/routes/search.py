"""The shared latent space over HTTP: POST /embed, POST /search, and a collection's items.

Each route takes JSON (images and audio as base64) or a multipart form with a `file` (an image,
or an audio clip: told apart by its first bytes), and translates to one FusionService call."""
from __future__ import annotations

import json

import grpc
from fastapi import APIRouter, Request

from omniforge_proto.v1 import common_pb2, fusion_pb2

from ..deps import FusionDep, SettingsDep
from ..errors import ApiError
from ..schemas import (CollectionList, CollectionPublic, EmbeddingData, EmbedRequest, EmbedResponse, ItemsAdd,
                       ItemsChanged, ItemsDelete, SearchRequest, SearchResponse, SearchResult)
from omniforge_shared.images import ACCEPTED

from ..uploads import AUDIO_ACCEPTED, decode_base64, is_audio, limit_bytes, parse_body, too_large
from .audio import audio_limit

router = APIRouter(tags=["embeddings"])

def _doc(schema: str) -> dict:
    """OpenAPI: the body is JSON of `schema`, or a multipart form with the image as `file`."""
    return {"requestBody": {"content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}},
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": {"type": "string", "format": "binary"}}}},
    }}}


async def _call(fusion, method, request, settings):
    try:
        return await method(request, timeout=settings.request_timeout_s, metadata=fusion.metadata())
    except grpc.aio.AioRpcError as e:
        raise fusion.error(e) from None


def _one_query(text, image_b64, audio_b64, upload, request: Request, *, text_field: str) -> fusion_pb2.EmbedInput:
    given = [x is not None for x in (text, image_b64, audio_b64, upload)]
    if sum(given) != 1:
        raise ApiError(422, "invalid_request", f"send exactly one of `{text_field}` (text), `image` (base64), "
                       "`audio` (base64) or a multipart `file` (an image or an audio clip)")
    if text is not None:
        return fusion_pb2.EmbedInput(text=text)
    if audio_b64 is not None:
        return fusion_pb2.EmbedInput(audio=decode_base64(audio_b64, field="audio", limit=audio_limit(request)))
    if upload is not None:
        if is_audio(upload):
            if len(upload) > audio_limit(request):
                raise too_large(len(upload), audio_limit(request), "audio file", AUDIO_ACCEPTED)
            return fusion_pb2.EmbedInput(audio=upload)
        if len(upload) > limit_bytes(request):
            raise too_large(len(upload), limit_bytes(request))
        return fusion_pb2.EmbedInput(image=upload)
    return fusion_pb2.EmbedInput(image=decode_base64(image_b64, field="image", limit=limit_bytes(request)))


async def _parse(request: Request, schema):
    """JSON or multipart; a multipart `file` may be an image or an audio clip, so the larger limit reads it."""
    return await parse_body(request, schema, limit=max(limit_bytes(request), audio_limit(request)),
                            what="file", accepted=f"an image ({ACCEPTED}) or audio ({AUDIO_ACCEPTED})")


@router.post("/embed", response_model=EmbedResponse, openapi_extra=_doc("EmbedRequest"))
async def embed(request: Request, fusion: FusionDep, settings: SettingsDep) -> EmbedResponse:
    """Texts, an image or a spoken query -> unit-length vectors in the shared space (cosine = dot product)."""
    body, upload = await _parse(request, EmbedRequest)
    if isinstance(body.input, list):
        inputs = [fusion_pb2.EmbedInput(text=t) for t in body.input]
    else:
        inputs = [_one_query(body.input, body.image, body.audio, upload, request, text_field="input")]
    reply = await _call(fusion, fusion.stub.Embed, fusion_pb2.EmbedRequest(
        model=common_pb2.ModelRef(name=body.model or ""), inputs=inputs), settings)
    return EmbedResponse(data=[EmbeddingData(embedding=list(e.values), index=i) for i, e in enumerate(reply.embeddings)],
                         model=reply.model, model_version=reply.model_version, dimensions=reply.dimensions)


@router.post("/search", response_model=SearchResponse, openapi_extra=_doc("SearchRequest"))
async def search(request: Request, fusion: FusionDep, settings: SettingsDep) -> SearchResponse:
    """The k items of a collection nearest to a text, an image or a spoken query."""
    body, upload = await _parse(request, SearchRequest)
    query = _one_query(body.query, body.image, body.audio, upload, request, text_field="query")
    reply = await _call(fusion, fusion.stub.Search, fusion_pb2.SearchRequest(
        model=common_pb2.ModelRef(name=body.model or ""), query=query, k=body.k,
        collection=body.collection or ""), settings)
    return SearchResponse(results=[SearchResult(id=r.id, caption=r.caption, score=r.score,
                                                metadata=json.loads(r.metadata_json or "{}")) for r in reply.results],
                          collection=reply.collection, model=reply.model, model_version=reply.model_version)


@router.get("/collections", response_model=CollectionList)
async def collections(fusion: FusionDep, settings: SettingsDep) -> CollectionList:
    reply = await _call(fusion, fusion.stub.ListCollections, fusion_pb2.ListCollectionsRequest(), settings)
    return CollectionList(collections=[CollectionPublic(name=c.name, count=c.count, model=c.model,
                                                        model_version=c.model_version) for c in reply.collections])


@router.post("/collections/{name}/items", response_model=ItemsChanged)
async def add_items(name: str, body: ItemsAdd, request: Request, fusion: FusionDep, settings: SettingsDep):
    """Adds items (or replaces them, by id); each is indexed by its image when given, else its caption."""
    limit = limit_bytes(request)
    items = [fusion_pb2.CollectionItem(
        id=it.id, caption=it.caption, metadata_json=json.dumps(it.metadata),
        image=decode_base64(it.image, field=f"items[{i}].image", limit=limit) if it.image else b"")
        for i, it in enumerate(body.items)]
    reply = await _call(fusion, fusion.stub.AddItems, fusion_pb2.AddItemsRequest(
        model=common_pb2.ModelRef(name=body.model or ""), collection=name, items=items), settings)
    return ItemsChanged(collection=reply.collection, added=reply.added, count=reply.count)


@router.delete("/collections/{name}/items", response_model=ItemsChanged)
async def delete_items(name: str, body: ItemsDelete, fusion: FusionDep, settings: SettingsDep):
    """Deletes items by id; ids that are not there are ignored (`deleted` says how many were)."""
    reply = await _call(fusion, fusion.stub.DeleteItems,
                        fusion_pb2.DeleteItemsRequest(collection=name, ids=body.ids), settings)
    return ItemsChanged(collection=reply.collection, deleted=reply.deleted, count=reply.count)
